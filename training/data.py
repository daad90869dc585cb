"""Training data: the real pairs (decoded once, kept in memory), an optional synthetic mix-in,
and augmentation that is safe for defocus labels.

Augmentation never blurs, sharpens or rescales the *content* non-uniformly in a way that would
change which pixels are in focus: random resized crops, horizontal flips and colour jitter
only. (Resizing blurs a little, but uniformly over the image, so the sharp/blurred contrast
that defines the label survives.) Every random draw comes from (seed, epoch, index), so a run
is reproducible and a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch.utils.data import Dataset

from dbd.core import DBDError
from dbd.data.capture import CaptureAugment
from dbd.data.datasets import PairedDataset, open_dataset
from dbd.data.synthetic import SyntheticDefocus
from dbd.runtime.spec import PreprocessSpec, resize_bilinear

from .config import TrainConfig


class PairCache:
    """All (image, mask) pairs of a dataset decoded once: decoding JPEGs every epoch would cost
    more CPU than the student's forward pass. Masks are kept as uint8 {0, 1}."""

    def __init__(self, source: PairedDataset | SyntheticDefocus, names: list[str]):
        self.names = names
        self.images, self.masks = [], []
        for image, mask in source:
            self.images.append(image)
            self.masks.append((mask >= 0.5).astype(np.uint8))

    def __len__(self) -> int:
        return len(self.images)


