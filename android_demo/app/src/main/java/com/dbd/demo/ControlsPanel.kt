package com.dbd.demo

import androidx.core.view.isVisible
import androidx.lifecycle.Lifecycle
import androidx.lifecycle.LifecycleOwner
import androidx.lifecycle.lifecycleScope
import androidx.lifecycle.repeatOnLifecycle
import com.dbd.demo.databinding.ViewControlsBinding
import kotlinx.coroutines.launch

/**
 * The control strip both screens share: overlay mode (tint / heat map / off), the P(blur)
 * threshold slider of the tint, the model line and the measured timings.
 */
class ControlsPanel(private val binding: ViewControlsBinding, private val viewModel: BlurViewModel) {
    private val res = binding.root.resources

    fun bind(owner: LifecycleOwner) {
        binding.modeGroup.addOnButtonCheckedListener { _, checkedId, isChecked ->
            if (!isChecked) return@addOnButtonCheckedListener
            viewModel.setMode(
                when (checkedId) {
                    R.id.mode_heat -> DisplayMode.HEAT
                    R.id.mode_off -> DisplayMode.OFF
                    else -> DisplayMode.TINT
                },
            )
        }
        binding.threshold.addOnChangeListener { _, value, fromUser -> if (fromUser) viewModel.setThreshold(value) }
        owner.lifecycleScope.launch {
            owner.repeatOnLifecycle(Lifecycle.State.STARTED) {
                launch { viewModel.settings.collect { showSettings(it) } }
                launch { viewModel.detector.collect { showDetector(it) } }
            }
        }
    }

    private fun showSettings(settings: OverlaySettings) {
        val id = when (settings.mode) {
            DisplayMode.TINT -> R.id.mode_tint
            DisplayMode.HEAT -> R.id.mode_heat
            DisplayMode.OFF -> R.id.mode_off
        }
        if (binding.modeGroup.checkedButtonId != id) binding.modeGroup.check(id)
        if (binding.threshold.value != settings.threshold) binding.threshold.value = settings.threshold
        binding.threshold.isEnabled = settings.mode == DisplayMode.TINT
        binding.thresholdLabel.text = res.getString(R.string.threshold_label, settings.threshold)
    }

    private fun showDetector(state: DetectorState) {
        binding.model.text = when (state) {
            DetectorState.Loading -> res.getString(R.string.model_loading)
            is DetectorState.Failed -> res.getString(R.string.model_failed, state.message)
            is DetectorState.Ready -> {
                val spec = state.detector.spec
                res.getString(
                    R.string.model_line, spec.arch, spec.precision, spec.input.width, spec.input.height,
                    spec.input.dtype.jsonName, spec.input.layout.name, state.detector.accelerator.name,
                )
            }
        }
        binding.stats.isVisible = state is DetectorState.Ready
    }

    /** The measured times of the last run; call on the main thread. */
    fun showStats(detection: Detection, renderMs: Double) {
        binding.stats.text = res.getString(
            R.string.stats_line, detection.inferenceMs, detection.accelerator.name, detection.preprocessMs, renderMs,
        )
    }
}
