"""Stage-3 GRPO of the motion LLM on TRL's ``GRPOTrainer`` (spec ``grpo.md``; library: ``models/grpo.py``).

Reads the stage-2 motion LLM folder (``model_path``; also the frozen reference model), the stage-3
prompt rows (``prompts_file``, written by ``python -m data.engine``), the VQ-VAE (hash-checked
against the model), the Guo evaluator with its meta and word vectors, and the dataset's motions
(the ground truth of ``guo_mm_distance``); writes the run folder described in ``models/grpo.py``
(Trainer checkpoints, metrics.jsonl, reward_curves.png, the trained motion LLM in ``model/``).
Rerunning the same command resumes from the last checkpoint; a finished run is kept.

    python -m RL.train_grpo --config configs/tiny/grpo.yaml
    torchrun --nproc_per_node 8 -m RL.train_grpo --config configs/humanml3d/grpo.yaml
    accelerate launch --config_file configs/deepspeed/accelerate_zero2.json -m RL.train_grpo \\
        --config configs/humanml3d/grpo.yaml training.deepspeed=configs/deepspeed/zero2.json
"""

from __future__ import annotations

import logging

from transformers import AutoTokenizer

from data.config import config_to_dict, parse_cli
from data.runtime import open_run, resolve_device, set_seed, set_torch_threads, setup_logging
from models.grpo import SUMMARY, GRPORunConfig, run_grpo
from models.motion_llm import MotionLLMMeta
from RL.rewards import NEEDS_MOTION_ASSETS, RewardContext, build_rewards, check_reward_names

logger = logging.getLogger("RL.train_grpo")

COMMAND = "RL.train_grpo"
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
    "training.log_completions",
    "training.num_completions_to_print",
)
"""Config keys that may change between invocations of one run (left out of the resume check)."""


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_cli(GRPORunConfig, argv, description=__doc__)
    setup_logging()
    set_torch_threads(cfg.num_threads)
    seed = set_seed(cfg.seed)
    check_reward_names(cfg.rewards.names)
    motion_assets = bool(NEEDS_MOTION_ASSETS & set(cfg.rewards.names))
    cfg.check_inputs(need_motion_assets=motion_assets)
    device = resolve_device(cfg.device)
    # The rewards (VQ-VAE, evaluator, word vectors) load before the run folder is opened: a bad asset fails here.
    eos = AutoTokenizer.from_pretrained(cfg.model_path).eos_token_id
    ctx = RewardContext(cfg, MotionLLMMeta.load(cfg.model_path).vocab, (eos,), device)
    rewards = build_rewards(cfg.rewards.names, ctx)
    inputs = {
        "model_path": cfg.model_path,
        "prompts_file": cfg.prompts_file,
        "vq_checkpoint": cfg.vq_checkpoint,
    }
    if motion_assets:
        inputs.update(evaluator_checkpoint=cfg.evaluator_checkpoint, glove_dir=cfg.glove_dir)
    with open_run(
        cfg.output_dir, command=COMMAND, config=config_to_dict(cfg), seed=seed, inputs=inputs,
        volatile=VOLATILE, overwrite=cfg.overwrite, resume=cfg.resume,
    ) as run:  # fmt: skip
        if run.finished and run.has(SUMMARY):
            logger.info("%s holds stage 3, finished; keeping it (resume=false retrains)", run.root)
            return run.read_json(SUMMARY)
        return run_grpo(cfg, run, rewards)


if __name__ == "__main__":
    main()
