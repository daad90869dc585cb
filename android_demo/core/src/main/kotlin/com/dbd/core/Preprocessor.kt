package com.dbd.core

import java.nio.ByteBuffer
import java.nio.ByteOrder

/** The model's input tensor, ready for LiteRT: raw bytes for int8/uint8, floats for float32. */
class InputTensor(val spec: InputSpec, val bytes: ByteArray?, val floats: FloatArray?) {
    /** The tensor exactly as it sits in memory (little-endian floats), e.g. to compare with Python's. */
    fun rawBytes(): ByteArray {
        bytes?.let { return it }
        val values = floats!!
        val buffer = ByteBuffer.allocate(values.size * 4).order(ByteOrder.LITTLE_ENDIAN)
        buffer.asFloatBuffer().put(values)
        return buffer.array()
    }
}

/**
 * Photo -> input tensor, following the model's own metadata ([InputSpec]); the steps and their
 * float32 rounding are those of the Python runtime (`Predictor._model_input` then
 * `dbd.runtime.metadata.encode_input`):
 *
 *  1. x = pixel / pixel_scale (float32), RGB;
 *  2. bilinear resize to the model size ([Bilinear], half-pixel centres, aspect stretched);
 *  3. folded normalisation: x * pixel_scale (the graph normalises); external: (x - mean) / std;
 *  4. quantised inputs: round_half_even(x / scale + zero_point), clipped to the type's range;
 *  5. laid out NHWC or NCHW.
 */
class Preprocessor(val spec: InputSpec) {
    private val pixelScale = spec.pixelScale.toFloat()
    private val mean = FloatArray(3) { spec.mean[it].toFloat() }
    private val std = FloatArray(3) { spec.std[it].toFloat() }
    private val qScale = spec.quantization?.scale?.toFloat() ?: 1f
    private val qZero = spec.quantization?.zeroPoint?.toFloat() ?: 0f

    /** Steps 1-2: RGB floats in [0, 1] at the model size, interleaved (H, W, 3). */
    fun resize(image: ArgbImage): FloatArray {
        val w = image.width
        return Bilinear.resizeRows(w, image.height, 3, spec.width, spec.height) { y, row ->
            val base = y * w
            for (x in 0 until w) {
                val p = image.pixels[base + x]
                row[3 * x] = ArgbImage.red(p).toFloat() / pixelScale
                row[3 * x + 1] = ArgbImage.green(p).toFloat() / pixelScale
                row[3 * x + 2] = ArgbImage.blue(p).toFloat() / pixelScale
            }
        }
    }

    /** Steps 3-5 on the output of [resize]. */
    fun encode(unitRgb: FloatArray): InputTensor {
        val h = spec.height
        val w = spec.width
        require(unitRgb.size == h * w * 3) { "expected ${w}x$h RGB values, got ${unitRgb.size}" }
        val n = unitRgb.size
        val quantized = spec.dtype.isQuantized
        val bytes = if (quantized) ByteArray(n) else null
        val floats = if (quantized) null else FloatArray(n)
        val lo = spec.dtype.min.toFloat()
        val hi = spec.dtype.max.toFloat()
        for (y in 0 until h) for (x in 0 until w) for (c in 0 until 3) {
            val src = (y * w + x) * 3 + c
            var v = unitRgb[src]
            v = if (spec.folded) v * pixelScale else (v - mean[c]) / std[c]
            val dst = if (spec.layout == Layout.NHWC) src else (c * h + y) * w + x
            if (quantized) {
                var q = FloatMath.rint(v / qScale + qZero)
                if (q < lo) q = lo
                if (q > hi) q = hi
                bytes!![dst] = q.toInt().toByte()        // uint8 250 is stored as the byte 0xFA
            } else {
                floats!![dst] = v
            }
        }
        return InputTensor(spec, bytes, floats)
    }

    /** The whole contract: photo in, tensor out. */
    fun process(image: ArgbImage): InputTensor = encode(resize(image))
}
