"""Pin the representation, VQ-VAE, evaluator, word vectors and metrics to the published numbers.

Every expected value comes from ``tests/golden/`` (computed once with the published implementations,
see its README); tolerances are the README's: max-abs-error <= 1e-4 * max(1, max|golden|), and codes,
POS one-hots, foot contacts and R-precision exactly. These tests fail for an implementation that is
self-consistent but computes a different number (a "corrected" quirk, a swapped GRU direction, ...).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from data.motion_repr import joints_to_features, joints_to_features_batch, recover_from_ric
from data.specs import get_dataset_spec
from data.word_vectorizer import POS_ENUMERATOR, WordVectorizer
from eval.metrics import (
    activation_statistics,
    euclidean_distance_matrix,
    frechet_distance,
    matching_score,
    r_precision,
)
from models.evaluator import load_guo_evaluator
from models.vqvae import MotionVQVAE
from tests.golden_data import (
    GOLDEN_DIR,
    GUO_MODULES,
    assert_close_golden,
    checksum_mismatches,
    checksums,
    golden,
    guo_checkpoint,
    vq_checkpoint,
)

HML = get_dataset_spec("humanml3d")
KIT = get_dataset_spec("kit")


# ------------------------------------------------------------------------ stand-in checkpoints


def _require_generator_matches(state: dict[str, torch.Tensor], expected: dict, what: str) -> None:
    bad = checksum_mismatches(state, expected)
    if bad:
        pytest.fail(
            f"{what}: the stand-in weights drawn by tests/golden_data.py differ from the ones the goldens "
            f"were computed with ({len(bad)} tensors, e.g. {bad[:3]}): a GENERATOR problem, not an "
            "implementation problem"
        )


@pytest.fixture(scope="module")
def vq_checkpoint_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ckpt = vq_checkpoint()
    _require_generator_matches(ckpt["net"], checksums()["vqvae"]["checksums"]["net"], "VQ-VAE")
    path = tmp_path_factory.mktemp("golden_vq") / "net_last.pth"
    torch.save(ckpt, path)
    return path


@pytest.fixture(scope="module")
def guo_checkpoint_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ckpt = guo_checkpoint()
    expected = checksums()["guo_evaluator"]["checksums"]
    for module in GUO_MODULES:
        _require_generator_matches(ckpt[module], expected[module], f"Guo evaluator {module}")
    path = tmp_path_factory.mktemp("golden_guo") / "finest.tar"
    torch.save(ckpt, path)
    return path


def test_stand_in_generator_matches_golden_checksums():
    """The generator itself: seeds from the checksum file, every tensor's sum and sum of squares."""
    ck = checksums()
    assert ck["vqvae"]["seed"] == int(golden("vqvae")["seed"])
    assert ck["guo_evaluator"]["seed"] == int(golden("evaluator")["seed"])
    vq = vq_checkpoint()["net"]
    assert checksum_mismatches(vq, ck["vqvae"]["checksums"]["net"]) == []
    assert len(vq) == len(ck["vqvae"]["checksums"]["net"])
    guo = guo_checkpoint()
    for module in GUO_MODULES:
        assert checksum_mismatches(guo[module], ck["guo_evaluator"]["checksums"][module]) == [], module
    # A different seed draws different weights (the check can fail).
    assert checksum_mismatches(vq_checkpoint(seed=1)["net"], ck["vqvae"]["checksums"]["net"])


# ------------------------------------------------------------------------ motion representation


def test_joints_to_features_humanml3d_matches_published():
    g = golden("motion_repr")
    threshold = float(g["j2f_feet_threshold"])
    assert threshold == HML.feet_threshold  # the published HumanML3D value is our default
    expected = g["j2f_features"]
    contact = HML.feature_slices["foot_contact"]
    feats = joints_to_features_batch(g["j2f_joints"], HML, target_joints=g["j2f_target_joints"])
    assert feats.shape == expected.shape == (2, 59, HML.feat_dim)
    assert_close_golden(feats, expected, "joints_to_features_batch (HumanML3D)")
    # Contacts exactly: the golden's smallest |squared displacement - threshold| is ~3e-5, far above
    # rounding, so any difference is a different rule (height test, <=, other joints, other order).
    assert float(g["j2f_contact_margin"].min()) > 1e-5
    np.testing.assert_array_equal(feats[..., contact], expected[..., contact])
    assert 0 < feats[..., contact].mean() < 1  # both contact values occur, so the check means something
    for i in range(len(expected)):
        single = joints_to_features(
            g["j2f_joints"][i], HML, target_joints=g["j2f_target_joints"], feet_threshold=threshold
        )
        assert_close_golden(single, expected[i], f"joints_to_features sequence {i}")
        np.testing.assert_array_equal(single[:, contact], expected[i][:, contact])


