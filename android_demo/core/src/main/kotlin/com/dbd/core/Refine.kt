package com.dbd.core

import kotlin.math.exp
import kotlin.math.floor
import kotlin.math.ln

/**
 * The contract's last step, as the model's metadata gives it (`preprocess.refine`): how the model's
 * low-resolution P(blur) becomes a map at the photo's resolution. The Python `dbd.runtime.refine.RefineSpec`,
 * with the same defaults (fields absent from the block take them; tests/test_android.py compares
 * them with Python's) and the same checks.
 *
 * A file whose `preprocess` has no `refine` block was exported before refinement: [NONE], the plain
 * bilinear resize.
 */
data class RefineSpec(
    /** "guided" (fast colour guided filter on the logit) or "none" (bilinear). */
    val method: String = "guided",
    /** Window radius as a fraction of the shorter side of the coefficient grid. */
    val radius: Double = 0.025,
    /** Regularisation of the guide's colour covariance (RGB in [0, 1]). */
    val eps: Double = 3e-4,
    /** Shorter side of the grid the coefficients are computed on (0: the working size itself). */
    val grid: Int = 128,
    /** P(blur) is clipped to [clip, 1 - clip] before the logit. */
    val clip: Double = 1e-4,
    /** Refine at most at this longer side, then resize to the photo (0: at the photo's size). */
    val maxSide: Int = 0,
    /** The guide's colour space. */
    val guide: String = "rgb",
) {
    init {
        check("method", method, method in METHODS, "one of ${METHODS.joinToString(", ")}")
        check("guide", guide, guide in GUIDES, "one of ${GUIDES.joinToString(", ")}")
        check("radius", radius, radius > 0.0 && radius <= 1.0, "a fraction of the map's shorter side in (0, 1]")
        check("eps", eps, eps > 0.0 && eps <= 10.0, "a positive number up to 10")
        check("clip", clip, clip > 0.0 && clip < 0.5, "a probability in (0, 0.5)")
        check("grid", grid, grid == 0 || grid in 8..65536, "0 or 8..65536")
        check("max_side", maxSide, maxSide == 0 || maxSide in 16..65536, "0 or 16..65536")
    }

    val enabled: Boolean get() = method != "none"

    fun describe(): String =
        if (!enabled) "bilinear (no refinement)"
        else "guided filter on the logit (radius $radius of the short side, eps $eps, grid ${if (grid == 0) "full" else grid}, guide $guide)"

    companion object {
        val METHODS = listOf("guided", "none")
        val GUIDES = listOf("rgb")

        /** Plain bilinear resize: the contract of files exported before refinement. */
        val NONE = RefineSpec(method = "none")

        private const val WHERE = "preprocess.refine"

        private fun check(key: String, value: Any, ok: Boolean, expected: String) {
            if (!ok) throw ModelContractException("$WHERE.$key = ${repr(value)} is not valid; expected $expected")
        }

        private fun repr(value: Any?): String = if (value is String) "'$value'" else value.toString()

        private val KEYS = listOf("method", "radius", "eps", "grid", "clip", "max_side", "guide")

        /**
         * The `refine` block of the metadata's `preprocess` object; null (no block: a file exported
         * before refinement) is [NONE]. Types are checked as Python's RefineSpec does: numbers for
         * radius, eps and clip, integers (not 256.0) for grid and max_side, strings for the rest.
         */
        fun fromJson(block: JsonObject?): RefineSpec {
            if (block == null) return NONE
            val unknown = block.keys.filter { it !in KEYS }.sorted()
            if (unknown.isNotEmpty()) {
                throw ModelContractException("$WHERE has unknown fields $unknown; it was written by a newer dbd (update the app)")
            }
            fun real(key: String, default: Double, expected: String): Double {
                if (!block.has(key)) return default
                val v = block.value(key)
                if (v !is Long && v !is Double) throw ModelContractException("${block.pathOf(key)} = ${repr(v)} is not valid; expected $expected")
                return (v as Number).toDouble()
            }
            fun whole(key: String, default: Int, expected: String): Int {
                if (!block.has(key)) return default
                val v = block.value(key)
                if (v !is Long || v < Int.MIN_VALUE || v > Int.MAX_VALUE) {
                    throw ModelContractException("${block.pathOf(key)} = ${repr(v)} is not valid; expected $expected")
                }
                return v.toInt()
            }
            fun text(key: String, default: String, expected: String): String {
                if (!block.has(key)) return default
                return block.value(key) as? String
                    ?: throw ModelContractException("${block.pathOf(key)} = ${repr(block.value(key))} is not valid; expected $expected")
            }
            val d = RefineSpec()
            return RefineSpec(
                method = text("method", d.method, "one of ${METHODS.joinToString(", ")}"),
                radius = real("radius", d.radius, "a fraction of the map's shorter side in (0, 1]"),
                eps = real("eps", d.eps, "a positive number up to 10"),
                grid = whole("grid", d.grid, "0 or 8..65536"),
                clip = real("clip", d.clip, "a probability in (0, 0.5)"),
                maxSide = whole("max_side", d.maxSide, "0 or 16..65536"),
                guide = text("guide", d.guide, "one of ${GUIDES.joinToString(", ")}"),
            )
        }
    }
}

