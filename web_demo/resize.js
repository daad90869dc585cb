// Bilinear resize with half-pixel centres, aspect ratio stretched: the preprocessing contract of
// dbd.runtime.spec.PreprocessSpec (cv2.resize(x, (w, h), INTER_LINEAR) on float32 data), used for
// photo -> model input and for the blur map -> photo. The only resize of the page.
//
// The reference is OpenCV as the opencv-python wheels run it on x86 (through Intel IPP), whose
// float32 arithmetic is pinned down here (as in android_demo's Bilinear.kt):
//  - source coordinate of output column d: x = (d + 0.5) * (src / dst) - 0.5, in double;
//    x0 = floor(x), weight w = float32(x - x0); clamped at the borders (x0 < 0 -> 0, w = 0;
//    x0 >= src - 1 -> src - 1, w = 0). Rows likewise.
//  - horizontal pass, then vertical, each a fused lerp fma(q - p, w, p) rounded once to float32.
// JavaScript computes in double; `fround` rounds to float32 after each step. For one +, -, *, /
// of two float32 values that equals float32 arithmetic (53 >= 2 * 24 + 2 bits); the fused
// multiply-add has three operands and needs `fma32` below.

const f64 = new Float64Array(1);
const u32 = new Uint32Array(f64.buffer);          // [low, high] words on little-endian machines
const LOW = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1 ? 0 : 1;

/** a * b + c rounded once to the nearest float32 (IEEE fusedMultiplyAdd on float32 values). */
export function fma32(a, b, c) {
  const p = a * b;                 // exact: two 24-bit significands fit in 53 bits
  const s = p + c;
  if (!Number.isFinite(s)) return Math.fround(s);
  const bb = s - p;
  const err = (p - (s - bb)) + (c - bb);   // TwoSum: s + err == p + c exactly
  if (err === 0) return Math.fround(s);
  f64[0] = s;
  if (u32[LOW] & 1) return Math.fround(s);  // odd significand: already round-to-odd
  // Even significand with a remainder: step one ulp toward the exact value (round to odd), after
  // which rounding to float32 is correct (Boldo & Melquiond 2008).
  const high = 1 - LOW;
  if ((err > 0) === (s > 0)) {
    u32[LOW] += 1;                 // even low word: no carry
  } else if (u32[LOW] === 0) {
    u32[LOW] = 0xffffffff;
    u32[high] -= 1;
  } else {
    u32[LOW] -= 1;
  }
  return Math.fround(f64[0]);
}

/** Source indices and float32 weights of each output coordinate along one axis. */
export function axis(src, dst) {
  if (!(src > 0 && dst > 0)) throw new RangeError(`sizes must be positive, got ${src} -> ${dst}`);
  const lo = new Int32Array(dst);
  const hi = new Int32Array(dst);
  const weight = new Float32Array(dst);
  const scale = src / dst;
  for (let d = 0; d < dst; d++) {
    const x = (d + 0.5) * scale - 0.5;
    let x0 = Math.floor(x);
    let w = Math.fround(x - x0);
    if (x0 < 0) { x0 = 0; w = 0; }
    if (x0 >= src - 1) { x0 = src - 1; w = 0; }
    lo[d] = x0;
    hi[d] = Math.min(x0 + 1, src - 1);
    weight[d] = w;
  }
  return { lo, hi, weight };
}

/**
 * Resize an image given row by row: `readRow(y, row)` fills `row` (width * channels float32 values
 * of source row y). Only the rows the output needs are read (at most two per output row), so a
 * large photo is never converted to floats as a whole. Returns dstW * dstH * channels float32.
 */
export function resizeRows(width, height, channels, dstW, dstH, readRow) {
  const ax = axis(width, dstW);
  const ay = axis(height, dstH);
  const outRow = dstW * channels;
  const source = new Float32Array(width * channels);
  const cache = new Map();          // source row -> its horizontally resized row
  const hRow = (y) => {
    let row = cache.get(y);
    if (row) return row;
    readRow(y, source);
    row = new Float32Array(outRow);
    for (let dx = 0; dx < dstW; dx++) {
      const p = ax.lo[dx] * channels, q = ax.hi[dx] * channels, w = ax.weight[dx], o = dx * channels;
      for (let c = 0; c < channels; c++) {
        const a = source[p + c];
        row[o + c] = fma32(Math.fround(source[q + c] - a), w, a);
      }
    }
    cache.set(y, row);
    return row;
  };
  const out = new Float32Array(dstH * outRow);
  for (let dy = 0; dy < dstH; dy++) {
    const r0 = hRow(ay.lo[dy]), r1 = hRow(ay.hi[dy]), w = ay.weight[dy], base = dy * outRow;
    for (let i = 0; i < outRow; i++) {
      const a = r0[i];
      out[base + i] = fma32(Math.fround(r1[i] - a), w, a);
    }
    for (const y of cache.keys()) if (y < ay.lo[dy]) cache.delete(y);   // rows above never come back
  }
  return out;
}

/** Resize interleaved float32 values (width * height * channels); the same size returns a copy. */
export function resize(src, width, height, channels, dstW, dstH) {
  if (src.length !== width * height * channels) {
    throw new RangeError(`image of ${src.length} values is not ${width}x${height}x${channels}`);
  }
  if (width === dstW && height === dstH) return Float32Array.from(src);
  const rowLen = width * channels;
  return resizeRows(width, height, channels, dstW, dstH, (y, row) => row.set(src.subarray(y * rowLen, (y + 1) * rowLen)));
}

/**
 * RGBA pixels (canvas ImageData: Uint8ClampedArray, width * height * 4) -> RGB float32 in [0, 1]
 * at dstW x dstH: pixel / pixelScale, then the resize (PreprocessSpec: divide first, then resize).
 */
export function resizeRgba(rgba, width, height, dstW, dstH, pixelScale = 255) {
  if (rgba.length !== width * height * 4) throw new RangeError(`RGBA data of ${rgba.length} bytes is not ${width}x${height}`);
  const readRow = (y, row) => {
    for (let x = 0, s = y * width * 4; x < width; x++, s += 4) {
      row[3 * x] = rgba[s] / pixelScale;           // stored as float32: one correctly rounded division
      row[3 * x + 1] = rgba[s + 1] / pixelScale;
      row[3 * x + 2] = rgba[s + 2] / pixelScale;
    }
  };
  if (width === dstW && height === dstH) {
    const out = new Float32Array(width * height * 3);
    const row = new Float32Array(width * 3);
    for (let y = 0; y < height; y++) { readRow(y, row); out.set(row, y * width * 3); }
    return out;
  }
  return resizeRows(width, height, 3, dstW, dstH, readRow);
}
