"""Train the T2M-GPT VQ-VAE motion tokenizer.

Reads ``<dataset_root>/{train,val,test}.txt``, ``new_joint_vecs/`` and the normalisation pair
(``Mean.npy``/``Std.npy`` unless ``mean_file``/``std_file`` are set). Writes into ``output_dir``:
``run.json`` (the run manifest, :mod:`data.run_folder`), ``config.yaml``, ``run_info.json``,
``meta/{mean,std}.npy``, ``metrics.jsonl``, ``net_last.pth`` and ``net_best_mpjpe.pth``
(``{'net': state_dict}``, the released layout), ``resume_last.pt`` (optimizer, step, EMA quantiser and
RNG state) and ``eval_<final_eval_split>.json``. Re-running the same command resumes from
``resume_last.pt``; a finished run returns its stored result. A folder holding a run with another
config or other inputs (mean/std, split files) is refused before anything is written, naming the
differing keys (fix: ``resume=false`` to start over, or another ``output_dir``); so is a folder
holding another command's files (fix: ``overwrite=true``) or one locked by a running process.

    python -m prepare.train_vq --config configs/tiny/vq.yaml
    python -m prepare.train_vq --config configs/humanml3d/vq.yaml dataset_root=/data/HumanML3D
"""

from __future__ import annotations

import logging
from pathlib import Path

from data.config import config_to_dict, parse_cli
from data.layout import DatasetPaths, SkipTracker
from data.normalization import FeatureNorm
from data.runtime import open_run, set_seed, set_torch_threads, setup_logging
from data.specs import get_dataset_spec
from data.vq_data import MotionWindows, load_clips
from models.vq_training import VQTrainConfig, VQTrainer

logger = logging.getLogger("prepare.train_vq")

COMMAND = "prepare.train_vq"
VOLATILE = (
    "output_dir",
    "resume",
    "overwrite",
    "max_steps",
    "num_threads",
    "device",
    "progress",
    "final_eval_split",
)
"""Config keys that may change between invocations of one run (left out of the resume check)."""


def _inputs(cfg: VQTrainConfig) -> dict[str, Path]:
    """The files the run's weights depend on besides the config: normalisation and split lists."""
    paths = DatasetPaths(cfg.dataset_root)
    files = {
        "mean_file": Path(cfg.mean_file or paths.mean_file),
        "std_file": Path(cfg.std_file or paths.std_file),
    }
    for split in filter(None, (cfg.train_split, cfg.val_split)):
        files[f"{split}_split"] = paths.split_file(split)
    return {name: p for name, p in files.items() if p.exists()}  # a missing one fails when loaded


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_cli(VQTrainConfig, argv, description=__doc__)
    setup_logging()
    set_torch_threads(cfg.num_threads)
    seed = set_seed(cfg.seed)
    spec = get_dataset_spec(cfg.dataset)
    norm = FeatureNorm.resolve(spec, cfg.mean_file, cfg.std_file, dataset_root=cfg.dataset_root)
    config = config_to_dict(cfg)
    with open_run(
        cfg.output_dir, command=COMMAND, config=config, seed=seed, inputs=_inputs(cfg), volatile=VOLATILE,
        overwrite=cfg.overwrite, resume=cfg.resume,
    ) as run:  # fmt: skip
        out = run.root
        done = f"eval_{cfg.final_eval_split}.json"
        if run.finished and cfg.final_eval_split and run.has(done):
            logger.info("run already finished; keeping %s", out / done)
            return run.read_json(done)

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
        trainer = VQTrainer(cfg, spec, train, val, norm, run=run)
        trainer.fit()

        result: dict = {}
        if trainer.step == cfg.total_steps:
            if cfg.final_eval_split:
                result = trainer.validate(clips(cfg.final_eval_split, fpc, 0), cfg.final_eval_split)
                result.update(split=cfg.final_eval_split, checkpoint=str(out / "net_last.pth"), step=trainer.step,
                              config=str(out / "config.yaml"), seed=seed)  # fmt: skip
                run.write_json(done, result)
            run.done()
    return result


if __name__ == "__main__":
    main()
