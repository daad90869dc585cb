package com.dbd.core

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Test
import java.util.Random
import kotlin.math.abs

/** The refinement's pieces; its parity with Python's refine_map on real photos is in [GoldenParityTest]. */
class RefineTest {
    private fun image(width: Int, height: Int, pixel: (x: Int, y: Int) -> Int): ArgbImage =
        ArgbImage(width, height, IntArray(width * height) { pixel(it % width, it / width) })

    private fun grey(v: Int) = ArgbImage.opaque(v, v, v)

    @Test
    fun boxMeanEqualsTheBruteForceMeanOverTheWindowClippedToTheImage() {
        val rnd = Random(3)
        for ((w, h, c) in listOf(Triple(17, 11, 3), Triple(1, 9, 2), Triple(23, 1, 1), Triple(40, 31, 13))) {
            val x = DoubleArray(w * h * c) { rnd.nextDouble() * 20 - 10 }
            for (r in listOf(0, 1, 2, 5, 30)) {
                val fast = Refine.boxMean(x, w, h, c, r)
                for (y in 0 until h) for (i in 0 until w) for (ch in 0 until c) {
                    var sum = 0.0
                    var n = 0
                    for (yy in maxOf(0, y - r)..minOf(h - 1, y + r)) for (xx in maxOf(0, i - r)..minOf(w - 1, i + r)) {
                        sum += x[(yy * w + xx) * c + ch]
                        n++
                    }
                    val got = fast[(y * w + i) * c + ch]
                    assertEquals("${w}x${h}x$c r=$r at ($i, $y, $ch)", sum / n, got, 1e-12)
                }
            }
        }
    }

    @Test
    fun methodNoneIsThePlainBilinearResizeClippedToZeroOne() {
        val rnd = Random(4)
        val pw = 9
        val ph = 7
        // Values outside [0, 1] too: the clip is part of the contract.
        val prob = FloatArray(pw * ph) { rnd.nextFloat() * 1.4f - 0.2f }
        val photo = image(31, 23) { x, y -> ArgbImage.opaque(x * 8, y * 11, (x * y) and 0xFF) }
        val refined = Refine.refineMap(prob, pw, ph, photo, RefineSpec.NONE)
        val bilinear = Bilinear.resize(prob, pw, ph, 1, 31, 23).map { it.coerceIn(0f, 1f) }.toFloatArray()
        assertArrayEquals(bilinear, refined, 0f)
        // The Postprocessor of a model exported before refinement draws exactly that.
        val spec = ModelSpec.fromJson(TestDocs.metadata(height = ph, width = pw))
        assertEquals(RefineSpec.NONE, spec.refine)
        assertArrayEquals(bilinear, Postprocessor(spec).toImage(prob, photo), 0f)
        assertArrayEquals(bilinear, Postprocessor(spec.output).toImageSize(prob, 31, 23), 0f)
    }

    @Test
    fun sizesFollowThePythonIntegerRules() {
        // Expected values printed by dbd.runtime.refine.working_size / grid_size.
        fun pair(a: IntArray) = Pair(a[0], a[1])
        assertEquals(Pair(360, 480), pair(Refine.workingSize(480, 640, 480)))
        assertEquals(Pair(184, 400), pair(Refine.workingSize(295, 640, 400)))
        assertEquals(Pair(1536, 2048), pair(Refine.workingSize(3000, 4000, 2048)))
        assertEquals(Pair(1, 16), pair(Refine.workingSize(5, 4000, 16)))
        assertEquals(Pair(480, 640), pair(Refine.workingSize(480, 640, 0)))
        assertEquals(Pair(256, 341), pair(Refine.gridSize(480, 640, 256)))
        assertEquals(Pair(256, 555), pair(Refine.gridSize(295, 640, 256)))
        assertEquals(Pair(128, 171), pair(Refine.gridSize(360, 480, 128)))
        assertEquals(Pair(244, 207), pair(Refine.gridSize(244, 207, 256)))
        assertEquals(Pair(244, 207), pair(Refine.gridSize(244, 207, 0)))
        assertEquals(Pair(1, 4000), pair(Refine.gridSize(1, 4000, 8)))
        assertEquals(Pair(267, 8), pair(Refine.gridSize(300, 9, 8)))
        assertEquals(10, Refine.radius(0.04, 256))
        assertEquals(1, Refine.radius(0.04, 13))          // never below 1
        assertEquals(8, Refine.radius(0.04, 207))          // floor(8.28 + 0.5)
    }