/**
 * The model's P(blur) map -> P(blur) at the photo's resolution, edge-aligned to the photo by a fast
 * colour guided filter on the logit: the Python `dbd.runtime.refine.refine_map`, step by step
 * (its module docstring is the specification; He, Sun & Tang, TPAMI 2013; He & Sun 2015):
 *
 *  0. work = the photo's size, or (h * max_side / longest, w * max_side / longest) in integers;
 *  1. the coefficient grid: work itself, or the short side scaled to `grid` (integer rounding);
 *  2. guide I = the photo / 255 resized bilinearly to the grid; p = logit(clip(P resized to the grid));
 *  3. r = max(1, floor(radius * min(grid) + 0.5)); window means over the (2r+1)² window clipped to
 *     the grid (running sums: O(pixels) whatever the radius);
 *  4. per grid pixel, in double: Σ + eps·1, a = Σ⁻¹ cov(I, p) by the 3x3 adjugate, b; then A, B = their means;
 *  5. at the working size, in float: q = bilinear(A) · I + bilinear(B), P = 1 / (1 + exp(-q));
 *  6. a bilinear resize to the photo when a working size applied, and a clip to [0, 1].
 *
 * Every resize is [Bilinear] (the contract's kernel). Agreement with Python on real photos (tested
 * by tests/test_android.py): |Δ| <= 1e-4 on P, the same decisions at 0.5.
 */
object Refine {
    /** Step 0: (height, width) the map is refined at. */
    fun workingSize(height: Int, width: Int, maxSide: Int): IntArray {
        val longest = maxOf(height, width)
        if (maxSide == 0 || longest <= maxSide) return intArrayOf(height, width)
        // Long arithmetic: h * max_side overflows an Int for no real photo, but costs nothing.
        return intArrayOf(
            maxOf(1, (height.toLong() * maxSide / longest).toInt()),
            maxOf(1, (width.toLong() * maxSide / longest).toInt()),
        )
    }

    /** Step 1: (height, width) of the coefficient grid for a map of [height] x [width]. */
    fun gridSize(height: Int, width: Int, grid: Int): IntArray {
        val short = minOf(height, width)
        if (grid == 0 || grid >= short) return intArrayOf(height, width)
        return intArrayOf(
            maxOf(1, ((height.toLong() * grid + short / 2) / short).toInt()),
            maxOf(1, ((width.toLong() * grid + short / 2) / short).toInt()),
        )
    }

    /** Step 3: the window radius on a grid whose shorter side is [shortSide]. */
    fun radius(radius: Double, shortSide: Int): Int = maxOf(1, floor(radius * shortSide + 0.5).toInt())

