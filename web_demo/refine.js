// The contract's last step (dbd.runtime.refine.refine_map): the model's low-resolution P(blur) ->
// a map at the photo's resolution whose edges follow the photo's, by a fast colour guided filter
// on the logit (He, Sun, Tang 2013; He & Sun 2015: coefficients on a subsampled grid, applied at
// full resolution). The steps and their number types are those of runtime/refine.py's docstring:
//   0. working size: H * max_side // max(H, W) (integers) when max_side > 0 and the photo is larger;
//   1. grid: (h * grid + short // 2) // short, or the working size itself when grid is 0 or >= short;
//   2. I = resize(photo / 255, grid) (float32), p = logit(clip(resize(prob, grid), clip, 1 - clip));
//   3. r = max(1, floor(radius * min(grid) + 0.5)); window means over the (2r+1)² window clipped
//      to the grid (running sums: O(pixels) whatever r);
//   4. Σ = mean(I Iᵀ) - mean(I) mean(I)ᵀ + eps, a = Σ⁻¹ cov(I, p) by the 3x3 adjugate, b, then
//      A = mean(a), B = mean(b)                                                   (Float64Array)
//   5. q = resize(A) · I_full + resize(B), map = 1 / (1 + exp(-q))                  (float32)
//   6. resize to the photo when a working size applied; clip to [0, 1].
// method 'none' is clip(resize(prob, photo), 0, 1). Every resize is resize.js's (the contract's).
import { axis, fma32, resize, resizeRgba } from './resize.js';

/** RefineSpec's defaults (what a `refine` object without some key means; tests/test_web.py checks
 * they are dbd.runtime.refine.RefineSpec's). */
export const REFINE_DEFAULTS = Object.freeze({
  method: 'guided', radius: 0.025, eps: 3e-4, grid: 128, clip: 1e-4, max_side: 0, guide: 'rgb',
});

/** The contract of files exported before refinement: a plain bilinear resize. */
export const BILINEAR = Object.freeze({ ...REFINE_DEFAULTS, method: 'none' });

/** Step 0: [height, width] the map is refined at. */
export function workingSize(h, w, maxSide) {
  const longest = Math.max(h, w);
  if (!maxSide || longest <= maxSide) return [h, w];
  return [Math.max(1, Math.floor(h * maxSide / longest)), Math.max(1, Math.floor(w * maxSide / longest))];
}

/** Step 1: [height, width] of the coefficient grid for a map of h x w. */
export function gridSize(h, w, grid) {
  const short = Math.min(h, w);
  if (!grid || grid >= short) return [h, w];
  const half = Math.floor(short / 2);
  return [Math.max(1, Math.floor((h * grid + half) / short)), Math.max(1, Math.floor((w * grid + half) / short))];
}

/** Step 3: the window radius in grid pixels. */
export const radiusOf = (radius, gh, gw) => Math.max(1, Math.floor(radius * Math.min(gh, gw) + 0.5));

/** Number of pixels of each (2r+1) window clipped to [0, n). */
function counts(n, r) {
  const c = new Float64Array(n);
  for (let i = 0; i < n; i++) c[i] = Math.min(i + r, n - 1) - Math.max(i - r, 0) + 1;
  return c;
}

/**
 * Mean of the plane `src` (h * w values, row-major) over the (2r+1)² window clipped to the plane,
 * in float64: sums by running sums along rows, then down columns (as cv2.boxFilter), divided by
 * the window's pixel count. Writes into `out` (Float64Array h * w) and returns it.
 */
export function boxMean(src, h, w, r, out = new Float64Array(h * w), rows = new Float64Array(h * w)) {
  for (let y = 0; y < h; y++) {             // rows[y, x] = sum of src[y, x - r .. x + r] (zeros outside)
    const base = y * w;
    let s = 0;
    for (let x = 0; x < Math.min(r, w); x++) s += src[base + x];
    for (let x = 0; x < w; x++) {
      if (x + r < w) s += src[base + x + r];
      rows[base + x] = s;
      if (x - r >= 0) s -= src[base + x - r];
    }
  }
  const cx = counts(w, r), cy = counts(h, r);
  const acc = new Float64Array(w);          // column sums of rows[y - r .. y + r]
  for (let y = 0; y < Math.min(r, h); y++) for (let x = 0; x < w; x++) acc[x] += rows[y * w + x];
  for (let y = 0; y < h; y++) {
    if (y + r < h) { const add = (y + r) * w; for (let x = 0; x < w; x++) acc[x] += rows[add + x]; }
    const base = y * w;
    for (let x = 0; x < w; x++) out[base + x] = acc[x] / (cy[y] * cx[x]);
    if (y - r >= 0) { const sub = (y - r) * w; for (let x = 0; x < w; x++) acc[x] -= rows[sub + x]; }
  }
  return out;
}

