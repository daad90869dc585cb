package com.dbd.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Test

class ModelSpecTest {
    @Test
    fun readsTheContractFromTheMetadata() {
        val spec = ModelSpec.fromJson(TestDocs.metadata(height = 64, width = 96))
        assertEquals(Layout.NHWC, spec.input.layout)
        assertEquals(ElementType.INT8, spec.input.dtype)
        assertEquals(64, spec.input.height)
        assertEquals(96, spec.input.width)
        assertTrue(spec.input.folded)
        assertEquals(QuantParams(1.0, -128), spec.input.quantization)
        assertEquals(QuantParams(1.0 / 256, -128), spec.output.quantization)
        assertEquals(listOf(1, 64, 96, 1), spec.output.shape)
        assertEquals("dbd_student", spec.arch)
        assertEquals("int8", spec.precision)
    }

    private fun refused(doc: String, vararg words: String) {
        try {
            ModelSpec.fromJson(doc)
            fail("accepted a document that should be refused for: ${words.joinToString()}")
        } catch (e: ModelContractException) {
            for (w in words) assertTrue("'${e.message}' does not name '$w'", e.message!!.contains(w))
        }
    }

    @Test
    fun refusesDocumentsTheAppCouldFeedWrongly() {
        refused(TestDocs.metadata(format = "dbd-export/2"), "dbd-export/2", "dbd-export/1")
        refused(TestDocs.metadata(colorOrder = "BGR"), "color_order", "BGR")
        refused(TestDocs.metadata(meaning = "sharp_probability"), "meaning")
        refused(TestDocs.metadata(blurValue = 2), "blur_value")
        refused(TestDocs.metadata(layout = "HWC"), "layout")
        refused(TestDocs.metadata(dtype = "float16"), "dtype", "float16")
        refused(TestDocs.metadata(quant = null), "int8", "quantization")
        refused(TestDocs.metadata(quant = """{"scale": 0.0, "zero_point": -128}"""), "scale")
        refused(TestDocs.metadata(quant = """{"scale": 1.0, "zero_point": 128}"""), "zero point", "128")
        refused(TestDocs.metadata(shape = "[1, 3, 2, 3]"), "input shape", "[1, 3, 2, 3]")
        refused(TestDocs.metadata(std = "[0.229, 0.0, 0.225]"), "std")
        refused(TestDocs.metadata().replace("\"normalization\": \"folded\",", ""), "missing", "input.normalization")
        refused("[1, 2]", "not a JSON object")
        refused("{\"format\": ", "not valid JSON")
    }

    @Test
    fun sharpnessOutputsAreTurnedIntoBlurProbabilities() {
        val spec = ModelSpec.fromJson(TestDocs.metadata(blurValue = 0))
        val post = Postprocessor(spec.output)
        val p = post.probabilities(ByteArray(6) { (-128 + 64).toByte() })   // 0.25 sharp -> 0.75 blur
        for (v in p) assertEquals(0.75f, v, 0f)
    }

    @Test
    fun refusesFilesThatAreNotTflite() {
        for (bytes in listOf(ByteArray(0), "PK\u0003\u0004 not a model".toByteArray(), ByteArray(64))) {
            try {
                ModelSpec.fromTflite(bytes)
                fail()
            } catch (e: ModelFormatException) {
                assertTrue(e.message!!, e.message!!.contains("TFL3"))
            }
        }
        // A TFL3 header pointing past the end: truncated, refused with a reason (no garbage read).
        val truncated = byteArrayOf(0x7f, 0x7f, 0, 0, 'T'.code.toByte(), 'F'.code.toByte(), 'L'.code.toByte(), '3'.code.toByte())
        try {
            ModelSpec.fromTflite(truncated)
            fail()
        } catch (e: ModelFormatException) {
            assertTrue(e.message!!, e.message!!.contains("truncated"))
        }
    }
}
