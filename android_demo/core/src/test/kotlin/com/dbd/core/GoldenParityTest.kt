package com.dbd.core

import org.junit.Assert.fail
import org.junit.Assume.assumeTrue
import org.junit.Test
import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder
import kotlin.math.abs

/**
 * Cross-language parity: golden vectors written by the Python runtime (tests/test_android.py) from
 * real photos and a real exported .tflite, reproduced here by the Kotlin core.
 *
 * System properties: `dbd.golden` (folder with manifest.json), `dbd.out` (where the Kotlin results
 * and parity figures are written for the Python side), `dbd.requireGolden=true` (fail instead of
 * skipping when no golden folder is given; CI sets it).
 *
 * What must hold (and why a tolerance where there is one):
 *  - the model's metadata is read from the flatbuffer and agrees with the graph (exact);
 *  - cv2.COLORMAP_JET table: exact;
 *  - resized RGB floats: |Δ| <= 1e-4 (bit-exact against OpenCV+IPP on x86; OpenCV's own loop,
 *    used where IPP is absent, rounds its weights through float32 and differs by up to ~2e-5);
 *  - input tensor: at most one quantisation step, on at most 1 % of the values (a float difference
 *    that small flips round-half-even only for values within ~0.005 of a .5 boundary);
 *  - P(blur) decoded from the same output tensor: exact (plain float32 ops);
 *  - P(blur) resized to the photo: |Δ| <= 1e-5;
 *  - tint and heat overlays drawn from Python's map: exact; from Kotlin's own map: heat within one
 *    JET step (|Δ| <= 3 per channel), tint only where P is within 1e-5 of the threshold;
 *  - the refined map ([Refine], Python's `refine_map`) from the same model-size map, photo and
 *    settings: |Δ| <= 1e-4 on P and >= 99.9 % of the decisions at 0.5 identical (the coefficients
 *    are double in both, but the resizes, the apply and exp round in float, and numpy's float32 exp
 *    is not Java's; measured differences are a few 1e-7).
 */
class GoldenParityTest {
    private val goldenDir: String? = System.getProperty("dbd.golden")
    private val outDir: File? = System.getProperty("dbd.out")?.let { File(it).apply { mkdirs() } }

    private fun file(name: String) = File(goldenDir!!, name)
    private fun bytes(name: String): ByteArray = file(name).readBytes()
    private fun floats(name: String): FloatArray {
        val b = ByteBuffer.wrap(bytes(name)).order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer()
        return FloatArray(b.remaining()).also { b.get(it) }
    }
    private fun ints(name: String): IntArray {
        val b = ByteBuffer.wrap(bytes(name)).order(ByteOrder.LITTLE_ENDIAN).asIntBuffer()
        return IntArray(b.remaining()).also { b.get(it) }
    }
    private fun floatBytes(values: FloatArray): ByteArray {
        val buffer = ByteBuffer.allocate(values.size * 4).order(ByteOrder.LITTLE_ENDIAN)
        buffer.asFloatBuffer().put(values)
        return buffer.array()
    }
    private fun rgbBytes(argb: IntArray): ByteArray {
        val out = ByteArray(argb.size * 3)
        for (i in argb.indices) {
            out[3 * i] = ArgbImage.red(argb[i]).toByte()
            out[3 * i + 1] = ArgbImage.green(argb[i]).toByte()
            out[3 * i + 2] = ArgbImage.blue(argb[i]).toByte()
        }
        return out
    }
    private fun write(name: String, data: ByteArray) { outDir?.let { File(it, name).writeBytes(data) } }

    private class FloatDiff(val maxAbs: Double, val differing: Int, val first: Int)

