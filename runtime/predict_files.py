"""`predict`: blur maps, masks and overlays for images, folders and videos, written to a folder
(what `dbd-predict` runs).

    from dbd.runtime import predict
    result = predict(["photo.jpg", "holidays/", "clip.mp4"], out="predictions")
    print(result.summary())

For each image it writes NAME_blur.png (8-bit P(blur), white = out of focus), NAME_mask.png (the
map thresholded) and NAME_overlay.jpg (tinted blur regions or a heat map over the photo); for a
video, NAME_blur.mp4, NAME_mask.mp4 and NAME_overlay.mp4, as `save` asks. Folders keep their
sub-folder layout; inputs that would share output names (a.jpg and a.png, d1/a.jpg and d2/a.jpg)
are told apart by their extension (a_jpg_*) or parent folders (d1/a_*), so no output of a run
overwrites another. Hidden and temporary files (.NAME, *.tmp*) are never inputs.
"""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np
from tqdm import tqdm

from dbd.core import MAX_THREADS, DBDError, atomic_write, check_int, check_writable, find_data_root, remove_stale_temps

from .imageio import IMAGE_EXTENSIONS, read_image
from .overlay import OVERLAY_STYLES, blur_map_u8, blur_mask, overlay
from .predictor import NonFiniteOutput, Predictor
from .video import VIDEO_EXTENSIONS, VIDEO_SUFFIXES, is_video, predict_video

OUTPUTS = ("map", "mask", "overlay")
IMAGE_SUFFIXES = {"map": "_blur.png", "mask": "_mask.png", "overlay": "_overlay.jpg"}


# ---- inputs and their output names ------------------------------------------------------------


def is_temporary(name: str) -> bool:
    """Hidden files and the temporary files of interrupted runs are never inputs."""
    return name.startswith(".") or ".tmp" in name


@dataclass
class InputFile:
    source: Path  # as the caller wrote it, for messages
    stem: Path  # its outputs' path relative to `out`, without the _blur.png etc.
    renamed: bool  # the stem was changed to tell it apart from another input's


@dataclass
class _Job:
    file: Path  # absolute, normalised (tells the same file apart from another)
    shown: Path  # as the user wrote it, for messages
    unit: int  # index of the source argument it came from
    ext: bool = False  # name its outputs NAME_EXT_* (a.jpg and a.png in one folder)
    number: int = 0  # last resort: NAME_2_*


def _stems(jobs: list[_Job], anchors: list[Path]) -> list[Path]:
    stems = []
    for job in jobs:
        stem = job.file.relative_to(anchors[job.unit]).with_suffix("")
        if job.ext:
            stem = stem.with_name(f"{stem.name}_{job.file.suffix[1:].lower()}")
        if job.number:
            stem = stem.with_name(f"{stem.name}_{job.number}")
        stems.append(stem)
    return stems


def distinct_stems(jobs: list[_Job], anchors: list[Path]) -> list[Path]:
    """Output stems (relative to `out`), one per input, no two alike (even ignoring case): inputs that
    share a name get their extension (a_jpg, a_png), then their parent folders (d1/a, d2/a)."""
    for _ in range(1000):
        stems = _stems(jobs, anchors)
        groups: dict[str, list[int]] = {}
        for i, stem in enumerate(stems):
            groups.setdefault(str(stem).casefold(), []).append(i)
        clashes = [g for g in groups.values() if len(g) > 1]
        if not clashes:
            return stems
        for group in clashes:
            members = [jobs[i] for i in group]
            units = {j.unit for j in members}
            if not all(j.ext for j in members) and len({j.file.suffix.lower() for j in members}) > 1:
                for j in members:
                    j.ext = True
            elif (
                len(units) > 1
                and len({str(j.file.parent).casefold() for j in members}) > 1
                and all(anchors[u] != anchors[u].parent for u in units)
            ):
                for u in units:  # mirror one more level of the input tree, for the whole source
                    anchors[u] = anchors[u].parent
            else:
                for n, j in enumerate(members[1:], 2):
                    j.number = max(j.number + 1, n)
    raise DBDError("cannot give every input its own output names; pass fewer inputs with the same name")


