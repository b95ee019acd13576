"""Write a tiny Gemma2 base model folder that stands in for ``gemma-2-2b-it`` (CPU demo and tests).

Reads the captions of ``dataset_root`` (``caption_splits``) and, when ``annotations_dir`` is set,
the text of the annotation files; writes into ``output_dir`` a plain Hugging Face folder
(``config.json``, ``generation_config.json``, ``model.safetensors``, ``tokenizer.json``,
``tokenizer_config.json``), the run manifest ``run.json``, ``config.yaml``, ``run_info.json`` and
``build_summary.json``. Nothing is downloaded. A finished build with the same config is kept
(``force=true`` rebuilds). See ``models/tiny_llm.py`` for what the folder holds.

    python -m prepare.build_tiny_llm --config configs/tiny/llm.yaml
    python -m prepare.build_tiny_llm --config configs/tiny/llm.yaml dataset_root=runs/demo/SynthML \\
        annotations_dir=runs/demo/annotations output_dir=runs/demo/tiny_llm
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from data.config import config_to_dict, parse_cli
from data.layout import DatasetPaths
from data.runtime import open_run, set_seed, set_torch_threads, setup_logging
from models.tiny_llm import TinyLLMConfig, build_tiny_llm

logger = logging.getLogger("prepare.build_tiny_llm")

COMMAND = "prepare.build_tiny_llm"
VOLATILE = ("output_dir", "overwrite", "force", "num_threads", "device", "progress")
SUMMARY = "build_summary.json"


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_cli(TinyLLMConfig, argv, description=__doc__)
    setup_logging()
    set_torch_threads(cfg.num_threads)
    seed = set_seed(cfg.seed)
    inputs = {f"{s}_split": DatasetPaths(cfg.dataset_root).split_file(s) for s in cfg.caption_splits}
    if cfg.annotations_dir:
        inputs["annotations_dir"] = Path(cfg.annotations_dir)
    with open_run(
        cfg.output_dir, command=COMMAND, config=config_to_dict(cfg), seed=seed, inputs=inputs,
        volatile=VOLATILE, overwrite=cfg.overwrite, resume=not cfg.force,
    ) as run:  # fmt: skip
        if run.finished and run.has(SUMMARY):
            logger.info("%s already holds this build; keeping it (force=true rebuilds)", run.root)
            return run.read_json(SUMMARY)
        # Build beside the folder, then move each file in atomically through the run folder.
        with tempfile.TemporaryDirectory(dir=run.root, prefix=".build-") as tmp:
            summary = build_tiny_llm(cfg, Path(tmp))
            for f in sorted(Path(tmp).iterdir()):
                run.write_bytes(f.name, f.read_bytes())
        run.write_json(SUMMARY, summary)
        run.done()
    return summary


if __name__ == "__main__":
    main()