    private fun diff(a: FloatArray, b: FloatArray): FloatDiff {
        var maxAbs = 0.0
        var differing = 0
        var first = -1
        for (i in a.indices) {
            if (java.lang.Float.floatToIntBits(a[i]) != java.lang.Float.floatToIntBits(b[i])) {
                differing++
                if (first < 0) first = i
                maxAbs = maxOf(maxAbs, abs(a[i].toDouble() - b[i].toDouble()))
            }
        }
        return FloatDiff(maxAbs, differing, first)
    }

    @Test
    fun kotlinCoreReproducesThePythonRuntimeOnRealPhotos() {
        if (goldenDir == null) {
            if (System.getProperty("dbd.requireGolden") == "true") fail("dbd.requireGolden is set but no dbd.golden folder was given")
            assumeTrue("no golden vectors (run through tests/test_android.py)", false)
        }
        val manifest = JsonObject.parse(file("manifest.json").readText(), "manifest.json")
        val failures = ArrayList<String>()
        val report = StringBuilder("{\"cases\": [")

        // The model: metadata read from the flatbuffer and checked against the graph.
        val spec = ModelSpec.fromTflite(File(manifest.string("model")).readBytes())
        val pre = Preprocessor(spec.input)
        val post = Postprocessor(spec.output)

        // JET, entry by entry.
        val jet = bytes(manifest.string("jet"))
        val jetBad = (0 until 256).filter { i ->
            val c = Overlay.JET[i]
            ArgbImage.red(c) != (jet[3 * i].toInt() and 0xFF) || ArgbImage.green(c) != (jet[3 * i + 1].toInt() and 0xFF) ||
                ArgbImage.blue(c) != (jet[3 * i + 2].toInt() and 0xFF)
        }
        if (jetBad.isNotEmpty()) failures += "JET colour map differs from cv2.COLORMAP_JET at levels ${jetBad.take(5)}"

        @Suppress("UNCHECKED_CAST")
        val cases = (Json.parse(file("manifest.json").readText()) as Map<String, Any?>)["cases"] as List<Map<String, Any?>>
        for ((index, raw) in cases.withIndex()) {
            val case = JsonObject(raw, "cases[$index]")
            val name = case.string("name")
            val w = case.long("width").toInt()
            val h = case.long("height").toInt()
            val threshold = case.double("threshold").toFloat()
            val image = ArgbImage(w, h, ints(case.string("argb")))
            val figures = LinkedHashMap<String, Any>()
            figures["name"] = name
            figures["size"] = "${w}x$h"

            if (case.has("resized")) {
                val resized = pre.resize(image)
                val d = diff(resized, floats(case.string("resized")))
                figures["resized_differing"] = d.differing
                figures["resized_max_abs"] = d.maxAbs
                if (d.maxAbs > 1e-4) failures += "$name: resized RGB differs from cv2 by ${d.maxAbs} (> 1e-4) at ${d.differing} values"

                val tensor = pre.encode(resized)
                val mine = tensor.rawBytes()
                val theirs = bytes(case.string("input"))
                write("$name.kotlin_input.bin", mine)
                if (mine.size != theirs.size) {
                    failures += "$name: input tensor has ${mine.size} bytes, Python's has ${theirs.size} (model input ${spec.input.shape})"
                } else if (spec.input.dtype.isQuantized) {
                    val unsigned = spec.input.dtype == ElementType.UINT8
                    fun v(b: Byte) = if (unsigned) b.toInt() and 0xFF else b.toInt()
                    var differing = 0
                    var maxStep = 0
                    var first = -1
                    for (i in mine.indices) {
                        val step = abs(v(mine[i]) - v(theirs[i]))
                        if (step != 0) { differing++; if (first < 0) first = i }
                        maxStep = maxOf(maxStep, step)
                    }
                    figures["input_differing"] = differing
                    figures["input_max_step"] = maxStep
                    figures["input_values"] = mine.size
                    if (maxStep > 1 || differing > mine.size / 100) {
                        failures += "$name: input tensor differs from Python's in $differing of ${mine.size} values " +
                            "(max $maxStep quantisation steps; first at index $first: kotlin ${v(mine[first])}, python ${v(theirs[first])})"
                    }
                } else {
                    val d2 = diff(tensor.floats!!, floats(case.string("input")))
                    figures["input_differing"] = d2.differing
                    figures["input_max_abs"] = d2.maxAbs
                    if (d2.maxAbs > 1e-4 * spec.input.pixelScale) {
                        failures += "$name: input tensor differs from Python's by ${d2.maxAbs} at ${d2.differing} values"
                    }
                }
            }

            // Output tensor -> P(blur) at the model size: exact.
            val prob = post.probabilities(bytes(case.string("output")))
            val dProb = diff(prob, floats(case.string("prob")))
            figures["prob_differing"] = dProb.differing
            if (dProb.differing != 0) failures += "$name: decoded P(blur) differs from Python's at ${dProb.differing} values (max ${dProb.maxAbs})"

            // Back to the photo's size.
            val photoPy = floats(case.string("photo"))
            val photo = post.toImageSize(prob, w, h)
            write("$name.kotlin_photo.f32", floatBytes(photo))
            val dPhoto = diff(photo, photoPy)
            figures["photo_differing"] = dPhoto.differing
            figures["photo_max_abs"] = dPhoto.maxAbs
            if (dPhoto.maxAbs > 1e-5) failures += "$name: P(blur) at the photo size differs by ${dPhoto.maxAbs} (> 1e-5) at ${dPhoto.differing} pixels"

            // Overlays: from Python's map (the colour logic alone) exact; from Kotlin's own map within tolerance.
            val heatPy = bytes(case.string("heat"))
            val tintPy = bytes(case.string("tint"))
            for ((style, expected) in listOf(Pair(OverlayStyle.HEAT, heatPy), Pair(OverlayStyle.TINT, tintPy))) {
                val fromPython = rgbBytes(Overlay.draw(style, image, photoPy, threshold))
                val bad = expected.indices.count { expected[it] != fromPython[it] }
                figures["${style.name.lowercase()}_from_python_map_differing"] = bad
                if (bad != 0) {
                    val i = expected.indices.first { expected[it] != fromPython[it] }
                    failures += "$name: ${style.name.lowercase()} overlay differs from Python's overlay() at $bad channel values " +
                        "(first at pixel ${i / 3}: kotlin ${fromPython[i].toInt() and 0xFF}, python ${expected[i].toInt() and 0xFF})"
                }
                val own = rgbBytes(Overlay.draw(style, image, photo, threshold))
                write("$name.kotlin_${style.name.lowercase()}.rgb", own)
                var ownBad = 0
                for (i in expected.indices) {
                    val delta = abs((own[i].toInt() and 0xFF) - (expected[i].toInt() and 0xFF))
                    if (delta == 0) continue
                    ownBad++
                    val pixel = i / 3
                    val explained = if (style == OverlayStyle.HEAT) delta <= 3 else abs(photoPy[pixel] - threshold) <= 1e-5f
                    if (!explained) {
                        failures += "$name: ${style.name.lowercase()} overlay from Kotlin's map differs at pixel $pixel by $delta " +
                            "(P = ${photo[pixel]} vs Python ${photoPy[pixel]}, threshold $threshold)"
                        break
                    }
                }
                figures["${style.name.lowercase()}_differing"] = ownBad
            }
            report.append(if (index == 0) "\n  " else ",\n  ").append(figures.entries.joinToString(", ", "{", "}") { (k, v) ->
                "\"$k\": " + if (v is String) "\"$v\"" else v.toString()
            })
        }
        report.append("\n], \"model\": \"").append(spec.toString().replace("\"", "'")).append("\"}\n")
        write("kotlin_parity.json", report.toString().toByteArray())
        if (failures.isNotEmpty()) fail("Kotlin core drifted from the Python runtime:\n  " + failures.joinToString("\n  "))
    }

