"""Synthetic defocus: unlimited labelled (image, blur mask) pairs without any benchmark.

Smoke tests, calibration checks and augmentation need labelled defocus that is always available and
exactly known. Each sample takes sharp content (a crop of a real all-in-focus photo, or a procedural
texture full of edges), picks a smooth blob-shaped region, and defocuses it the way a lens does: a
disc (pillbox) point-spread function, with several radii for several depth layers, blended in with a
feathered edge. The label stays the binary region (1 = blur), as in the benchmarks' masks.

Samples are a pure function of (seed, index), so a failing test or a calibration run can be
reproduced exactly. Only numpy and OpenCV, cheap enough to generate on the fly (docs/metrics.md).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import cv2
import numpy as np

from dbd.runtime.imageio import read_image


def disc_kernel(radius: float) -> np.ndarray:
    """Normalised pillbox PSF of `radius` pixels (float32, sums to 1), anti-aliased at its rim.

    A defocused point images to a disc, not a Gaussian: the disc keeps the flat, ringing-free look
    of real bokeh. Radii below 0.5 px are no blur at all: [[1.0]].
    """
    if radius < 0.5:
        return np.ones((1, 1), np.float32)
    half = int(math.ceil(radius))
    ys, xs = np.mgrid[-half : half + 1, -half : half + 1]
    distance = np.sqrt(xs * xs + ys * ys)
    # Coverage falls linearly from 1 to 0 across the one-pixel band around the rim.
    kernel = np.clip(radius + 0.5 - distance, 0.0, 1.0).astype(np.float32)
    return kernel / kernel.sum()


def disc_blur(image: np.ndarray, radius: float) -> np.ndarray:
    """Convolve `image` with `disc_kernel(radius)`, at reduced resolution for large radii.

    A disc wider than 5 px leaves almost no detail that a 2x downsample would lose, so blurring a
    half-size copy with half the radius and upsampling looks the same at a fraction of the cost
    (OpenCV switches to a DFT for kernels over 11x11, about 5x slower than the small-kernel path).
    """
    factor = 1
    while radius / factor > 5.0:
        factor *= 2
    if factor == 1:
        return cv2.filter2D(image, -1, disc_kernel(radius), borderType=cv2.BORDER_REFLECT)
    height, width = image.shape[:2]
    small_size = (max(1, -(-width // factor)), max(1, -(-height // factor)))
    small = cv2.resize(image, small_size, interpolation=cv2.INTER_AREA)
    small = cv2.filter2D(small, -1, disc_kernel(radius / factor), borderType=cv2.BORDER_REFLECT)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


@functools.lru_cache(maxsize=16)
def _cached_source(path: str) -> np.ndarray:
    """Decoding a large photo costs more than making the sample: keep a few decoded."""
    return read_image(path)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Low-frequency noise: a coarse random grid upsampled smoothly to `shape` (H, W)."""
    height, width = shape
    grid = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)


def _vivid_colours(rng: np.random.Generator, count: int) -> np.ndarray:
    """`count` saturated RGB colours (int rows), a fifth of them greys for pure luminance edges."""
    hsv = np.stack(
        [rng.integers(0, 180, count), rng.integers(120, 256, count), rng.integers(60, 256, count)], axis=1
    ).astype(np.uint8)
    hsv[rng.random(count) < 0.2, 1] = 0
    return cv2.cvtColor(hsv[:, None, :], cv2.COLOR_HSV2RGB)[:, 0, :].astype(int)


_FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX)


