"""Supervised fine-tuning of the motion LLM, stages 0, 1 and 2 (one recipe; the config picks the stage).

Reads the start model (``model_path``), the VQ-VAE checkpoint (hashed; a motion LLM of another
VQ-VAE is refused), the annotation files and the code files of ``prepare/tokenize_motions.py``;
writes the run folder described in ``models/sft.py`` (Trainer checkpoints, metrics.jsonl,
loss_curve.png, the final motion LLM in ``model/``). Rerunning the same command resumes from the
last checkpoint exactly (optimizer, scheduler, RNG and data position); a finished run is kept.

    python -m SFT.train_sft --config configs/tiny/sft_stage0.yaml
    torchrun --nproc_per_node 8 -m SFT.train_sft --config configs/humanml3d/sft_stage1.yaml
    accelerate launch --config_file configs/deepspeed/accelerate_zero2.json -m SFT.train_sft \\
        --config configs/humanml3d/sft_stage1.yaml training.deepspeed=configs/deepspeed/zero2.json
"""

from __future__ import annotations

import logging

from data.config import config_to_dict, parse_cli
from data.runtime import open_run, set_seed, set_torch_threads, setup_logging
from models.sft import SUMMARY, SFTConfig, run_sft

logger = logging.getLogger("SFT.train_sft")

COMMAND = "SFT.train_sft"
VOLATILE = (
    "output_dir",
    "resume",
    "overwrite",
    "max_steps",
    "num_threads",
    "device",
    "progress",
    "training.report_to",
    "training.dataloader_num_workers",
    "training.logging_steps",
    "training.save_strategy",
    "training.save_steps",
    "training.save_total_limit",
    "training.eval_batch_size",
)
"""Config keys that may change between invocations of one run (left out of the resume check)."""


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_cli(SFTConfig, argv, description=__doc__)
    setup_logging()
    set_torch_threads(cfg.num_threads)
    seed = set_seed(cfg.seed)
    cfg.check_inputs()
    inputs = {"model_path": cfg.model_path, "vq_checkpoint": cfg.vq_checkpoint, "codes_dir": cfg.codes_dir}
    inputs.update({f"annotations_{i}": f for i, f in enumerate(cfg.annotation_files)})
    inputs.update({f"val_{i}": f for i, f in enumerate(cfg.val_files)})
    with open_run(
        cfg.output_dir, command=COMMAND, config=config_to_dict(cfg), seed=seed, inputs=inputs,
        volatile=VOLATILE, overwrite=cfg.overwrite, resume=cfg.resume,
    ) as run:  # fmt: skip
        if run.finished and run.has(SUMMARY):
            logger.info("%s holds this stage, finished; keeping it (resume=false retrains)", run.root)
            return run.read_json(SUMMARY)
        return run_sft(cfg, run)


if __name__ == "__main__":
    main()
