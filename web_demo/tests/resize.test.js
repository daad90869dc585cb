// Unit tests of the page's resize module (and the small numeric helpers beside it):
//   node --test web_demo/tests/
// tests/test_web.py runs them, and also compares resize.js with cv2.resize bit for bit on real
// and random images, and fma32 with an exact rational reference.
import assert from 'node:assert/strict';
import test from 'node:test';

import { axis, fma32, resize, resizeRgba } from '../resize.js';
import { percentile } from '../bench.js';
import { rint } from '../contract.js';

test('half-pixel centres: a 2x downscale samples between source pixels', () => {
  const a = axis(4, 2);          // x = (d + 0.5) * 2 - 0.5 = 0.5, 2.5
  assert.deepEqual([...a.lo], [0, 2]);
  assert.deepEqual([...a.hi], [1, 3]);
  assert.deepEqual([...a.weight], [0.5, 0.5]);
});

test('upscaling clamps at the borders instead of reading outside', () => {
  const a = axis(2, 4);          // x = -0.25, 0.25, 0.75, 1.25
  assert.deepEqual([...a.lo], [0, 0, 0, 1]);
  assert.deepEqual([...a.hi], [1, 1, 1, 1]);
  assert.deepEqual([...a.weight], [0, 0.25, 0.75, 0]);
});

test('a 2x downscale averages 2x2 blocks, per channel, stretching the aspect ratio', () => {
  // 4x2 image, 2 channels: channel 0 = x + 10 * y, channel 1 = 100 - that.
  const src = new Float32Array(4 * 2 * 2);
  for (let y = 0; y < 2; y++) for (let x = 0; x < 4; x++) {
    src[(y * 4 + x) * 2] = x + 10 * y;
    src[(y * 4 + x) * 2 + 1] = 100 - (x + 10 * y);
  }
  const out = resize(src, 4, 2, 2, 2, 1);       // 4x2 -> 2x1
  assert.deepEqual([...out], [5.5, 94.5, 7.5, 92.5]);
});

test('same size returns an equal copy; constant images stay constant', () => {
  const src = Float32Array.from({ length: 12 }, (_, i) => i / 7);
  const same = resize(src, 2, 2, 3, 2, 2);
  assert.notEqual(same, src);
  assert.deepEqual([...same], [...src]);
  const flat = new Float32Array(7 * 5).fill(Math.fround(0.3));
  for (const [w, h] of [[3, 2], [13, 9], [1, 1]]) {
    assert.ok(resize(flat, 7, 5, 1, w, h).every((v) => v === Math.fround(0.3)), `${w}x${h}`);
  }
});

test('resizeRgba divides by the pixel scale first, drops alpha, and rounds like float32', () => {
  const rgba = Uint8ClampedArray.from([255, 0, 51, 7, 0, 255, 102, 200]);    // 2x1, alpha ignored
  assert.deepEqual([...resizeRgba(rgba, 2, 1, 2, 1)], [1, 0, Math.fround(0.2), 0, 1, Math.fround(0.4)]);
  const down = resizeRgba(rgba, 2, 1, 1, 1);
  assert.deepEqual([...down], [0.5, 0.5, Math.fround(Math.fround(0.2) + Math.fround(0.5) * Math.fround(Math.fround(0.4) - Math.fround(0.2)))]);
  assert.throws(() => resizeRgba(rgba, 3, 1, 1, 1), /not 3x1/);
});

test('fma32 rounds once where computing in double then rounding to float32 does not', () => {
  // a * b + c = 1 + 3 * 2^-24 - 2^-60: just below the midpoint between two float32 neighbours.
  const a = 1 - 2 ** -18, b = (1 + 2 ** -18) * 2 ** -24, c = 1 + 2 ** -23;
  assert.equal(Math.fround(a * b + c), 1 + 2 ** -22);     // double rounding lands on the midpoint: wrong way
  assert.equal(fma32(a, b, c), 1 + 2 ** -23);
  assert.equal(fma32(-a, b, -c), -(1 + 2 ** -23));
  assert.equal(fma32(2, 3, 4), 10);
  assert.equal(fma32(0.5, 0, 0.25), 0.25);
});

test('rint ties to even, like numpy.round', () => {
  assert.deepEqual([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 2.4999, 2.5001].map(rint), [-2, -2, 0, 0, 2, 2, 2, 3]);
});

test('percentile interpolates linearly, like numpy.percentile', () => {
  const v = [10, 1, 2, 3, 4, 5, 6, 7, 8, 9];
  assert.equal(percentile(v, 50), 5.5);
  assert.ok(Math.abs(percentile(v, 90) - 9.1) < 1e-12);
  assert.equal(percentile([4], 90), 4);
});
