package com.dbd.core

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Test
import java.util.Random

class BilinearTest {
    @Test
    fun halfPixelCentresWithClampedBorders() {
        // 2 -> 4: source x = -0.25, 0.25, 0.75, 1.25 -> clamp, 1/4, 3/4, clamp
        assertArrayEquals(floatArrayOf(0f, 0.25f, 0.75f, 1f), Bilinear.resize(floatArrayOf(0f, 1f), 2, 1, 1, 4, 1), 0f)
        // 4 -> 2: source x = 0.5, 2.5 -> means of neighbours
        assertArrayEquals(floatArrayOf(0.5f, 2.5f), Bilinear.resize(floatArrayOf(0f, 1f, 2f, 3f), 4, 1, 1, 2, 1), 0f)
        // vertical axis alike, channels kept apart
        val column = floatArrayOf(0f, 10f, 1f, 20f)   // 1 x 2 pixels, 2 channels
        assertArrayEquals(floatArrayOf(0f, 10f, 0.25f, 12.5f, 0.75f, 17.5f, 1f, 20f), Bilinear.resize(column, 1, 2, 2, 1, 4), 0f)
        val axis = Bilinear.axis(244, 96)
        assertEquals(0, axis.lo[0])
        assertEquals(243, axis.hi[95])
    }

    @Test
    fun sameSizeIsACopyAndConstantsStayConstant() {
        val rnd = Random(1)
        val img = FloatArray(5 * 7 * 3) { rnd.nextFloat() }
        val same = Bilinear.resize(img, 7, 5, 3, 7, 5)
        assertArrayEquals(img, same, 0f)
        assertTrue(same !== img)
        val flat = FloatArray(13 * 11 * 3) { 0.37f }
        for ((w, h) in listOf(Pair(96, 64), Pair(3, 2), Pair(13, 11), Pair(26, 22))) {
            val out = Bilinear.resize(flat, 13, 11, 3, w, h)
            assertEquals(w * h * 3, out.size)
            for (v in out) assertEquals(0.37f, v, 0f)
        }
    }

    @Test
    fun rowReaderAndArrayFormAgree() {
        val rnd = Random(2)
        val w = 41
        val h = 29
        val img = FloatArray(w * h * 3) { rnd.nextFloat() }
        val a = Bilinear.resize(img, w, h, 3, 17, 64)
        val b = Bilinear.resizeRows(w, h, 3, 17, 64) { y, row -> System.arraycopy(img, y * w * 3, row, 0, w * 3) }
        assertArrayEquals(a, b, 0f)
    }
}
