"""Build the SynthML dataset.

    python -m data.synth --out data/SynthML [--dataset humanml3d|kit] [--num 3000] [--seed 0]
                         [--workers K] [--force]

See ``data.synth.build`` for what is written. Skips a complete folder unless ``--force``.
"""

from __future__ import annotations

import argparse

from data.runtime import setup_logging
from data.specs import DATASET_NAMES
from data.synth.build import build_synthml


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m data.synth", description=__doc__.split("\n")[1])
    parser.add_argument("--out", required=True, help="output folder (HumanML3D layout)")
    parser.add_argument("--dataset", default="humanml3d", help=f"layout to write: one of {DATASET_NAMES}")
    parser.add_argument("--num", type=int, default=3000, help="number of motions (default 3000)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all CPUs)")
    parser.add_argument("--force", action="store_true", help="rebuild even if the folder is complete")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    setup_logging()
    summary = build_synthml(
        args.out,
        dataset=args.dataset,
        num=args.num,
        seed=args.seed,
        workers=args.workers,
        force=args.force,
        progress=not args.no_progress,
    )
    return summary


if __name__ == "__main__":
    main()