def _link_problem(path: Path) -> str | None:
    """What is wrong with a link that leads to no file: a loop or a broken link (None: not a link)."""
    if not path.is_symlink():
        return None
    try:
        os.stat(path)
    except OSError as err:
        if err.errno == errno.ELOOP:
            return f"'{path}' is a symlink loop (it leads back to itself); fix or remove it"
        return f"'{path}' is a broken link (to '{os.readlink(path)}', which does not exist); fix or remove it"
    return None


def _walk(source: Path, readable: tuple[str, ...], skip: Path | None, problems: list[tuple[Path, str]]) -> list[Path]:
    """Images/videos under the folder `source`: hidden and temporary entries left out, and the folder
    `skip` (the output folder, when it lies inside `source`). Broken links, symlink loops and
    folders that cannot be read are added to `problems` as (path, one-line reason)."""

    def unreadable(err: OSError) -> None:
        folder = Path(err.filename)
        problems.append(
            (
                folder,
                f"cannot read folder '{folder}' ({err.strerror}); its files were not predicted; check its permissions",
            )
        )

    files = []
    for folder, dirs, names in os.walk(source, onerror=unreadable):  # symlinked folders are not followed
        base = Path(folder)
        dirs[:] = [d for d in dirs if not is_temporary(d) and (skip is None or (base / d).resolve() != skip)]
        for name in names:
            path = base / name
            if is_temporary(name) or path.suffix.lower() not in readable:
                continue
            if path.is_file():
                files.append(path)
            elif (problem := _link_problem(path)) is not None:
                problems.append((path, problem))
    return sorted(files)


def find_inputs(
    sources: list[Path], out: Path | None = None, problems: list[tuple[Path, str]] | None = None
) -> list[InputFile]:
    """Every image/video under the sources, each with its own output stem.

    A file keeps its name (photo.jpg -> photo_*), a folder its own name and layout (holidays/x/a.jpg
    -> holidays/x/a_*); inputs that would share an output name are told apart (see distinct_stems).
    The output folder `out`, where it lies inside a source folder, is never read as input. Broken
    links, symlink loops and unreadable folders inside a folder are added to `problems`.
    """
    jobs: list[_Job] = []
    anchors: list[Path] = []
    seen: set[Path] = set()
    readable = IMAGE_EXTENSIONS + VIDEO_EXTENSIONS
    problems = [] if problems is None else problems
    out_real = Path(out).resolve() if out is not None else None
    for unit, source in enumerate(sources):
        absolute = Path(os.path.abspath(source))
        if source.is_dir():
            found_before = len(problems)
            files = _walk(source, readable, out_real, problems)
            if not files and len(problems) > found_before:
                raise DBDError(problems[found_before][1])
            if not files:
                raise DBDError(
                    f"folder '{source}' holds no images or videos ({', '.join(IMAGE_EXTENSIONS)}, "
                    f"{', '.join(VIDEO_EXTENSIONS)})"
                )
            found = [(absolute / f.relative_to(source), f) for f in files]
        elif source.is_file():
            if source.suffix.lower() not in readable:
                raise DBDError(f"'{source}' is not an image or video this tool reads ({', '.join(readable)})")
            if source.name.startswith(".") and ".tmp" in source.name:
                raise DBDError(f"'{source}' is a temporary file left by an interrupted run, not an input; remove it")
            found = [(absolute, source)]
        else:
            raise DBDError(_link_problem(source) or f"'{source}' does not exist; pass image files, folders or videos")
        anchors.append(absolute.parent)
        for file, shown in found:
            if file not in seen:
                seen.add(file)
                jobs.append(_Job(file, shown, unit))
    plain = _stems(jobs, anchors)
    stems = distinct_stems(jobs, anchors)
    return [InputFile(job.shown, stem, stem != default) for job, stem, default in zip(jobs, stems, plain)]


