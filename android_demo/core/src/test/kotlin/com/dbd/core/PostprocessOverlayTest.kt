package com.dbd.core

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Test

class PostprocessOverlayTest {
    private val spec = ModelSpec.fromJson(TestDocs.metadata(height = 1, width = 4))

    @Test
    fun decodesInt8AsQPlus128Over256() {
        val post = Postprocessor(spec.output)
        val p = post.probabilities(byteArrayOf(-128, -1, 0, 127))
        assertArrayEquals(floatArrayOf(0f, 127f / 256f, 0.5f, 255f / 256f), p, 0f)
        val photo = post.toImageSize(p, 8, 3)
        assertEquals(24, photo.size)
        for (v in photo) assertEquals(true, v in 0f..1f)
    }

    @Test
    fun decodesFloatOutputsFromFloatsOrBytes() {
        val post = Postprocessor(ModelSpec.fromJson(TestDocs.metadata(height = 1, width = 2, outDtype = "float32", outQuant = null)).output)
        assertArrayEquals(floatArrayOf(0.25f, 1f), post.probabilities(floatArrayOf(0.25f, 1f)), 0f)
        val raw = java.nio.ByteBuffer.allocate(8).order(java.nio.ByteOrder.LITTLE_ENDIAN).putFloat(0.25f).putFloat(1f).array()
        assertArrayEquals(floatArrayOf(0.25f, 1f), post.probabilities(raw), 0f)
    }

    // The values below are dbd.runtime.overlay.overlay's on the same pixels (numpy 2, OpenCV 5).
    private val image = ArgbImage(4, 1, intArrayOf(
        ArgbImage.opaque(100, 100, 100), ArgbImage.opaque(0, 0, 0), ArgbImage.opaque(255, 255, 255), ArgbImage.opaque(13, 200, 77),
    ))
    private val prob = floatArrayOf(0.5f, 0.9f, 0.49999997f, 1.0f)

    private fun rgb(pixels: IntArray) = pixels.map { listOf(ArgbImage.red(it), ArgbImage.green(it), ArgbImage.blue(it)) }

    @Test
    fun tintMatchesPythonOverlay() {
        assertEquals(
            listOf(listOf(170, 73, 73), listOf(115, 18, 18), listOf(255, 255, 255), listOf(122, 128, 60)),
            rgb(Overlay.tint(image, prob, 0.5f)),
        )
    }

    @Test
    fun heatMatchesPythonOverlay() {
        assertEquals(
            listOf(listOf(115, 178, 113), listOf(114, 0, 0), listOf(190, 255, 192), listOf(70, 100, 38)),
            rgb(Overlay.heat(image, prob)),
        )
        assertEquals(listOf(listOf(0, 0, 128), listOf(128, 0, 0)), rgb(intArrayOf(Overlay.JET[0], Overlay.JET[255])))
        assertEquals(128, Overlay.level(0.5f))
        assertEquals(127, Overlay.level(0.49999997f))
    }
}
