"""eval/scoring.py: captions and generated motions -> evaluator embeddings (random small evaluator)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from data.normalization import FeatureNorm
from data.specs import get_dataset_spec
from eval.scoring import MotionTextScorer
from models.evaluator import EvaluatorDims, build_networks, save_guo_checkpoint

SPEC = get_dataset_spec("humanml3d")
CAPTIONS = [
    ("a/DET", "person/NOUN", "walk/VERB", "forward/ADV"),
    ("a/DET", "man/NOUN", "jump/VERB"),
    ("someone/PRON", "dance/VERB", "happily/ADV"),
]


@pytest.fixture(scope="module")
def scorer(tmp_path_factory: pytest.TempPathFactory, tiny_glove: Path) -> MotionTextScorer:
    root = tmp_path_factory.mktemp("scoring")
    torch.manual_seed(0)
    dims = EvaluatorDims(
        dim_text_hidden=16, dim_motion_hidden=16, dim_movement_enc_hidden=16, dim_movement_latent=16
    )
    save_guo_checkpoint(root / "ev" / "finest.tar", *build_networks(dims))
    rng = np.random.default_rng(0)
    (root / "ev" / "meta").mkdir()
    np.save(root / "ev" / "meta" / "mean.npy", rng.normal(size=SPEC.feat_dim).astype(np.float32))
    np.save(root / "ev" / "meta" / "std.npy", rng.uniform(0.5, 2.0, SPEC.feat_dim).astype(np.float32))
    return MotionTextScorer.from_files(root / "ev" / "finest.tar", root / "ev" / "meta", tiny_glove, SPEC)


def _motions(n: int, seed: int = 1) -> list[np.ndarray]:
    """Raw-feature motions of varied lengths (not multiples of unit_length)."""
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(int(t), SPEC.feat_dim)).astype(np.float32) for t in rng.integers(5, 150, n)]


def test_failed_generations_are_scored_as_n_rows(scorer):
    raw = FeatureNorm.identity(SPEC.feat_dim)
    good = _motions(2)
    unit = SPEC.unit_length
    motions = [
        good[0],
        None,  # no output
        np.zeros((unit - 1, SPEC.feat_dim)),  # shorter than one movement step
        np.full((12, SPEC.feat_dim), np.nan),  # diverged
        np.zeros((12, SPEC.feat_dim + 1)),  # wrong feature size
        np.zeros((0, SPEC.feat_dim)),  # empty
        good[1],
    ]
    emb, failed = scorer.embed_motions(motions, raw)
    assert emb.shape == (7, scorer.dim) and emb.dtype == np.float32  # every generation keeps its row
    np.testing.assert_array_equal(failed, [False, True, True, True, True, True, False])
    # the documented substitute: unit_length frames of the mean pose (zeros in the evaluator's
    # space); the raw mean pose maps there exactly, so passing it explicitly gives the same rows
    mean_pose = np.tile(scorer.eval_norm.mean, (unit, 1))
    explicit, explicit_failed = scorer.embed_motions([good[0], mean_pose, good[1]], raw)
    assert not explicit_failed.any()
    for row in range(1, 6):
        np.testing.assert_allclose(emb[row], explicit[1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(emb[[0, 6]], explicit[[0, 2]], rtol=1e-5, atol=1e-6)
    padded, lengths, failed_p = scorer.prepare_motions(motions, raw)
    np.testing.assert_array_equal(lengths, [len(good[0]), unit, unit, unit, unit, unit, len(good[1])])
    assert not padded[failed_p].any() and padded.shape == (7, SPEC.max_motion_len, SPEC.feat_dim)


def test_spaces_lengths_and_torch_inputs(scorer):
    raw = FeatureNorm.identity(SPEC.feat_dim)
    motions = _motions(3, seed=2)
    base, _ = scorer.embed_motions(motions, raw)
    # the same motions given in the evaluator's space (identity map) or another space
    ev = scorer.eval_norm
    in_eval = [ev.normalise(m) for m in motions]
    np.testing.assert_allclose(scorer.embed_motions(in_eval, ev)[0], base, rtol=1e-4, atol=1e-5)
    other = FeatureNorm(
        mean=np.full(SPEC.feat_dim, 0.3, np.float32), std=np.full(SPEC.feat_dim, 2.0, np.float32)
    )
    in_other = [other.normalise(m) for m in motions]
    np.testing.assert_allclose(scorer.embed_motions(in_other, other)[0], base, rtol=1e-4, atol=1e-5)
    as_torch = [torch.from_numpy(m) for m in motions]
    np.testing.assert_array_equal(scorer.embed_motions(as_torch, raw)[0], base)
    # longer than max_motion_len: cut to its first 196 frames
    long = np.random.default_rng(3).normal(size=(250, SPEC.feat_dim)).astype(np.float32)
    e_long, e_cut = scorer.embed_motions([long, long[: SPEC.max_motion_len]], raw)[0]
    np.testing.assert_array_equal(e_long, e_cut)
    assert scorer.prepare_motions([long], raw)[1].tolist() == [SPEC.max_motion_len]
    assert scorer.embed_motions([], raw)[0].shape == (0, scorer.dim)


def test_text_embeddings_cache_and_pair_distance(scorer, monkeypatch):
    plain = scorer.embed_texts(CAPTIONS)
    assert plain.shape == (3, scorer.dim)
    scorer.clear_text_cache()
    calls = []
    real = scorer.evaluator.embed_text
    monkeypatch.setattr(
        scorer.evaluator, "embed_text", lambda *a: calls.append(len(a[0])) or real(*a)
    )  # count rows sent to the text encoder
    cached = scorer.embed_texts([CAPTIONS[1], CAPTIONS[0], CAPTIONS[1]], cache=True)
    assert calls == [2]  # the repeated caption is embedded once
    np.testing.assert_allclose(cached, plain[[1, 0, 1]], rtol=1e-5, atol=1e-6)
    again = scorer.embed_texts(CAPTIONS[:2], cache=True)
    assert calls == [2]  # all cached
    np.testing.assert_array_equal(again, cached[[1, 0]])

    raw = FeatureNorm.identity(SPEC.feat_dim)
    group = [*_motions(3, seed=4), None]  # a GRPO group: 4 completions of one caption, one failed
    dist, failed = scorer.text_motion_distance([CAPTIONS[2]], group, raw)
    emb, _ = scorer.embed_motions(group, raw)
    expected = np.linalg.norm(plain[2].astype(np.float64) - emb.astype(np.float64), axis=1)
    np.testing.assert_allclose(dist, expected, rtol=1e-5)
    np.testing.assert_array_equal(failed, [False, False, False, True])
    assert dist.shape == (4,) and (dist > 0).all()
    assert calls == [2, 1]  # one text-encoder call for the new caption, none for the motions' group
    with pytest.raises(ValueError, match="2 captions for 4 motions"):
        scorer.text_motion_distance(CAPTIONS[:2], group, raw)
