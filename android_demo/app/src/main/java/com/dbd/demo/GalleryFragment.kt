package com.dbd.demo

import android.net.Uri
import android.os.Bundle
import android.os.SystemClock
import android.view.LayoutInflater
import android.view.View
import android.view.ViewGroup
import androidx.activity.result.PickVisualMediaRequest
import androidx.activity.result.contract.ActivityResultContracts
import androidx.core.view.isVisible
import androidx.fragment.app.Fragment
import androidx.fragment.app.activityViewModels
import androidx.lifecycle.Lifecycle
import androidx.lifecycle.lifecycleScope
import androidx.lifecycle.repeatOnLifecycle
import com.dbd.demo.databinding.FragmentGalleryBinding
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.flow.collectLatest
import kotlinx.coroutines.flow.combine
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.launch
import kotlinx.coroutines.withContext

/**
 * Photo mode: pick a photo (system photo picker, no storage permission), run the model once, and
 * redraw the overlay whenever the mode or threshold changes (no re-inference).
 */
class GalleryFragment : Fragment() {
    private var _binding: FragmentGalleryBinding? = null
    private val binding get() = _binding!!
    private val viewModel: BlurViewModel by activityViewModels()
    private lateinit var controls: ControlsPanel

    private val pickPhoto = registerForActivityResult(ActivityResultContracts.PickVisualMedia()) { uri ->
        if (uri != null) analyse(uri)
    }

    override fun onCreateView(inflater: LayoutInflater, container: ViewGroup?, savedInstanceState: Bundle?): View {
        _binding = FragmentGalleryBinding.inflate(inflater, container, false)
        return binding.root
    }

    override fun onViewCreated(view: View, savedInstanceState: Bundle?) {
        super.onViewCreated(view, savedInstanceState)
        controls = ControlsPanel(binding.controls, viewModel).also { it.bind(viewLifecycleOwner) }
        binding.photo.fill = false
        binding.pick.setOnClickListener {
            pickPhoto.launch(PickVisualMediaRequest(ActivityResultContracts.PickVisualMedia.ImageOnly))
        }
        viewLifecycleOwner.lifecycleScope.launch {
            viewLifecycleOwner.repeatOnLifecycle(Lifecycle.State.STARTED) {
                combine(viewModel.photo, viewModel.settings) { result, settings -> Pair(result, settings) }
                    .collectLatest { (result, settings) ->
                        if (result == null) return@collectLatest
                        val t0 = SystemClock.elapsedRealtimeNanos()
                        val bitmap = withContext(Dispatchers.Default) {
                            Images.render(result.detection.image, result.map, settings.mode.style, settings.threshold)
                        }
                        binding.photo.show(bitmap)
                        binding.hint.isVisible = false
                        controls.showStats(result.detection, (SystemClock.elapsedRealtimeNanos() - t0) / 1e6)
                    }
            }
        }
    }

    override fun onDestroyView() {
        _binding = null
        super.onDestroyView()
    }

    private fun analyse(uri: Uri) {
        val resolver = requireContext().contentResolver
        binding.progress.isVisible = true
        binding.error.isVisible = false
        viewLifecycleOwner.lifecycleScope.launch {
            val outcome = withContext(Dispatchers.Default) {
                runCatching {
                    val state = viewModel.detector.first { it !is DetectorState.Loading }
                    val detector = (state as? DetectorState.Ready)?.detector
                        ?: error((state as DetectorState.Failed).message)
                    val image = Images.toArgb(Images.decodePhoto(resolver, uri))
                    val detection = detector.detect(image)
                    PhotoResult(detection, detector.mapAtImageSize(detection))
                }
            }
            val b = _binding ?: return@launch
            b.progress.isVisible = false
            outcome.onSuccess { viewModel.photo.value = it }.onFailure {
                b.error.isVisible = true
                b.error.text = getString(R.string.photo_failed, it.message)
            }
        }
    }
}