def _procedural_texture(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A sharp, busy float32 RGB picture: shapes, strokes, glyphs, checkers and pixel noise.

    Defocus is only visible where there is detail to lose, so every part of the frame gets edges at
    many scales and orientations. Each shape's parameters come from one row of uniform numbers
    (one generator call for all shapes keeps this fast).
    """
    height, width = shape
    count = int(rng.integers(40, 70) * height * width / (320 * 320)) + 1
    colours = _vivid_colours(rng, count + 2)
    ramp = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    image = np.empty((height, width, 3), np.uint8)
    image[:] = colours[0] * (1 - ramp) + colours[1] * ramp
    scale = max(height, width)
    for u, colour in zip(rng.random((count, 8)), colours[2:].tolist()):
        kind = int(u[0] * 6)
        x, y = int(u[1] * width), int(u[2] * height)
        size = int(scale // 40 + 2 + u[3] * scale / 5)
        line_type = cv2.LINE_AA if u[4] < 0.5 else cv2.LINE_8
        thickness = -1 if u[5] < 0.6 else 1 + int(u[5] * 7) % 3
        if kind == 0:
            corner = (x + size, y + int(size * (0.3 + 1.2 * u[6])))
            cv2.rectangle(image, (x, y), corner, colour, thickness, line_type)
        elif kind == 1:
            axes = (size, int(size * (0.3 + 0.7 * u[6])))
            cv2.ellipse(image, (x, y), axes, 180.0 * u[7], 0, 360, colour, thickness, line_type)
        elif kind == 2:
            end = (x + int((u[6] - 0.5) * 4 * size), y + int((u[7] - 0.5) * 4 * size))
            cv2.line(image, (x, y), end, colour, 1 + int(u[5] * 3), line_type)
        elif kind == 3:  # text-like strokes: random glyphs in Hershey fonts
            glyphs = "".join(chr(33 + int(c)) for c in rng.integers(0, 94, 2 + int(u[6] * 6)))
            font = _FONTS[int(u[7] * len(_FONTS))]
            cv2.putText(image, glyphs, (x, y), font, size / 40.0, colour, 1 + int(u[5] * 2), line_type)
        elif kind == 4:  # checker patch
            cell = 2 + int(u[6] * 7)
            patch = image[y : y + size, x : x + size]
            rows, cols = np.arange(patch.shape[0]) // cell, np.arange(patch.shape[1]) // cell
            patch[(rows[:, None] + cols[None, :]) % 2 == 1] = colour
        else:  # a zig-zag polyline
            steps = rng.integers(-size, size + 1, (3 + int(u[6] * 5), 2))
            points = (np.cumsum(steps, axis=0) + (x, y)).astype(np.int32)
            cv2.polylines(image, [points], False, colour, 1 + int(u[7] * 2), line_type)
    noise = rng.standard_normal((height, width, 1), dtype=np.float32) * np.float32(rng.uniform(4.0, 12.0))
    return image.astype(np.float32) + noise  # clipped once, after the blur


def _blur_region(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A binary HxW blur region with a random coverage in about 10%..90%.

    Either smooth noise blobs cut at a coverage quantile, or an "object" of overlapping ellipses and
    polygons whose inside or outside (foreground or background) is the defocused part.
    """
    height, width = shape
    if rng.random() < 0.5:
        shapes = np.zeros(shape, np.uint8)
        cx, cy = rng.uniform(0.25, 0.75) * width, rng.uniform(0.25, 0.75) * height
        spread = min(height, width) * rng.uniform(0.1, 0.35)
        for _ in range(int(rng.integers(1, 5))):
            centre = (int(cx + rng.normal(0, spread)), int(cy + rng.normal(0, spread)))
            if rng.random() < 0.6:
                axes = (int(spread * rng.uniform(0.5, 1.8)), int(spread * rng.uniform(0.5, 1.8)))
                cv2.ellipse(shapes, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
            else:
                corners = rng.normal(0, spread * 1.2, (int(rng.integers(3, 8)), 2)) + centre
                cv2.fillPoly(shapes, [cv2.convexHull(corners.astype(np.int32))], 1)
        region = shapes.astype(bool) if rng.random() < 0.5 else ~shapes.astype(bool)
        if 0.1 <= region.mean() <= 0.9:
            return region
    coverage = rng.uniform(0.1, 0.9)
    field = _smooth_noise(rng, shape, int(rng.integers(2, 7)))
    return field > np.quantile(field[::2, ::2], 1.0 - coverage)  # the field is smooth: subsample


class SyntheticDefocus:
    """Dataset of synthetic partially defocused images; item i -> (uint8 HxWx3, float32 HxW, 1 = blur).

    `size` is (height, width). `sources`, if given, should be all-in-focus photos: their existing
    blur would otherwise be labelled sharp. `radius` bounds the disc radii in pixels.
    """

    def __init__(
        self,
        size: tuple[int, int] = (320, 320),
        sources: list[Path] | None = None,
        radius: tuple[float, float] = (2.0, 12.0),
        seed: int = 0,
        length: int = 1000,
    ):
        if not (0.0 <= radius[0] <= radius[1]):
            raise ValueError(f"radius must be (low, high) with 0 <= low <= high, got {radius}")
        self.size = (int(size[0]), int(size[1]))
        self.sources = [Path(p) for p in sources] if sources else []
        self.radius = (float(radius[0]), float(radius[1]))
        self.seed = int(seed)
        self.length = int(length)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if index < 0:
            index += self.length
        if not 0 <= index < self.length:
            raise IndexError(f"sample {index} out of range for {self.length} samples")
        rng = np.random.default_rng([self.seed, index])
        sharp = self._sharp_content(rng)
        region = _blur_region(rng, self.size)
        image = self._defocus(rng, sharp, region)
        return image, region.astype(np.float32)

    def _sharp_content(self, rng: np.random.Generator) -> np.ndarray:
        if not self.sources:
            return _procedural_texture(rng, self.size)
        photo = _cached_source(str(self.sources[int(rng.integers(len(self.sources)))]))
        height, width = self.size
        # Scale so the crop fits, and at most down to the minimum: never upsample much (it blurs).
        fit = max(height / photo.shape[0], width / photo.shape[1])
        scale = max(fit, min(1.0, fit * rng.uniform(1.0, 2.0)))
        if abs(scale - 1.0) > 1e-3:
            new_size = (max(width, round(photo.shape[1] * scale)), max(height, round(photo.shape[0] * scale)))
            interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            photo = cv2.resize(photo, new_size, interpolation=interpolation)
        top = int(rng.integers(0, photo.shape[0] - height + 1))
        left = int(rng.integers(0, photo.shape[1] - width + 1))
        crop = photo[top : top + height, left : left + width]
        return np.ascontiguousarray(crop[:, ::-1] if rng.random() < 0.5 else crop)

    def _defocus(self, rng: np.random.Generator, sharp: np.ndarray, region: np.ndarray) -> np.ndarray:
        """Blur `region` of `sharp` with 1-3 depth layers of disc radii, feathered into the rest."""
        image = np.asarray(sharp, dtype=np.float32)
        layers = int(rng.integers(1, 4))
        radii = np.sort(rng.uniform(*self.radius, layers))
        blurred = disc_blur(image, radii[0])
        if layers > 1:
            # Depth varies smoothly over the frame; each pixel interpolates between the blur of the
            # two layers nearest its depth ("hat" weights), so depths blend instead of meeting at seams.
            depth = _smooth_noise(rng, self.size, int(rng.integers(2, 5)))
            low, high = float(depth.min()), float(depth.max())
            position = (depth - low) * np.float32((layers - 1) / max(high - low, 1e-6))
            so_far = np.clip(1.0 - position, 0.0, 1.0)
            for j, radius in enumerate(radii[1:], start=1):
                weight = np.clip(1.0 - np.abs(position - j), 0.0, 1.0)
                # blendLinear divides by the weight sum: a running weighted mean of the layers.
                blurred = cv2.blendLinear(blurred, disc_blur(image, radius), so_far, weight)
                so_far = so_far + weight
        # Soft transition: in a real photo defocus changes over a few pixels, not at a cut.
        alpha = cv2.GaussianBlur(region.astype(np.float32), (0, 0), rng.uniform(0.5, 2.5))
        out = cv2.blendLinear(blurred, image, alpha, 1.0 - alpha)
        if rng.random() < 0.5:  # sensor noise, the same over blurred and sharp parts
            sigma = np.float32(rng.uniform(0.5, 2.0))
            out += rng.standard_normal(out.shape[:2] + (1,), dtype=np.float32) * sigma
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)
