"""`dbd-export`: export the student to ONNX, TFLite and CoreML."""
from __future__ import annotations

import argparse

from dbd.models.errors import DBDError, cli_entry


@cli_entry("dbd-export")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dbd-export", description="export the student to ONNX, TFLite and CoreML (not implemented in this version)")
    parser.parse_known_args(argv)
    raise DBDError("dbd-export is not implemented in this version of dbd; see the README's roadmap")


if __name__ == "__main__":
    raise SystemExit(main())