    @Test
    fun aUniformMapSurvivesTheGuidedFilterUnchanged() {
        // A constant logit has no covariance with the guide: a = 0, b = the logit, q = the logit.
        val photo = image(50, 40) { x, y -> ArgbImage.opaque((x * 5) and 0xFF, (y * 7) and 0xFF, ((x + y) * 3) and 0xFF) }
        for (p in listOf(0.03f, 0.5f, 0.9f)) {
            val out = Refine.refineMap(FloatArray(6 * 4) { p }, 6, 4, photo, RefineSpec(grid = 16))
            assertEquals(50 * 40, out.size)
            for (v in out) assertEquals(p, v, 2e-6f)
        }
    }

    @Test
    fun guidedRefinementSnapsTheMapsEdgeToThePhotosEdge() {
        // Photo: dark left, bright right, edge between columns 59 and 60. The model's 8x8 map knows
        // the edge only to within its coarse cells; bilinear spreads it, the guided filter follows the photo.
        val w = 120
        val h = 80
        val photo = image(w, h) { x, _ -> if (x < 60) grey(40) else grey(200) }
        val prob = FloatArray(64) { if (it % 8 < 4) 0.1f else 0.9f }
        val bilinear = Refine.refineMap(prob, 8, 8, photo, RefineSpec.NONE)
        val guided = Refine.refineMap(prob, 8, 8, photo, RefineSpec(radius = 0.1, eps = 1e-4, grid = 0))
        fun steepest(map: FloatArray): Pair<Int, Float> =
            (0 until w - 1).map { x -> Pair(x, map[40 * w + x + 1] - map[40 * w + x]) }.maxByOrNull { it.second }!!
        // Measured with Python's refine_map on the same input: bilinear steps by 0.053 per column,
        // the guided map jumps by 0.464 between columns 59 and 60.
        assertTrue("bilinear spreads the edge over its cells", steepest(bilinear).second < 0.06f)
        assertEquals(59, steepest(guided).first)
        assertTrue("the guided map steps at the photo's edge", steepest(guided).second > 0.4f)
        assertTrue(guided[40 * w + 59] < 0.5f && guided[40 * w + 60] > 0.5f)
        // And it leaves the map's levels where the photo is flat.
        assertTrue(abs(guided[40 * w + 5] - 0.1f) < 0.02f && abs(guided[40 * w + 115] - 0.9f) < 0.02f)
    }

    @Test
    fun refineSettingsAreReadFromTheMetadataWithPythonsDefaultsAndChecks() {
        fun spec(block: String?) = ModelSpec.fromJson(TestDocs.metadata(refine = block)).refine
        assertEquals(RefineSpec.NONE, spec(null))                       // exported before refinement
        assertEquals(RefineSpec(), spec("""{"method": "guided"}"""))     // absent fields: the defaults
        assertEquals(
            RefineSpec("guided", 0.06, 0.01, 128, 0.001, 480, "rgb"),
            spec("""{"method": "guided", "radius": 0.06, "eps": 0.01, "grid": 128, "clip": 0.001, "max_side": 480, "guide": "rgb"}"""),
        )
        assertEquals(RefineSpec(radius = 1.0, grid = 0), spec("""{"radius": 1, "grid": 0}"""))   // an integer is a number
        fun refused(block: String, vararg words: String) {
            try {
                val got = spec(block)
                fail("accepted refine $block as $got")
            } catch (e: ModelContractException) {
                for (word in words) assertTrue("'${e.message}' does not name '$word'", e.message!!.contains(word))
            }
        }
        refused("""{"method": "bicubic"}""", "preprocess.refine.method", "bicubic")
        refused("""{"guide": "lab"}""", "preprocess.refine.guide")
        refused("""{"radius": 0}""", "preprocess.refine.radius")
        refused("""{"radius": 1.5}""", "preprocess.refine.radius")
        refused("""{"radius": "0.04"}""", "preprocess.refine.radius")
        refused("""{"eps": 0.0}""", "preprocess.refine.eps")
        refused("""{"eps": 11}""", "preprocess.refine.eps")
        refused("""{"clip": 0.5}""", "preprocess.refine.clip")
        refused("""{"grid": 4}""", "preprocess.refine.grid", "0 or 8..65536")
        refused("""{"grid": 256.0}""", "preprocess.refine.grid")          // Python's RefineSpec wants an int
        refused("""{"grid": true}""", "preprocess.refine.grid")
        refused("""{"max_side": 8}""", "preprocess.refine.max_side")
        refused("""{"max_side": -1}""", "preprocess.refine.max_side")
        refused("""{"method": "guided", "sigma": 2}""", "unknown fields", "sigma")
        refused("null", "preprocess.refine", "not a JSON object")
        refused("[1]", "preprocess.refine", "not a JSON object")
    }
}
