package com.dbd.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Test
import java.util.Random

class FloatMathTest {
    @Test
    fun fmaRoundsOnceLikeIeeeFusedMultiplyAdd() {
        val rnd = Random(7)
        val specials = floatArrayOf(0f, -0f, 1f, -1f, 0.5f, 1e-30f, 3.4e38f, Float.MIN_VALUE, 1f / 3f, 255f, 1e-8f)
        fun pick(): Float = when (rnd.nextInt(4)) {
            0 -> specials[rnd.nextInt(specials.size)]
            1 -> rnd.nextFloat()
            2 -> (rnd.nextFloat() - 0.5f) * 1e6f
            else -> java.lang.Float.intBitsToFloat(rnd.nextInt())
        }
        var checked = 0
        repeat(300_000) {
            val a = pick(); val b = pick(); val c = pick()
            val expected = Math.fma(a, b, c)          // the JVM's own (Java 9+), absent on Android < 33
            val actual = FloatMath.fma(a, b, c)
            if (!expected.isNaN()) {
                assertEquals("fma($a, $b, $c)", java.lang.Float.floatToIntBits(expected), java.lang.Float.floatToIntBits(actual))
                checked++
            }
        }
        // The bilinear case: weights in [0, 1), differences of values in [0, 1].
        repeat(300_000) {
            val p = rnd.nextInt(256) / 255f
            val q = rnd.nextInt(256) / 255f
            val w = rnd.nextFloat()
            assertEquals(Math.fma(q - p, w, p), FloatMath.fma(q - p, w, p), 0f)
        }
        assertTrue(checked > 250_000)
    }

    @Test
    fun rintAndHalfEvenMeanTieToEven() {
        assertEquals(2f, FloatMath.rint(2.5f), 0f)
        assertEquals(4f, FloatMath.rint(3.5f), 0f)
        assertEquals(-2f, FloatMath.rint(-2.5f), 0f)
        assertEquals(170f, FloatMath.rint(169.75f), 0f)
        for (a in 0..255) for (b in 0..255) {
            assertEquals(Math.rint((a + b) / 2.0).toInt(), FloatMath.halfEvenMean(a, b))
        }
    }
}
