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

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from dbd.models.errors import DBDError
from dbd.runtime.datasets import PairedDataset, open_dataset
from dbd.runtime.spec import PreprocessSpec
from dbd.runtime.synthetic import SyntheticDefocus

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
        base = open_dataset(cfg.data, split=cfg.split, polarity=cfg.polarity)
        names = [s.name for s in base.samples]
        description = f"{base.name} split {cfg.split or 'all'} ({len(base)} pairs)"
    val_idx = [i for i, n in enumerate(names) if _holdout(n, cfg.val_fraction)]
    train_idx = [i for i in range(len(names)) if i not in set(val_idx)]
    if not train_idx or not val_idx:
        raise DBDError(f"{description}: too few pairs to hold out a validation set "
                       f"({len(train_idx)} train / {len(val_idx)} val); use more data or change --val-fraction")
    train = PairCache(_Subset(base, train_idx), [names[i] for i in train_idx])
    val = PairCache(_Subset(base, val_idx), [names[i] for i in val_idx])
    return train, val, f"{description}: {len(train)} train / {len(val)} validation"


class _Subset:
    def __init__(self, base, indices):
        self.base, self.indices = base, indices

    def __iter__(self):
        return (self.base[i] for i in self.indices)


class AugmentedPairs(Dataset):
    """Random resized crop + flip + colour jitter -> (normalised CHW tensor, 1xHxW mask)."""

    def __init__(self, pairs: PairCache, spec: PreprocessSpec, size: int, seed: int,
                 synthetic: SyntheticDefocus | None = None):
        self.pairs, self.spec, self.size, self.seed = pairs, spec, size, seed
        self.synthetic = synthetic
        self.epoch = 0   # set before each epoch; workers are re-forked per epoch and see it

    def __len__(self) -> int:
        return len(self.pairs) + (len(self.synthetic) if self.synthetic is not None else 0)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        if index < len(self.pairs):
            image, mask = self.pairs.images[index], self.pairs.masks[index]
        else:  # a fresh synthetic sample every epoch
            image, mask = self.synthetic[(self.epoch * len(self.synthetic) + index) % len(self.synthetic)]
            mask = mask.astype(np.uint8)
        image, mask = random_resized_crop(rng, image, mask, self.size)
        if rng.random() < 0.5:
            image, mask = image[:, ::-1], mask[:, ::-1]
        image = colour_jitter(rng, image.astype(np.float32) / 255.0)
        x = (image - np.asarray(self.spec.mean, np.float32)) / np.asarray(self.spec.std, np.float32)
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))), torch.from_numpy(mask[None].copy())


def random_resized_crop(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray, size: int,
                        scale: tuple[float, float] = (0.5, 1.0), ratio: tuple[float, float] = (0.75, 1.333)):
    """A crop of 50-100 % of the area, resized to size x size (the mask bilinearly, as soft labels)."""
    h, w = mask.shape
    area = h * w * rng.uniform(*scale)
    aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
    ch, cw = min(h, int(round(np.sqrt(area / aspect)))), min(w, int(round(np.sqrt(area * aspect))))
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    image = cv2.resize(image[top:top + ch, left:left + cw], (size, size), interpolation=cv2.INTER_LINEAR)
    mask = cv2.resize(mask[top:top + ch, left:left + cw].astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
    return image, mask


def colour_jitter(rng: np.random.Generator, image: np.ndarray, strength: float = 0.2) -> np.ndarray:
    """Brightness, contrast and saturation jitter on float RGB in [0, 1] (no spatial filtering)."""
    image = image * rng.uniform(1 - strength, 1 + strength)
    mean = image.mean()
    image = (image - mean) * rng.uniform(1 - strength, 1 + strength) + mean
    grey = image.mean(axis=2, keepdims=True)
    image = (image - grey) * rng.uniform(1 - strength, 1 + strength) + grey
    return np.clip(image, 0.0, 1.0)
