"""`python -m dbd.models`: parameters and GMACs of every registered model at one input size."""

from __future__ import annotations

import argparse

from dbd.core import cli_entry

from . import create_model, list_models
from .summary import count_macs, count_params


@cli_entry("python -m dbd.models")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dbd.models", description=__doc__)
    parser.add_argument("--imgsz", type=int, default=320, help="square input size (default 320)")
    parser.add_argument("models", nargs="*", help="model names (default: all)")
    args = parser.parse_args(argv)
    names = args.models or list_models()
    print(f"{'model':<22}{'params (M)':>12}{f'GMACs @{args.imgsz}':>14}")
    for name in names:
        model = create_model(name, pretrained=False)
        macs = count_macs(model, (args.imgsz, args.imgsz))
        print(f"{name:<22}{count_params(model) / 1e6:>12.3f}{macs / 1e9:>14.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
