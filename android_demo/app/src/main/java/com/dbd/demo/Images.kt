package com.dbd.demo

import android.content.ContentResolver
import android.graphics.Bitmap
import android.graphics.BitmapFactory
import android.graphics.Matrix
import android.net.Uri
import androidx.exifinterface.media.ExifInterface
import com.dbd.core.ArgbImage
import com.dbd.core.Overlay
import com.dbd.core.OverlayStyle

/** Bitmap <-> the core's ARGB images, and photo decoding. Pixel arithmetic stays in :core. */
object Images {
    /** Photos are decoded at most this long (power-of-two subsampling) to bound memory. */
    const val MAX_PHOTO_SIDE = 2048

    fun toArgb(bitmap: Bitmap): ArgbImage {
        val source = if (bitmap.config == Bitmap.Config.ARGB_8888) bitmap else bitmap.copy(Bitmap.Config.ARGB_8888, false)
        val pixels = IntArray(source.width * source.height)
        source.getPixels(pixels, 0, source.width, 0, 0, source.width, source.height)
        return ArgbImage(source.width, source.height, pixels)
    }

    fun toBitmap(width: Int, height: Int, argb: IntArray): Bitmap =
        Bitmap.createBitmap(argb, width, height, Bitmap.Config.ARGB_8888)

    /**
     * The image with its blur map drawn as [style] (the core's overlay, identical to dbd-predict's),
     * or the image itself when [style] is null.
     */
    fun render(image: ArgbImage, mapAtImageSize: FloatArray, style: OverlayStyle?, threshold: Float): Bitmap {
        val pixels = if (style == null) image.pixels else Overlay.draw(style, image, mapAtImageSize, threshold)
        return toBitmap(image.width, image.height, pixels)
    }

    /** Decodes a picked photo upright (EXIF orientation applied), subsampled to <= [MAX_PHOTO_SIDE]. */
    fun decodePhoto(resolver: ContentResolver, uri: Uri): Bitmap {
        val bounds = BitmapFactory.Options().apply { inJustDecodeBounds = true }
        resolver.openInputStream(uri).use { BitmapFactory.decodeStream(it, null, bounds) }
        if (bounds.outWidth <= 0 || bounds.outHeight <= 0) throw IllegalArgumentException("not an image this device can decode")
        var sample = 1
        while (maxOf(bounds.outWidth, bounds.outHeight) / sample > MAX_PHOTO_SIDE) sample *= 2
        val options = BitmapFactory.Options().apply {
            inSampleSize = sample
            inPreferredConfig = Bitmap.Config.ARGB_8888
        }
        val decoded = resolver.openInputStream(uri).use { BitmapFactory.decodeStream(it, null, options) }
            ?: throw IllegalArgumentException("could not decode the photo")
        val orientation = resolver.openInputStream(uri).use { stream ->
            if (stream == null) ExifInterface.ORIENTATION_NORMAL
            else ExifInterface(stream).getAttributeInt(ExifInterface.TAG_ORIENTATION, ExifInterface.ORIENTATION_NORMAL)
        }
        return upright(decoded, orientation)
    }

    private fun upright(bitmap: Bitmap, orientation: Int): Bitmap {
        val matrix = Matrix()
        when (orientation) {
            ExifInterface.ORIENTATION_FLIP_HORIZONTAL -> matrix.setScale(-1f, 1f)
            ExifInterface.ORIENTATION_ROTATE_180 -> matrix.setRotate(180f)
            ExifInterface.ORIENTATION_FLIP_VERTICAL -> { matrix.setRotate(180f); matrix.postScale(-1f, 1f) }
            ExifInterface.ORIENTATION_TRANSPOSE -> { matrix.setRotate(90f); matrix.postScale(-1f, 1f) }
            ExifInterface.ORIENTATION_ROTATE_90 -> matrix.setRotate(90f)
            ExifInterface.ORIENTATION_TRANSVERSE -> { matrix.setRotate(-90f); matrix.postScale(-1f, 1f) }
            ExifInterface.ORIENTATION_ROTATE_270 -> matrix.setRotate(-90f)
            else -> return bitmap
        }
        val turned = Bitmap.createBitmap(bitmap, 0, 0, bitmap.width, bitmap.height, matrix, false)
        if (turned !== bitmap) bitmap.recycle()
        return turned
    }
}
