// The overlays of `dbd-predict` (dbd.runtime.overlay.overlay), pixel for pixel, on canvas RGBA data:
//  - tint: pixels with P(blur) >= threshold mixed with red (255, 40, 40) at alpha 0.45,
//    round_half_even(pixel * (1 - 0.45) + red * 0.45) in float32, others unchanged;
//  - heat: round_half_even(P * 255) through OpenCV's COLORMAP_JET, averaged with the photo like
//    cv2.addWeighted(photo, 0.5, heat, 0.5, 0) (ties to even).
import { rint } from './contract.js';

export const TINT_RGB = [255, 40, 40];
export const TINT_ALPHA = 0.45;

// cv2.COLORMAP_JET as RGB for levels 0..255: OpenCV's own table (not a closed formula; level 159
// has blue 1, not 2). tests/test_web.py compares it with cv2.applyColorMap entry by entry.
const JET_HEX =
  '00008000008400008800008c00009000009400009800009c0000a00000a40000a80000ac0000b00000b40000b80000bc'
  + '0000c00000c40000c80000cc0000d00000d40000d80000dc0000e00000e40000e80000ec0000f00000f40000f80000fc'
  + '0000ff0004ff0008ff000cff0010ff0014ff0018ff001cff0020ff0024ff0028ff002cff0030ff0034ff0038ff003cff'
  + '0040ff0044ff0048ff004cff0050ff0054ff0058ff005cff0060ff0064ff0068ff006cff0070ff0074ff0078ff007cff'
  + '0080ff0084ff0088ff008cff0090ff0094ff0098ff009cff00a0ff00a4ff00a8ff00acff00b0ff00b4ff00b8ff00bcff'
  + '00c0ff00c4ff00c8ff00ccff00d0ff00d4ff00d8ff00dcff00e0ff00e4ff00e8ff00ecff00f0ff00f4ff00f8ff00fcff'
  + '02fffe06fffa0afff60efff212ffee16ffea1affe61effe222ffde26ffda2affd62effd232ffce36ffca3affc63effc2'
  + '42ffbe46ffba4affb64effb252ffae56ffaa5affa65effa262ff9e66ff9a6aff966eff9272ff8e76ff8a7aff867eff82'
  + '82ff7e86ff7a8aff768eff7292ff6e96ff6a9aff669eff62a2ff5ea6ff5aaaff56aeff52b2ff4eb6ff4abaff46beff42'
  + 'c2ff3ec6ff3acaff36ceff32d2ff2ed6ff2adaff26deff22e2ff1ee6ff1aeaff16eeff12f2ff0ef6ff0afaff06feff01'
  + 'fffc00fff800fff400fff000ffec00ffe800ffe400ffe000ffdc00ffd800ffd400ffd000ffcc00ffc800ffc400ffc000'
  + 'ffbc00ffb800ffb400ffb000ffac00ffa800ffa400ffa000ff9c00ff9800ff9400ff9000ff8c00ff8800ff8400ff8000'
  + 'ff7c00ff7800ff7400ff7000ff6c00ff6800ff6400ff6000ff5c00ff5800ff5400ff5000ff4c00ff4800ff4400ff4000'
  + 'ff3c00ff3800ff3400ff3000ff2c00ff2800ff2400ff2000ff1c00ff1800ff1400ff1000ff0c00ff0800ff0400ff0000'
  + 'fc0000f80000f40000f00000ec0000e80000e40000e00000dc0000d80000d40000d00000cc0000c80000c40000c00000'
  + 'bc0000b80000b40000b00000ac0000a80000a40000a000009c00009800009400009000008c0000880000840000800000';
export const JET = Uint8Array.from({ length: 768 }, (_, i) => parseInt(JET_HEX.substr(2 * i, 2), 16));

/** The 8-bit level of P: the map as a grey image, and the heat map's index. */
export const level = (p) => Math.min(255, Math.max(0, rint(Math.fround(p * 255))));

/** cv2.addWeighted(a, 0.5, b, 0.5, 0) on 8-bit values: (a + b) / 2, ties to even. */
const halfEvenMean = (a, b) => {
  const s = a + b, half = s >> 1;
  return (s & 1) && (half & 1) ? half + 1 : half;
};

/**
 * Draws the overlay of `prob` (float32 P(blur), one per pixel: the map at the photo's size, as the
 * contract's last step made it, refine.js) over `rgba` (the photo's ImageData
 * bytes) into `out` (RGBA, same size, opaque). style: 'tint' or 'heat'.
 */
export function drawOverlay(style, rgba, prob, threshold, out = new Uint8ClampedArray(rgba.length)) {
  if (prob.length * 4 !== rgba.length) throw new RangeError(`map of ${prob.length} values for ${rgba.length / 4} pixels`);
  const f = Math.fround;
  const keep = f(1 - f(TINT_ALPHA));
  const blend = TINT_RGB.map((c) => f(c * f(TINT_ALPHA)));
  const t = f(threshold);           // numpy compares a float32 map with the threshold as float32
  for (let i = 0, s = 0; i < prob.length; i++, s += 4) {
    if (style === 'heat') {
      const j = 3 * level(prob[i]);
      for (let c = 0; c < 3; c++) out[s + c] = halfEvenMean(rgba[s + c], JET[j + c]);
    } else if (prob[i] >= t) {
      for (let c = 0; c < 3; c++) out[s + c] = rint(f(f(rgba[s + c] * keep) + blend[c]));
    } else {
      for (let c = 0; c < 3; c++) out[s + c] = rgba[s + c];
    }
    out[s + 3] = 255;
  }
  return out;
}

/** The fraction of pixels with P(blur) >= threshold. */
export function blurredFraction(prob, threshold) {
  const t = Math.fround(threshold);
  let n = 0;
  for (let i = 0; i < prob.length; i++) if (prob[i] >= t) n++;
  return prob.length ? n / prob.length : 0;
}
