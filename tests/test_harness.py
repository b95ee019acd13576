"""Evaluation harness and eval/evaluate.py on a small fixture dataset with random-weight models."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from data.datasets import EvalMotionTextDataset, build_clip_index
from data.normalization import FeatureNorm
from data.run_folder import RunFolderError
from data.specs import get_dataset_spec
from data.word_vectorizer import WordVectorizer
from eval.evaluate import main as evaluate_main
from eval.harness import REAL_MOTION, EvaluationHarness, Method
from models.evaluator import (
    EvaluatorDims,
    build_networks,
    load_guo_evaluator,
    save_guo_checkpoint,
)
from models.evaluator_training import evaluator_meta
from models.vqvae import MotionVQVAE, VQVAEConfig
from tests.conftest import TINY_VOCAB, write_tiny_dataset, write_tiny_glove

REPO = Path(__file__).resolve().parent.parent
SPEC = get_dataset_spec("humanml3d")


def _clips(n: int = 30) -> dict[str, tuple[int, list[str]]]:
    rng = np.random.default_rng(1)
    words = [w for w in TINY_VOCAB if w not in ("sos", "eos", "unk")]
    tags = ("NOUN", "VERB", "ADV", "DET")
    out = {}
    for i in range(n):
        caps = []
        for _ in range(int(rng.integers(1, 4))):
            toks = [f"{w}/{tags[int(rng.integers(4))]}" for w in rng.choice(words, int(rng.integers(2, 8)))]
            caps.append(f"{' '.join(t.split('/')[0] for t in toks)}.#{' '.join(toks)}#0.0#0.0")
        out[f"{i:06d}"] = (int(rng.integers(40, 120)), caps)
    return out


def _random_evaluator_file(folder: Path) -> Path:
    path = folder / "finest.tar"
    torch.manual_seed(0)
    dims = EvaluatorDims(
        dim_text_hidden=8, dim_motion_hidden=8, dim_movement_enc_hidden=8, dim_movement_latent=8
    )
    save_guo_checkpoint(path, *build_networks(dims))
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    """30-clip dataset, glove, random small evaluator + meta, random small VQ + meta."""
    root = tmp_path_factory.mktemp("harness")
    ds = write_tiny_dataset(root / "ds", clips=_clips())
    glove = write_tiny_glove(root / "glove")
    torch.manual_seed(0)
    dims = EvaluatorDims(
        dim_text_hidden=16, dim_motion_hidden=16, dim_movement_enc_hidden=16, dim_movement_latent=16
    )
    save_guo_checkpoint(root / "ev" / "finest.tar", *build_networks(dims))
    mean, std = evaluator_meta(np.load(ds / "Mean.npy"), np.load(ds / "Std.npy"), SPEC)
    (root / "ev" / "meta").mkdir()
    np.save(root / "ev" / "meta" / "mean.npy", mean)
    np.save(root / "ev" / "meta" / "std.npy", std)
    vq = MotionVQVAE(263, VQVAEConfig(nb_code=16, code_dim=8, output_emb_width=8, width=8, depth=1))
    vq.quantizer.mark_initialised()
    vq.save_checkpoint(root / "vq" / "net_last.pth")
    (root / "vq" / "meta").mkdir()
    np.save(root / "vq" / "meta" / "mean.npy", np.load(ds / "Mean.npy"))
    np.save(root / "vq" / "meta" / "std.npy", np.load(ds / "Std.npy"))
    cfg = {
        "dataset": "humanml3d", "dataset_root": str(ds), "glove_dir": str(glove),
        "evaluator_checkpoint": str(root / "ev" / "finest.tar"), "evaluator_meta_dir": str(root / "ev" / "meta"),
        "vq_checkpoint": str(root / "vq" / "net_last.pth"), "vq_meta_dir": str(root / "vq" / "meta"),
        "split": "test", "batch_size": 4, "replications": 3, "diversity_times": 10, "seed": 5,
        "progress": False, "num_threads": 1,
    }  # fmt: skip
    (root / "eval.yaml").write_text(yaml.safe_dump(cfg))
    return {"root": root, "ds": ds, "glove": glove, "config": root / "eval.yaml"}


def test_evaluate_writes_json_and_markdown(setup):
    out = setup["root"] / "run1"
    res = evaluate_main(["--config", str(setup["config"]), f"output_dir={out}"])
    assert (
        (out / "eval_test.json").is_file()
        and (out / "eval_test.md").is_file()
        and (out / "config.yaml").is_file()
    )
    js = json.loads((out / "eval_test.json").read_text())
    assert js == json.loads(json.dumps(res))
    assert list(js["methods"]) == [REAL_MOTION, "VQ-VAE reconstruction"]
    assert js["samples_per_replication"] == 28 and js["replications"] == 3 and js["seed"] == 5
    real = js["methods"][REAL_MOTION]
    assert set(real["summary"]) == {"top1", "top2", "top3", "fid", "mm_dist", "diversity"}
    assert all(len(v) == 3 for v in real["per_replication"].values())
    top = [real["summary"][k]["mean"] for k in ("top1", "top2", "top3")]
    assert 0 <= top[0] <= top[1] <= top[2] <= 1
    assert real["summary"]["fid"]["mean"] > 0  # second independent crop draw, not the same pass
    vq = js["methods"]["VQ-VAE reconstruction"]
    assert vq["failed_generations"] == 0 and vq["generations"] == 84
    md = (out / "eval_test.md").read_text()
    assert "| Method | Top-1 | Top-2 | Top-3 | FID | MM-Dist | Diversity | Failed |" in md
    assert f"| {REAL_MOTION} | {real['summary']['top1']['mean']:.3f} ± " in md and "| 0/84 |" in md
    # Counted, not silent: 30 clips of 40-119 frames (all kept), 30 % 4 = 2 items out of each replication.
    counts = js["counts"]
    assert counts["test_index"]["ids"] == counts["test_index"]["whole_clips"] == 30
    assert counts["test_index"]["skipped_files"] == counts["test_index"]["too_long"] == 0
    assert counts["items_not_scored_per_replication"] == 2
    assert counts["failed_generations"] == {"VQ-VAE reconstruction": 0}
    n_captions = sum(len(lines) for _, lines in _clips().values())
    assert (
        counts["caption_fallbacks"]["captions"] == n_captions
        and counts["caption_fallbacks"]["unknown_words"] == 0
    )
    # the fixture's evaluator has no provenance record (like a released one): unchecked, and said so
    assert js["evaluator_provenance"]["checked"] is False

    # a finished evaluation is returned, not rerun, and nothing in the folder changes
    tree = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert evaluate_main(["--config", str(setup["config"]), f"output_dir={out}"]) == js
    assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == tree
    # another setting is refused before anything is written; resume=false evaluates again
    with pytest.raises(RunFolderError, match="replications was 3 and is 1 now"):
        evaluate_main(["--config", str(setup["config"]), f"output_dir={out}", "replications=1"])
    assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == tree
    again = evaluate_main(
        ["--config", str(setup["config"]), f"output_dir={out}", "replications=1", "resume=false"]
    )
    assert again["replications"] == 1 and json.loads((out / "eval_test.json").read_text()) == again


def test_caption_fallbacks_are_counted(tiny_dataset, tiny_glove, tmp_path):
    """The 8-clip fixture: 10 kept captions; clip 000006 has 22 tokens (cut to 20), three of them
    (zzzunknown, extra, words) outside the vocabulary and looked up as unk."""
    ev = load_guo_evaluator(_random_evaluator_file(tmp_path), SPEC)
    norm = FeatureNorm.identity(SPEC.feat_dim)
    index = build_clip_index(tiny_dataset, "test", SPEC, progress=False)
    ds = EvalMotionTextDataset(index, WordVectorizer(tiny_glove), norm.mean, norm.std, seed=0)
    h = EvaluationHarness(ev, ds, norm, batch_size=3, replications=1, diversity_times=2, progress=False)
    assert h.caption_counts == {"captions": 10, "cut_to_max_text_len": 1, "words": 58, "unknown_words": 3}


def _harness(setup, replications: int = 2, **kwargs) -> EvaluationHarness:
    ev = load_guo_evaluator(setup["root"] / "ev" / "finest.tar")
    norm = FeatureNorm.load_meta(setup["root"] / "ev" / "meta", SPEC)
    index = build_clip_index(setup["ds"], "test", SPEC, progress=False)
    ds = EvalMotionTextDataset(index, WordVectorizer(setup["glove"]), norm.mean, norm.std, seed=3)
    return EvaluationHarness(ev, ds, norm, batch_size=4, replications=replications, diversity_times=10,
                             progress=False, **kwargs)  # fmt: skip


def test_perfect_generator_matches_real_row_and_failures_are_counted(setup):
    h = _harness(setup)
    raw = FeatureNorm.identity(SPEC.feat_dim)

    def copy_gt(captions, lengths, batch):  # raw ground-truth crops: a perfect "generator"
        return [batch.raw_motion(j) for j in range(len(captions))]

    def flaky(captions, lengths, batch):
        out = [batch.raw_motion(j) for j in range(len(captions))]
        out[0] = None
        out[1] = np.zeros((2, SPEC.feat_dim))  # shorter than one movement step
        out[2] = np.full((8, SPEC.feat_dim), np.nan)
        return out

    report = h.run([Method("copy", copy_gt, raw), Method("flaky", flaky, raw)])
    real, copy, flaky_r = report.results
    for k in ("top1", "top2", "top3", "mm_dist", "diversity"):
        np.testing.assert_allclose(copy.values[k], real.values[k], atol=1e-5)
    assert max(copy.values["fid"]) < 1e-4 and copy.failed == 0
    assert flaky_r.failed == 3 * 7 * 2 and flaky_r.generated == 56
    assert "| flaky |" in report.markdown() and "42/56" in report.markdown()
    assert report.to_json()["counts"]["failed_generations"] == {"copy": 0, "flaky": 42}
    with pytest.raises(ValueError, match="returned 1 motions for 4 captions"):
        h.run([Method("bad", lambda c, lens, b: [None], raw)])


def test_two_process_torchrun_equals_one_process(setup):
    """gloo on CPU, 2 ranks: the batches are split, not duplicated or dropped, and numbers match."""
    mm = ["mm_texts=8", "mm_repeats=3", "mm_times=2"]  # exercises the multimodality work split too
    one = evaluate_main(
        ["--config", str(setup["config"]), f"output_dir={setup['root'] / 'one'}", "replications=2", *mm]
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "eval.evaluate", "--config", str(setup["config"]), f"output_dir={setup['root'] / 'two'}",
           "replications=2", *mm]  # fmt: skip
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    two = json.loads((setup["root"] / "two" / "eval_test.json").read_text())
    assert two["world_size"] == 2 and one["world_size"] == 1
    for name, m in one["methods"].items():
        for k, vals in m["per_replication"].items():
            np.testing.assert_allclose(two["methods"][name]["per_replication"][k], vals, rtol=1e-6, atol=1e-7)
        assert two["methods"][name]["generations"] == m["generations"]
    assert one["methods"]["VQ-VAE reconstruction"]["generations"] == 2 * 28 + 2 * 8 * 3


def test_multimodality(setup):
    h = _harness(setup, replications=2, mm_texts=6, mm_repeats=11, mm_times=10)
    raw = FeatureNorm.identity(SPEC.feat_dim)

    def copy_gt(captions, lengths, batch):  # deterministic: every repeat identical -> MModality 0
        return [batch.raw_motion(j) for j in range(len(captions))]

    def noisy(captions, lengths, batch):  # seeded per work unit: repeats differ -> MModality > 0
        g = np.random.default_rng(batch.seed)
        return [
            batch.raw_motion(j) + g.normal(0, 0.5, (int(n), SPEC.feat_dim)) for j, n in enumerate(lengths)
        ]

    report = h.run([Method("copy", copy_gt, raw), Method("noisy", noisy, raw)])
    real, copy, noise = report.results
    assert copy.values["mmodality"] == pytest.approx([0.0, 0.0], abs=1e-6)
    assert min(noise.values["mmodality"]) > 0.01 and "mmodality" not in real.summary()
    assert copy.generated == 2 * 28 + 2 * 6 * 11 and copy.failed == 0
    md = report.markdown()
    assert "| MModality | Failed |" in md and "6 texts x 11 generations" in md
    again = h.run([Method("noisy", noisy, raw)]).results[1]
    assert again.values["mmodality"] == noise.values["mmodality"]  # seeded per work unit


def test_refinement_rounds_are_rows_and_failed_generations_stay_rows(setup):
    h = _harness(setup)
    raw = FeatureNorm.identity(SPEC.feat_dim)
    # the documented failure substitute, given explicitly: unit_length frames of the mean pose
    mean_pose = np.tile(h.eval_norm.mean, (SPEC.unit_length, 1))

    def copy_gt(captions, lengths, batch):
        return [batch.raw_motion(j) for j in range(len(captions))]

    def refine(captions, lengths, batch):  # per caption: round 0 exact, round 1 failed, round 2 substitute
        return [[batch.raw_motion(j), None, mean_pose] for j in range(len(captions))]

    report = h.run([Method("copy", copy_gt, raw), Method("refine", refine, raw, rounds=3)])
    names = [r.name for r in report.results]
    assert names == [REAL_MOTION, "copy", "refine round 0", "refine round 1", "refine round 2"]
    _, copy, r0, r1, r2 = report.results
    assert r0.values == copy.values and r0.failed == 0  # a round is scored like a single-motion method
    # every failed generation is scored (28 samples x 2 replications), none dropped, and scored
    # exactly as the substitute it stands for
    assert (r1.failed, r1.generated) == (56, 56) and (r2.failed, r2.generated) == (0, 56)
    for k in ("top1", "top2", "top3", "fid", "mm_dist", "diversity"):
        assert len(r1.values[k]) == 2
        np.testing.assert_allclose(r1.values[k], r2.values[k], rtol=1e-6, atol=1e-6)
    assert max(r1.values["diversity"]) < 1e-4  # all 28 rows are the same still pose
    md = report.markdown()
    assert "| refine round 1 |" in md and "| 56/56 |" in md and "| refine round 2 |" in md
    # a method with rounds must return one list per caption
    with pytest.raises(ValueError, match="rounds=2 but returned shape"):
        h.run([Method("bad", copy_gt, raw, rounds=2)])
    with pytest.raises(ValueError, match="unique"):
        h.run([Method("x round 0", copy_gt, raw), Method("x", refine, raw, rounds=3)])
