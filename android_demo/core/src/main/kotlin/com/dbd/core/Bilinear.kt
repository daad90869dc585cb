package com.dbd.core

import kotlin.math.floor

/**
 * Bilinear resize with half-pixel centres, aspect ratio stretched: the Python runtime's
 * `PreprocessSpec.resize_image` / `postprocess`, i.e. `cv2.resize(x, (w, h), interpolation=INTER_LINEAR)`
 * on float32 data, reproduced to the bit.
 *
 * The opencv-python wheels run this through Intel IPP on x86 (`cv2.ipp.useIPP()` is true), whose
 * arithmetic differs from OpenCV's own C++ loop, so the reference is pinned down here exactly:
 *
 *  - source coordinate of output column d: x = (d + 0.5) * (srcW / dstW) - 0.5, in double;
 *    x0 = floor(x), weight w = (float)(x - x0); clamped at the borders (x0 < 0 -> 0, w = 0;
 *    x0 >= srcW - 1 -> srcW - 1, w = 0). Rows likewise.
 *  - horizontal pass first, then vertical, each a fused lerp `fma(q - p, w, p)` in float32.
 *
 * Same size in and out returns a copy unchanged (as PreprocessSpec does). Measured against
 * cv2 5.0.0 (IPP on, x86-64 with FMA) on 60 random size pairs and the golden photos: bit-identical
 * for every three-channel downscale (photo -> model) and one-channel upscale (blur map -> photo);
 * three-channel upscales (a photo smaller than the model) differ by 1 ulp at some values of the
 * clamped border columns. OpenCV without IPP (ARM builds, `cv2.ipp.setUseIPP(False)`) rounds its
 * weights through float first and differs by up to ~2e-5.
 */
object Bilinear {
    /** Source index and weight of each output coordinate along one axis. */
    class Axis(val lo: IntArray, val hi: IntArray, val weight: FloatArray)

    fun axis(src: Int, dst: Int): Axis {
        require(src > 0 && dst > 0) { "sizes must be positive, got $src -> $dst" }
        val lo = IntArray(dst)
        val hi = IntArray(dst)
        val weight = FloatArray(dst)
        val scale = src.toDouble() / dst
        for (d in 0 until dst) {
            val x = (d + 0.5) * scale - 0.5
            var x0 = floor(x).toInt()
            var w = (x - x0).toFloat()
            if (x0 < 0) { x0 = 0; w = 0f }
            if (x0 >= src - 1) { x0 = src - 1; w = 0f }
            lo[d] = x0
            hi[d] = minOf(x0 + 1, src - 1)
            weight[d] = w
        }
        return Axis(lo, hi, weight)
    }

    /**
     * Resizes an interleaved float image (row-major, [channels] per pixel) of [width] x [height]
     * to [dstWidth] x [dstHeight].
     */
    fun resize(src: FloatArray, width: Int, height: Int, channels: Int, dstWidth: Int, dstHeight: Int): FloatArray {
        require(src.size == width * height * channels) { "image of ${src.size} values is not $width x $height x $channels" }
        if (width == dstWidth && height == dstHeight) return src.copyOf()
        val rowLen = width * channels
        return resizeRows(width, height, channels, dstWidth, dstHeight) { y, row ->
            System.arraycopy(src, y * rowLen, row, 0, rowLen)
        }
    }

    /**
     * The core: [readRow] fills one source row (width * channels floats). Only the rows the
     * output needs are read, at most 2 per output row, so a 12-megapixel photo is never
     * converted to floats as a whole.
     */
    fun resizeRows(
        width: Int, height: Int, channels: Int, dstWidth: Int, dstHeight: Int,
        readRow: (y: Int, row: FloatArray) -> Unit,
    ): FloatArray {
        val outRowLen = dstWidth * channels
        val out = FloatArray(dstHeight * outRowLen)
        streamRows(width, height, channels, dstWidth, dstHeight, readRow) { dy, row ->
            System.arraycopy(row, 0, out, dy * outRowLen, outRowLen)
        }
        return out
    }

    /**
     * [resizeRows] without the output image: each output row, top to bottom, is handed to
     * [consume] (the same buffer every time; copy what must outlive the call). The refinement
     * applies its coefficients this way, so a photo-sized 4-channel image never exists.
     */
    fun streamRows(
        width: Int, height: Int, channels: Int, dstWidth: Int, dstHeight: Int,
        readRow: (y: Int, row: FloatArray) -> Unit,
        consume: (dy: Int, row: FloatArray) -> Unit,
    ) {
        val ax = axis(width, dstWidth)
        val ay = axis(height, dstHeight)
        val outRowLen = dstWidth * channels
        val horizontal = arrayOfNulls<FloatArray>(height)
        val source = FloatArray(width * channels)
        fun hRow(y: Int): FloatArray {
            horizontal[y]?.let { return it }
            readRow(y, source)
            val row = FloatArray(outRowLen)
            for (dx in 0 until dstWidth) {
                val p = ax.lo[dx] * channels
                val q = ax.hi[dx] * channels
                val w = ax.weight[dx]
                val o = dx * channels
                for (c in 0 until channels) {
                    val a = source[p + c]
                    row[o + c] = FloatMath.fma(source[q + c] - a, w, a)
                }
            }
            horizontal[y] = row
            return row
        }
        val out = FloatArray(outRowLen)
        var lastNeeded = -1
        for (dy in 0 until dstHeight) {
            val r0 = hRow(ay.lo[dy])
            val r1 = hRow(ay.hi[dy])
            val w = ay.weight[dy]
            for (i in 0 until outRowLen) {
                val a = r0[i]
                out[i] = FloatMath.fma(r1[i] - a, w, a)
            }
            consume(dy, out)
            // Rows above the current window are never needed again (indices only grow): free them.
            val keepFrom = ay.lo[dy]
            while (lastNeeded + 1 < keepFrom) { lastNeeded++; horizontal[lastNeeded] = null }
        }
    }
}
