"""Build the SynthML dataset.

    python -m data.synth --out data/SynthML [--dataset humanml3d|kit] [--num 3000] [--seed 0]
                         [--workers K] [--force] [--overwrite]

See ``data.synth.build`` for what is written. Skips a complete folder unless ``--force``. Refuses a
folder holding files it did not write (e.g. ``--out dataset/HumanML3D``) unless ``--overwrite``; it
never deletes a file it did not write.
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
    parser.add_argument(
        "--force",
        action="store_true",
        help="rebuild this command's earlier build (complete, or with other parameters)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a folder holding files this command did not write (kept unless a motion id collides)",
    )
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
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    return summary


if __name__ == "__main__":
    main()
