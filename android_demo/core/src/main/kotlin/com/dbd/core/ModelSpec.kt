package com.dbd.core

import kotlin.math.abs

/** Affine quantisation of a tensor: real = (q - zeroPoint) * scale. */
data class QuantParams(val scale: Double, val zeroPoint: Int)

enum class Layout { NHWC, NCHW }

/** Element types the app can feed and read (numpy names in the metadata). */
enum class ElementType(val jsonName: String, val min: Int, val max: Int) {
    FLOAT32("float32", 0, 0),
    INT8("int8", -128, 127),
    UINT8("uint8", 0, 255);

    val isQuantized: Boolean get() = this != FLOAT32

    companion object {
        fun of(name: String, what: String): ElementType =
            entries.firstOrNull { it.jsonName == name }
                ?: throw ModelContractException("$what dtype '$name' is not supported by the app (float32, int8 or uint8)")
    }
}

/**
 * What the model's input tensor wants, read from the metadata's "input" section:
 * RGB pixels resized bilinearly to [height] x [width], then either plain pixels
 * (`normalization: "folded"`, the graph normalises itself) or (pixel / 255 - mean) / std,
 * laid out as [layout], optionally quantised.
 */
data class InputSpec(
    val name: String,
    val shape: List<Int>,
    val layout: Layout,
    val dtype: ElementType,
    val height: Int,
    val width: Int,
    val folded: Boolean,
    val mean: List<Double>,
    val std: List<Double>,
    val pixelScale: Double,
    val quantization: QuantParams?,
)

/** What the output tensor holds: P(blur) per pixel at [height] x [width] (1 = out of focus when [blurValue] is 1). */
data class OutputSpec(
    val name: String,
    val shape: List<Int>,
    val layout: Layout,
    val dtype: ElementType,
    val height: Int,
    val width: Int,
    val quantization: QuantParams?,
    val blurValue: Int,
)

/**
 * The "dbd" metadata document that dbd-export embeds in every model (schema: the Python
 * `dbd.runtime.metadata.METADATA_SCHEMA`), validated. Everything the app needs to feed the file
 * and read its answer comes from here, never from constants in the app, so a re-exported model
 * (another size, normalisation, layout or quantisation) is fed correctly or refused with a reason.
 */
