"""Blur-map, mask and overlay videos of a video, frame by frame (see `dbd.runtime.predict`).

Each output video is written to a temporary `.NAME.tmp.mp4` beside it and renamed only once every
frame is in: an error, Ctrl-C or SIGTERM leaves no half-written video behind.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
from tqdm import tqdm

from dbd.core import DBDError

from .overlay import blur_map_u8, blur_mask, overlay
from .predictor import Predictor

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
VIDEO_SUFFIXES = {"map": "_blur.mp4", "mask": "_mask.mp4", "overlay": "_overlay.mp4"}


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def video_temp(final: Path) -> Path:
    """Where a video is written until complete (a later run removes it if a killed run left it)."""
    return final.with_name(f".{final.name}.tmp.mp4")


def predict_video(
    predictor: Predictor,
    path: Path,
    outputs: dict[str, Path],
    threshold: float,
    style: str,
    written: set[Path],
    progress: bool = True,
) -> int:
    """Write the videos `outputs` ({'map'|'mask'|'overlay': final path}) of the video at `path`;
    returns the number of frames. `written` holds the paths this run wrote already (never
    overwritten) and gains the new ones."""
    # FFmpeg's own log lines ("moov atom not found") would precede our one-line error; the user's
    # own OPENCV_FFMPEG_LOGLEVEL wins.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise DBDError(f"cannot read video '{path}'; is it a valid {path.suffix} file?")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    writers: dict[str, tuple[cv2.VideoWriter, Path, Path]] = {}
    bar = tqdm(total=frames, desc=path.name, unit="frame", leave=False, disable=None if progress else True)
    count = 0
    complete = False
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            rgb = frame[..., ::-1].copy()
            prob = predictor.predict(rgb)
            drawn = {}  # BGR frames, as VideoWriter takes them
            if "map" in outputs:
                drawn["map"] = cv2.cvtColor(blur_map_u8(prob), cv2.COLOR_GRAY2BGR)
            if "mask" in outputs:
                drawn["mask"] = cv2.cvtColor(blur_mask(prob, threshold), cv2.COLOR_GRAY2BGR)
            if "overlay" in outputs:
                drawn["overlay"] = overlay(rgb, prob, style, threshold)[..., ::-1]
            for kind, image in drawn.items():
                if kind not in writers:
                    final = outputs[kind]
                    if final in written:
                        raise DBDError(f"'{final}' was already written in this run; refusing to overwrite it")
                    final.parent.mkdir(parents=True, exist_ok=True)
                    temp = video_temp(final)
                    temp.unlink(missing_ok=True)
                    writer = cv2.VideoWriter(str(temp), cv2.VideoWriter_fourcc(*"mp4v"), fps, image.shape[1::-1])
                    writers[kind] = (writer, temp, final)
                    if not writer.isOpened():
                        raise DBDError(
                            f"cannot write video '{final}' (OpenCV could not open an mp4v writer); "
                            f"check --out, or save images instead"
                        )
                writers[kind][0].write(image)
            count += 1
            bar.update(1)
        if count == 0:
            raise DBDError(f"video '{path}' has no readable frames; re-encode it (e.g. H.264 .mp4)")
        for writer, _, _ in writers.values():
            writer.release()
        for _, temp, final in writers.values():
            temp.replace(final)
            written.add(final)
        complete = True
    finally:
        capture.release()
        bar.close()
        if not complete:  # an error, Ctrl-C or SIGTERM: no half-written video stays behind
            for writer, temp, _ in writers.values():
                writer.release()
                temp.unlink(missing_ok=True)
    return count
