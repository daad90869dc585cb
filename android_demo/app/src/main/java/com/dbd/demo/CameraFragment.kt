package com.dbd.demo

import android.Manifest
import android.content.Intent
import android.content.pm.PackageManager
import android.net.Uri
import android.os.Bundle
import android.os.SystemClock
import android.provider.Settings
import android.util.Log
import android.util.Size
import android.view.LayoutInflater
import android.view.View
import android.view.ViewGroup
import androidx.activity.result.contract.ActivityResultContracts
import androidx.camera.core.CameraSelector
import androidx.camera.core.ImageAnalysis
import androidx.camera.core.ImageProxy
import androidx.camera.core.Preview
import androidx.camera.core.resolutionselector.AspectRatioStrategy
import androidx.camera.core.resolutionselector.ResolutionSelector
import androidx.camera.core.resolutionselector.ResolutionStrategy
import androidx.camera.lifecycle.ProcessCameraProvider
import androidx.core.content.ContextCompat
import androidx.core.view.isVisible
import androidx.fragment.app.Fragment
import androidx.fragment.app.activityViewModels
import com.dbd.demo.databinding.FragmentCameraBinding
import java.util.concurrent.ExecutorService
import java.util.concurrent.Executors

/**
 * Live mode: CameraX preview with image analysis (latest frame only, RGBA), each frame turned
 * upright, run through the model and drawn back over the preview with the chosen overlay.
 * The camera permission is asked for here, in context; denied, the screen explains why it needs
 * it and offers the request again (or the system settings once the user chose "don't ask again").
 */
class CameraFragment : Fragment() {
    private var _binding: FragmentCameraBinding? = null
    private val binding get() = _binding!!
    private val viewModel: BlurViewModel by activityViewModels()
    private lateinit var controls: ControlsPanel
    private lateinit var analysisExecutor: ExecutorService
    private var cameraProvider: ProcessCameraProvider? = null
    private var cameraStarted = false
    private var askedOnce = false

    private val requestCamera = registerForActivityResult(ActivityResultContracts.RequestPermission()) { granted ->
        if (granted) startCamera() else showPermissionPanel()
    }

    override fun onCreateView(inflater: LayoutInflater, container: ViewGroup?, savedInstanceState: Bundle?): View {
        _binding = FragmentCameraBinding.inflate(inflater, container, false)
        return binding.root
    }

    override fun onViewCreated(view: View, savedInstanceState: Bundle?) {
        super.onViewCreated(view, savedInstanceState)
        analysisExecutor = Executors.newSingleThreadExecutor()
        controls = ControlsPanel(binding.controls, viewModel).also { it.bind(viewLifecycleOwner) }
        binding.overlay.fill = true
        binding.grantButton.setOnClickListener { onGrantClicked() }
        if (hasCameraPermission()) startCamera() else requestPermission()
    }

    override fun onResume() {
        super.onResume()
        // Back from the system settings with the permission granted.
        if (!cameraStarted && hasCameraPermission()) startCamera()
    }

    override fun onDestroyView() {
        cameraProvider?.unbindAll()
        analysisExecutor.shutdown()
        cameraStarted = false
        _binding = null
        super.onDestroyView()
    }

    private fun hasCameraPermission() =
        ContextCompat.checkSelfPermission(requireContext(), Manifest.permission.CAMERA) == PackageManager.PERMISSION_GRANTED

    private fun requestPermission() {
        askedOnce = true
        requestCamera.launch(Manifest.permission.CAMERA)
    }

    private fun onGrantClicked() {
        if (!askedOnce || shouldShowRequestPermissionRationale(Manifest.permission.CAMERA)) {
            requestPermission()
        } else {
            // "Don't ask again": only the app's settings page can grant it now.
            startActivity(Intent(Settings.ACTION_APPLICATION_DETAILS_SETTINGS, Uri.fromParts("package", requireContext().packageName, null)))
        }
    }