def _holdout(name: str, fraction: float) -> bool:
    """Deterministic validation membership from the file name: stable across seeds and machines."""
    return int(hashlib.sha1(name.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < fraction


def load_pairs(cfg: TrainConfig) -> tuple[PairCache, PairCache, str]:
    """(train, val, description) for the config's data; val is held out of the training split."""
    if cfg.data == "synthetic":
        gen = SyntheticDefocus(size=(cfg.imgsz, cfg.imgsz), seed=cfg.seed + 12345, length=cfg.synthetic_len)
        names = [f"synthetic_{i:05d}" for i in range(len(gen))]
        base: PairedDataset | SyntheticDefocus = gen
        description = f"synthetic defocus ({len(gen)} samples, seed {cfg.seed + 12345})"
    else:
        # --split '' (or a dataset without split files): every pair, validation held out by hash below.
        base = open_dataset(cfg.data, split=cfg.split or None, polarity=cfg.polarity)
        if not cfg.split and "test" in base.spec.splits:
            raise DBDError(
                f"--split '' would train on all of '{base.name}', its test split "
                f"'{base.spec.splits['test']}' included; use --split train"
            )
        names = [s.name for s in base.samples]
        description = f"{base.name} split {cfg.split or 'all'} ({len(base)} pairs)"
    val_idx = [i for i, n in enumerate(names) if _holdout(n, cfg.val_fraction)]
    train_idx = [i for i in range(len(names)) if i not in set(val_idx)]
    if not train_idx or not val_idx:
        raise DBDError(
            f"{description}: too few pairs to hold out a validation set "
            f"({len(train_idx)} train / {len(val_idx)} val); use more data or change --val-fraction"
        )
    train = PairCache(_Subset(base, train_idx), [names[i] for i in train_idx])
    val = PairCache(_Subset(base, val_idx), [names[i] for i in val_idx])
    if isinstance(base, PairedDataset):
        _check_both_classes(base, cfg, train.masks + val.masks)
    return train, val, f"{description}: {len(train)} train / {len(val)} validation"


def _check_both_classes(base: PairedDataset, cfg: TrainConfig, masks: list[np.ndarray]) -> None:
    """One all-blur (or all-sharp) photo is legitimate; a whole dataset of one class is a wrong
    polarity, threshold or mask export, and would train a constant map with a 0.0000 score."""
    blur = sum(int(np.count_nonzero(m)) for m in masks)
    if blur and blur < sum(m.size for m in masks):
        return
    kind = "sharp" if blur == 0 else "blur"
    folder = base.samples[0].mask_path.parent
    raise DBDError(
        f"every mask in '{folder}' reads as all {kind} (first: '{base.samples[0].mask_path.name}', "
        f"polarity {base.spec.polarity}): a dataset of one class cannot train a blur detector; "
        f"check the masks (blur and sharp regions drawn in black and white) and --polarity"
    )


class _Subset:
    def __init__(self, base, indices):
        self.base, self.indices = base, indices

    def __iter__(self):
        return (self.base[i] for i in self.indices)


class AugmentedPairs(Dataset):
    """Random resized crop + flip + colour jitter -> (normalised CHW tensor, 1xHxW mask), plus
    the cached teacher map (1xHxW P(blur)) when `teacher_maps` is given. The pixels become the
    tensor through the spec (PreprocessSpec.to_unit / normalize / to_layout), as at inference;
    the crop is resized as uint8 (the capture's downscale), a rounding to whole grey levels that
    is part of the augmentation. With `augment=False` every sample is the whole photo exactly as
    inference feeds it (PreprocessSpec.model_input, no draw at all).

    The teacher map is warped by exactly the crop, resize and flip of its image and mask, so a
    student step needs no teacher forward. The capture augmentation (`capture`) changes only the
    image: the teacher saw the clean photo, the student learns to see the same through any
    downscaler, JPEG or noise. Its draws come from a second generator, so with it off every
    other draw is what it always was.
    """

    def __init__(
        self,
        pairs: PairCache,
        spec: PreprocessSpec,
        size: int,
        seed: int,
        synthetic: SyntheticDefocus | None = None,
        teacher_maps: list[np.ndarray] | None = None,
        capture: CaptureAugment | None = None,
        augment: bool = True,
    ):
        self.pairs, self.spec, self.size, self.seed = pairs, spec, size, seed
        self.augment = augment
        self.synthetic = synthetic
        if teacher_maps is not None and synthetic is not None:
            raise DBDError("cached teacher maps cover the real pairs only; use --synthetic 0 with --teacher-cache")
        self.teacher_maps, self.capture = teacher_maps, capture or CaptureAugment(0.0)
        self.epoch = 0  # set before each epoch; workers are re-forked per epoch and see it

    def __len__(self) -> int:
        return len(self.pairs) + (len(self.synthetic) if self.synthetic is not None else 0)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        capture_rng = np.random.default_rng([self.seed, self.epoch, index, 1])
        teacher = None
        if index < len(self.pairs):
            image, mask = self.pairs.images[index], self.pairs.masks[index]
            if self.teacher_maps is not None:
                teacher = self.teacher_maps[index]
        else:  # a fresh synthetic sample every epoch
            image, mask = self.synthetic[(self.epoch * len(self.synthetic) + index) % len(self.synthetic)]
            mask = mask.astype(np.uint8)
        if not self.augment:
            teacher = _resize_soft(teacher, self.size) / np.float32(255.0) if teacher is not None else None
            return self._sample(
                self.spec.resize_image(self.spec.to_unit(image), (self.size, self.size)),
                _resize_soft(mask, self.size),
                teacher,
            )
        top, left, ch, cw = random_crop_box(rng, mask.shape)
        window = (slice(top, top + ch), slice(left, left + cw))
        image = self.capture(capture_rng, image[window], (self.size, self.size))
        mask = _resize_soft(mask[window], self.size)
        if teacher is not None:
            teacher = _resize_soft(teacher[window], self.size) / np.float32(255.0)
        if rng.random() < 0.5:
            image, mask = image[:, ::-1], mask[:, ::-1]
            teacher = teacher[:, ::-1] if teacher is not None else None
        return self._sample(colour_jitter(rng, self.spec.to_unit(image)), mask, teacher)

    def _sample(self, unit: np.ndarray, mask: np.ndarray, teacher: np.ndarray | None) -> tuple[torch.Tensor, ...]:
        """(RGB in [0, 1], soft mask, teacher P(blur) or None), all at size x size -> the tensors:
        the spec's normalisation, NCHW as the network takes it."""
        x = self.spec.to_layout(self.spec.normalize(unit), "NCHW")
        sample = (torch.from_numpy(x), torch.from_numpy(mask[None].copy()))
        if teacher is not None:
            sample += (torch.from_numpy(np.ascontiguousarray(teacher[None])),)
        return sample


def random_crop_box(
    rng: np.random.Generator,
    shape: tuple[int, int],
    scale: tuple[float, float] = (0.5, 1.0),
    ratio: tuple[float, float] = (0.75, 1.333),
) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a crop of 50-100 % of the area with a random aspect ratio."""
    h, w = shape
    area = h * w * rng.uniform(*scale)
    aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
    ch, cw = min(h, int(round(np.sqrt(area / aspect)))), min(w, int(round(np.sqrt(area * aspect))))
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return top, left, ch, cw


def _resize_soft(label: np.ndarray, size: int) -> np.ndarray:
    """A mask or teacher map resized bilinearly to size x size as float32 (soft at the edges)."""
    return resize_bilinear(label.astype(np.float32), (size, size))


def colour_jitter(rng: np.random.Generator, image: np.ndarray, strength: float = 0.2) -> np.ndarray:
    """Brightness, contrast and saturation jitter on float RGB in [0, 1] (no spatial filtering)."""
    image = image * rng.uniform(1 - strength, 1 + strength)
    mean = image.mean()
    image = (image - mean) * rng.uniform(1 - strength, 1 + strength) + mean
    grey = image.mean(axis=2, keepdims=True)
    image = (image - grey) * rng.uniform(1 - strength, 1 + strength) + grey
    return np.clip(image, 0.0, 1.0)