/**
 * Step 4: the guide (h * w * 3 interleaved RGB, float32 values) and p (h * w float64 logits) ->
 * [A_r, A_g, A_b, B] as four Float64Array planes (already averaged over the window).
 */
export function guidedCoefficients(guide, p, h, w, r, eps) {
  const n = h * w;
  const plane = () => new Float64Array(n);
  const I = [plane(), plane(), plane()];
  for (let i = 0; i < n; i++) for (let c = 0; c < 3; c++) I[c][i] = guide[3 * i + c];
  const tmp = plane(), rows = plane();
  const mean = (x) => boxMean(x, h, w, r, plane(), rows);
  const mi = I.map(mean);
  const mp = mean(p);
  const cov = [0, 1, 2].map((c) => {
    const ip = I[c];
    for (let i = 0; i < n; i++) tmp[i] = ip[i] * p[i];
    const m = mean(tmp);
    for (let i = 0; i < n; i++) m[i] -= mi[c][i] * mp[i];
    return m;
  });
  const pairs = [[0, 0], [0, 1], [0, 2], [1, 1], [1, 2], [2, 2]];
  const [s00, s01, s02, s11, s12, s22] = pairs.map(([a, b]) => {
    const ia = I[a], ib = I[b];
    for (let i = 0; i < n; i++) tmp[i] = ia[i] * ib[i];
    const m = mean(tmp);
    for (let i = 0; i < n; i++) m[i] -= mi[a][i] * mi[b][i];
    return m;
  });
  const ar = plane(), ag = plane(), ab = plane(), b = plane();
  for (let i = 0; i < n; i++) {
    const a00 = s00[i] + eps, a01 = s01[i], a02 = s02[i];
    const a11 = s11[i] + eps, a12 = s12[i], a22 = s22[i] + eps;
    // Σ⁻¹ of the symmetric 3x3 by its adjugate (the same closed form in every runtime).
    const c00 = a11 * a22 - a12 * a12;
    const c01 = a02 * a12 - a01 * a22;
    const c02 = a01 * a12 - a02 * a11;
    const c11 = a00 * a22 - a02 * a02;
    const c12 = a01 * a02 - a00 * a12;
    const c22 = a00 * a11 - a01 * a01;
    const det = a00 * c00 + a01 * c01 + a02 * c02;
    const v0 = cov[0][i], v1 = cov[1][i], v2 = cov[2][i];
    ar[i] = (c00 * v0 + c01 * v1 + c02 * v2) / det;
    ag[i] = (c01 * v0 + c11 * v1 + c12 * v2) / det;
    ab[i] = (c02 * v0 + c12 * v1 + c22 * v2) / det;
    b[i] = mp[i] - ar[i] * mi[0][i] - ag[i] * mi[1][i] - ab[i] * mi[2][i];
  }
  return [ar, ag, ab, b].map(mean);
}

/**
 * refine_map: the model's P(blur) (float32, probW x probH) and the photo (canvas RGBA bytes,
 * width x height) -> Float32Array P(blur) at outW x outH (default: the photo's size), refined as
 * `spec` (a contract's `refine`, see contract.js) says.
 */
