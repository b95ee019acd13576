"""Verify evaluation assets (called by the download scripts; safe to run any time).

Usage::

    python -m prepare.verify_assets glove glove/
    python -m prepare.verify_assets evaluator checkpoints/ --dataset humanml3d
    python -m prepare.verify_assets dataset dataset/HumanML3D --dataset humanml3d

Reads only; exits 1 with a message naming the missing or bad file.
"""

from __future__ import annotations

import argparse
import logging
import sys

from eval.assets import AssetError, verify_dataset, verify_evaluator_tree, verify_glove


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=("glove", "evaluator", "dataset"))
    parser.add_argument("path")
    parser.add_argument("--dataset", default="humanml3d")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        if args.what == "glove":
            msg = verify_glove(args.path)
        elif args.what == "evaluator":
            msg = verify_evaluator_tree(args.path, args.dataset)
        else:
            msg = verify_dataset(args.path, args.dataset)
    except AssetError as err:
        print(f"verify: FAILED: {err}", file=sys.stderr)
        return 1
    print(f"verify: OK: {msg}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
