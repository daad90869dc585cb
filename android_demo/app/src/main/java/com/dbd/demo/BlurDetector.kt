package com.dbd.demo

import android.content.Context
import android.os.SystemClock
import android.util.Log
import com.dbd.core.ArgbImage
import com.dbd.core.ModelSpec
import com.dbd.core.Postprocessor
import com.dbd.core.Preprocessor
import com.google.ai.edge.litert.Accelerator
import com.google.ai.edge.litert.CompiledModel
import com.google.ai.edge.litert.TensorBuffer

/** One run of the model on one image. */
class Detection(
    /** The image the model saw (the camera frame turned upright, or the photo). */
    val image: ArgbImage,
    /** P(blur) at the model's input size ([modelWidth] x [modelHeight]), 1 = out of focus. */
    val probability: FloatArray,
    val modelWidth: Int,
    val modelHeight: Int,
    val preprocessMs: Double,
    /** `CompiledModel.run` alone: what the accelerator took. */
    val inferenceMs: Double,
    val accelerator: Accelerator,
)

/**
 * The exported .tflite on LiteRT (CompiledModel API): GPU accelerator when the device has a
 * usable one, else the CPU (XNNPACK). How to feed it and how to read it comes from the model's own
 * "dbd" metadata through the pure-Kotlin core ([ModelSpec]); this class only moves tensors.
 *
 * Not thread-safe by design: one detector per analysis thread ([detect] is synchronized).
 */
class BlurDetector private constructor(
    private val model: CompiledModel,
    val spec: ModelSpec,
    val accelerator: Accelerator,
) : AutoCloseable {
    private val preprocessor = Preprocessor(spec.input)
    val postprocessor = Postprocessor(spec)   // output decoding and the refinement, from the metadata
    private val inputs: List<TensorBuffer> = model.createInputBuffers()
    private val outputs: List<TensorBuffer> = model.createOutputBuffers()

    init {
        check(inputs.size == 1 && outputs.size == 1) { "expected one input and one output, got ${inputs.size} and ${outputs.size}" }
    }

    @Synchronized
    fun detect(image: ArgbImage): Detection {
        val t0 = SystemClock.elapsedRealtimeNanos()
        val tensor = preprocessor.process(image)
        val t1 = SystemClock.elapsedRealtimeNanos()
        tensor.bytes?.let { inputs[0].writeInt8(it) } ?: inputs[0].writeFloat(tensor.floats!!)
        model.run(inputs, outputs)
        val t2 = SystemClock.elapsedRealtimeNanos()
        val probability = if (spec.output.dtype.isQuantized) {
            postprocessor.probabilities(outputs[0].readInt8())     // uint8 arrives as raw bytes too
        } else {
            postprocessor.probabilities(outputs[0].readFloat())
        }
        return Detection(
            image, probability, spec.output.width, spec.output.height,
            preprocessMs = (t1 - t0) / 1e6, inferenceMs = (t2 - t1) / 1e6, accelerator = accelerator,
        )
    }

    /**
     * P(blur) at the image's own size, as the Python runtime makes it: the model's map refined by the
     * metadata's `preprocess.refine` (a guided filter on the logit that aligns the map's edges with the
     * image's), or the plain bilinear resize for a file exported before refinement.
     */
    fun mapAtImageSize(detection: Detection): FloatArray =
        postprocessor.toImage(detection.probability, detection.image)

    override fun close() {
        inputs.forEach { it.close() }
        outputs.forEach { it.close() }
        model.close()
    }

    companion object {
        private const val TAG = "BlurDetector"

        /** The asset the :app:copyDbdModel Gradle task writes. */
        const val MODEL_ASSET = "dbd_model.tflite"

        /**
         * Reads and checks the model's contract, then compiles it for the first accelerator that
         * works: GPU, then CPU. A model whose metadata is missing or disagrees with its graph is
         * refused here with the reason ([com.dbd.core.ModelContractException]), before LiteRT sees it.
         */
        fun create(context: Context, preferGpu: Boolean = true, asset: String = MODEL_ASSET): BlurDetector {
            val bytes = context.assets.open(asset).use { it.readBytes() }
            val spec = ModelSpec.fromTflite(bytes)
            val candidates = if (preferGpu) listOf(Accelerator.GPU, Accelerator.CPU) else listOf(Accelerator.CPU)
            var failure: Exception? = null
            for (accelerator in candidates) {
                var model: CompiledModel? = null
                var detector: BlurDetector? = null
                try {
                    model = CompiledModel.create(context.assets, asset, CompiledModel.Options(accelerator))
                    detector = BlurDetector(model, spec, accelerator)
                    // One warm-up run: a GPU that compiles but cannot run the int8 graph fails here, not on frame 1.
                    detector.detect(ArgbImage(spec.input.width, spec.input.height, IntArray(spec.input.width * spec.input.height)))
                    Log.i(TAG, "$spec on $accelerator")
                    return detector
                } catch (e: Exception) {
                    Log.w(TAG, "LiteRT could not run the model on $accelerator: ${e.message}")
                    if (detector != null) detector.close() else model?.close()
                    failure = e
                }
            }
            throw IllegalStateException("LiteRT could not run the model on ${candidates.joinToString(" or ")}: ${failure?.message}", failure)
        }
    }
}