export function refineMap(prob, probW, probH, rgba, width, height, spec = REFINE_DEFAULTS, outW = width, outH = height) {
  if (prob.length !== probW * probH) throw new RangeError(`map of ${prob.length} values is not ${probW}x${probH}`);
  if (rgba.length !== width * height * 4) throw new RangeError(`RGBA data of ${rgba.length} bytes is not ${width}x${height}`);
  if (spec.method === 'none') {
    const map = resize(prob, probW, probH, 1, outW, outH);
    for (let i = 0; i < map.length; i++) map[i] = Math.min(1, Math.max(0, map[i]));
    return map;
  }
  const f = Math.fround;
  const [wh, ww] = workingSize(outH, outW, spec.max_side);
  const photoSize = ww === width && wh === height;
  // The guide at the working size: the photo's own pixels / 255, read row by row, or resized once.
  const unitWork = photoSize ? null : resizeRgba(rgba, width, height, ww, wh);
  const [gh, gw] = gridSize(wh, ww, spec.grid);
  const small = photoSize ? resizeRgba(rgba, width, height, gw, gh) : resize(unitWork, ww, wh, 3, gw, gh);
  const pGrid = resize(prob, probW, probH, 1, gw, gh);
  const lo = spec.clip, hi = 1 - spec.clip;
  const logit = new Float64Array(gw * gh);
  for (let i = 0; i < logit.length; i++) {
    const p = Math.min(hi, Math.max(lo, pGrid[i]));
    logit[i] = Math.log(p / (1 - p));
  }
  const r = radiusOf(spec.radius, gh, gw);
  const planes = guidedCoefficients(small, logit, gh, gw, r, spec.eps);
  const coef = new Float32Array(gw * gh * 4);               // .astype(float32), interleaved A_r A_g A_b B
  for (let i = 0; i < gw * gh; i++) for (let c = 0; c < 4; c++) coef[4 * i + c] = planes[c][i];
  // Step 5, one working-size row at a time: the coefficient rows resized (horizontal pass of the
  // two grid rows it needs, then the vertical lerp, as resize.js), times the guide row, sigmoid.
  const ax = axis(gw, ww), ay = axis(gh, wh);
  const cache = new Map();
  const hRow = (y) => {
    let row = cache.get(y);
    if (row) return row;
    row = new Float32Array(ww * 4);
    const base = 4 * gw * y;
    for (let x = 0; x < ww; x++) {
      const p = base + 4 * ax.lo[x], q = base + 4 * ax.hi[x], w = ax.weight[x], o = 4 * x;
      for (let c = 0; c < 4; c++) { const a = coef[p + c]; row[o + c] = fma32(f(coef[q + c] - a), w, a); }
    }
    cache.set(y, row);
    return row;
  };
  const work = new Float32Array(ww * wh);
  const unit = new Float32Array(ww * 3);
  for (let y = 0; y < wh; y++) {
    const r0 = hRow(ay.lo[y]), r1 = hRow(ay.hi[y]), wy = ay.weight[y];
    if (photoSize) {
      for (let x = 0, s = y * width * 4; x < ww; x++, s += 4) {
        unit[3 * x] = rgba[s] / 255; unit[3 * x + 1] = rgba[s + 1] / 255; unit[3 * x + 2] = rgba[s + 2] / 255;
      }
    } else {
      unit.set(unitWork.subarray(y * ww * 3, (y + 1) * ww * 3));
    }
    for (let x = 0, o = y * ww; x < ww; x++) {
      const k = 4 * x, u = 3 * x;
      let a = r0[k];
      const cr = wy ? fma32(f(r1[k] - a), wy, a) : a;
      a = r0[k + 1];
      const cg = wy ? fma32(f(r1[k + 1] - a), wy, a) : a;
      a = r0[k + 2];
      const cb = wy ? fma32(f(r1[k + 2] - a), wy, a) : a;
      a = r0[k + 3];
      const cB = wy ? fma32(f(r1[k + 3] - a), wy, a) : a;
      const q = f(f(f(f(cr * unit[u]) + f(cg * unit[u + 1])) + f(cb * unit[u + 2])) + cB);
      work[o + x] = f(1 / f(1 + f(Math.exp(-q))));
    }
    for (const k of cache.keys()) if (k < ay.lo[y]) cache.delete(k);
  }
  const map = ww === outW && wh === outH ? work : resize(work, ww, wh, 1, outW, outH);
  for (let i = 0; i < map.length; i++) map[i] = Math.min(1, Math.max(0, map[i]));
  return map;
}

/** In words, for the page (RefineSpec.describe). */
export function describeRefine(spec) {
  if (spec.method === 'none') return 'bilinear (no refinement)';
  return `guided filter on the logit (radius ${spec.radius} of the short side, eps ${spec.eps}, `
    + `grid ${spec.grid || 'full'}${spec.max_side ? `, at most ${spec.max_side} px` : ''}, guide ${spec.guide})`;
}
