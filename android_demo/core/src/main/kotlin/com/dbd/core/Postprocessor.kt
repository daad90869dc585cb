package com.dbd.core

import java.nio.ByteBuffer
import java.nio.ByteOrder

/**
 * Output tensor -> P(blur) map, following the metadata's [OutputSpec] with the float32 rounding of
 * the Python runtime (`decode_output`, then `PreprocessSpec.postprocess`):
 * P = (q - zero_point) * scale for quantised outputs, 1 - P when the model reports sharpness
 * (blur_value 0), then the map back at the photo's resolution ([toImage]): the metadata's refinement
 * ([refine], `PreprocessSpec.postprocess` / `refine_map`: a guided filter on the logit guided by the
 * photo, or the plain bilinear resize and clip for [RefineSpec.NONE]).
 */
class Postprocessor(val spec: OutputSpec, val refine: RefineSpec = RefineSpec.NONE) {
    /** Output and refinement as the model's metadata gives them. */
    constructor(model: ModelSpec) : this(model.output, model.refine)

    private val scale = spec.quantization?.scale?.toFloat() ?: 1f
    private val zero = spec.quantization?.zeroPoint?.toFloat() ?: 0f
    val size: Int get() = spec.height * spec.width

    /** Decodes a quantised output from its raw bytes (LiteRT `readInt8()`), or float32 from little-endian bytes. */
    fun probabilities(raw: ByteArray): FloatArray {
        if (!spec.dtype.isQuantized) {
            require(raw.size == size * 4) { "expected ${size * 4} bytes of float32 output, got ${raw.size}" }
            val floats = FloatArray(size)
            ByteBuffer.wrap(raw).order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer().get(floats)
            return probabilities(floats)
        }
        require(raw.size == size) { "expected $size output values, got ${raw.size}" }
        val out = FloatArray(size)
        val unsigned = spec.dtype == ElementType.UINT8
        for (i in 0 until size) {
            val q = if (unsigned) raw[i].toInt() and 0xFF else raw[i].toInt()
            out[i] = polarity((q.toFloat() - zero) * scale)
        }
        return out
    }

    /** A float32 output (LiteRT `readFloat()`). */
    fun probabilities(raw: FloatArray): FloatArray {
        require(!spec.dtype.isQuantized) { "the output is ${spec.dtype.jsonName}: decode its raw bytes" }
        require(raw.size == size) { "expected $size output values, got ${raw.size}" }
        return FloatArray(size) { polarity(raw[it]) }
    }

    private fun polarity(p: Float): Float = if (spec.blurValue == 1) p else 1f - p

    /**
     * The model-size map at the photo's resolution as the contract says: refined by [refine]
     * (edge-aligned to [image]), or resized bilinearly when the model's file has no refinement.
     * What the app draws.
     */
    fun toImage(prob: FloatArray, image: ArgbImage): FloatArray =
        Refine.refineMap(prob, spec.width, spec.height, image, refine)

    /** The model-size map resized bilinearly to [width] x [height], clipped to [0, 1] (refinement "none"). */
    fun toImageSize(prob: FloatArray, width: Int, height: Int): FloatArray {
        val resized = Bilinear.resize(prob, spec.width, spec.height, 1, width, height)
        for (i in resized.indices) resized[i] = resized[i].coerceIn(0f, 1f)
        return resized
    }
}