    private fun showPermissionPanel() {
        val b = _binding ?: return
        b.permissionPanel.isVisible = true
        val permanently = askedOnce && !shouldShowRequestPermissionRationale(Manifest.permission.CAMERA)
        b.grantButton.setText(if (permanently) R.string.open_settings else R.string.grant_camera)
    }

    private fun startCamera() {
        val b = _binding ?: return
        b.permissionPanel.isVisible = false
        cameraStarted = true
        val future = ProcessCameraProvider.getInstance(requireContext())
        future.addListener({
            if (_binding == null) return@addListener
            val provider = future.get()
            cameraProvider = provider
            bindUseCases(provider)
        }, ContextCompat.getMainExecutor(requireContext()))
    }

    private fun bindUseCases(provider: ProcessCameraProvider) {
        val selector = listOf(CameraSelector.DEFAULT_BACK_CAMERA, CameraSelector.DEFAULT_FRONT_CAMERA)
            .firstOrNull { runCatching { provider.hasCamera(it) }.getOrDefault(false) }
        if (selector == null) {
            binding.status.isVisible = true
            binding.status.setText(R.string.no_camera)
            return
        }
        binding.overlay.mirror = selector == CameraSelector.DEFAULT_FRONT_CAMERA
        // Preview and analysis share the 4:3 aspect ratio, so the overlay (FILL_CENTER) lines up with the preview.
        val aspect = AspectRatioStrategy.RATIO_4_3_FALLBACK_AUTO_STRATEGY
        val preview = Preview.Builder()
            .setResolutionSelector(ResolutionSelector.Builder().setAspectRatioStrategy(aspect).build())
            .build()
        preview.setSurfaceProvider(binding.preview.surfaceProvider)
        val analysis = ImageAnalysis.Builder()
            .setResolutionSelector(
                ResolutionSelector.Builder()
                    .setAspectRatioStrategy(aspect)
                    .setResolutionStrategy(ResolutionStrategy(ANALYSIS_SIZE, ResolutionStrategy.FALLBACK_RULE_CLOSEST_HIGHER_THEN_LOWER))
                    .build(),
            )
            .setBackpressureStrategy(ImageAnalysis.STRATEGY_KEEP_ONLY_LATEST)
            .setOutputImageFormat(ImageAnalysis.OUTPUT_IMAGE_FORMAT_RGBA_8888)
            .build()
        analysis.setAnalyzer(analysisExecutor, ::analyze)
        try {
            provider.unbindAll()
            provider.bindToLifecycle(viewLifecycleOwner, selector, preview, analysis)
        } catch (e: Exception) {
            Log.e(TAG, "camera binding failed", e)
            binding.status.isVisible = true
            binding.status.text = getString(R.string.camera_failed, e.message)
        }
    }

    /** On the analysis thread: frame -> upright ARGB -> model -> overlay bitmap -> UI. */
    private fun analyze(proxy: ImageProxy) {
        proxy.use {
            val detector = (viewModel.detector.value as? DetectorState.Ready)?.detector ?: return
            val frame = Images.toArgb(proxy.toBitmap()).rotated(proxy.imageInfo.rotationDegrees)
            val detection = detector.detect(frame)
            val settings = viewModel.settings.value
            val t0 = SystemClock.elapsedRealtimeNanos()
            val bitmap = settings.mode.style?.let { style ->
                Images.render(frame, detector.mapAtImageSize(detection), style, settings.threshold)
            }
            val renderMs = (SystemClock.elapsedRealtimeNanos() - t0) / 1e6
            activity?.runOnUiThread {
                val b = _binding ?: return@runOnUiThread
                b.overlay.show(bitmap)
                controls.showStats(detection, renderMs)
            }
        }
    }

    companion object {
        private const val TAG = "CameraFragment"

        /** Analysis frames: about VGA, enough for the model and cheap to overlay at full frame size. */
        private val ANALYSIS_SIZE = Size(640, 480)
    }
}
