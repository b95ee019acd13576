"""Train the T2M-GPT VQ-VAE motion tokenizer.

Reads ``<dataset_root>/{train,val,test}.txt``, ``new_joint_vecs/`` and the normalisation pair
(``Mean.npy``/``Std.npy`` unless ``mean_file``/``std_file`` are set). Writes into ``output_dir``:
``config.yaml``, ``run_info.json``, ``meta/{mean,std}.npy``, ``metrics.jsonl``, ``net_last.pth`` and
``net_best_mpjpe.pth`` (``{'net': state_dict}``, the released layout), ``resume_last.pt`` (optimizer,
step, EMA quantiser and RNG state) and ``eval_<final_eval_split>.json``. Re-running the same command
resumes from ``resume_last.pt``; a finished run only re-scores the final split.

    python -m prepare.train_vq --config configs/tiny/vq.yaml
    python -m prepare.train_vq --config configs/humanml3d/vq.yaml dataset_root=/data/HumanML3D
"""

from __future__ import annotations

import json
import logging

from data.config import config_to_dict, parse_cli
from data.layout import SkipTracker
from data.normalization import FeatureNorm
from data.runtime import is_main_process, prepare_run_dir, set_seed, set_torch_threads, setup_logging
from data.specs import get_dataset_spec
from data.vq_data import MotionWindows, load_clips
from models.vq_training import VQTrainConfig, VQTrainer

logger = logging.getLogger("prepare.train_vq")


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_cli(VQTrainConfig, argv, description=__doc__)
    setup_logging()
    set_torch_threads(cfg.num_threads)
    seed = set_seed(cfg.seed)
    out = prepare_run_dir(cfg.output_dir, config_to_dict(cfg), seed)
    spec = get_dataset_spec(cfg.dataset)
    norm = FeatureNorm.resolve(spec, cfg.mean_file, cfg.std_file, dataset_root=cfg.dataset_root)

    def clips(split: str, min_len: int, max_motions: int):
        tracker = SkipTracker(
            f"{split} motions", on_error=cfg.on_error, max_skip_fraction=cfg.max_skip_fraction
        )
        return load_clips(
            cfg.dataset_root, split, spec, norm, min_len=min_len, max_motions=max_motions,
            tracker=tracker, progress=cfg.progress,
        )  # fmt: skip

    fpc = cfg.model.frames_per_code
    train = MotionWindows(
        clips(cfg.train_split, cfg.window_size, cfg.max_train_motions),
        window=cfg.window_size, batch_size=cfg.batch_size, seed=cfg.seed,
    )  # fmt: skip
    val = clips(cfg.val_split, fpc, cfg.val_max_motions) if cfg.val_split else None
    trainer = VQTrainer(cfg, spec, train, val, norm)
    ran = trainer.fit()

    result: dict = {}
    done = out / f"eval_{cfg.final_eval_split}.json"
    if not ran and done.is_file():
        logger.info("run already finished at step %d; keeping %s", trainer.step, done)
        return json.loads(done.read_text())
    if cfg.final_eval_split and trainer.step == cfg.total_steps:
        result = trainer.validate(clips(cfg.final_eval_split, fpc, 0), cfg.final_eval_split)
        result.update(split=cfg.final_eval_split, checkpoint=str(out / "net_last.pth"), step=trainer.step,
                      config=str(out / "config.yaml"), seed=seed)  # fmt: skip
        if is_main_process():
            done.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
