package com.dbd.demo

import android.app.Application
import androidx.lifecycle.AndroidViewModel
import androidx.lifecycle.viewModelScope
import com.dbd.core.OverlayStyle
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.StateFlow
import kotlinx.coroutines.flow.asStateFlow
import kotlinx.coroutines.flow.update
import kotlinx.coroutines.launch

/** How the map is shown: one of the core's overlays, or the plain image. */
enum class DisplayMode(val style: OverlayStyle?) { TINT(OverlayStyle.TINT), HEAT(OverlayStyle.HEAT), OFF(null) }

/** One analysed photo: the model's answer and the map at the photo's size (refined as the model's metadata says). */
class PhotoResult(val detection: Detection, val map: FloatArray)

data class OverlaySettings(val mode: DisplayMode = DisplayMode.TINT, val threshold: Float = 0.5f)

sealed interface DetectorState {
    data object Loading : DetectorState
    data class Ready(val detector: BlurDetector) : DetectorState
    data class Failed(val message: String) : DetectorState
}

/** The detector (one per process, created off the main thread) and the overlay settings both screens share. */
class BlurViewModel(application: Application) : AndroidViewModel(application) {
    private val _detector = MutableStateFlow<DetectorState>(DetectorState.Loading)
    val detector: StateFlow<DetectorState> = _detector.asStateFlow()

    private val _settings = MutableStateFlow(OverlaySettings())
    val settings: StateFlow<OverlaySettings> = _settings.asStateFlow()

    /** The photo of the gallery screen, kept across tab switches and rotations. */
    val photo = MutableStateFlow<PhotoResult?>(null)

    init {
        viewModelScope.launch(Dispatchers.Default) {
            _detector.value = try {
                DetectorState.Ready(BlurDetector.create(getApplication()))
            } catch (e: Exception) {
                DetectorState.Failed(e.message ?: e.toString())
            }
        }
    }

    fun setMode(mode: DisplayMode) = _settings.update { it.copy(mode = mode) }

    fun setThreshold(threshold: Float) = _settings.update { it.copy(threshold = threshold) }

    override fun onCleared() {
        (_detector.value as? DetectorState.Ready)?.detector?.close()
    }
}
