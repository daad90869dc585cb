"""`dbd-bench`: benchmark every format."""
from __future__ import annotations

import argparse

from dbd.models.errors import DBDError, cli_entry


@cli_entry("dbd-bench")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dbd-bench", description="benchmark every format (not implemented in this version)")
    parser.parse_known_args(argv)
    raise DBDError("dbd-bench is not implemented in this version of dbd; see the README's roadmap")


if __name__ == "__main__":
    raise SystemExit(main())
