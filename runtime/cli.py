"""`dbd-predict`: blur maps, masks and overlays for images, folders and videos.

    dbd-predict                                   # the shipped student on ../shared/data/photos
    dbd-predict photo.jpg holidays/ clip.mp4 --weights exports/dbd_student_320_int8.tflite
    dbd-predict photos/ --save map overlay --overlay heat --threshold 0.4

For each image it writes NAME_blur.png (8-bit P(blur), white = out of focus), NAME_mask.png (the
map thresholded) and NAME_overlay.jpg (tinted blur regions or a heat map over the photo); for a
video, NAME_overlay.mp4, NAME_blur.mp4 and NAME_mask.mp4 per --save. Folders keep their sub-folder
layout; inputs that would share output names (a.jpg and a.png, d1/a.jpg and d2/a.jpg) are told
apart by their extension (a_jpg_*) or parent folders (d1/a_*), so no output of a run overwrites
another. Hidden and temporary files (.NAME, *.tmp*) are never inputs. A file that cannot be read
is reported on one line and skipped; the exit code is then 1.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from dbd.core import DBDError, atomic_write, check_writable, cli_entry

from .datasets import IMAGE_EXTENSIONS, find_data_root
from .imageio import read_image
from .predictor import NonFiniteOutput, Predictor

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
OUTPUTS = ("map", "mask", "overlay")
IMAGE_OUTPUTS = {"map": "_blur.png", "mask": "_mask.png", "overlay": "_overlay.jpg"}
VIDEO_OUTPUTS = {"map": "blur", "mask": "mask", "overlay": "overlay"}
TINT_RGB = np.array([255, 40, 40], np.float32)   # blur regions in red


def overlay(image: np.ndarray, prob: np.ndarray, style: str, threshold: float) -> np.ndarray:
    """RGB uint8: 'tint' reddens pixels with P(blur) >= threshold; 'heat' blends a JET heat map."""
    if style == "heat":
        heat = cv2.applyColorMap(np.round(prob * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
        return cv2.addWeighted(image, 0.5, heat, 0.5, 0)
    alpha = np.where(prob >= threshold, 0.45, 0.0).astype(np.float32)[..., None]
    return np.round(image * (1 - alpha) + TINT_RGB * alpha).astype(np.uint8)


def to_u8(prob: np.ndarray) -> np.ndarray:
    return np.round(np.clip(prob, 0, 1) * 255).astype(np.uint8)


def write_image(path: Path, rgb_or_grey: np.ndarray, written: set[Path]) -> None:
    if path in written:   # never reached: collect() gives every input its own names; a guard all the same
        raise DBDError(f"'{path}' was already written in this run; refusing to overwrite it")
    data = rgb_or_grey[..., ::-1] if rgb_or_grey.ndim == 3 else rgb_or_grey
    ok, encoded = cv2.imencode(path.suffix, data, [cv2.IMWRITE_JPEG_QUALITY, 92] if path.suffix == ".jpg" else [])
    if not ok:
        raise DBDError(f"could not encode '{path}'")
    try:
        atomic_write(path, lambda tmp: Path(tmp).write_bytes(encoded.tobytes()))
    except OSError as err:
        raise DBDError(f"cannot write '{path}' ({err.strerror or type(err).__name__}); "
                       f"check --out and the free disk space") from None
    written.add(path)


def is_temporary(name: str) -> bool:
    """Hidden files and the temporary files of interrupted runs are never inputs."""
    return name.startswith(".") or ".tmp" in name


# The temporary files dbd-predict's writes leave when killed: atomic_write's `.NAME.XXXX.tmp` and the
# videos' `.NAME.tmp.mp4`; a later run removes those of the outputs it writes.
_TEMP_OF = re.compile(r"^\.(?P<final>.+)\.(?:[A-Za-z0-9_]+\.tmp|tmp\.mp4)$")


def video_temp(final: Path) -> Path:
    return final.with_name(f".{final.name}.tmp.mp4")


def remove_stale_temps(outputs: list[Path], started: float) -> None:
    """Delete the temporary files an earlier, killed run left beside these outputs (older than this run)."""
    by_folder: dict[Path, set[str]] = {}
    for path in outputs:
        by_folder.setdefault(path.parent, set()).add(path.name)
    for folder, names in by_folder.items():
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            match = _TEMP_OF.match(entry.name)
            if match and match["final"] in names and entry.is_file() and entry.stat().st_mtime < started:
                entry.unlink(missing_ok=True)


@dataclass
class _Job:
    file: Path          # absolute, normalised (tells the same file apart from another)
    shown: Path         # as the user wrote it, for messages
    unit: int           # index of the source argument it came from
    ext: bool = False   # name its outputs NAME_EXT_* (a.jpg and a.png in one folder)
    number: int = 0     # last resort: NAME_2_*


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
    """Output stems (relative to --out), one per input, no two alike (even ignoring case): inputs that
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
            elif (len(units) > 1 and len({str(j.file.parent).casefold() for j in members}) > 1
                  and all(anchors[u] != anchors[u].parent for u in units)):
                for u in units:   # mirror one more level of the input tree, for the whole source
                    anchors[u] = anchors[u].parent
            else:
                for n, j in enumerate(members[1:], 2):
                    j.number = max(j.number + 1, n)
    raise DBDError("cannot give every input its own output names; pass fewer inputs with the same name")


