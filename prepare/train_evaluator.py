"""Train a Guo et al. text/motion evaluator (movement AE, then contrastive co-embedding).

Reads ``<dataset_root>`` (HumanML3D layout: ``train``/``val``/``test`` splits, ``new_joint_vecs``,
``texts``, ``Mean.npy``/``Std.npy``) and the ``our_vab`` word vectors in ``glove_dir``. Writes into
``output_dir``: ``config.yaml``, ``run_info.json``, ``meta/{mean,std}.npy`` (evaluator
normalisation: dataset Mean, Std with root/contact dims / feat_bias once), ``movement_ae.pt``,
``finest.tar`` (released layout; lowest validation loss), ``metrics.jsonl``, ``train_result.json``
and, when ``final_split`` is set, ``eval_<final_split>.{json,md}`` (ground-truth protocol rows).
A finished run (``train_result.json`` + ``finest.tar``) is not retrained unless ``force=true``.

    python -m prepare.train_evaluator --config configs/tiny/evaluator.yaml
    python -m prepare.train_evaluator --config configs/humanml3d/evaluator.yaml dataset_root=/data/HumanML3D

Recipe and loss: ``models/evaluator_training.py``. Load the result with
``load_guo_evaluator(<output_dir>/finest.tar, dataset)``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from data.config import config_to_dict, parse_cli
from data.normalization import FeatureNorm
from data.runtime import prepare_run_dir, set_seed, set_torch_threads, setup_logging
from data.specs import get_dataset_spec
from data.word_vectorizer import WordVectorizer
from eval.harness import EvalConfig, harness_from_config, write_report
from eval.metrics import text_motion_scores_batched
from models.evaluator_training import EvaluatorTrainConfig, load_index, train_evaluator

logger = logging.getLogger("prepare.train_evaluator")


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_cli(EvaluatorTrainConfig, argv, description=__doc__)
    setup_logging()
    set_torch_threads(cfg.num_threads)
    out = Path(cfg.output_dir)
    done = out / "train_result.json"
    if not cfg.force and done.is_file() and (out / "finest.tar").is_file():
        logger.info("%s exists: evaluator already trained (force=true to retrain)", done)
        return json.loads(done.read_text())
    seed = set_seed(cfg.seed)
    prepare_run_dir(out, config_to_dict(cfg), seed)
    spec = get_dataset_spec(cfg.dataset)
    norm = FeatureNorm.resolve(spec, cfg.mean_file, cfg.std_file, dataset_root=cfg.dataset_root)
    vectorizer = WordVectorizer(cfg.glove_dir)
    summary = train_evaluator(
        cfg, spec, load_index(cfg, spec, cfg.train_split), load_index(cfg, spec, cfg.val_split), vectorizer,
        norm, out, retrieval_scores=text_motion_scores_batched,
    )  # fmt: skip

    if cfg.final_split:
        eval_cfg = EvalConfig(
            dataset=cfg.dataset, dataset_root=cfg.dataset_root, glove_dir=cfg.glove_dir,
            evaluator_checkpoint=str(out / "finest.tar"), evaluator_meta_dir=str(out / "meta"),
            split=cfg.final_split, batch_size=cfg.batch_size, replications=cfg.final_replications,
            diversity_times=cfg.final_diversity_times, seed=cfg.seed, output_dir=str(out),
            device=cfg.device, num_threads=cfg.num_threads, on_error=cfg.on_error,
            max_skip_fraction=cfg.max_skip_fraction, progress=cfg.progress,
        )  # fmt: skip
        report = harness_from_config(eval_cfg, eval_cfg.device).run([])
        write_report(report, out, stem=f"eval_{cfg.final_split}")
        summary["ground_truth"] = report.to_json()["methods"]["Real motion"]["summary"]
        logger.info("ground truth on %s:\n%s", cfg.final_split, report.markdown())
    done.write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