def check_out_outside_inputs(sources: list[Path], out: Path, planned: list[dict[str, Path]]) -> None:
    """No output may land inside an input folder (`--out photos` for `photos`, or `--out .` beside
    it), where the next run would read it as a photo; an --out that is a sub-folder of an input is
    fine: find_inputs never reads it."""
    out_real = out.resolve()
    for source in sources:
        if not source.is_dir():
            continue
        folder = source.resolve()
        if folder in out_real.parents:
            continue
        for path in (p for outputs in planned for p in outputs.values()):
            if folder == path.resolve() or folder in path.resolve().parents:
                raise DBDError(
                    f"--out '{out}' would write outputs inside the input folder '{source}' (e.g. '{path}'), "
                    f"where a later run would read them as photos; pass an --out outside '{source}'"
                )


def output_names(stem: Path, video: bool, save: Iterable[str]) -> dict[str, Path]:
    """{kind: path relative to `out`} of what one input produces."""
    suffixes = VIDEO_SUFFIXES if video else IMAGE_SUFFIXES
    return {kind: Path(f"{stem}{suffix}") for kind, suffix in suffixes.items() if kind in save}


# ---- writing ----------------------------------------------------------------------------------


def write_image(path: Path, rgb_or_grey: np.ndarray, written: set[Path]) -> None:
    if path in written:  # never reached: find_inputs gives every input its own names; a guard all the same
        raise DBDError(f"'{path}' was already written in this run; refusing to overwrite it")
    data = rgb_or_grey[..., ::-1] if rgb_or_grey.ndim == 3 else rgb_or_grey
    ok, encoded = cv2.imencode(path.suffix, data, [cv2.IMWRITE_JPEG_QUALITY, 92] if path.suffix == ".jpg" else [])
    if not ok:
        raise DBDError(f"could not encode '{path}'")
    try:
        atomic_write(path, lambda tmp: Path(tmp).write_bytes(encoded.tobytes()))
    except OSError as err:
        raise DBDError(
            f"cannot write '{path}' ({err.strerror or type(err).__name__}); check --out and the free disk space"
        ) from None
    written.add(path)


def predict_image(
    predictor: Predictor, path: Path, outputs: dict[str, Path], threshold: float, style: str, written: set[Path]
) -> None:
    """Write the images `outputs` ({'map'|'mask'|'overlay': final path}) of the photo at `path`."""
    image = read_image(path)
    prob = predictor.predict(image)
    if "map" in outputs:
        write_image(outputs["map"], blur_map_u8(prob), written)
    if "mask" in outputs:
        write_image(outputs["mask"], blur_mask(prob, threshold), written)
    if "overlay" in outputs:
        write_image(outputs["overlay"], overlay(image, prob, style, threshold), written)


# ---- the run ----------------------------------------------------------------------------------


@dataclass
class PredictedFile:
    source: Path  # the input, as passed
    outputs: dict[str, Path]  # {'map'|'mask'|'overlay': written file}
    seconds: float  # reading, predicting and writing this input
    frames: int = 1  # a video's frame count; 1 for a photo


@dataclass
class PredictionResult:
    out: Path
    save: list[str]
    weights: Path  # the model file that ran
    refine: str = ""  # how its maps reached the photos' resolution (RefineSpec.describe)
    files: list[PredictedFile] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (input, one-line reason)
    renamed: list[InputFile] = field(default_factory=list)  # inputs whose outputs were told apart
    load_seconds: float = 0.0  # opening the model
    seconds: float = 0.0  # the whole call

    @property
    def written(self) -> list[Path]:
        return [path for file in self.files for path in file.outputs.values()]

    def summary(self) -> str:
        return (
            f"wrote {', '.join(self.save)} for {len(self.files)} file(s) to {self.out}/ with {self.weights}, map: {self.refine}"
            + (f"; {len(self.skipped)} skipped" if self.skipped else "")
        )


