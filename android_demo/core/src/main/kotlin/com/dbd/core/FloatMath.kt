package com.dbd.core

/**
 * Float32 arithmetic that rounds exactly like the Python runtime (numpy float32 ufuncs, OpenCV).
 *
 * The JVM never contracts `a * b + c` into a fused multiply-add, so plain Kotlin `Float` arithmetic
 * already rounds like numpy's separate ufunc calls. Where the reference *does* fuse (OpenCV's
 * bilinear resize through Intel IPP on x86), [fma] reproduces the single rounding without
 * `Math.fma(Float, Float, Float)`, which Android only has from API 33 (this app runs on API 24).
 */
object FloatMath {
    /**
     * `a * b + c` rounded once to the nearest float (IEEE 754 fusedMultiplyAdd).
     *
     * The product of two floats is exact in a double (48 significant bits). The double sum is
     * made round-to-odd with its exact TwoSum error term, after which the conversion to float is
     * correctly rounded (53 >= 24 + 2 bits, Boldo & Melquiond 2008).
     */
    fun fma(a: Float, b: Float, c: Float): Float {
        val p = a.toDouble() * b.toDouble()
        val cd = c.toDouble()
        val s = p + cd
        if (s.isNaN() || s.isInfinite()) return s.toFloat()
        val bb = s - p
        val err = (p - (s - bb)) + (cd - bb)
        if (err == 0.0) return s.toFloat()
        val bits = java.lang.Double.doubleToRawLongBits(s)
        if (bits and 1L != 0L) return s.toFloat()          // already odd: round-to-odd leaves it
        // Even significand with a non-zero remainder: step one ulp toward the exact value.
        val towardLarger = (err > 0.0) == (s > 0.0)
        val odd = if (towardLarger) bits + 1 else bits - 1
        return java.lang.Double.longBitsToDouble(odd).toFloat()
    }

    /** numpy.round / OpenCV cvRound on a float: nearest integer, ties to even. */
    fun rint(x: Float): Float = Math.rint(x.toDouble()).toFloat()

    /** Half-to-even rounding of (a + b) / 2 for non-negative integers (cv2.addWeighted(a, .5, b, .5, 0)). */
    fun halfEvenMean(a: Int, b: Int): Int {
        val s = a + b
        val half = s shr 1
        return if (s and 1 == 1 && half and 1 == 1) half + 1 else half
    }
}
