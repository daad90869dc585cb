package com.dbd.core

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertNull
import org.junit.Test

class PreprocessorTest {
    // A 3 x 2 photo: (r, g, b) per pixel, row-major.
    private val rgb = arrayOf(
        intArrayOf(0, 1, 2), intArrayOf(127, 128, 129), intArrayOf(255, 254, 253),
        intArrayOf(10, 20, 30), intArrayOf(200, 100, 50), intArrayOf(5, 6, 7),
    )
    private val photo = ArgbImage(3, 2, IntArray(6) { ArgbImage.opaque(rgb[it][0], rgb[it][1], rgb[it][2]) })

    private fun pre(doc: String) = Preprocessor(ModelSpec.fromJson(doc).input)

    @Test
    fun foldedInt8IsPixelMinus128InNhwc() {
        val tensor = pre(TestDocs.metadata()).process(photo)
        assertNull(tensor.floats)
        val expected = ByteArray(18) { i -> (rgb[i / 3][i % 3] - 128).toByte() }
        assertArrayEquals(expected, tensor.bytes)
        assertArrayEquals(expected, tensor.rawBytes())
    }

    @Test
    fun uint8AndClippingFollowTheQuantisationParameters() {
        val u8 = pre(TestDocs.metadata(dtype = "uint8", quant = """{"scale": 1.0, "zero_point": 0}""")).process(photo)
        assertArrayEquals(IntArray(18) { rgb[it / 3][it % 3] }, IntArray(18) { u8.bytes!![it].toInt() and 0xFF })
        // scale 0.5: 2 * pixel - 128, clipped to [-128, 127]
        val doubled = pre(TestDocs.metadata(quant = """{"scale": 0.5, "zero_point": -128}""")).process(photo)
        val expected = IntArray(18) { (2 * rgb[it / 3][it % 3] - 128).coerceIn(-128, 127) }
        assertArrayEquals(expected, IntArray(18) { doubled.bytes!![it].toInt() })
    }

    @Test
    fun externalNormalisationInNchwFloat() {
        val doc = TestDocs.metadata(layout = "NCHW", dtype = "float32", normalization = "external", quant = null,
            outDtype = "float32", outQuant = null)
        val tensor = pre(doc).process(photo)
        val mean = floatArrayOf(0.485f, 0.456f, 0.406f)
        val std = floatArrayOf(0.229f, 0.224f, 0.225f)
        val values = tensor.floats!!
        for (c in 0 until 3) for (y in 0 until 2) for (x in 0 until 3) {
            val p = rgb[y * 3 + x][c]
            assertEquals((p.toFloat() / 255f - mean[c]) / std[c], values[(c * 2 + y) * 3 + x], 0f)
        }
        assertEquals(18 * 4, tensor.rawBytes().size)
    }

    @Test
    fun resizesToTheModelSizeFromTheMetadata() {
        // A 3 x 2 photo into a 6 x 4 model: every output is a bilinear mix of the photo's values.
        val p = pre(TestDocs.metadata(height = 4, width = 6))
        val unit = p.resize(photo)
        assertEquals(4 * 6 * 3, unit.size)
        assertEquals(0f, unit[0], 0f)                      // corner: clamped, red of pixel (0, 0)
        assertEquals(7f / 255f, unit[unit.size - 1], 0f)   // opposite corner: blue of pixel (2, 1)
        val tensor = p.encode(unit)
        assertEquals(4 * 6 * 3, tensor.bytes!!.size)
    }
}
