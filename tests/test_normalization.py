"""data.normalization: one mean/std pair, its files, the space map and the wrong-space check."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from data.datasets import MotionTextDataset, build_clip_index
from data.layout import DatasetFileError
from data.normalization import (
    EvalSpaceMap,
    FeatureNorm,
    NormalisationError,
    check_eval_space,
    meta_files,
    resolve_norm_files,
)

HML_D = 263


def _pair(seed: int = 0, d: int = HML_D) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=d).astype(np.float32), rng.uniform(0.05, 0.5, size=d).astype(np.float32)


def _write_pair(folder: Path, mean: np.ndarray, std: np.ndarray, names=("mean.npy", "std.npy")) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / names[0], mean)
    np.save(folder / names[1], std)
    return folder


# ---------------------------------------------------------------------------------------------
# Applying a pair
# ---------------------------------------------------------------------------------------------


def test_normalise_by_hand_and_round_trip():
    norm = FeatureNorm(mean=np.array([1.0, 2.0]), std=np.array([2.0, 4.0]), source="hand")
    # (3 - 1) / 2 = 1, (6 - 2) / 4 = 1; (0 - 1) / 2 = -0.5, (0 - 2) / 4 = -0.5
    out = norm.normalise(np.array([[3.0, 6.0], [0.0, 0.0]]))
    np.testing.assert_array_equal(out, [[1.0, 1.0], [-0.5, -0.5]])
    assert out.dtype == np.float32 and norm.mean.dtype == np.float32 and norm.dim == 2
    np.testing.assert_array_equal(norm.denormalise(out), [[3.0, 6.0], [0.0, 0.0]])

    mean, std = _pair()
    norm = FeatureNorm(mean, std)
    x = (mean + std * np.random.default_rng(1).normal(size=(50, HML_D))).astype(np.float32)
    np.testing.assert_allclose(norm.denormalise(norm.normalise(x)), x, rtol=1e-6, atol=1e-6)
    # The same float32 arithmetic as the inline ``((x - mean) / std).astype(np.float32)`` it replaced.
    np.testing.assert_array_equal(norm.normalise(x), ((x - mean) / std).astype(np.float32))


def test_torch_matches_numpy_and_keeps_dtype_and_device():
    mean, std = _pair(2)
    norm = FeatureNorm(mean, std)
    x = np.random.default_rng(3).normal(size=(4, 30, HML_D)).astype(np.float32)
    t = norm.normalise(torch.from_numpy(x))
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32 and t.device.type == "cpu"
    np.testing.assert_array_equal(t.numpy(), norm.normalise(x))
    np.testing.assert_array_equal(norm.denormalise(t).numpy(), norm.denormalise(norm.normalise(x)))
    t64 = norm.normalise(torch.from_numpy(x.astype(np.float64)))
    assert t64.dtype == torch.float64
    np.testing.assert_allclose(t64.numpy(), (x.astype(np.float64) - mean) / std, rtol=1e-12)
    # Gradients flow through (the map is used inside differentiable code paths).
    leaf = torch.zeros(2, HML_D, requires_grad=True)
    norm.denormalise(leaf).sum().backward()
    np.testing.assert_allclose(leaf.grad[0].numpy(), std)


@pytest.mark.parametrize("shape", [(HML_D,), (7, HML_D), (2, 3, 5, HML_D)])
def test_broadcast_over_batch_dims(shape):
    mean, std = _pair(4)
    norm = FeatureNorm(mean, std)
    x = np.random.default_rng(5).normal(size=shape).astype(np.float32)
    out = norm.normalise(x)
    assert out.shape == shape
    flat = x.reshape(-1, HML_D)
    expect = np.stack([(row - mean) / std for row in flat]).reshape(shape)
    np.testing.assert_array_equal(out, expect.astype(np.float32))
    np.testing.assert_array_equal(norm.normalise(torch.from_numpy(x)).numpy(), out)


def test_wrong_feature_dim_is_refused():
    norm = FeatureNorm(*_pair(), source="runs/vq/meta")
    with pytest.raises(ValueError, match=r"\(4, 251\) do not end in D=263 .*runs/vq/meta"):
        norm.normalise(np.zeros((4, 251), np.float32))
    with pytest.raises(ValueError, match="D=263"):
        norm.denormalise(torch.zeros(4, 1))  # would silently broadcast without the check


# ---------------------------------------------------------------------------------------------
# Validation: errors name the file
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad_std", "message"),
    [
        (np.where(np.arange(HML_D) == 7, 0.0, 0.3), r"std.npy: 1 non-positive std entries \(dims \[7\]\)"),
        (np.where(np.arange(HML_D) == 3, -1.0, 0.3), r"std.npy: 1 non-positive std entries \(dims \[3\]\)"),
        (np.where(np.arange(HML_D) == 0, np.nan, 0.3), "std.npy: contains NaN or inf"),
        (np.full(251, 0.3), r"std.npy: shape \(251,\), expected \(263,\) for 'humanml3d'"),
        (np.full((2, HML_D), 0.3), r"std.npy: shape \(2, 263\), expected \(263,\)"),
    ],
)
def test_bad_std_file_is_named(tmp_path: Path, bad_std, message):
    meta = _write_pair(tmp_path / "run" / "meta", np.zeros(HML_D, np.float32), bad_std.astype(np.float32))
    with pytest.raises(DatasetFileError, match=message) as err:
        FeatureNorm.load_meta(meta, "humanml3d")
    assert str(meta / "std.npy") in str(err.value)


def test_bad_mean_and_missing_files_are_named(tmp_path: Path):
    mean, std = _pair()
    mean[5] = np.inf
    meta = _write_pair(tmp_path / "meta", mean, std)
    with pytest.raises(DatasetFileError, match=r"meta/mean.npy: contains NaN or inf"):
        FeatureNorm.load_meta(meta, "humanml3d")
    with pytest.raises(DatasetFileError, match=r"normalisation file not found: .*nowhere/std.npy"):
        FeatureNorm.load(meta / "mean.npy", tmp_path / "nowhere" / "std.npy", "humanml3d")
    # A HumanML3D pair loaded as KIT-ML (D=251) names the file and the dataset.
    meta_ok = _write_pair(tmp_path / "ok", *_pair())
    with pytest.raises(DatasetFileError, match=r"ok/mean.npy: shape \(263,\), expected \(251,\) for 'kit'"):
        FeatureNorm.load_meta(meta_ok, "kit")


def test_in_memory_pairs_are_validated_with_their_source():
    mean, std = _pair()
    with pytest.raises(
        DatasetFileError, match=r"vq meta std: shape \(262,\) differs from vq meta mean: \(263,\)"
    ):
        FeatureNorm(mean, std[:-1], source="vq meta")
    with pytest.raises(DatasetFileError, match="FeatureNorm std: 1 non-positive"):
        FeatureNorm(mean, np.where(np.arange(HML_D) == 0, 0.0, std))
    with pytest.raises(DatasetFileError, match=r"normalisation mean: shape \(263,\), expected \(251,\)"):
        FeatureNorm.from_arrays(mean, std, "kit")


def test_datasets_validate_through_the_same_helper(tiny_dataset: Path):
    index = build_clip_index(tiny_dataset, "test", "humanml3d", progress=False)
    mean, std = np.load(tiny_dataset / "Mean.npy"), np.load(tiny_dataset / "Std.npy")
    ds = MotionTextDataset(index, mean=mean, std=std)
    i = index.names().index("000007")
    np.testing.assert_array_equal(ds[i]["motion"], FeatureNorm(mean, std).normalise(index.motion(i)))
    with pytest.raises(DatasetFileError, match="non-positive std entries"):
        MotionTextDataset(index, mean=mean, std=np.zeros_like(std))


# ---------------------------------------------------------------------------------------------
# Where the files live
# ---------------------------------------------------------------------------------------------


def test_resolution_order(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    root = tmp_path / "ds"
    run = tmp_path / "vq"
    ckpt = run / "net_last.pth"
    explicit = tmp_path / "other" / "m.npy"

    # 1. explicit files win, each on its own.
    assert resolve_norm_files(explicit, "", checkpoint=ckpt) == (explicit, run / "meta" / "std.npy")
    assert resolve_norm_files("", explicit, dataset_root=root) == (root / "Mean.npy", explicit)
    # 2. the checkpoint's meta/ folder, final without a dataset root even when missing ...
    assert resolve_norm_files(checkpoint=ckpt) == meta_files(run / "meta")
    with pytest.raises(DatasetFileError, match=r"normalisation file not found: .*vq/meta/mean.npy"):
        FeatureNorm.resolve("humanml3d", checkpoint=ckpt)
    # 3. ... and with a dataset root, used only when present (the fallback is logged).
    with caplog.at_level(logging.WARNING, logger="data.normalization"):
        assert resolve_norm_files(checkpoint=ckpt, dataset_root=root) == (root / "Mean.npy", root / "Std.npy")
    assert "no mean.npy next to checkpoint" in caplog.text and "Mean.npy" in caplog.text
    _write_pair(run / "meta", *_pair(1))
    assert resolve_norm_files(checkpoint=ckpt, dataset_root=root) == meta_files(run / "meta")
    assert resolve_norm_files(dataset_root=root) == (root / "Mean.npy", root / "Std.npy")
    with pytest.raises(ValueError, match="mean_file is empty and neither a checkpoint nor a dataset_root"):
        resolve_norm_files()


def test_resolve_loads_the_resolved_files(tmp_path: Path):
    root = _write_pair(tmp_path / "ds", *_pair(1), names=("Mean.npy", "Std.npy"))
    run = tmp_path / "vq"
    _write_pair(run / "meta", *_pair(2))
    from_ckpt = FeatureNorm.resolve("humanml3d", checkpoint=run / "net_last.pth", dataset_root=root)
    np.testing.assert_array_equal(from_ckpt.mean, _pair(2)[0])
    assert from_ckpt.source == str(run / "meta")
    from_root = FeatureNorm.resolve("humanml3d", dataset_root=root)
    np.testing.assert_array_equal(from_root.std, _pair(1)[1])
    mixed = FeatureNorm.resolve("humanml3d", "", run / "meta" / "std.npy", dataset_root=root)
    np.testing.assert_array_equal(mixed.mean, _pair(1)[0])
    np.testing.assert_array_equal(mixed.std, _pair(2)[1])


def test_save_writes_the_meta_layout(tmp_path: Path):
    norm = FeatureNorm(*_pair(3))
    files = norm.save(tmp_path / "run" / "meta")
    assert files == (tmp_path / "run" / "meta" / "mean.npy", tmp_path / "run" / "meta" / "std.npy")
    back = FeatureNorm.load_meta(tmp_path / "run" / "meta", "humanml3d")
    np.testing.assert_array_equal(back.mean, norm.mean)
    np.testing.assert_array_equal(back.std, norm.std)
    assert np.load(files[1]).dtype == np.float32


# ---------------------------------------------------------------------------------------------
# Between two pairs
# ---------------------------------------------------------------------------------------------


def test_space_map_by_hand():
    src = FeatureNorm(np.array([1.0, 0.0]), np.array([2.0, 1.0]), source="vq")
    tgt = FeatureNorm(np.array([0.0, 1.0]), np.array([1.0, 2.0]), source="ev")
    # raw = [1*2 + 1, 3*1 + 0] = [3, 3]; evaluator = [(3 - 0) / 1, (3 - 1) / 2] = [3, 1]
    np.testing.assert_array_equal(EvalSpaceMap(src, tgt)(np.array([[1.0, 3.0]])), [[3.0, 1.0]])


def test_space_map_equals_denormalise_then_normalise():
    mean, std = _pair(6)
    vq = FeatureNorm(mean + 0.1, std * 1.5, source="vq")
    ev = FeatureNorm(mean, std, source="ev")
    x = np.random.default_rng(7).normal(size=(3, 20, HML_D)).astype(np.float32)
    space = EvalSpaceMap(vq, ev)
    assert not space.identity
    assert space.max_abs_dmean == pytest.approx(0.1, abs=1e-6)
    assert space.max_abs_dstd == pytest.approx(float((0.5 * std).max()), rel=1e-6)
    np.testing.assert_array_equal(space(x), ev.normalise(vq.denormalise(x)))
    np.testing.assert_array_equal(space(torch.from_numpy(x)).numpy(), space(x))
    same = EvalSpaceMap(ev, FeatureNorm(mean.copy(), std.copy()))
    assert same.identity and same.max_abs_dmean == 0.0 and same.max_abs_dstd == 0.0
    np.testing.assert_array_equal(same(x.astype(np.float64)), x)  # skipped exactly, float32 out
    with pytest.raises(
        ValueError, match=r"normalisation dims differ: vq has \(263,\), evaluator  has \(2,\)"
    ):
        EvalSpaceMap(vq, FeatureNorm(np.zeros(2), np.ones(2)))


def test_normalisation_map_and_check(tmp_path: Path):
    rng = np.random.default_rng(0)
    d = 263
    mean = rng.normal(size=d).astype(np.float32)
    std = rng.uniform(0.05, 0.5, size=d).astype(np.float32)
    ev_std = std.copy()
    ev_std[:4] /= 5  # feat_bias dims
    for name, arr in (("mean", mean), ("std", ev_std)):
        (tmp_path / "ev").mkdir(exist_ok=True)
        np.save(tmp_path / "ev" / f"{name}.npy", arr)
    ev = FeatureNorm.load_meta(tmp_path / "ev", "humanml3d")
    vq = FeatureNorm(mean=mean + 0.1, std=std, source="vq")
    raw = (mean + std * rng.normal(size=(8, 50, d))).astype(np.float32)
    mapped = EvalSpaceMap(vq, ev)(vq.normalise(raw))
    np.testing.assert_allclose(mapped, ev.normalise(raw), atol=1e-4)
    same = EvalSpaceMap(ev, ev)
    assert same.identity and same.max_abs_dstd == 0.0
    m = EvalSpaceMap(vq, ev)
    assert m.max_abs_dmean == pytest.approx(0.1, abs=1e-6) and not m.identity
    lengths = np.full(8, 50)
    stats = check_eval_space(ev.normalise(raw), lengths, "gt")
    assert stats.median_abs_mean < 0.2 and 0.8 < stats.median_std < 1.2
    # Raw features and doubly-normalised features are both rejected.
    with pytest.raises(NormalisationError, match=r"raw: .*median std"):
        check_eval_space(raw, lengths, "raw")
    with pytest.raises(NormalisationError, match="twice"):
        check_eval_space(ev.normalise(ev.normalise(raw)), lengths, "twice")
    check_eval_space(raw, lengths, "warn only", strict=False)
    with pytest.raises(Exception, match="shape"):
        FeatureNorm.load(tmp_path / "ev" / "mean.npy", tmp_path / "ev" / "std.npy", "kit")


def test_wrong_space_check_ignores_padding_and_tiny_batches():
    mean, std = _pair(8)
    ev = FeatureNorm(mean, std)
    raw = (mean + std * np.random.default_rng(9).normal(size=(4, 40, HML_D))).astype(np.float32)
    padded = ev.normalise(raw)
    padded[:, 20:] = 1e3  # frames past each length are never looked at
    stats = check_eval_space(padded, np.full(4, 20), "padded")
    assert stats.frames == 80
    # Fewer than 32 valid frames: not judged, even for raw features.
    assert check_eval_space(raw, np.array([10, 10, 5, 5]), "short").frames == 30