def test_joints_to_features_uses_the_target_skeleton():
    """The golden's target pose differs from our default skeleton: ignoring it must show."""
    g = golden("motion_repr")
    default = joints_to_features_batch(g["j2f_joints"], HML)
    ric = HML.feature_slices["ric"]
    err = np.abs(default[..., ric] - g["j2f_features"][..., ric]).max()
    assert err > 10 * assert_close_golden(
        joints_to_features_batch(g["j2f_joints"], HML, target_joints=g["j2f_target_joints"]),
        g["j2f_features"],
        "with target",
    )
    assert err > 1e-3


def test_recover_from_ric_humanml3d_batch_matches_published():
    g = golden("motion_repr")
    feats, expected = g["ric_feats_humanml3d"], g["ric_joints_humanml3d"]
    assert feats.shape == (3, 40, HML.feat_dim)
    assert_close_golden(recover_from_ric(feats, HML.joints_num), expected, "recover_from_ric numpy")
    out = recover_from_ric(torch.from_numpy(feats.copy()), HML.joints_num)
    assert_close_golden(out.numpy(), expected, "recover_from_ric torch")
    for i in range(len(feats)):
        assert_close_golden(recover_from_ric(feats[i], HML.joints_num), expected[i], f"sequence {i}")


def test_recover_from_ric_kit_matches_published():
    g = golden("motion_repr")
    feats, expected = g["ric_feats_kit"], g["ric_joints_kit"]
    assert feats.shape == (40, KIT.feat_dim) and expected.shape == (40, KIT.joints_num, 3)
    assert_close_golden(recover_from_ric(feats, KIT.joints_num), expected, "recover_from_ric KIT")


# ------------------------------------------------------------------------ VQ-VAE


def test_vqvae_forward_matches_published(vq_checkpoint_file: Path):
    g = golden("vqvae")
    model = MotionVQVAE.from_checkpoint(vq_checkpoint_file, nfeats=HML.feat_dim)
    codes = model.encode(torch.from_numpy(g["motions"].copy()))
    # The golden's nearest/second-nearest gap (~0.03) is far above float noise: codes are exact.
    assert float(g["min_code_distance_gap"]) > 1e-3
    np.testing.assert_array_equal(codes.numpy(), g["codes"])
    assert len(np.unique(g["codes"])) > 4  # not a collapsed codebook lookup
    decoded = model.decode(torch.from_numpy(g["codes"].copy()))
    assert_close_golden(decoded.numpy(), g["decoded"], "VQ-VAE decode")
    # The masked (variable-length) path gives the published numbers for a full-length row.
    padded = model.decode(torch.from_numpy(g["codes"].copy()), lengths=[16, 9])
    assert_close_golden(padded[0].numpy(), g["decoded"][0], "VQ-VAE decode with lengths")
    masked = model.encode(torch.from_numpy(g["motions"].copy()), lengths=[64, 64])
    np.testing.assert_array_equal(masked.numpy(), g["codes"])


# ------------------------------------------------------------------------ Guo evaluator


