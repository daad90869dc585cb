"""Finding the benchmark data and opening image/mask datasets with one mask convention (1 = blur).

The benchmarks disagree on what a white mask pixel means (CUHK, CTCUG, SZU-BD: blur; DUT: sharp), and
a silently inverted mask trains a model to detect the wrong thing while every loss curve looks fine.
So polarity is never guessed: each catalogued dataset carries it, and a plain folder must be given
one. Everything a user can get wrong (data root, names, missing or unpaired files, split files)
raises `DBDError` with one line naming the file or folder and the fix.

The data lives outside the repo (../shared/data by default, or wherever DBD_DATA points). This
module is torch-free on purpose: training wraps `PairedDataset`, benchmarks and tools use it as is.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dbd.core import (
    DBDError,
    find_data_root,  # noqa: F401  (the data root is found here for every stage)
)
from dbd.runtime.imageio import IMAGE_EXTENSIONS, POLARITIES, read_image, read_mask


@dataclass(frozen=True, kw_only=True)
class DatasetSpec:
    """Where a benchmark lives under the data root and how its masks are stored."""

    name: str
    dirnames: tuple[str, ...]  # tried in order under the data root
    image_dir: str = "images"
    mask_dir: str = "masks"
    polarity: str  # "blur_white" or "sharp_white": what white means in the mask files
    threshold: int = 128  # grey level (0..255) from which a mask pixel counts as white
    splits: dict[str, str] = field(default_factory=dict, hash=False)  # name -> file in the folder
    description: str = ""

    def __post_init__(self) -> None:
        if self.polarity not in POLARITIES:
            raise DBDError(
                f"dataset '{self.name}' has unknown polarity {self.polarity!r}; "
                f"use blur_white or sharp_white (--polarity)"
            )


CATALOGUE: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            name="cuhk",
            dirnames=("CUHK",),
            polarity="blur_white",
            splits={
                "train": "splits/cuhk_tr1_train_604.txt",  # CUHK-TR-1
                "test": "splits/cuhk_te1_test_100.txt",  # CUHK-TE-1 (BTBNet split)
            },
            description="CUHK defocus (Shi et al. 2014): 704 photos, white = blur; "
            "train = CUHK-TR-1 (604), test = CUHK-TE-1 (100)",
        ),
        DatasetSpec(
            name="dut",
            dirnames=("DUT", "DUT-samples"),
            polarity="sharp_white",
            description="DUT-DBD: 320x320 palettised BMP masks with grey edges, white = sharp",
        ),
        DatasetSpec(
            name="ctcug",
            dirnames=("CTCUG",),
            polarity="blur_white",
            description="CTCUG: white = blur",
        ),
        DatasetSpec(
            name="szu-bd",
            dirnames=("SZU-BD",),
            polarity="blur_white",
            description="SZU-BD: white = blur, some masks with grey edges",
        ),
    )
}


@dataclass(frozen=True)
class Sample:
    """One image and its mask; `name` is the shared file stem."""

    name: str
    image_path: Path
    mask_path: Path


class PairedDataset:
    """Image/mask pairs; item i is (image uint8 HxWx3 RGB, mask float32 HxW with 1 = blur)."""

    def __init__(self, spec: DatasetSpec, folder: Path, samples: list[Sample], split: str | None):
        self.spec = spec
        self.folder = folder
        self.samples = samples
        self.split = split

    @property
    def name(self) -> str:
        return self.spec.name

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        sample = self.samples[index]  # IndexError past the end keeps `for x in dataset` working
        image = read_image(sample.image_path)
        mask = read_mask(sample.mask_path, self.spec.polarity, self.spec.threshold)
        if mask.shape != image.shape[:2]:
            (mh, mw), (ih, iw) = mask.shape, image.shape[:2]
            raise DBDError(
                f"mask '{sample.mask_path}' is {mw}x{mh} but its image '{sample.image_path}' is "
                f"{iw}x{ih}; resize the mask to its image (or fix the pairing)"
            )
        return image, mask

    def __repr__(self) -> str:
        split = f", split={self.split!r}" if self.split else ""
        return (
            f"PairedDataset({self.name!r}, {len(self)} pairs{split}, "
            f"polarity={self.spec.polarity!r}, folder='{self.folder}')"
        )


def _lookup_catalogue(name: str) -> DatasetSpec | None:
    """A catalogue entry by name or folder name, case-insensitively ("CUHK", "DUT-samples")."""
    key = name.strip().lower()
    for spec in CATALOGUE.values():
        if key == spec.name or key in (d.lower() for d in spec.dirnames):
            return spec
    return None


def _unknown_name_error(name: str) -> DBDError:
    aliases = {d.lower(): spec.name for spec in CATALOGUE.values() for d in spec.dirnames}
    aliases.update({n: n for n in CATALOGUE})
    close = difflib.get_close_matches(name.strip().lower(), list(aliases), n=1, cutoff=0.5)
    hint = f"did you mean '{aliases[close[0]]}'? " if close else ""
    return DBDError(
        f"unknown dataset '{name}'; {hint}known datasets: {', '.join(CATALOGUE)} "
        f"(or pass a folder holding images/ and masks/)"
    )


def _check_polarity(polarity: str) -> None:
    if polarity not in POLARITIES:
        raise DBDError(f"unknown mask polarity {polarity!r}; pass blur_white or sharp_white (--polarity)")


def _natural_key(text: str) -> list:
    """Sort '2' before '10' (DUT names its files 1.jpg, 2.jpg, ...)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def _files_by_stem(folder: Path) -> dict[str, Path]:
    """Image files of `folder` keyed by stem; two files with one stem are ambiguous -> DBDError."""
    by_stem: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in IMAGE_EXTENSIONS or not path.is_file():
            continue  # hidden files (macOS ._x.jpg), READMEs, sub-folders
        if path.stem in by_stem:
            raise DBDError(
                f"'{by_stem[path.stem].name}' and '{path.name}' in '{folder}' share the name "
                f"'{path.stem}', so pairing is ambiguous; keep one of them"
            )
        by_stem[path.stem] = path
    return by_stem