    /**
     * Mean of [x] (interleaved [channels] per pixel, [width] x [height], row-major) over the
     * (2r+1)² window clipped to the image: sum over the window / number of pixels in it. Separable
     * running sums, horizontal then vertical, in double: O(pixels), whatever [r].
     */
    fun boxMean(x: DoubleArray, width: Int, height: Int, channels: Int, r: Int): DoubleArray {
        require(x.size == width * height * channels) { "array of ${x.size} values is not $width x $height x $channels" }
        require(r >= 0) { "radius must be >= 0, got $r" }
        val rowLen = width * channels
        // Horizontal window sums, row by row.
        val horizontal = DoubleArray(x.size)
        val acc = DoubleArray(channels)
        for (y in 0 until height) {
            val base = y * rowLen
            acc.fill(0.0)
            for (i in 0..minOf(r, width - 1)) for (c in 0 until channels) acc[c] += x[base + i * channels + c]
            for (i in 0 until width) {
                val o = base + i * channels
                for (c in 0 until channels) horizontal[o + c] = acc[c]
                val enter = i + r + 1
                val leave = i - r
                if (enter < width) for (c in 0 until channels) acc[c] += x[base + enter * channels + c]
                if (leave >= 0) for (c in 0 until channels) acc[c] -= x[base + leave * channels + c]
            }
        }
        // Vertical window sums of those, a whole row at a time, divided by the window's pixel count.
        val out = DoubleArray(x.size)
        val column = DoubleArray(rowLen)
        for (y in 0..minOf(r, height - 1)) {
            val base = y * rowLen
            for (i in 0 until rowLen) column[i] += horizontal[base + i]
        }
        val countX = IntArray(width) { minOf(it + r, width - 1) - maxOf(it - r, 0) + 1 }
        for (y in 0 until height) {
            val countY = minOf(y + r, height - 1) - maxOf(y - r, 0) + 1
            val base = y * rowLen
            for (i in 0 until width) {
                val count = (countY * countX[i]).toDouble()
                val o = i * channels
                for (c in 0 until channels) out[base + o + c] = column[o + c] / count
            }
            val enter = y + r + 1
            val leave = y - r
            if (enter < height) {
                val e = enter * rowLen
                for (i in 0 until rowLen) column[i] += horizontal[e + i]
            }
            if (leave >= 0) {
                val l = leave * rowLen
                for (i in 0 until rowLen) column[i] -= horizontal[l + i]
            }
        }
        return out
    }

    /**
     * Step 4: guide (RGB interleaved, [width] x [height]) and input p -> the averaged linear
     * coefficients [A_r, A_g, A_b, B] per pixel (interleaved, double), the Python
     * `guided_coefficients` term for term.
     */
    fun guidedCoefficients(guide: FloatArray, p: DoubleArray, width: Int, height: Int, r: Int, eps: Double): DoubleArray {
        val n = width * height
        require(guide.size == 3 * n && p.size == n) { "guide and input do not match a $width x $height grid" }
        // One box pass over every product the filter needs: I (3), p, I*p (3), I_i*I_j (6).
        val k = 13
        val products = DoubleArray(n * k)
        for (i in 0 until n) {
            val g0 = guide[3 * i].toDouble()
            val g1 = guide[3 * i + 1].toDouble()
            val g2 = guide[3 * i + 2].toDouble()
            val v = p[i]
            val o = i * k
            products[o] = g0; products[o + 1] = g1; products[o + 2] = g2; products[o + 3] = v
            products[o + 4] = g0 * v; products[o + 5] = g1 * v; products[o + 6] = g2 * v
            products[o + 7] = g0 * g0; products[o + 8] = g0 * g1; products[o + 9] = g0 * g2
            products[o + 10] = g1 * g1; products[o + 11] = g1 * g2; products[o + 12] = g2 * g2
        }
        val means = boxMean(products, width, height, k, r)
        val ab = DoubleArray(n * 4)
        for (i in 0 until n) {
            val o = i * k
            val mi0 = means[o]; val mi1 = means[o + 1]; val mi2 = means[o + 2]
            val mp = means[o + 3]
            val cov0 = means[o + 4] - mi0 * mp
            val cov1 = means[o + 5] - mi1 * mp
            val cov2 = means[o + 6] - mi2 * mp
            val a00 = (means[o + 7] - mi0 * mi0) + eps
            val a01 = means[o + 8] - mi0 * mi1
            val a02 = means[o + 9] - mi0 * mi2
            val a11 = (means[o + 10] - mi1 * mi1) + eps
            val a12 = means[o + 11] - mi1 * mi2
            val a22 = (means[o + 12] - mi2 * mi2) + eps
            // Σ⁻¹ of the symmetric 3x3 by its adjugate (the same closed form in every runtime).
            val c00 = a11 * a22 - a12 * a12
            val c01 = a02 * a12 - a01 * a22
            val c02 = a01 * a12 - a02 * a11
            val c11 = a00 * a22 - a02 * a02
            val c12 = a01 * a02 - a00 * a12
            val c22 = a00 * a11 - a01 * a01
            val det = a00 * c00 + a01 * c01 + a02 * c02
            val ar = (c00 * cov0 + c01 * cov1 + c02 * cov2) / det
            val ag = (c01 * cov0 + c11 * cov1 + c12 * cov2) / det
            val abl = (c02 * cov0 + c12 * cov1 + c22 * cov2) / det
            val q = i * 4
            ab[q] = ar; ab[q + 1] = ag; ab[q + 2] = abl
            ab[q + 3] = mp - ar * mi0 - ag * mi1 - abl * mi2
        }
        return boxMean(ab, width, height, 4, r)
    }

