"""Compiled kernels of the refinement (dbd.runtime.refine), so a camera frame refines in less time
than the int8 model takes: each is one pass over its pixels (numba; compiled on first use and
cached beside this file). The arithmetic is the one the refine module's docstring specifies; the
plain-numpy statement of it lives in tests/test_refine.py, which holds these kernels to it.
"""

from __future__ import annotations

import threading

import numba
import numpy as np

jit = numba.njit(cache=True, nogil=True, error_model="numpy")


@jit
def _taps(n_out: int, n_in: int):
    """Bilinear taps with half-pixel centres, clamped at the borders (cv2.INTER_LINEAR's rule)."""
    lo = np.empty(n_out, np.int64)
    hi = np.empty(n_out, np.int64)
    frac = np.empty(n_out, np.float32)
    scale = n_in / n_out
    for d in range(n_out):
        s = (d + 0.5) * scale - 0.5
        s0 = int(np.floor(s))
        f = s - s0
        if s0 < 0:
            s0, f = 0, 0.0
        if s0 >= n_in - 1:
            s0, f = n_in - 1, 0.0
        lo[d], hi[d], frac[d] = s0, min(s0 + 1, n_in - 1), f
    return lo, hi, frac


@jit
def resize_pixels(image, size):
    """(H, W, 3) pixels (uint8 or float) -> float32 (h, w, 3) at `size`, the contract's bilinear
    kernel computed in float: the guide at the grid without a float copy of the whole photo."""
    h, w = size
    y0, y1, fy = _taps(h, image.shape[0])
    x0, x1, fx = _taps(w, image.shape[1])
    out = np.empty((h, w, 3), np.float32)
    for y in range(h):
        a, b, t = y0[y], y1[y], fy[y]
        for x in range(w):
            left, right, s = x0[x], x1[x], fx[x]
            for c in range(3):
                top = (
                    np.float32(image[a, left, c]) + (np.float32(image[a, right, c]) - np.float32(image[a, left, c])) * s
                )
                bot = (
                    np.float32(image[b, left, c]) + (np.float32(image[b, right, c]) - np.float32(image[b, left, c])) * s
                )
                out[y, x, c] = top + (bot - top) * t
    return out


@jit
def _box_mean_(planes, r):
    """In place: each (C, H, W) plane becomes its mean over the (2r+1)² window clipped to the image.
    Running sums, O(pixels) whatever r; only one line and r+1 saved rows of scratch memory."""
    n, h, w = planes.shape
    line = np.empty(w)
    saved = np.empty((r + 1, w))
    acc = np.empty(w)
    for k in range(n):
        plane = planes[k]
        for y in range(h):  # horizontal window sums, row by row
            s = 0.0
            for x in range(min(r, w - 1) + 1):
                s += plane[y, x]
            for x in range(w):
                line[x] = s
                if x + r + 1 < w:
                    s += plane[y, x + r + 1]
                if x - r >= 0:
                    s -= plane[y, x - r]
            plane[y, :] = line
        acc[:] = 0.0  # vertical window sums; a row's sums are saved before its mean overwrites them
        for y in range(min(r, h - 1) + 1):
            acc += plane[y]
        for y in range(h):
            saved[y % (r + 1)] = plane[y]
            ny = min(y + r, h - 1) - max(y - r, 0) + 1
            for x in range(w):
                nx = min(x + r, w - 1) - max(x - r, 0) + 1
                plane[y, x] = acc[x] / (nx * ny)
            if y + r + 1 < h:
                acc += plane[y + r + 1]
            if y - r >= 0:
                acc -= saved[(y - r) % (r + 1)]


