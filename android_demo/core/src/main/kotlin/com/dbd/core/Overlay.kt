package com.dbd.core

/** How the blur map is drawn over the photo. */
enum class OverlayStyle { TINT, HEAT }

/**
 * The overlays of `dbd-predict` (`dbd.runtime.overlay.overlay`), pixel for pixel:
 *
 *  - tint: pixels with P(blur) >= threshold are mixed with red (255, 40, 40) at alpha 0.45,
 *    round_half_even(pixel * (1 - alpha) + red * alpha) in float32;
 *  - heat: the map as 8 bits, round_half_even(P * 255), through OpenCV's COLORMAP_JET, averaged
 *    with the photo like cv2.addWeighted(photo, 0.5, heat, 0.5, 0) (ties to even).
 *
 * Inputs are the photo as ARGB and P(blur) at the photo's size; outputs are opaque ARGB.
 */
object Overlay {
    val TINT_RGB = intArrayOf(255, 40, 40)
    const val TINT_ALPHA = 0.45f

    /**
     * cv2.COLORMAP_JET as RGB triplets for levels 0..255, exactly the table OpenCV's applyColorMap
     * uses (it is not a closed formula: level 159, for one, has blue 1, not 2). The Python tests
     * compare it with cv2 entry by entry.
     */
    val JET: IntArray = run {
        val hex = JET_HEX
        IntArray(256) { i ->
            val r = hex.substring(6 * i, 6 * i + 2).toInt(16)
            val g = hex.substring(6 * i + 2, 6 * i + 4).toInt(16)
            val b = hex.substring(6 * i + 4, 6 * i + 6).toInt(16)
            ArgbImage.opaque(r, g, b)
        }
    }

    /** The 8-bit level of P (the map as a grey PNG, and the heat map's index). */
    fun level(p: Float): Int = FloatMath.rint(p * 255f).toInt().coerceIn(0, 255)

    fun tint(image: ArgbImage, prob: FloatArray, threshold: Float, out: IntArray = IntArray(image.pixels.size)): IntArray {
        require(prob.size == image.pixels.size) { "map of ${prob.size} values for a ${image.width}x${image.height} image" }
        val blend = FloatArray(3) { TINT_RGB[it] * TINT_ALPHA }          // float32(TINT) * float32(alpha)
        val keep = 1f - TINT_ALPHA
        for (i in prob.indices) {
            val p = image.pixels[i]
            out[i] = if (prob[i] >= threshold) {
                ArgbImage.opaque(
                    FloatMath.rint(ArgbImage.red(p) * keep + blend[0]).toInt(),
                    FloatMath.rint(ArgbImage.green(p) * keep + blend[1]).toInt(),
                    FloatMath.rint(ArgbImage.blue(p) * keep + blend[2]).toInt(),
                )
            } else {
                p or (0xFF shl 24)
            }
        }
        return out
    }

    fun heat(image: ArgbImage, prob: FloatArray, out: IntArray = IntArray(image.pixels.size)): IntArray {
        require(prob.size == image.pixels.size) { "map of ${prob.size} values for a ${image.width}x${image.height} image" }
        for (i in prob.indices) {
            val p = image.pixels[i]
            val c = JET[level(prob[i])]
            out[i] = ArgbImage.opaque(
                FloatMath.halfEvenMean(ArgbImage.red(p), ArgbImage.red(c)),
                FloatMath.halfEvenMean(ArgbImage.green(p), ArgbImage.green(c)),
                FloatMath.halfEvenMean(ArgbImage.blue(p), ArgbImage.blue(c)),
            )
        }
        return out
    }

    fun draw(style: OverlayStyle, image: ArgbImage, prob: FloatArray, threshold: Float, out: IntArray = IntArray(image.pixels.size)): IntArray =
        when (style) {
            OverlayStyle.TINT -> tint(image, prob, threshold, out)
            OverlayStyle.HEAT -> heat(image, prob, out)
        }

    private const val JET_HEX =
        "00008000008400008800008c00009000009400009800009c0000a00000a40000a80000ac0000b00000b40000b80000bc" +
        "0000c00000c40000c80000cc0000d00000d40000d80000dc0000e00000e40000e80000ec0000f00000f40000f80000fc" +
        "0000ff0004ff0008ff000cff0010ff0014ff0018ff001cff0020ff0024ff0028ff002cff0030ff0034ff0038ff003cff" +
        "0040ff0044ff0048ff004cff0050ff0054ff0058ff005cff0060ff0064ff0068ff006cff0070ff0074ff0078ff007cff" +
        "0080ff0084ff0088ff008cff0090ff0094ff0098ff009cff00a0ff00a4ff00a8ff00acff00b0ff00b4ff00b8ff00bcff" +
        "00c0ff00c4ff00c8ff00ccff00d0ff00d4ff00d8ff00dcff00e0ff00e4ff00e8ff00ecff00f0ff00f4ff00f8ff00fcff" +
        "02fffe06fffa0afff60efff212ffee16ffea1affe61effe222ffde26ffda2affd62effd232ffce36ffca3affc63effc2" +
        "42ffbe46ffba4affb64effb252ffae56ffaa5affa65effa262ff9e66ff9a6aff966eff9272ff8e76ff8a7aff867eff82" +
        "82ff7e86ff7a8aff768eff7292ff6e96ff6a9aff669eff62a2ff5ea6ff5aaaff56aeff52b2ff4eb6ff4abaff46beff42" +
        "c2ff3ec6ff3acaff36ceff32d2ff2ed6ff2adaff26deff22e2ff1ee6ff1aeaff16eeff12f2ff0ef6ff0afaff06feff01" +
        "fffc00fff800fff400fff000ffec00ffe800ffe400ffe000ffdc00ffd800ffd400ffd000ffcc00ffc800ffc400ffc000" +
        "ffbc00ffb800ffb400ffb000ffac00ffa800ffa400ffa000ff9c00ff9800ff9400ff9000ff8c00ff8800ff8400ff8000" +
        "ff7c00ff7800ff7400ff7000ff6c00ff6800ff6400ff6000ff5c00ff5800ff5400ff5000ff4c00ff4800ff4400ff4000" +
        "ff3c00ff3800ff3400ff3000ff2c00ff2800ff2400ff2000ff1c00ff1800ff1400ff1000ff0c00ff0800ff0400ff0000" +
        "fc0000f80000f40000f00000ec0000e80000e40000e00000dc0000d80000d40000d00000cc0000c80000c40000c00000" +
        "bc0000b80000b40000b00000ac0000a80000a40000a000009c00009800009400009000008c0000880000840000800000"
}
