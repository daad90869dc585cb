"""Real images for int8 calibration and for the parity check, chosen deterministically.

`--calib` names a catalogued dataset (optionally `NAME:SPLIT`) or a folder with images/ + masks/.
The default is CUHK's TRAINING split (CUHK-TR-1): calibrating on test images would leak the test
set into the shipped model, so a split called "test" (or a split file whose name says test), and
any image of a dataset's test split, are refused.

Selection is a seeded permutation of the dataset (seed 0): the first `n` images calibrate, the
next `parity_n` are the parity images, so the two sets are disjoint whenever the dataset is large
enough, and the same command always picks the same images.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dbd.core import DBDError
from dbd.data.datasets import PairedDataset, open_dataset
from dbd.runtime.spec import PreprocessSpec

DEFAULT_CALIB = "cuhk"
SELECTION_SEED = 0
_TEST_TOKENS = ("test", "tests", "te", "te1", "testing")


@dataclass
class ImageSet:
    """Images resized to the model input, as RGB in [0, 1]: (N, H, W, 3) float32."""

    source: str  # e.g. "cuhk:train"
    names: list[str]
    unit: np.ndarray
    masks: list[np.ndarray] = field(default_factory=list)  # float32 HxW, 1 = blur, original resolution
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.names)

    def describe(self) -> dict:
        return {
            "data": self.source,
            "n_images": len(self),
            "names": self.names,
            "selection": f"seeded permutation (seed {SELECTION_SEED}) of the dataset",
        }


def _is_test_split(split: str) -> bool:
    tokens = re.split(r"[^a-z0-9]+", Path(split).name.lower())
    return any(token in _TEST_TOKENS for token in tokens)


def parse_calib(text: str) -> tuple[str, str | None]:
    """'cuhk' -> ('cuhk', None); 'cuhk:train' -> ('cuhk', 'train'); an existing folder stays whole."""
    text = text.strip()
    if not text:
        raise DBDError(
            "--calib is empty; pass a dataset name (e.g. cuhk, cuhk:train) or a folder with images/ and masks/"
        )
    if Path(text).expanduser().exists() or ":" not in text:
        return text, None
    name, split = text.rsplit(":", 1)
    return name, (split or None)


def open_calibration_dataset(text: str, polarity: str | None = None) -> PairedDataset:
    """The dataset `--calib` names, its training split by default; test splits refused."""
    name, split = parse_calib(text)
    if split is not None and _is_test_split(split):
        raise DBDError(
            f"--calib {text}: calibrating on a test split leaks the test set into the shipped model; "
            f"use a training split (e.g. --calib cuhk:train, the default)"
        )
    probe = open_dataset(name, polarity=polarity)
    if split is None and "train" in probe.spec.splits:
        split = "train"  # e.g. plain `cuhk` or the CUHK folder: never the whole set with its test images
    dataset = open_dataset(name, split=split, polarity=polarity) if split is not None else probe
    if "test" in probe.spec.splits:
        test_names = {s.name for s in open_dataset(name, split="test", polarity=polarity).samples}
        leaked = [s.name for s in dataset.samples if s.name in test_names]
        if leaked:
            raise DBDError(
                f"--calib {text}: {len(leaked)} of its images are in the '{probe.name}' test split "
                f"(first: '{leaked[0]}'); calibrate on the training split (--calib {probe.name}:train)"
            )
    return dataset


def select_images(
    dataset: PairedDataset, spec: PreprocessSpec, n: int, parity_n: int, source: str, calibrate: bool = True
) -> tuple[ImageSet, ImageSet]:
    """(calibration set of `n` images, parity set of `parity_n` images with masks), deterministic.

    With `calibrate=False` the calibration set is left empty (not read), the parity set is the same.
    """
    if n < 1 or parity_n < 1:
        raise DBDError(f"--calib-n and --parity-n must be at least 1 (got {n} and {parity_n})")
    total = len(dataset)
    order = np.random.default_rng(SELECTION_SEED).permutation(total)
    calib_idx = order[:n]
    calib_notes, parity_notes = [], []
    if total < n:
        calib_notes.append(f"{source} has only {total} images: calibrating on all of them (asked for {n})")
    if total >= n + parity_n:
        parity_idx = order[n : n + parity_n]
    else:
        parity_idx = order[-min(parity_n, total) :]
        parity_notes.append(
            f"{source} has {total} images, fewer than {n} + {parity_n}: parity images overlap the calibration images"
        )
    return (
        _load(
            dataset,
            spec,
            calib_idx if calibrate else calib_idx[:0],
            source,
            masks=False,
            notes=calib_notes if calibrate else [],
        ),
        _load(dataset, spec, parity_idx, source, masks=True, notes=parity_notes),
    )


def _load(
    dataset: PairedDataset, spec: PreprocessSpec, indices: np.ndarray, source: str, masks: bool, notes: list[str]
) -> ImageSet:
    h, w = spec.input_size
    unit = np.empty((len(indices), h, w, 3), np.float32)
    names, mask_list = [], []
    for row, index in enumerate(indices):
        image, mask = dataset[int(index)]
        unit[row] = spec.model_input(image)
        names.append(dataset.samples[int(index)].name)
        if masks:
            mask_list.append(mask)
    return ImageSet(source=source, names=names, unit=unit, masks=mask_list, notes=notes)


def load_images(
    text: str, spec: PreprocessSpec, n: int, parity_n: int, polarity: str | None = None, calibrate: bool = True
) -> tuple[ImageSet, ImageSet]:
    dataset = open_calibration_dataset(text, polarity)
    split = Path(dataset.split).stem if dataset.split and Path(dataset.split).suffix else dataset.split
    source = dataset.name + (f":{split}" if split else "")
    return select_images(dataset, spec, n, parity_n, source, calibrate)


def normalised_nchw(unit: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """(N, H, W, 3) RGB in [0, 1] -> the PyTorch model's input (N, 3, H, W), as PreprocessSpec.preprocess."""
    return spec.to_layout(spec.normalize(unit), "NCHW")