def _pair_folder(folder: Path, spec: DatasetSpec) -> list[Sample]:
    """All image/mask pairs of a dataset folder, matched by file stem, in natural name order."""
    image_dir, mask_dir = folder / spec.image_dir, folder / spec.mask_dir
    expected = f"expected {image_dir}/*.jpg with masks of the same name in {mask_dir}"
    for sub in (image_dir, mask_dir):
        if not sub.is_dir():
            raise DBDError(f"no image/mask pairs in '{folder}': folder '{sub}' is missing; {expected}")
    images, masks = _files_by_stem(image_dir), _files_by_stem(mask_dir)
    stems = sorted(images.keys() & masks.keys(), key=_natural_key)
    if not stems:
        raise DBDError(f"no image/mask pairs in '{folder}': {expected}")
    for unpaired, where, other, fix in (
        (images.keys() - masks.keys(), images, mask_dir, "add their masks or remove the images"),
        (masks.keys() - images.keys(), masks, image_dir, "add their images or remove the masks"),
    ):
        if unpaired:
            first = where[min(unpaired, key=_natural_key)]
            kind = "image" if where is images else "mask"
            raise DBDError(
                f"{len(unpaired)} {kind}(s) in '{first.parent}' have no counterpart of the same name "
                f"in '{other}' (first: '{first.name}'); {fix}"
            )
    return [Sample(stem, images[stem], masks[stem]) for stem in stems]


def _split_file(folder: Path, spec: DatasetSpec, split: str) -> Path:
    """The split file for a split name, or a split file given by path (absolute or in the folder)."""
    if split in spec.splits:
        path = folder / spec.splits[split]
        if not path.is_file():
            raise DBDError(
                f"split file '{path}' of dataset '{spec.name}' split '{split}' is missing; "
                f"restore it from the dataset release"
            )
        return path
    for candidate in (Path(split).expanduser(), folder / split):
        if candidate.suffix and candidate.is_file():
            return candidate
    known = ", ".join(spec.splits) or "none"
    raise DBDError(
        f"unknown split '{split}' for dataset '{spec.name}' in '{folder}'; known splits: {known} "
        f"(or pass a split file with one image filename per line, or --split '' for all pairs)"
    )


