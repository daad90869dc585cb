package com.dbd.demo

import android.content.Context
import android.graphics.Bitmap
import android.graphics.Canvas
import android.graphics.Matrix
import android.graphics.Paint
import android.util.AttributeSet
import android.view.View

/**
 * Draws the rendered frame (image + blur overlay) over the camera preview or as the photo.
 * [fill] = true scales like PreviewView's default FILL_CENTER, so the overlay lines up with the
 * preview; false fits the whole photo (FIT_CENTER). [mirror] flips it for a front camera, whose
 * preview PreviewView mirrors but whose analysis frames are not mirrored.
 */
class OverlayView @JvmOverloads constructor(context: Context, attrs: AttributeSet? = null) : View(context, attrs) {
    var fill = true
        set(value) { field = value; invalidate() }
    var mirror = false
        set(value) { field = value; invalidate() }

    private var frame: Bitmap? = null
    private val paint = Paint(Paint.FILTER_BITMAP_FLAG)
    private val transform = Matrix()

    fun show(bitmap: Bitmap?) {
        frame = bitmap
        invalidate()
    }

    override fun onDraw(canvas: Canvas) {
        super.onDraw(canvas)
        val bitmap = frame ?: return
        val sx = width.toFloat() / bitmap.width
        val sy = height.toFloat() / bitmap.height
        val scale = if (fill) maxOf(sx, sy) else minOf(sx, sy)
        transform.setScale(scale, scale)
        transform.postTranslate((width - bitmap.width * scale) / 2f, (height - bitmap.height * scale) / 2f)
        if (mirror) transform.postScale(-1f, 1f, width / 2f, height / 2f)
        canvas.drawBitmap(bitmap, transform, paint)
    }
}
