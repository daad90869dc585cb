package com.dbd.core

/** A "dbd" metadata document like dbd-export writes, with the fields the tests vary. */
object TestDocs {
    fun metadata(
        height: Int = 2,
        width: Int = 3,
        layout: String = "NHWC",
        dtype: String = "int8",
        normalization: String = "folded",
        quant: String? = """{"scale": 1.0, "zero_point": -128}""",
        outDtype: String = "int8",
        outQuant: String? = """{"scale": 0.00390625, "zero_point": -128}""",
        colorOrder: String = "RGB",
        meaning: String = "blur_probability",
        blurValue: Int = 1,
        format: String = "dbd-export/1",
        shape: String? = null,
        mean: String = "[0.485, 0.456, 0.406]",
        std: String = "[0.229, 0.224, 0.225]",
        /** The preprocess object's "refine" block as JSON; null leaves it out (a file exported before refinement). */
        refine: String? = null,
    ): String {
        val inShape = shape ?: if (layout == "NHWC") "[1, $height, $width, 3]" else "[1, 3, $height, $width]"
        val outShape = if (layout == "NHWC") "[1, $height, $width, 1]" else "[1, 1, $height, $width]"
        return """
        {"format": "$format", "dbd_version": "test", "model": {"arch": "dbd_student", "config": {}},
         "file": {"format": "tflite", "precision": "int8", "quantization": "test", "created": "now", "tools": {}},
         "input": {"name": "pixels", "shape": $inShape, "layout": "$layout", "dtype": "$dtype",
                   "color_order": "$colorOrder", "size": [$height, $width], "normalization": "$normalization",
                   "mean": $mean, "std": $std, "pixel_scale": 255.0, "resize": "bilinear",
                   "value_range": [0.0, 255.0], "quantization": ${quant ?: "null"}, "contract": "words"},
         "output": {"name": "blur_prob", "shape": $outShape, "layout": "$layout", "dtype": "$outDtype",
                    "quantization": ${outQuant ?: "null"}, "meaning": "$meaning", "blur_value": $blurValue,
                    "value_range": [0.0, 1.0]},
         "preprocess": {"format": "dbd-preprocess/1", "input_size": [$height, $width], "mean": $mean, "std": $std,
                        "resize": "bilinear", "channel_order": "RGB", "layout": "$layout", "pixel_scale": 255.0,
                        "output": "blur_probability"${refine?.let { ", \"refine\": $it" } ?: ""}},
         "source_checkpoint": {"file": "x.safetensors", "sha256": "0", "created": null},
         "training": {}, "metrics": {}, "calibration": null}
        """.trimIndent()
    }
}
