package com.dbd.core

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Test

class ArgbImageTest {
    // 3 x 2:  a b c
    //         d e f
    private val img = ArgbImage(3, 2, intArrayOf(1, 2, 3, 4, 5, 6))

    @Test
    fun rotatesClockwiseLikeCameraXRotationDegrees() {
        val r90 = img.rotated(90)            // d a / e b / f c
        assertEquals(2, r90.width)
        assertEquals(3, r90.height)
        assertArrayEquals(intArrayOf(4, 1, 5, 2, 6, 3), r90.pixels)
        assertArrayEquals(intArrayOf(6, 5, 4, 3, 2, 1), img.rotated(180).pixels)
        assertArrayEquals(intArrayOf(3, 6, 2, 5, 1, 4), img.rotated(270).pixels)   // c f / b e / a d
        assertArrayEquals(img.pixels, img.rotated(90).rotated(270).pixels)
        assertArrayEquals(img.pixels, img.rotated(-90).rotated(90).pixels)
    }
}
