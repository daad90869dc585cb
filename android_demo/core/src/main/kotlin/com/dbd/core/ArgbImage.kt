package com.dbd.core

/**
 * An image as packed ARGB ints (0xAARRGGBB, row-major), the format of Android's
 * `Bitmap.getPixels` / `setPixels`, without depending on Android.
 */
class ArgbImage(val width: Int, val height: Int, val pixels: IntArray) {
    init {
        require(width > 0 && height > 0) { "image size must be positive, got ${width}x$height" }
        require(pixels.size == width * height) { "${pixels.size} pixels is not ${width}x$height" }
    }

    /** The image rotated clockwise by [degrees] (0, 90, 180 or 270): CameraX's `rotationDegrees`. */
    fun rotated(degrees: Int): ArgbImage {
        val d = ((degrees % 360) + 360) % 360
        if (d == 0) return this
        val out = IntArray(pixels.size)
        when (d) {
            90 -> {
                // (x, y) -> (height - 1 - y, x) in a height x width image
                for (y in 0 until height) for (x in 0 until width) out[x * height + (height - 1 - y)] = pixels[y * width + x]
                return ArgbImage(height, width, out)
            }
            180 -> {
                for (i in pixels.indices) out[pixels.size - 1 - i] = pixels[i]
                return ArgbImage(width, height, out)
            }
            270 -> {
                // (x, y) -> (y, width - 1 - x)
                for (y in 0 until height) for (x in 0 until width) out[(width - 1 - x) * height + y] = pixels[y * width + x]
                return ArgbImage(height, width, out)
            }
            else -> throw IllegalArgumentException("rotation must be a multiple of 90 degrees, got $degrees")
        }
    }

    companion object {
        fun red(argb: Int): Int = (argb shr 16) and 0xFF
        fun green(argb: Int): Int = (argb shr 8) and 0xFF
        fun blue(argb: Int): Int = argb and 0xFF
        fun opaque(r: Int, g: Int, b: Int): Int = (0xFF shl 24) or (r shl 16) or (g shl 8) or b
    }
}