def predict(
    sources: str | Path | Iterable[str | Path] | None = None,
    out: str | Path = "predictions",
    *,
    weights: str | Path | None = None,
    save: Iterable[str] = OUTPUTS,
    overlay_style: str = "tint",
    threshold: float = 0.5,
    threads: int | None = None,
    device: str = "cpu",
    tile: int = 0,
    refine: str | None = None,
    progress: bool = True,
) -> PredictionResult:
    """Blur maps, masks and/or overlays (`save`) of every image and video under `sources` (files or
    folders; default: the data root's photos/), written under `out`.

    `weights`: a checkpoint or exported file (default: the shipped student); `overlay_style`: 'tint'
    (blur regions in red) or 'heat' (a heat map); `threshold`: the P(blur) of masks and tints;
    `tile`: tile size for large photos (0: off); `refine`: the map's last step, "guided" (edge-aware,
    guided by the photo) or "none" (bilinear), default the file's own; `progress`: progress bars on
    a terminal.

    Settings and outputs are checked before the model is loaded or any photo read. An input that
    cannot be read is skipped and recorded in `result.skipped`, unless it is the only input: then
    its DBDError is raised. A model that returns NaN or inf stops the run (DBDError).
    """
    started = time.time()
    clock = time.perf_counter()
    save = [save] if isinstance(save, str) else list(save)
    unknown = [kind for kind in save if kind not in OUTPUTS]
    if unknown or not save:
        raise DBDError(f"--save takes one or more of {', '.join(OUTPUTS)}, got {', '.join(save) or 'nothing'}")
    if overlay_style not in OVERLAY_STYLES:
        raise DBDError(f"--overlay must be one of {', '.join(OVERLAY_STYLES)}, got {overlay_style!r}")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 < threshold < 1.0:
        raise DBDError(f"--threshold must be between 0 and 1, got {threshold!r}")
    if threads is not None:
        check_int(threads, "--threads (left out: all cores)", minimum=1, maximum=MAX_THREADS)
    check_int(tile, "--tile (0: off, else a tile size of at least 64 pixels)", minimum=0)
    if refine not in (None, "guided", "none"):
        raise DBDError(f"--refine must be guided or none (or left out: the file's own), got {refine!r}")
    out = Path(out)
    if sources is None:
        sources = [find_data_root() / "photos"]
    elif isinstance(sources, (str, Path)):
        sources = [sources]
    problems: list[tuple[Path, str]] = []  # broken links, symlink loops, unreadable folders: skipped
    inputs = find_inputs([Path(s) for s in sources], out, problems)
    planned = [
        {kind: out / name for kind, name in output_names(i.stem, is_video(i.source), save).items()} for i in inputs
    ]
    check_out_outside_inputs([Path(s) for s in sources], out, planned)
    # Before loading the model or reading any photo: a bad --out is found at once, not after the work.
    check_writable(out, "--out", [path.relative_to(out) for outputs in planned for path in outputs.values()])
    predictor = Predictor(weights, threads=threads, device=device, tile=tile, refine=refine)
    result = PredictionResult(
        out=out,
        save=save,
        weights=predictor.runner.path,
        refine=predictor.spec.refine.describe(),
        renamed=[i for i in inputs if i.renamed],
        load_seconds=time.perf_counter() - clock,
    )
    result.skipped += problems
    # Of every kind of output, not only those saved this time: a killed `--save mask` run's
    # `.NAME_mask.mp4.tmp.mp4` goes too when the re-run saves only maps.
    every_kind = [output_names(i.stem, is_video(i.source), OUTPUTS) for i in inputs]
    remove_stale_temps([out / name for names in every_kind for name in names.values()], started)
    written: set[Path] = set()
    # Progress bars only on a terminal, and cleared when done or interrupted: errors stay one clean line.
    bar_off = True if not progress or len(inputs) < 2 else None
    with tqdm(list(zip(inputs, planned)), desc="dbd-predict", unit="file", disable=bar_off, leave=False) as bar:
        for item, outputs in bar:
            path = item.source
            file_clock = time.perf_counter()
            try:
                if is_video(path):
                    frames = predict_video(predictor, path, outputs, threshold, overlay_style, written, progress)
                else:
                    predict_image(predictor, path, outputs, threshold, overlay_style, written)
                    frames = 1
            except NonFiniteOutput as err:  # the model is broken: every file would fail the same way
                raise DBDError(f"{err} (on '{path}')") from None
            except DBDError as err:
                if len(inputs) == 1:
                    raise
                result.skipped.append((path, str(err)))
                continue
            result.files.append(PredictedFile(path, outputs, time.perf_counter() - file_clock, frames))
    result.seconds = time.perf_counter() - clock
    return result
