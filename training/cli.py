"""`dbd-train teacher` then `dbd-train student --teacher CKPT`: the two checkpoints of the toolkit.

    dbd-train teacher                         # -> runs/teacher/{best,last}.safetensors, log.csv
    dbd-train student --teacher runs/teacher/best.safetensors
    dbd-train student --teacher T --kd-out 0 --kd-feat 0 --adv-gt 0 --adv-teacher 0   # ablation: alone
    torchrun --nproc-per-node 2 -m dbd.training.cli teacher ...                       # several GPUs/processes

Flags override a --config TOML file, which overrides the defaults (those of the shipped weights).
"""

from __future__ import annotations

import argparse
import shlex
import sys

from dbd.core import ArgumentParser, cli_entry

from .config import STAGES, add_arguments, load_config


@cli_entry("dbd-train")
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="dbd-train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="stage", required=True, metavar="{teacher,student}")
    for stage in STAGES:
        add_arguments(sub.add_parser(stage, help=f"train the {stage}"))
    args = parser.parse_args(argv)
    cfg = load_config(args.stage, args)
    from .loop import train  # imported late: --help and config errors stay fast

    command = "dbd-train " + shlex.join(sys.argv[1:] if argv is None else argv)
    train(cfg, command)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
