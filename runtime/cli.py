"""`dbd-predict`: blur maps, masks and overlays for images, folders and videos.

    dbd-predict                                   # the shipped student on ../shared/data/photos
    dbd-predict photo.jpg holidays/ clip.mp4 --weights exports/dbd_student_int8.tflite
    dbd-predict photos/ --save map overlay --overlay heat --threshold 0.4

For each image it writes NAME_blur.png (8-bit P(blur), white = out of focus), NAME_mask.png (the
map thresholded) and NAME_overlay.jpg (tinted blur regions or a heat map over the photo); for a
video, NAME_overlay.mp4 (and NAME_blur.mp4 with --save map). Folders keep their sub-folder layout.
A file that cannot be read is reported on one line and skipped; the exit code is then 1.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from dbd.models.checkpoint import atomic_write
from dbd.models.errors import DBDError, cli_entry

from .datasets import IMAGE_EXTENSIONS, find_data_root
from .imageio import read_image
from .predictor import Predictor

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
OUTPUTS = ("map", "mask", "overlay")
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


def write_image(path: Path, rgb_or_grey: np.ndarray) -> None:
    data = rgb_or_grey[..., ::-1] if rgb_or_grey.ndim == 3 else rgb_or_grey
    ok, encoded = cv2.imencode(path.suffix, data, [cv2.IMWRITE_JPEG_QUALITY, 92] if path.suffix == ".jpg" else [])
    if not ok:
        raise DBDError(f"could not encode '{path}'")
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(encoded.tobytes()))


def collect(sources: list[Path]) -> list[tuple[Path, Path]]:
    """(file, output stem relative to --out) for every image/video under the sources."""
    jobs = []
    for source in sources:
        if source.is_dir():
            files = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)
            if not files:
                raise DBDError(f"folder '{source}' holds no images or videos ({', '.join(IMAGE_EXTENSIONS)}, "
                               f"{', '.join(VIDEO_EXTENSIONS)})")
            jobs += [(f, Path(source.name) / f.relative_to(source).with_suffix("")) for f in files]
        elif source.is_file():
            if source.suffix.lower() not in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS:
                raise DBDError(f"'{source}' is not an image or video this tool reads "
                               f"({', '.join(IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)})")
            jobs.append((source, Path(source.stem)))
        else:
            raise DBDError(f"'{source}' does not exist; pass image files, folders or videos")
    return jobs


def predict_video(predictor: Predictor, path: Path, stem: Path, args) -> None:
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise DBDError(f"cannot read video '{path}'; is it a valid {path.suffix} file?")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    writers: dict[str, tuple[cv2.VideoWriter, Path, Path]] = {}
    bar = tqdm(total=frames, desc=path.name, unit="frame", leave=False)
    count = 0
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            rgb = frame[..., ::-1].copy()
            prob = predictor.predict(rgb)
            outputs = {"overlay": overlay(rgb, prob, args.overlay, args.threshold)[..., ::-1]}
            if "map" in args.save:
                outputs["blur"] = cv2.cvtColor(to_u8(prob), cv2.COLOR_GRAY2BGR)
            for kind, image in outputs.items():
                if kind not in writers:
                    final = args.out / f"{stem}_{kind}.mp4"
                    final.parent.mkdir(parents=True, exist_ok=True)
                    temp = final.with_name(f".{final.name}.tmp.mp4")   # renamed only when complete
                    writer = cv2.VideoWriter(str(temp), cv2.VideoWriter_fourcc(*"mp4v"), fps, image.shape[1::-1])
                    writers[kind] = (writer, temp, final)
                writers[kind][0].write(image)
            count += 1
            bar.update(1)
    finally:
        capture.release()
        bar.close()
        for writer, _, _ in writers.values():
            writer.release()
    if count == 0:
        for _, temp, _ in writers.values():
            temp.unlink(missing_ok=True)
        raise DBDError(f"video '{path}' has no readable frames; re-encode it (e.g. H.264 .mp4)")
    for _, temp, final in writers.values():
        temp.replace(final)


def predict_image(predictor: Predictor, path: Path, stem: Path, args) -> None:
    image = read_image(path)
    prob = predictor.predict(image)
    if "map" in args.save:
        write_image(args.out / f"{stem}_blur.png", to_u8(prob))
    if "mask" in args.save:
        write_image(args.out / f"{stem}_mask.png", np.where(prob >= args.threshold, 255, 0).astype(np.uint8))
    if "overlay" in args.save:
        write_image(args.out / f"{stem}_overlay.jpg", overlay(image, prob, args.overlay, args.threshold))


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
    sources = args.sources or [find_data_root() / "photos"]
    jobs = collect(sources)
    predictor = Predictor(args.weights, threads=args.threads, device=args.device, tile=args.tile)
    failures = 0
    for path, stem in tqdm(jobs, desc="dbd-predict", unit="file", disable=len(jobs) < 2):
        try:
            if path.suffix.lower() in VIDEO_EXTENSIONS:
                predict_video(predictor, path, stem, args)
            else:
                predict_image(predictor, path, stem, args)
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