    @Test
    fun kotlinRefinementReproducesPythonRefineMapOnRealPhotos() {
        if (goldenDir == null) {
            if (System.getProperty("dbd.requireGolden") == "true") fail("dbd.requireGolden is set but no dbd.golden folder was given")
            assumeTrue("no golden vectors (run through tests/test_android.py)", false)
        }
        val manifest = JsonObject.parse(file("manifest.json").readText(), "manifest.json")
        val model = ModelSpec.fromTflite(File(manifest.string("model")).readBytes())
        val post = Postprocessor(model)
        @Suppress("UNCHECKED_CAST")
        val cases = (Json.parse(file("manifest.json").readText()) as Map<String, Any?>)["refine_cases"] as List<Map<String, Any?>>?
        if (cases.isNullOrEmpty()) fail("manifest.json has no refine_cases")
        val failures = ArrayList<String>()
        val rows = ArrayList<String>()
        for ((index, raw) in cases!!.withIndex()) {
            val case = JsonObject(raw, "refine_cases[$index]")
            val name = case.string("name")
            val image = ArgbImage(case.long("width").toInt(), case.long("height").toInt(), ints(case.string("argb")))
            val prob = floats(case.string("prob"))
            val pw = case.long("prob_width").toInt()
            val ph = case.long("prob_height").toInt()
            val fromModel = case.has("from_model") && case.value("from_model") == true
            val settings = RefineSpec.fromJson(case.obj("refine"))
            val start = System.nanoTime()
            // The app's path (settings from the model's own metadata) or the settings the case names.
            val mine = if (fromModel) {
                check(pw == model.output.width && ph == model.output.height) { "$name: the model's map is ${model.output.width}x${model.output.height}" }
                post.toImage(prob, image)
            } else {
                Refine.refineMap(prob, pw, ph, image, settings)
            }
            val ms = (System.nanoTime() - start) / 1e6
            write("$name.kotlin_refined.f32", floatBytes(mine))
            val theirs = floats(case.string("refined"))
            if (mine.size != theirs.size) {
                failures += "$name: refined map has ${mine.size} values, Python's ${theirs.size}"
                continue
            }
            val d = diff(mine, theirs)
            val decisions = mine.indices.count { (mine[it] >= 0.5f) != (theirs[it] >= 0.5f) }
            val refine = if (fromModel) model.refine else settings
            rows += "{\"name\": \"$name\", \"size\": \"${image.width}x${image.height}\", \"map\": \"${pw}x$ph\", " +
                "\"refine\": \"${refine.describe()}${if (refine.maxSide > 0) ", max side ${refine.maxSide}" else ""}\", " +
                "\"via\": \"${if (fromModel) "metadata" else "case"}\", \"max_abs\": ${d.maxAbs}, \"differing\": ${d.differing}, " +
                "\"decisions_differing\": $decisions, \"pixels\": ${mine.size}, \"ms\": $ms}"
            if (d.maxAbs > 1e-4 || decisions > mine.size / 1000) {
                failures += "$name: refined map differs from Python's refine_map by ${d.maxAbs} (tolerance 1e-4) at ${d.differing} " +
                    "pixels, $decisions of ${mine.size} decisions at 0.5 differ (${refine.describe()})"
            }
        }
        val d = RefineSpec()   // the defaults a block without some fields gets: compared with Python's by the test
        val defaults = "{\"method\": \"${d.method}\", \"radius\": ${d.radius}, \"eps\": ${d.eps}, \"grid\": ${d.grid}, " +
            "\"clip\": ${d.clip}, \"max_side\": ${d.maxSide}, \"guide\": \"${d.guide}\"}"
        write("kotlin_refine.json", rows.joinToString(",\n  ", "{\"defaults\": $defaults, \"cases\": [\n  ", "\n]}\n").toByteArray())
        if (failures.isNotEmpty()) fail("Kotlin refinement drifted from the Python runtime:\n  " + failures.joinToString("\n  "))
    }
}
