// Unit tests of the page's refinement (refine.js) and of the `refine` block's validation
// (contract.js):  node --test web_demo/tests/
// tests/test_web.py holds refineMap to Python's dbd.runtime.refine.refine_map on real photos, in
// Node and in the browser.
import assert from 'node:assert/strict';
import test from 'node:test';

import { ContractError, refineOf } from '../contract.js';
import { BILINEAR, REFINE_DEFAULTS, boxMean, gridSize, radiusOf, refineMap, workingSize } from '../refine.js';
import { resize } from '../resize.js';
import { timeRefine } from '../bench.js';

const flatPhoto = (w, h, rgb) => {
  const rgba = new Uint8ClampedArray(w * h * 4);
  for (let i = 0; i < w * h; i++) rgba.set([...rgb, 255], 4 * i);
  return rgba;
};

test('working size and grid use integer arithmetic (floor division, half-up on the short side)', () => {
  assert.deepEqual(workingSize(3000, 4000, 0), [3000, 4000]);
  assert.deepEqual(workingSize(3000, 4000, 4000), [3000, 4000]);
  assert.deepEqual(workingSize(3000, 4000, 1024), [768, 1024]);
  assert.deepEqual(workingSize(1, 5000, 16), [1, 16]);           // at least 1
  assert.deepEqual(gridSize(426, 640, 256), [256, 385]);          // (640 * 256 + 213) // 426 = 385
  assert.deepEqual(gridSize(300, 900, 256), [256, 768]);
  assert.deepEqual(gridSize(180, 240, 256), [180, 240]);          // grid >= short side: full size
  assert.deepEqual(gridSize(426, 640, 0), [426, 640]);            // 0: full size
  assert.equal(radiusOf(0.04, 256, 385), 10);                     // floor(10.24 + 0.5)
  assert.equal(radiusOf(0.025, 128, 192), 3);                     // floor(3.2 + 0.5)
  assert.equal(radiusOf(0.001, 20, 30), 1);                       // at least 1
});

test('box mean = mean over the window clipped to the image, for any radius (running sums)', () => {
  const [h, w] = [7, 11];
  const src = Float64Array.from({ length: h * w }, (_, i) => Math.sin(i * 1.7) * 3 + (i % 5));
  for (const r of [1, 2, 5, 20]) {
    const got = boxMean(src, h, w, r);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
      let s = 0, n = 0;
      for (let yy = Math.max(0, y - r); yy <= Math.min(h - 1, y + r); yy++) {
        for (let xx = Math.max(0, x - r); xx <= Math.min(w - 1, x + r); xx++) { s += src[yy * w + xx]; n++; }
      }
      assert.ok(Math.abs(got[y * w + x] - s / n) < 1e-12, `r ${r} at ${x},${y}`);
    }
  }
});

test('a constant map stays constant whatever the photo', () => {
  const [w, h] = [61, 43];
  const rgba = Uint8ClampedArray.from({ length: w * h * 4 }, (_, i) => (i * 37) % 256);
  const prob = new Float32Array(8 * 8).fill(0.3);
  const map = refineMap(prob, 8, 8, rgba, w, h, { ...REFINE_DEFAULTS, grid: 16 });
  assert.equal(map.length, w * h);
  assert.ok(map.every((p) => Math.abs(p - 0.3) < 1e-6), `${Math.min(...map)} .. ${Math.max(...map)}`);
});

test("the refined map's boundary follows the photo's edge; bilinear's follows the model grid", () => {
  // Photo: dark left of column 37, bright from 37 on. Model map (8 wide): a blurry step near 37.
  const [w, h] = [96, 40];
  const rgba = new Uint8ClampedArray(w * h * 4);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) rgba.set(x < 37 ? [40, 50, 60, 255] : [220, 200, 180, 255], 4 * (y * w + x));
  const prob = Float32Array.from({ length: 8 * 4 }, (_, i) => [0.05, 0.05, 0.1, 0.6, 0.9, 0.95, 0.95, 0.95][i % 8]);
  const crossing = (map) => map.slice(20 * w, 21 * w).findIndex((p) => p >= 0.5);
  const guided = refineMap(prob, 8, 4, rgba, w, h, { ...REFINE_DEFAULTS, radius: 0.2 });
  const plain = refineMap(prob, 8, 4, rgba, w, h, BILINEAR);
  assert.equal(crossing(guided), 37);
  assert.notEqual(crossing(plain), 37);
  const jump = (map) => map[20 * w + 37] - map[20 * w + 36];
  assert.ok(jump(guided) > 0.3 && jump(plain) < 0.05, `steps at the edge: ${jump(guided)} vs ${jump(plain)}`);
});