    /** One row of the photo as RGB floats in [0, 1] (pixel / 255 in float, as numpy does it). */
    private fun unitRow(image: ArgbImage, y: Int, row: FloatArray) {
        val w = image.width
        val base = y * w
        for (x in 0 until w) {
            val p = image.pixels[base + x]
            row[3 * x] = ArgbImage.red(p).toFloat() / 255f
            row[3 * x + 1] = ArgbImage.green(p).toFloat() / 255f
            row[3 * x + 2] = ArgbImage.blue(p).toFloat() / 255f
        }
    }

    private fun clip01(values: FloatArray): FloatArray {
        for (i in values.indices) values[i] = values[i].coerceIn(0f, 1f)
        return values
    }

    /**
     * P(blur) at the model's size ([probWidth] x [probHeight], row-major) and the photo it was made
     * from -> P(blur) at [outWidth] x [outHeight] (default: the photo's size), refined as [spec] says.
     */
    fun refineMap(
        prob: FloatArray, probWidth: Int, probHeight: Int, image: ArgbImage, spec: RefineSpec,
        outWidth: Int = image.width, outHeight: Int = image.height,
    ): FloatArray {
        require(prob.size == probWidth * probHeight) { "map of ${prob.size} values is not $probWidth x $probHeight" }
        require(outWidth > 0 && outHeight > 0) { "output size must be positive, got ${outWidth}x$outHeight" }
        if (!spec.enabled) return clip01(Bilinear.resize(prob, probWidth, probHeight, 1, outWidth, outHeight))

        // 0. The working size, and the photo as floats there (the photo's own pixels when it is that size).
        val (wh, ww) = workingSize(outHeight, outWidth, spec.maxSide).let { Pair(it[0], it[1]) }
        val atPhoto = wh == image.height && ww == image.width
        val unitWork: FloatArray? =
            if (atPhoto) null else Bilinear.resizeRows(image.width, image.height, 3, ww, wh) { y, row -> unitRow(image, y, row) }

        // 1-2. The grid, the guide and the logit on it.
        val (gh, gw) = gridSize(wh, ww, spec.grid).let { Pair(it[0], it[1]) }
        val small = if (unitWork != null) {
            Bilinear.resize(unitWork, ww, wh, 3, gw, gh)
        } else {
            Bilinear.resizeRows(image.width, image.height, 3, gw, gh) { y, row -> unitRow(image, y, row) }
        }
        val pGrid = Bilinear.resize(prob, probWidth, probHeight, 1, gw, gh)
        val lo = spec.clip
        val hi = 1.0 - spec.clip
        val logit = DoubleArray(pGrid.size) {
            val p = pGrid[it].toDouble().coerceIn(lo, hi)
            ln(p / (1.0 - p))
        }

        // 3-4. The coefficients, in double; then float, as Python's astype(float32).
        val r = radius(spec.radius, minOf(gh, gw))
        val coefDouble = guidedCoefficients(small, logit, gw, gh, r, spec.eps)
        val coef = FloatArray(coefDouble.size) { coefDouble[it].toFloat() }

        // 5. Applied at the working size, one row at a time: q = A · I + B, P = sigmoid(q), in float.
        val map = FloatArray(wh * ww)
        val guideRow = FloatArray(ww * 3)
        val coefRowLen = gw * 4
        Bilinear.streamRows(gw, gh, 4, ww, wh, { y, row -> System.arraycopy(coef, y * coefRowLen, row, 0, coefRowLen) }) { y, ab ->
            val unit: FloatArray
            val off: Int
            if (unitWork != null) {
                unit = unitWork; off = y * ww * 3
            } else {
                unitRow(image, y, guideRow); unit = guideRow; off = 0
            }
            val base = y * ww
            for (x in 0 until ww) {
                val a = 4 * x
                val u = off + 3 * x
                val q = (ab[a] * unit[u] + ab[a + 1] * unit[u + 1]) + ab[a + 2] * unit[u + 2] + ab[a + 3]
                map[base + x] = 1f / (1f + exp(-q.toDouble()).toFloat())
            }
        }

        // 6. Back to the output size.
        if (wh == outHeight && ww == outWidth) return clip01(map)
        return clip01(Bilinear.resize(map, ww, wh, 1, outWidth, outHeight))
    }
}