def test_evaluator_forward_matches_published(guo_checkpoint_file: Path):
    g = golden("evaluator")
    ev = load_guo_evaluator(guo_checkpoint_file, "humanml3d")
    assert ev.epoch == 100
    text = ev.embed_text(
        torch.from_numpy(g["word_embs"].copy()),
        torch.from_numpy(g["pos_onehot"].copy()),
        torch.from_numpy(g["cap_lens"].copy()),
    )
    assert_close_golden(text.numpy(), g["text_emb"], "embed_text")
    motion = ev.embed_motion(torch.from_numpy(g["motions"].copy()), torch.from_numpy(g["m_lens"].copy()))
    assert_close_golden(motion.numpy(), g["motion_emb"], "embed_motion")
    # Lengths are unsorted in the golden input; a permuted batch gives permuted rows (input order).
    assert list(g["cap_lens"]) != sorted(g["cap_lens"], reverse=True)
    perm = np.array([3, 0, 4, 2, 1])
    text_p = ev.embed_text(
        torch.from_numpy(g["word_embs"][perm].copy()),
        torch.from_numpy(g["pos_onehot"][perm].copy()),
        torch.from_numpy(g["cap_lens"][perm].copy()),
    )
    assert_close_golden(text_p.numpy(), g["text_emb"][perm], "embed_text permuted")
    motion_p = ev.embed_motion(
        torch.from_numpy(g["motions"][perm].copy()), torch.from_numpy(g["m_lens"][perm].copy())
    )
    assert_close_golden(motion_p.numpy(), g["motion_emb"][perm], "embed_motion permuted")


# ------------------------------------------------------------------------ word vectors


def test_word_vectorizer_matches_published(caplog: pytest.LogCaptureFixture, tmp_path: Path):
    g = golden("word_vectorizer")
    glove = tmp_path / "glove"
    shutil.copytree(GOLDEN_DIR / "glove", glove)
    with caplog.at_level(logging.WARNING, logger="data.word_vectorizer"):
        wv = WordVectorizer(glove)
    # 20 words over 23 rows: accepted with a warning, like the published reader.
    assert any("20 words but our_vab_data.npy has 23 rows" in r.getMessage() for r in caplog.records)
    assert len(g["tokens"]) == 24
    tags = {i: t for t, i in POS_ENUMERATOR.items()}
    for token, vec, onehot in zip(g["tokens"], g["word_vecs"], g["pos_onehots"], strict=True):
        word_vec, pos = wv[str(token)]
        np.testing.assert_array_equal(word_vec, vec.astype(np.float32), err_msg=str(token))
        np.testing.assert_array_equal(pos, onehot, err_msg=f"{token}: got {tags[int(pos.argmax())]}")


# ------------------------------------------------------------------------ metrics


def test_distance_r_precision_and_matching_score_match_published():
    g = golden("metrics")
    dist = euclidean_distance_matrix(g["text_emb"], g["motion_emb"])
    assert_close_golden(dist, g["dist"], "euclidean_distance_matrix")
    # R-precision exactly; the golden's smallest gap between a matched distance and its neighbours
    # in rank (~2e-3) is far above rounding, so a different ranking rule changes the hits.
    assert float(g["rank_gap_min"]) > 1e-4
    np.testing.assert_array_equal(r_precision(g["text_emb"], g["motion_emb"], top_k=3), g["r_precision"])
    ms = matching_score(g["text_emb"], g["motion_emb"])
    assert_close_golden(ms, g["matching_score"], "matching_score")


def test_activation_statistics_and_fid_match_published():
    g = golden("metrics")
    mu_a, sigma_a = activation_statistics(g["fid_a"])
    mu_b, sigma_b = activation_statistics(g["fid_b"])
    assert_close_golden(mu_a, g["mu_a"], "mu_a")
    assert_close_golden(mu_b, g["mu_b"], "mu_b")
    assert_close_golden(np.diagonal(sigma_a), g["sigma_a_diag"], "diag(sigma_a)")
    assert_close_golden(sigma_a[:16, :16], g["sigma_a_block"], "sigma_a[:16, :16]")
    assert_close_golden(np.trace(sigma_a), g["sigma_a_trace"], "trace(sigma_a)")
    assert_close_golden(np.linalg.norm(sigma_a), g["sigma_a_fro"], "||sigma_a||_F")
    # 100 samples in 512 dims: singular covariances, the published sqrtm path still gives this value.
    assert_close_golden(frechet_distance(mu_a, sigma_a, mu_b, sigma_b), g["fid_ab"], "FID(a, b)")
    mu_c, sigma_c = activation_statistics(g["fid_c"])
    mu_d, sigma_d = activation_statistics(g["fid_d"])
    assert_close_golden(frechet_distance(mu_c, sigma_c, mu_d, sigma_d), g["fid_cd"], "FID(c, d)")
