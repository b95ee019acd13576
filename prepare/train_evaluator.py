"""Train a Guo et al. text/motion evaluator (movement AE, then contrastive co-embedding).

Reads ``<dataset_root>`` (HumanML3D layout: ``train``/``val``/``test`` splits, ``new_joint_vecs``,
``texts``, ``Mean.npy``/``Std.npy``) and the ``our_vab`` word vectors in ``glove_dir``. Writes into
``output_dir``: ``run.json`` (the run manifest, :mod:`data.run_folder`), ``config.yaml``,
``run_info.json``, ``meta/{mean,std}.npy`` (evaluator normalisation: dataset Mean, Std with
root/contact dims / feat_bias once), ``provenance.json`` (content hashes of the word vectors and of
that meta; every user of the evaluator checks them), ``movement_ae.pt``, ``finest.tar`` (released
layout; lowest validation loss), ``metrics.jsonl``, ``train_result.json`` (with ``counts`` of every
clip or item left out) and, when ``final_split`` is set, ``eval_<final_split>.{json,md}``
(ground-truth protocol rows). Every file is written atomically.

A finished run with the same config and inputs (dataset mean/std, split files, word vectors) is
not retrained; its ``train_result.json`` is returned. Before anything is written the folder is
checked: one holding another command's run or files of other origin is refused (fix:
``overwrite=true``), one holding this command's run with another config or inputs is refused naming
the differences (fix: ``force=true`` to retrain, or another ``output_dir``), and so is one locked
by a running process. An interrupted run trains again from scratch on the next call.

    python -m prepare.train_evaluator --config configs/tiny/evaluator.yaml
    python -m prepare.train_evaluator --config configs/humanml3d/evaluator.yaml dataset_root=/data/HumanML3D

Recipe and loss: ``models/evaluator_training.py``. Load the result with
``load_guo_evaluator(<output_dir>/finest.tar, dataset)``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from data.config import config_to_dict, parse_cli
from data.layout import DatasetPaths
from data.normalization import FeatureNorm, resolve_norm_files
from data.runtime import open_run, set_seed, set_torch_threads, setup_logging
from data.specs import get_dataset_spec
from data.word_vectorizer import WordVectorizer, word_vector_files
from eval.harness import EvalConfig, harness_from_config, write_report
from eval.metrics import text_motion_scores_batched
from models.evaluator_training import FINEST, EvaluatorTrainConfig, load_index, train_evaluator

logger = logging.getLogger("prepare.train_evaluator")

COMMAND = "prepare.train_evaluator"
RESULT = "train_result.json"
VOLATILE = ("output_dir", "force", "overwrite", "num_threads", "device", "progress")
"""Config keys that may change between invocations of one run (left out of the resume check)."""
CLI_FIXES = {
    "overwrite": "pass overwrite=true",
    "restart": "pass force=true",
    "out": "choose another output_dir",
}


def _inputs(cfg: EvaluatorTrainConfig, mean_file: Path, std_file: Path) -> dict[str, Path]:
    """Files the weights depend on besides the config: normalisation, split lists, word vectors."""
    paths = DatasetPaths(cfg.dataset_root)
    files = {"mean_file": mean_file, "std_file": std_file}
    for split in filter(None, (cfg.train_split, cfg.val_split, cfg.final_split)):
        files[f"{split}_split"] = paths.split_file(split)
    for f in word_vector_files(cfg.glove_dir):
        files[f"word_vectors/{f.name}"] = f
    return {name: p for name, p in files.items() if p.exists()}  # a missing one fails when loaded


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_cli(EvaluatorTrainConfig, argv, description=__doc__)
    setup_logging()
    set_torch_threads(cfg.num_threads)
    seed = set_seed(cfg.seed)
    spec = get_dataset_spec(cfg.dataset)
    # Cheap inputs first: a missing or malformed file fails before the folder is touched.
    mean_file, std_file = resolve_norm_files(cfg.mean_file, cfg.std_file, dataset_root=cfg.dataset_root)
    norm = FeatureNorm.load(mean_file, std_file, spec)
    vectorizer = WordVectorizer(cfg.glove_dir)
    with open_run(
        cfg.output_dir, command=COMMAND, config=config_to_dict(cfg), seed=seed,
        inputs=_inputs(cfg, mean_file, std_file), volatile=VOLATILE, overwrite=cfg.overwrite,
        resume=not cfg.force, fixes=CLI_FIXES,
    ) as run:  # fmt: skip
        out = run.root
        if run.finished and run.has(RESULT) and run.has(FINEST):
            logger.info("%s: evaluator already trained; keeping it (force=true to retrain)", out)
            return run.read_json(RESULT)
        train_index = load_index(cfg, spec, cfg.train_split)
        val_index = load_index(cfg, spec, cfg.val_split)
        summary = train_evaluator(
            cfg,
            spec,
            train_index,
            val_index,
            vectorizer,
            norm,
            run,
            retrieval_scores=text_motion_scores_batched,
        )

        if cfg.final_split:
            eval_cfg = EvalConfig(
                dataset=cfg.dataset, dataset_root=cfg.dataset_root, glove_dir=cfg.glove_dir,
                evaluator_checkpoint=str(out / FINEST), evaluator_meta_dir=str(out / "meta"),
                split=cfg.final_split, batch_size=cfg.batch_size, replications=cfg.final_replications,
                diversity_times=cfg.final_diversity_times, seed=cfg.seed, output_dir=str(out),
                device=cfg.device, num_threads=cfg.num_threads, on_error=cfg.on_error,
                max_skip_fraction=cfg.max_skip_fraction, progress=cfg.progress,
            )  # fmt: skip
            report = harness_from_config(eval_cfg, eval_cfg.device).run([])
            write_report(report, run, stem=f"eval_{cfg.final_split}")
            summary["ground_truth"] = report.to_json()["methods"]["Real motion"]["summary"]
            summary["counts"]["final_eval"] = report.info["counts"]
            logger.info("ground truth on %s:\n%s", cfg.final_split, report.markdown())
        run.write_json(RESULT, summary)
        run.done()
    return summary


if __name__ == "__main__":
    main()