test("method none is the contract's bilinear resize, clipped to [0, 1]", () => {
  const prob = Float32Array.from({ length: 5 * 4 }, (_, i) => i / 19 * 1.2 - 0.1);
  const rgba = flatPhoto(13, 9, [10, 200, 30]);
  const expected = resize(prob, 5, 4, 1, 13, 9).map((p) => Math.min(1, Math.max(0, p)));
  assert.deepEqual([...refineMap(prob, 5, 4, rgba, 13, 9, BILINEAR)], [...expected]);
});

test('a working size (max_side) refines smaller and returns the photo size', () => {
  const rgba = Uint8ClampedArray.from({ length: 300 * 200 * 4 }, (_, i) => (i * 13) % 251);
  const prob = Float32Array.from({ length: 16 * 16 }, (_, i) => (i % 16) / 15);
  const map = refineMap(prob, 16, 16, rgba, 300, 200, { ...REFINE_DEFAULTS, max_side: 64 });
  assert.equal(map.length, 300 * 200);
  assert.ok(map.every((p) => p >= 0 && p <= 1));
});

test("the file's refine block: absent means bilinear, missing keys take the defaults", () => {
  assert.deepEqual(refineOf({ resize: 'bilinear' }), { ...BILINEAR });
  assert.deepEqual(refineOf({ refine: { method: 'guided', grid: 0 } }), { ...REFINE_DEFAULTS, grid: 0 });
  assert.deepEqual(refineOf({ refine: { ...REFINE_DEFAULTS } }), { ...REFINE_DEFAULTS });
});

test('a refine block the page cannot follow is refused with the key named', () => {
  const bad = [
    [{ method: 'bilateral' }, /preprocess\.refine\.method = "bilateral" is not valid; expected one of guided, none/],
    [{ radius: 0 }, /preprocess\.refine\.radius = 0 is not valid/],
    [{ radius: '0.04' }, /preprocess\.refine\.radius = "0.04" is not valid/],
    [{ eps: -1 }, /preprocess\.refine\.eps = -1 is not valid/],
    [{ clip: 0.5 }, /preprocess\.refine\.clip = 0.5 is not valid/],
    [{ grid: 4 }, /preprocess\.refine\.grid = 4 is not valid; expected 0 or 8\.\.65536/],
    [{ grid: 256.5 }, /preprocess\.refine\.grid = 256.5 is not valid/],
    [{ max_side: true }, /preprocess\.refine\.max_side = true is not valid/],
    [{ guide: 'lab' }, /preprocess\.refine\.guide = "lab" is not valid/],
    [{ sigma: 2 }, /preprocess\.refine has unknown keys sigma/],
  ];
  for (const [refine, message] of bad) {
    assert.throws(() => refineOf({ refine }), (err) => err instanceof ContractError && message.test(err.message), JSON.stringify(refine));
  }
  assert.throws(() => refineOf({ refine: 'guided' }), /preprocess\.refine is "guided", not a JSON object/);
});

test("the benchmark times the refinement at each size and reports the runs' median", async () => {
  const sizes = [];
  const rows = await timeRefine((rgba, w, h) => { assert.equal(rgba.length, w * h * 4); sizes.push(`${w}x${h}`); },
    { sizes: [[20, 10], [30, 15]], runs: 3 });
  assert.deepEqual(sizes, ['20x10', '20x10', '20x10', '20x10', '30x15', '30x15', '30x15']);   // one warm-up
  assert.deepEqual(rows.map((r) => [r.size, r.times_ms.length]), [['20x10', 3], ['30x15', 3]]);
  assert.ok(rows.every((r) => r.median_ms >= 0));
});
