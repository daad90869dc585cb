"""`dbd-predict`: blur maps, masks and overlays for images, folders and videos.

    dbd-predict                                   # the shipped student on ../shared/data/photos
    dbd-predict photo.jpg holidays/ clip.mp4 --weights exports/dbd_student_320_int8.SUFFIX
    dbd-predict photos/ --save map overlay --overlay heat --threshold 0.4

For each image it writes NAME_blur.png (8-bit P(blur), white = out of focus), NAME_mask.png (the
map thresholded) and NAME_overlay.jpg (tinted blur regions or a heat map over the photo); for a
video, NAME_overlay.mp4, NAME_blur.mp4 and NAME_mask.mp4 per --save. Folders keep their sub-folder
layout; inputs that would share output names (a.jpg and a.png, d1/a.jpg and d2/a.jpg) are told
apart by their extension (a_jpg_*) or parent folders (d1/a_*), so no output of a run overwrites
another. Hidden and temporary files (.NAME, *.tmp*) are never inputs. A file that cannot be read
is reported on one line and skipped; the exit code is then 1.

The same from Python: `dbd.runtime.predict(sources, out, ...)`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dbd.core import ArgumentParser, cli_entry

from .overlay import OVERLAY_STYLES
from .predict_files import OUTPUTS, predict


@cli_entry("dbd-predict")
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="dbd-predict", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "sources", nargs="*", type=Path, help="images, folders or videos (default: the data root's photos/)"
    )
    parser.add_argument(
        "--weights",
        type=Path,
        help="checkpoint (.safetensors) or exported file "
        "(dbd-export: every format it writes); default: the shipped student",
    )
    parser.add_argument("--out", type=Path, default=Path("predictions"))
    parser.add_argument("--save", nargs="+", choices=OUTPUTS, default=list(OUTPUTS))
    parser.add_argument("--overlay", choices=OVERLAY_STYLES, default="tint")
    parser.add_argument("--threshold", type=float, default=0.5, help="P(blur) threshold of masks and tints")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--tile", type=int, default=0, help="tile size in pixels for large photos (0: off)")
    parser.add_argument(
        "--refine",
        choices=("guided", "none"),
        default=None,
        help="the map's last step: guided (edge-aware, guided by the photo) or none (bilinear resize); "
        "default: the model file's own (guided for files exported since it exists)",
    )
    args = parser.parse_args(argv)
    result = predict(
        args.sources or None,
        args.out,
        weights=args.weights,
        save=args.save,
        overlay_style=args.overlay,
        threshold=args.threshold,
        threads=args.threads,
        device=args.device,
        tile=args.tile,
        refine=args.refine,
    )
    if result.renamed:
        first = result.renamed[0]
        print(
            f"note: {len(result.renamed)} input(s) share a name with another; their outputs are told apart "
            f"(e.g. {first.source.name} -> {first.stem}_*)"
        )
    for _, reason in result.skipped:
        print(f"dbd-predict: skipped: {reason}", file=sys.stderr)
    print(result.summary())
    return 1 if result.skipped else 0


if __name__ == "__main__":
    raise SystemExit(main())
