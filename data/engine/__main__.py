"""``python -m data.engine --dataset-root DIR --out DIR [--config FILE] [key=value ...]``.

Builds the stage-0/1/2 annotation files and the stage-3 prompt set from a SynthML root (see
``data.engine.run``). ``--dataset-root``/``--out`` override ``dataset_root``/``output_dir`` of the
config; any other ``EngineConfig`` field can be set as ``key=value``. A rerun with the same config
skips a finished run; ``force=true`` starts the output folder's run over; ``overwrite=true`` accepts a
folder (or imperfect motions) of another run. Refusals exit 1 with the reason and the fix, having
written nothing (see ``data.engine.run`` and ``data.engine.ownership``).
"""

from __future__ import annotations

import argparse
import json
import sys

from data.config import ConfigError, load_config
from data.engine.run import EngineConfig, run_engine
from data.layout import DatasetFileError
from data.run_folder import RunFolderError
from data.runtime import set_seed, setup_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=None, help="YAML config (e.g. configs/tiny/engine.yaml)")
    parser.add_argument("--dataset-root", default=None, help="SynthML root (HumanML3D layout + attributes/)")
    parser.add_argument("--out", default=None, help="output folder for the annotation files")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of EngineConfig")
    args = parser.parse_args(argv)
    overrides = list(args.overrides)
    if args.dataset_root:
        overrides.append(f"dataset_root={args.dataset_root}")
    if args.out:
        overrides.append(f"output_dir={args.out}")
    setup_logging()
    try:
        cfg = load_config(EngineConfig, args.config, overrides)
        set_seed(cfg.seed)
        summary = run_engine(cfg)
    except (ConfigError, DatasetFileError, ValueError, RunFolderError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(summary.to_dict(), indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
