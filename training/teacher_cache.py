"""Distillation from cached teacher maps: the teacher runs once per training photo, not per step.

"A good teacher is patient and consistent" (Beyer et al. 2022): the student should see the
teacher's verdict on every view it trains on, for many epochs. Running the teacher (8 M
parameters, at several sizes with mirroring) inside every student step would cost several times
the student's own step on a CPU. So the teacher's map of each training photo is computed once, at
the photo's own resolution, with its TTA recipe and ensemble (dbd.evaluation.tta), and stored as
uint8 P(blur). The data loader warps it by exactly the crop, resize and flip of the image and
mask (dbd.training.data.AugmentedPairs), so a student step runs no teacher forward.

The cache file is named by a key over the teachers' sha256, the recipe and the photos' names,
so a changed teacher, recipe or split never reuses stale maps. No pickle: an .npz of uint8 arrays
and a JSON header, read with allow_pickle=False.

    python -m dbd.training.teacher_cache runs/teacher/best.safetensors --tta 384,448+flip
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

from dbd.core import DBDError, atomic_write, cli_entry, sha256_file
from dbd.evaluation.tta import TTARecipe, TTARunner
from dbd.runtime.runners import TorchRunner

CACHE_FORMAT = "dbd-teacher-maps/1"
DEFAULT_FOLDER = "runs/teacher_cache"


def teacher_paths(text: str) -> list[Path]:
    """--teacher: one checkpoint, or several joined by commas (an ensemble)."""
    paths = [Path(p.strip()) for p in text.split(",") if p.strip()]
    if not paths:
        raise DBDError("--teacher is empty; pass a teacher checkpoint (.safetensors), or several joined by commas")
    return paths


def cache_key(teachers: list[Path], recipe: TTARecipe, names: list[str], refine: str = "none") -> dict:
    identity = {
        "format": CACHE_FORMAT,
        "teachers": [sha256_file(p) for p in teachers],
        "tta": str(recipe),
        "photos": hashlib.sha256("\n".join(names).encode()).hexdigest(),
    }
    if refine != "none":  # bilinear caches keep the keys they had before refinement existed
        identity["refine"] = refine
    identity["key"] = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    return identity


def compute_maps(
    teachers: list[Path],
    recipe: TTARecipe,
    images: list[np.ndarray],
    device: str = "cpu",
    progress: bool = True,
    refine: str = "none",
) -> list[np.ndarray]:
    """The (ensemble/TTA) teacher's P(blur) of each photo at its own size, as uint8 (255 = blur)."""
    runner = TTARunner([TorchRunner(p, device=device) for p in teachers], recipe)
    maps, started = [], time.time()
    for i, image in enumerate(images):
        # "none": bilinear, as the release recipe's students were distilled from; "guided": each view
        # refined at the photo's resolution by the contract's guided filter (docs/results.md).
        photo_map = runner.predict_photos([image], refine=refine)[1][0]
        if not np.isfinite(photo_map).all():
            raise DBDError(f"the teacher gives non-finite maps (photo {i}); check the teacher checkpoints {teachers}")
        maps.append(np.rint(photo_map * 255).astype(np.uint8))
        if progress and (i + 1) % 50 == 0:
            print(f"teacher maps: {i + 1}/{len(images)} ({time.time() - started:.0f} s)", file=sys.stderr, flush=True)
    return maps


def load_or_build(
    teacher: str,
    tta: str,
    names: list[str],
    images: list[np.ndarray],
    folder: str | Path,
    device: str = "cpu",
    build: bool = True,
    refine: str = "none",
) -> tuple[list[np.ndarray], dict]:
    """The cached maps for these photos (built and written first if absent); returns (maps, identity)."""
    teachers = teacher_paths(teacher)
    for p in teachers:
        if not p.is_file():
            raise DBDError(f"teacher checkpoint '{p}' does not exist; check --teacher")
    recipe = TTARecipe.parse(tta)
    identity = cache_key(teachers, recipe, names, refine)
    path = Path(folder) / f"teacher_maps-{identity['key']}.npz"
    identity["path"] = str(path)
    if path.is_file():
        return read_cache(path, names), identity
    if not build:
        raise DBDError(f"no cached teacher maps at '{path}'; build them with python -m dbd.training.teacher_cache")
    started = time.time()
    maps = compute_maps(teachers, recipe, images, device, refine=refine)
    identity["seconds"] = round(time.time() - started, 1)
    write_cache(path, names, maps, identity)
    return maps, identity


def write_cache(path: Path, names: list[str], maps: list[np.ndarray], identity: dict) -> None:
    arrays = {f"map_{i:05d}": m for i, m in enumerate(maps)}
    arrays["names"] = np.array(names, dtype=np.str_)
    arrays["identity"] = np.array(json.dumps(identity, sort_keys=True), dtype=np.str_)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a path
            np.savez_compressed(f, **arrays)

    atomic_write(path, write)


def read_cache(path: Path, names: list[str]) -> list[np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            stored = [str(n) for n in data["names"]]
            maps = [data[f"map_{i:05d}"] for i in range(len(stored))]
            identity = json.loads(str(data["identity"]))
    except (OSError, ValueError, KeyError) as err:
        raise DBDError(f"teacher cache '{path}' is corrupt ({err}); delete it and it will be rebuilt") from None
    if identity.get("format") != CACHE_FORMAT or stored != names:
        raise DBDError(f"teacher cache '{path}' does not hold maps of these photos; delete it and it will be rebuilt")
    return maps


@cli_entry("dbd.training.teacher_cache")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dbd.training.teacher_cache",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("teacher", help="teacher checkpoint, or several joined by commas (an ensemble)")
    parser.add_argument("--tta", default="", help="sizes and mirroring, e.g. 384,448+flip (default: the model as is)")
    parser.add_argument("--data", default="cuhk")
    parser.add_argument("--split", default="train")
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--out", default=DEFAULT_FOLDER, help=f"cache folder (default {DEFAULT_FOLDER})")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--refine", default="none", choices=("none", "guided"), help="the maps' last step")
    args = parser.parse_args(argv)
    from .config import TrainConfig
    from .data import load_pairs

    cfg = TrainConfig(
        stage="student",
        data=args.data,
        split=args.split,
        val_fraction=args.val_fraction,
        teacher=args.teacher,
        teacher_cache=args.out,
    ).validate()
    train, _, description = load_pairs(cfg)
    _, identity = load_or_build(
        args.teacher, args.tta, train.names, train.images, args.out, args.device, refine=args.refine
    )
    print(
        f"teacher maps of {description.split(':')[0]} ({len(train)} photos, tta {identity['tta']}): {identity['path']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