def _select_split(samples: list[Sample], split_file: Path) -> list[Sample]:
    """The samples a split file lists (one image filename per line, matched by stem), in its order."""
    try:
        lines = [line.strip() for line in split_file.read_text(encoding="utf-8-sig").splitlines()]
    except (OSError, UnicodeDecodeError) as err:
        raise DBDError(
            f"cannot read split file '{split_file}' ({type(err).__name__}); "
            f"make it a UTF-8 text file with one image filename per line"
        ) from None
    names = [line for line in lines if line]
    if not names:
        raise DBDError(f"split file '{split_file}' is empty; list one image filename per line")
    by_stem = {sample.name: sample for sample in samples}
    selected: list[Sample] = []
    missing: list[str] = []
    for entry in names:
        leaf = Path(entry.replace("\\", "/")).name
        sample = by_stem.get(Path(leaf).stem) or by_stem.get(leaf)
        if sample is None:
            missing.append(entry)
        else:
            selected.append(sample)
    if missing:
        raise DBDError(
            f"split file '{split_file}' lists {len(missing)} image(s) that are not in the dataset "
            f"(first: '{missing[0]}'); fix the split file or restore the images"
        )
    seen: set[str] = set()
    for sample in selected:
        if sample.name in seen:
            raise DBDError(f"split file '{split_file}' lists '{sample.name}' more than once; remove the duplicate")
        seen.add(sample.name)
    return selected


def _catalogued_folder(spec: DatasetSpec, polarity: str | None, root: Path | None) -> Path:
    """The folder of a catalogued dataset under the data root (its dirnames tried in order)."""
    if polarity is not None:
        _check_polarity(polarity)
        if polarity != spec.polarity:
            raise DBDError(
                f"dataset '{spec.name}' stores {spec.polarity} masks, not {polarity}; "
                f"drop --polarity for catalogued datasets"
            )
    data_root = Path(root) if root is not None else find_data_root()
    tried = [data_root / dirname for dirname in spec.dirnames]
    for folder in tried:
        if folder.is_dir():
            return folder
    looked = ", ".join(f"'{p}'" for p in tried)
    raise DBDError(
        f"dataset '{spec.name}' not found: looked for {looked}; put it there "
        f"(with images/ and masks/) or set DBD_DATA=/path/to/shared/data"
    )


def _folder_spec(folder: Path, polarity: str | None) -> tuple[DatasetSpec, Path]:
    """The spec of a dataset given as a folder: the catalogue's if it is named like one, else generic.

    An explicit polarity that contradicts the catalogue wins here: the folder is the user's data.
    """
    if not folder.is_dir():
        raise DBDError(f"dataset folder '{folder}' does not exist (or is not a folder); check the path")
    # Exact folder names only (CUHK, DUT-samples, ...): a user's own "dut" folder is not guessed at.
    catalogued = next((s for s in CATALOGUE.values() if folder.name in s.dirnames), None)
    if polarity is None:
        if catalogued is None:
            raise DBDError(
                f"folder '{folder}' is not a catalogued dataset, so its mask polarity is unknown; "
                f"pass polarity blur_white or sharp_white (--polarity)"
            )
        return catalogued, folder
    _check_polarity(polarity)
    if catalogued is not None and catalogued.polarity == polarity:
        return catalogued, folder  # keeps its split files
    generic = DatasetSpec(
        name=folder.name,
        dirnames=(),
        polarity=polarity,
        description=f"folder '{folder}' with {polarity} masks",
    )
    return generic, folder


def open_dataset(
    name_or_path: str | Path,
    split: str | None = None,
    polarity: str | None = None,
    root: Path | None = None,
) -> PairedDataset:
    """Open a catalogued benchmark by name (under the data root) or a folder with images/ + masks/.

    A bare name that is not in the catalogue may still be a folder in the cwd. A plain folder needs
    `polarity`; a folder named like a catalogued dataset (e.g. .../CUHK) uses the catalogue's.
    `split` is a split name of the dataset or a path to a split file.
    """
    text = str(name_or_path)
    explicit_path = isinstance(name_or_path, Path) or "/" in text or os.sep in text or text.startswith(("~", "."))
    spec = None if explicit_path else _lookup_catalogue(text)
    if spec is not None:
        folder = _catalogued_folder(spec, polarity, root)
    elif explicit_path or Path(text).is_dir():
        spec, folder = _folder_spec(Path(text).expanduser(), polarity)
    else:
        raise _unknown_name_error(text)

    samples = _pair_folder(folder, spec)
    if split is not None:
        samples = _select_split(samples, _split_file(folder, spec, split))
    return PairedDataset(spec, folder, samples, split)


def describe_catalogue() -> str:
    """One line per catalogued dataset, for --help texts and error listings."""
    return "\n".join(
        f"{spec.name:8s} {'/'.join(spec.dirnames):16s} {spec.polarity:11s} {spec.description}"
        for spec in CATALOGUE.values()
    )


__all__ = [
    "CATALOGUE",
    "DatasetSpec",
    "IMAGE_EXTENSIONS",
    "PairedDataset",
    "Sample",
    "describe_catalogue",
    "find_data_root",
    "open_dataset",
]