def collect(sources: list[Path]) -> list[tuple[Path, Path, bool]]:
    """(file, output stem relative to --out, whether the stem was changed to tell it apart) for
    every image/video under the sources.

    A file keeps its name (photo.jpg -> photo_*), a folder its own name and layout (holidays/x/a.jpg
    -> holidays/x/a_*); inputs that would share an output name are told apart (see distinct_stems).
    """
    jobs: list[_Job] = []
    anchors: list[Path] = []
    seen: set[Path] = set()
    readable = IMAGE_EXTENSIONS + VIDEO_EXTENSIONS
    for unit, source in enumerate(sources):
        absolute = Path(os.path.abspath(source))
        if source.is_dir():
            files = sorted(p for p in source.rglob("*") if p.suffix.lower() in readable and p.is_file()
                           and not any(is_temporary(part) for part in p.relative_to(source).parts))
            if not files:
                raise DBDError(f"folder '{source}' holds no images or videos ({', '.join(IMAGE_EXTENSIONS)}, "
                               f"{', '.join(VIDEO_EXTENSIONS)})")
            found = [(absolute / f.relative_to(source), f) for f in files]
        elif source.is_file():
            if source.suffix.lower() not in readable:
                raise DBDError(f"'{source}' is not an image or video this tool reads ({', '.join(readable)})")
            if source.name.startswith(".") and ".tmp" in source.name:
                raise DBDError(f"'{source}' is a temporary file left by an interrupted run, not an input; remove it")
            found = [(absolute, source)]
        else:
            raise DBDError(f"'{source}' does not exist; pass image files, folders or videos")
        anchors.append(absolute.parent)
        for file, shown in found:
            if file not in seen:
                seen.add(file)
                jobs.append(_Job(file, shown, unit))
    plain = _stems(jobs, anchors)
    stems = distinct_stems(jobs, anchors)
    return [(job.shown, stem, stem != default) for job, stem, default in zip(jobs, stems, plain)]


def output_names(stem: Path, video: bool, save: list[str]) -> dict[str, Path]:
    """{kind: path relative to --out} of what one input produces."""
    if video:
        return {kind: Path(f"{stem}_{suffix}.mp4") for kind, suffix in VIDEO_OUTPUTS.items() if kind in save}
    return {kind: Path(f"{stem}{suffix}") for kind, suffix in IMAGE_OUTPUTS.items() if kind in save}


def predict_video(predictor: Predictor, path: Path, stem: Path, args) -> None:
    # FFmpeg's own log lines ("moov atom not found") would precede our one-line error; the user's
    # own OPENCV_FFMPEG_LOGLEVEL wins.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise DBDError(f"cannot read video '{path}'; is it a valid {path.suffix} file?")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    finals = {kind: args.out / name for kind, name in output_names(stem, True, args.save).items()}
    writers: dict[str, tuple[cv2.VideoWriter, Path, Path]] = {}
    bar = tqdm(total=frames, desc=path.name, unit="frame", leave=False, disable=None)
    count = 0
    complete = False
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            rgb = frame[..., ::-1].copy()
            prob = predictor.predict(rgb)
            outputs = {}
            if "map" in finals:
                outputs["map"] = cv2.cvtColor(to_u8(prob), cv2.COLOR_GRAY2BGR)
            if "mask" in finals:
                outputs["mask"] = cv2.cvtColor(np.where(prob >= args.threshold, 255, 0).astype(np.uint8),
                                               cv2.COLOR_GRAY2BGR)
            if "overlay" in finals:
                outputs["overlay"] = overlay(rgb, prob, args.overlay, args.threshold)[..., ::-1]
            for kind, image in outputs.items():
                if kind not in writers:
                    final = finals[kind]
                    if final in args.written:
                        raise DBDError(f"'{final}' was already written in this run; refusing to overwrite it")
                    final.parent.mkdir(parents=True, exist_ok=True)
                    temp = video_temp(final)   # renamed only when complete
                    temp.unlink(missing_ok=True)
                    writer = cv2.VideoWriter(str(temp), cv2.VideoWriter_fourcc(*"mp4v"), fps, image.shape[1::-1])
                    writers[kind] = (writer, temp, final)
                    if not writer.isOpened():
                        raise DBDError(f"cannot write video '{final}' (OpenCV could not open an mp4v writer); "
                                       f"check --out, or save images instead")
                writers[kind][0].write(image)
            count += 1
            bar.update(1)
        if count == 0:
            raise DBDError(f"video '{path}' has no readable frames; re-encode it (e.g. H.264 .mp4)")
        for writer, _, _ in writers.values():
            writer.release()
        for _, temp, final in writers.values():
            temp.replace(final)
            args.written.add(final)
        complete = True
    finally:
        capture.release()
        bar.close()
        if not complete:   # an error, Ctrl-C or SIGTERM: no half-written video stays behind
            for writer, temp, _ in writers.values():
                writer.release()
                temp.unlink(missing_ok=True)