@jit
def guided_coefficients(guide, p, r, eps, work):
    """Step 4 of the refinement: (h, w, 3) float64 guide in [0, 1] and (h, w) float64 logit ->
    float32 (h, w, 4) [A_r, A_g, A_b, B], the box-averaged linear coefficients. `work` is a
    (13, h, w) float64 scratch array (reused between calls: no fresh pages to fault in)."""
    h, w = p.shape
    m = work
    for y in range(h):
        for x in range(w):
            i0, i1, i2, v = guide[y, x, 0], guide[y, x, 1], guide[y, x, 2], p[y, x]
            m[0, y, x], m[1, y, x], m[2, y, x], m[3, y, x] = i0, i1, i2, v
            m[4, y, x], m[5, y, x], m[6, y, x] = i0 * v, i1 * v, i2 * v
            m[7, y, x], m[8, y, x], m[9, y, x] = i0 * i0, i0 * i1, i0 * i2
            m[10, y, x], m[11, y, x], m[12, y, x] = i1 * i1, i1 * i2, i2 * i2
    _box_mean_(m, r)
    for y in range(h):
        for x in range(w):
            m0, m1, m2, mp = m[0, y, x], m[1, y, x], m[2, y, x], m[3, y, x]
            c0, c1, c2 = m[4, y, x] - m0 * mp, m[5, y, x] - m1 * mp, m[6, y, x] - m2 * mp
            a00, a01, a02 = m[7, y, x] - m0 * m0 + eps, m[8, y, x] - m0 * m1, m[9, y, x] - m0 * m2
            a11, a12, a22 = m[10, y, x] - m1 * m1 + eps, m[11, y, x] - m1 * m2, m[12, y, x] - m2 * m2 + eps
            # Σ⁻¹ of the symmetric 3x3 by its adjugate (the same closed form in every runtime).
            k00, k01, k02 = a11 * a22 - a12 * a12, a02 * a12 - a01 * a22, a01 * a12 - a02 * a11
            k11, k12, k22 = a00 * a22 - a02 * a02, a01 * a02 - a00 * a12, a00 * a11 - a01 * a01
            det = a00 * k00 + a01 * k01 + a02 * k02
            ar = (k00 * c0 + k01 * c1 + k02 * c2) / det
            ag = (k01 * c0 + k11 * c1 + k12 * c2) / det
            ab = (k02 * c0 + k12 * c1 + k22 * c2) / det
            # each pixel's own a, b replace its means (read above): planes 0-3 become a_r, a_g, a_b, b
            m[0, y, x], m[1, y, x], m[2, y, x] = ar, ag, ab
            m[3, y, x] = mp - ar * m0 - ag * m1 - ab * m2
    coef = m[:4]
    _box_mean_(coef, r)
    out = np.empty((h, w, 4), np.float32)
    for y in range(h):
        for x in range(w):
            for c in range(4):
                out[y, x, c] = coef[c, y, x]
    return out


@numba.njit(cache=True, nogil=True, fastmath=True)
def apply_coefficients(coef, guide, across):
    """Step 5 up to the sigmoid: float32 (h, w, 4) coefficients and the (H, W, 3) guide in pixels
    0..255 -> float32 -q (H, W), with q = bilinear(A)·guide/255 + bilinear(B). The coefficient rows
    are first resized across (h rows only), then each output row blends two of them: contiguous,
    vectorised loops and no full-resolution copy of the coefficients. `across` is (h, 4, W)
    float32 scratch."""
    gh, gw = coef.shape[0], coef.shape[1]
    h, w = guide.shape[0], guide.shape[1]
    y0, y1, fy = _taps(h, gh)
    x0, x1, fx = _taps(w, gw)
    for j in range(gh):
        for c in range(4):
            for x in range(w):
                left, right = coef[j, x0[x], c], coef[j, x1[x], c]
                across[j, c, x] = left + (right - left) * fx[x]
    out = np.empty((h, w), np.float32)
    inv = np.float32(1.0 / 255.0)
    for y in range(h):
        top, bot, t = across[y0[y]], across[y1[y]], fy[y]
        for x in range(w):
            q = top[3, x] + (bot[3, x] - top[3, x]) * t
            for c in range(3):
                q += (top[c, x] + (bot[c, x] - top[c, x]) * t) * (np.float32(guide[y, x, c]) * inv)
            out[y, x] = -q
    return out


class Scratch(threading.local):
    """Per-thread scratch arrays of the kernels, kept between calls: a fresh multi-MB array costs
    its page faults on every call, more than the arithmetic here (one set per thread, so
    Predictors shared between threads stay safe)."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        array = self.arrays.get(name)
        if array is None or array.shape != shape or array.dtype != dtype:
            array = self.arrays[name] = np.empty(shape, dtype)
        return array


scratch = Scratch()


def sigmoid_(minus_q: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-q)) in place, given -q: numpy's vectorised exp, faster than a compiled loop's."""
    np.exp(minus_q, out=minus_q)
    minus_q += 1.0
    return np.reciprocal(minus_q, out=minus_q)