class ModelSpec private constructor(
    val input: InputSpec,
    val output: OutputSpec,
    /**
     * The last step, map -> photo's resolution (`preprocess.refine`): a guided filter on the logit,
     * or [RefineSpec.NONE] (bilinear) for a file exported before refinement. See [Refine].
     */
    val refine: RefineSpec,
    /** Architecture name ("dbd_student"), precision ("int8"), file format ("tflite"). */
    val arch: String,
    val precision: String,
    val fileFormat: String,
    /** The whole document, for display (training data, metrics, source checkpoint). */
    val document: JsonObject,
) {
    override fun toString(): String =
        "$arch $precision $fileFormat: input ${input.dtype.jsonName} ${input.shape} ${input.layout}" +
            (input.quantization?.let { " q(${it.scale}, ${it.zeroPoint})" } ?: "") +
            ", output ${output.dtype.jsonName} ${output.shape}" +
            (output.quantization?.let { " q(${it.scale}, ${it.zeroPoint})" } ?: "")

    companion object {
        const val METADATA_KEY = "dbd"
        const val METADATA_FORMAT = "dbd-export/1"
        const val PREPROCESS_FORMAT = "dbd-preprocess/1"
        const val OUTPUT_MEANING = "blur_probability"
        private val REQUIRED_KEYS = listOf("format", "model", "file", "input", "output", "preprocess", "source_checkpoint")
        private val REQUIRED_INPUT_KEYS = listOf(
            "name", "shape", "layout", "dtype", "color_order", "size", "normalization", "mean", "std", "pixel_scale", "quantization",
        )
        private val REQUIRED_OUTPUT_KEYS = listOf("name", "shape", "layout", "dtype", "quantization", "meaning")

        /**
         * Reads the "dbd" metadata of a .tflite file and checks it against the graph itself: one
         * subgraph with one input and one output whose shape, type and quantisation are what the
         * metadata promises, and no custom (Flex / select-TF) operators, which the phone's builtin
         * runtime cannot run.
         */
        fun fromTflite(bytes: ByteArray): ModelSpec {
            val model = TfliteModel.parse(bytes)
            val raw = model.metadata(METADATA_KEY)
                ?: throw ModelContractException("the .tflite has no '$METADATA_KEY' metadata: it was not written by dbd-export (export it with dbd-export --format tflite)")
            val spec = fromJson(String(raw, Charsets.UTF_8))
            if (spec.fileFormat != "tflite") {
                throw ModelContractException("the metadata describes a '${spec.fileFormat}' file, not a tflite one; re-export the model")
            }
            checkGraph(spec, model)
            return spec
        }

        /** Parses and validates the metadata document alone (no graph to compare with). */
        fun fromJson(text: String): ModelSpec {
            val doc = JsonObject.parse(text, "the '$METADATA_KEY' metadata")
            val format = if (doc.has("format") && !doc.isNull("format")) doc.string("format") else "none"
            if (format != METADATA_FORMAT) {
                throw ModelContractException("metadata format '$format' is not '$METADATA_FORMAT', the one this app reads; re-export the model with this dbd (or update the app)")
            }
            val missing = REQUIRED_KEYS.filter { !doc.has(it) }.toMutableList()
            if (missing.isEmpty()) {
                val inp = doc.obj("input")
                val out = doc.obj("output")
                missing += REQUIRED_INPUT_KEYS.filter { !inp.has(it) }.map { "input.$it" }
                missing += REQUIRED_OUTPUT_KEYS.filter { !out.has(it) }.map { "output.$it" }
            }
            if (missing.isNotEmpty()) {
                throw ModelContractException("incomplete metadata (missing ${missing.take(3).joinToString(", ")}); re-export the model")
            }
            val file = doc.obj("file")
            val pre = doc.obj("preprocess")
            return ModelSpec(
                input = parseInput(doc.obj("input"), pre),
                output = parseOutput(doc.obj("output")),
                // No block: exported before refinement, whose contract is the bilinear resize.
                refine = if (pre.has("refine")) RefineSpec.fromJson(pre.obj("refine")) else RefineSpec.NONE,
                arch = doc.obj("model").stringOr("arch", "unknown"),
                precision = file.stringOr("precision", "unknown"),
                fileFormat = file.stringOr("format", "unknown"),
                document = doc,
            )
        }

        private fun layout(value: String, what: String): Layout = when (value) {
            "NHWC" -> Layout.NHWC
            "NCHW" -> Layout.NCHW
            else -> throw ModelContractException("$what layout '$value' is not NHWC or NCHW")
        }

        private fun quant(obj: JsonObject, dtype: ElementType, what: String): QuantParams? {
            val q = obj.objOrNull("quantization")
            if (dtype.isQuantized && q == null) {
                throw ModelContractException("$what is ${dtype.jsonName} but the metadata gives no quantization (scale, zero_point)")
            }
            if (q == null) return null
            if (!dtype.isQuantized) throw ModelContractException("$what is float32 but the metadata gives it quantization parameters")
            val scale = q.double("scale")
            val zero = q.long("zero_point")
            if (!(scale > 0.0) || scale.isInfinite()) throw ModelContractException("$what quantization scale $scale must be positive")
            if (zero < dtype.min || zero > dtype.max) {
                throw ModelContractException("$what zero point $zero is outside the ${dtype.jsonName} range")
            }
            return QuantParams(scale, zero.toInt())
        }

        private fun parseInput(inp: JsonObject, pre: JsonObject): InputSpec {
            val colorOrder = inp.string("color_order")
            if (colorOrder != "RGB") throw ModelContractException("input color_order '$colorOrder' is not RGB")
            val resize = inp.stringOr("resize", pre.stringOr("resize", "bilinear"))
            if (resize != "bilinear") throw ModelContractException("input resize '$resize' is not bilinear, the only one the app implements")
            val preFormat = pre.stringOr("format", "none")
            if (preFormat != PREPROCESS_FORMAT) throw ModelContractException("preprocess format '$preFormat' is not '$PREPROCESS_FORMAT'")
            val layout = layout(inp.string("layout"), "input")
            val dtype = ElementType.of(inp.string("dtype"), "input")
            val size = inp.ints("size")
            if (size.size != 2 || size[0] <= 0 || size[1] <= 0) throw ModelContractException("input size $size is not [height, width]")
            val (h, w) = size
            val shape = inp.ints("shape")
            val expected = if (layout == Layout.NHWC) listOf(1, h, w, 3) else listOf(1, 3, h, w)
            if (shape != expected) {
                throw ModelContractException("input shape $shape does not match size $size and layout $layout (expected $expected)")
            }
            val normalization = inp.string("normalization")
            if (normalization != "folded" && normalization != "external") {
                throw ModelContractException("input normalization '$normalization' is not 'folded' or 'external'")
            }
            val mean = inp.doubles("mean")
            val std = inp.doubles("std")
            if (mean.size != 3 || std.size != 3 || std.any { !(it > 0.0) }) {
                throw ModelContractException("input normalisation needs 3 means and 3 positive stds, got mean=$mean std=$std")
            }
            val pixelScale = inp.double("pixel_scale")
            if (!(pixelScale > 0.0)) throw ModelContractException("input pixel_scale $pixelScale must be positive")
            if (pre.has("pixel_scale") && pre.double("pixel_scale") != pixelScale) {
                throw ModelContractException("input pixel_scale $pixelScale disagrees with preprocess.pixel_scale ${pre.double("pixel_scale")}")
            }
            return InputSpec(
                name = inp.string("name"), shape = shape, layout = layout, dtype = dtype, height = h, width = w,
                folded = normalization == "folded", mean = mean, std = std, pixelScale = pixelScale,
                quantization = quant(inp, dtype, "input"),
            )
        }

        private fun parseOutput(out: JsonObject): OutputSpec {
            val meaning = out.string("meaning")
            if (meaning != OUTPUT_MEANING) {
                throw ModelContractException("output meaning '$meaning' is not '$OUTPUT_MEANING'; this app draws blur maps")
            }
            val blurValue = if (out.has("blur_value") && !out.isNull("blur_value")) out.long("blur_value").toInt() else 1
            if (blurValue != 0 && blurValue != 1) throw ModelContractException("output blur_value $blurValue is not 0 or 1")
            val layout = layout(out.string("layout"), "output")
            val dtype = ElementType.of(out.string("dtype"), "output")
            val shape = out.ints("shape")
            val ok = shape.size == 4 && shape[0] == 1 && (if (layout == Layout.NHWC) shape[3] == 1 else shape[1] == 1)
            if (!ok) throw ModelContractException("output shape $shape is not a single-channel $layout map")
            val (h, w) = if (layout == Layout.NHWC) Pair(shape[1], shape[2]) else Pair(shape[2], shape[3])
            return OutputSpec(out.string("name"), shape, layout, dtype, h, w, quant(out, dtype, "output"), blurValue)
        }

        private fun sameQuant(a: QuantParams?, b: QuantParams?): Boolean {
            if (a == null || b == null) return a == b
            return a.zeroPoint == b.zeroPoint && abs(a.scale - b.scale) <= 1e-6 * maxOf(abs(a.scale), abs(b.scale))
        }

        private fun describe(q: QuantParams?) = if (q == null) "none" else "scale ${q.scale}, zero point ${q.zeroPoint}"

        private fun checkGraph(spec: ModelSpec, model: TfliteModel) {
            if (model.subgraphCount != 1) {
                throw ModelContractException("the graph has ${model.subgraphCount} subgraphs; the app runs single-subgraph models")
            }
            val custom = model.customOps
            if (custom.isNotEmpty()) {
                val kind = if (custom.any { it.startsWith("Flex") }) "select-TensorFlow (Flex) ops" else "custom ops"
                throw ModelContractException("the graph contains $kind (${custom.distinct().take(3).joinToString(", ")}), which the phone's builtin runtime cannot run")
            }
            val inputs = model.inputs
            val outputs = model.outputs
            if (inputs.size != 1 || outputs.size != 1) {
                throw ModelContractException("the graph has ${inputs.size} inputs and ${outputs.size} outputs; the app expects 1 and 1")
            }
            for ((what, tensor, declaredShape, dtype, q) in listOf(
                GraphCheck("input", inputs[0], spec.input.shape, spec.input.dtype, spec.input.quantization),
                GraphCheck("output", outputs[0], spec.output.shape, spec.output.dtype, spec.output.quantization),
            )) {
                if (tensor.shape != declaredShape) {
                    throw ModelContractException("metadata says $what shape $declaredShape but the graph's $what tensor '${tensor.name}' has ${tensor.shape}; re-export the model")
                }
                if (tensor.dtype != dtype.jsonName) {
                    throw ModelContractException("metadata says $what dtype ${dtype.jsonName} but the graph's $what tensor '${tensor.name}' is ${tensor.dtype}; re-export the model")
                }
                if (q?.zeroPoint != tensor.quantization?.zeroPoint) {
                    throw ModelContractException("metadata says $what zero point ${q?.zeroPoint} but the graph's $what tensor '${tensor.name}' has ${tensor.quantization?.zeroPoint}; re-export the model")
                }
                if (!sameQuant(q, tensor.quantization)) {
                    throw ModelContractException("metadata says $what quantization (${describe(q)}) but the graph's $what tensor '${tensor.name}' has (${describe(tensor.quantization)}); re-export the model")
                }
            }
        }

        private data class GraphCheck(
            val what: String, val tensor: TensorInfo, val shape: List<Int>, val dtype: ElementType, val quant: QuantParams?,
        )
    }
}