def predict_image(predictor: Predictor, path: Path, stem: Path, args) -> None:
    image = read_image(path)
    prob = predictor.predict(image)
    names = output_names(stem, False, args.save)
    if "map" in names:
        write_image(args.out / names["map"], to_u8(prob), args.written)
    if "mask" in names:
        write_image(args.out / names["mask"], np.where(prob >= args.threshold, 255, 0).astype(np.uint8), args.written)
    if "overlay" in names:
        write_image(args.out / names["overlay"], overlay(image, prob, args.overlay, args.threshold), args.written)


@cli_entry("dbd-predict")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dbd-predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sources", nargs="*", type=Path, help="images, folders or videos (default: the data root's photos/)")
    parser.add_argument("--weights", type=Path, help="checkpoint (.safetensors) or export (.onnx/.tflite/.mlpackage); "
                        "default: the shipped student")
    parser.add_argument("--out", type=Path, default=Path("predictions"))
    parser.add_argument("--save", nargs="+", choices=OUTPUTS, default=list(OUTPUTS))
    parser.add_argument("--overlay", choices=("tint", "heat"), default="tint")
    parser.add_argument("--threshold", type=float, default=0.5, help="P(blur) threshold of masks and tints")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--tile", type=int, default=0, help="tile size in pixels for large photos (0: off)")
    args = parser.parse_args(argv)
    if not 0.0 < args.threshold < 1.0:
        raise DBDError(f"--threshold must be between 0 and 1, got {args.threshold}")
    if args.threads is not None and args.threads < 1:
        raise DBDError(f"--threads must be at least 1 (or left out: all cores), got {args.threads}")
    if args.tile < 0:
        raise DBDError(f"--tile must be 0 (off) or a tile size of at least 64 pixels, got {args.tile}")
    started = time.time()
    sources = args.sources or [find_data_root() / "photos"]
    found = collect(sources)
    jobs = [(path, stem) for path, stem, _ in found]
    outputs = [name for path, stem in jobs
               for name in output_names(stem, path.suffix.lower() in VIDEO_EXTENSIONS, args.save).values()]
    check_writable(args.out, "--out", outputs)   # before loading the model or reading any photo
    predictor = Predictor(args.weights, threads=args.threads, device=args.device, tile=args.tile)
    remove_stale_temps([args.out / name for name in outputs], started)
    renamed = [(path, stem) for path, stem, changed in found if changed]
    if renamed:
        path, stem = renamed[0]
        print(f"note: {len(renamed)} input(s) share a name with another; their outputs are told apart "
              f"(e.g. {path.name} -> {stem}_*)")
    args.written = set()
    failures = 0
    # Progress bars only on a terminal, and cleared when done or interrupted: errors stay one clean line.
    with tqdm(jobs, desc="dbd-predict", unit="file", disable=True if len(jobs) < 2 else None, leave=False) as bar:
        for path, stem in bar:
            try:
                if path.suffix.lower() in VIDEO_EXTENSIONS:
                    predict_video(predictor, path, stem, args)
                else:
                    predict_image(predictor, path, stem, args)
            except NonFiniteOutput as err:   # the model is broken: every file would fail the same way
                raise DBDError(f"{err} (on '{path}')") from None
            except DBDError as err:
                if len(jobs) == 1:
                    raise
                failures += 1
                tqdm.write(f"dbd-predict: skipped: {err}", file=sys.stderr)
    done = len(jobs) - failures
    print(f"wrote {', '.join(args.save)} for {done} file(s) to {args.out}/ with {predictor.runner.path}"
          + (f"; {failures} skipped" if failures else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
