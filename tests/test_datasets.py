"""Clip index, training view and the Guo evaluation dataset on the tiny fixture dataset."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from data.datasets import (
    EvalMotionTextDataset,
    MotionTextDataset,
    build_clip_index,
    crop_length,
    eval_collate,
    make_eval_loader,
    replication_batches,
)
from data.layout import DatasetFileError
from data.normalization import FeatureNorm
from data.word_vectorizer import WordVectorizer


@pytest.fixture(scope="module")
def test_index(tiny_dataset: Path):
    return build_clip_index(tiny_dataset, "test", "humanml3d", progress=False)


@pytest.fixture(scope="module")
def eval_ds(tiny_dataset: Path, tiny_glove: Path, test_index):
    norm = FeatureNorm.load(tiny_dataset / "Mean.npy", tiny_dataset / "Std.npy", "humanml3d")
    return EvalMotionTextDataset(test_index, WordVectorizer(tiny_glove), norm.mean, norm.std, seed=3)


def test_index_entries_and_subclips(test_index, tiny_dataset: Path):
    by_name = {e.name: e for e in test_index.entries}
    whole = sorted(n for n in by_name if "_" not in n)
    # 000002 too short, 000003 too long (its sub-clip goes with it), 000005 has no whole caption.
    assert whole == ["000000", "000001", "000004", "000006", "000007"]
    subs = sorted(n for n in by_name if "_" in n)
    assert len(subs) == 2 and {n.split("_")[1] for n in subs} == {"000001", "000005"}
    assert all(len(n.split("_")[0]) == 1 and "A" <= n[0] <= "W" for n in subs)
    sub1 = next(by_name[n] for n in subs if n.endswith("000001"))
    # 0.5 s .. 3.0 s at 20 fps -> frames [10, 60); the 0.0..1.0 s line (20 frames) is filtered.
    assert (sub1.start, sub1.end, sub1.length) == (10, 60, 50)
    assert [c.caption for c in sub1.captions] == ["a man jumps."]
    full = np.load(tiny_dataset / "new_joint_vecs" / "000001.npy")
    np.testing.assert_array_equal(test_index.motion(test_index.entries.index(sub1)), full[10:60])
    assert len(by_name["000007"].captions) == 3 and len(by_name["000001"].captions) == 1
    assert by_name["000004"].length == 199  # the maximum kept length
    st = test_index.stats
    assert (st["too_short"], st["too_long"], st["no_whole_caption"], st["subclips"], st["subclips_filtered"]) == (
        1, 1, 1, 2, 1)  # fmt: skip
    # Names are deterministic: a rebuild gives the same list.
    assert build_clip_index(tiny_dataset, "test", progress=False).names() == test_index.names()


def test_length_filter_overrides(tiny_dataset: Path):
    idx = build_clip_index(tiny_dataset, "test", min_len=25, max_len=250, progress=False)
    names = idx.names()
    assert "000002" in names and "000003" in names
    assert any(n.endswith("_000003") for n in names)


def test_missing_file_raises_naming_it(make_tiny_dataset):
    root = make_tiny_dataset()
    (root / "new_joint_vecs" / "000004.npy").unlink()
    with pytest.raises(DatasetFileError, match=r"000004\.npy"):
        build_clip_index(root, "test", progress=False)
    (root / "texts" / "000006.txt").unlink()
    with pytest.raises(DatasetFileError, match=r"caption file not found.*000006\.txt"):
        build_clip_index(root, "test", ids=["000006"], progress=False)


def test_skip_mode_counts_nan_and_shape(make_tiny_dataset, caplog):
    root = make_tiny_dataset()
    x = np.load(root / "new_joint_vecs" / "000000.npy")
    x[3, 5] = np.nan
    np.save(root / "new_joint_vecs" / "000000.npy", x)
    np.save(root / "new_joint_vecs" / "000007.npy", np.zeros((100, 22, 3), np.float32))
    with pytest.raises(DatasetFileError, match=r"000000\.npy.*NaN"):
        build_clip_index(root, "test", progress=False)
    with pytest.raises(DatasetFileError, match=r"2 of 8 samples skipped"):
        build_clip_index(root, "test", on_error="skip", progress=False)
    with caplog.at_level(logging.WARNING):
        idx = build_clip_index(root, "test", on_error="skip", max_skip_fraction=0.3, progress=False)
    assert idx.stats["skipped_files"] == 2
    assert "000000" not in idx.names() and "000007" not in idx.names()
    assert "000007.npy" in caplog.text and "expected (T, 263)" in caplog.text


def test_index_cache_roundtrip(make_tiny_dataset, tmp_path: Path):
    root = make_tiny_dataset()
    cache = tmp_path / "cache"
    a = build_clip_index(root, "test", cache_dir=cache, progress=False)
    assert len(list(cache.glob("index_test_*.npz"))) == 1
    b = build_clip_index(root, "test", cache_dir=cache, progress=False)
    assert b.names() == a.names() and b.stats == a.stats and b.entries == a.entries
    for i in range(len(a)):
        np.testing.assert_array_equal(a.motion(i), b.motion(i))
    # Editing a caption file invalidates the cache.
    (root / "texts" / "000007.txt").write_text("a person bows.#a/DET person/NOUN bow/VERB#0.0#0.0\n")
    c = build_clip_index(root, "test", cache_dir=cache, progress=False)
    assert len(list(cache.glob("index_test_*.npz"))) == 2
    assert [x.caption for x in c.entries[c.names().index("000007")].captions] == ["a person bows."]


def test_motion_text_dataset(test_index, tiny_dataset: Path):
    norm = FeatureNorm.load(tiny_dataset / "Mean.npy", tiny_dataset / "Std.npy", "humanml3d")
    mean, std = norm.mean, norm.std
    ds = MotionTextDataset(test_index, mean=mean, std=std, seed=1)
    i = test_index.names().index("000007")
    item = ds[i]
    assert item["motion"].shape == (100, 263) and item["length"] == 100 and item["name"] == "000007"
    np.testing.assert_allclose(item["motion"], (test_index.motion(i) - mean) / std, rtol=1e-6)
    draws = {ds.get_item(i, epoch=e)["caption"] for e in range(30)}
    assert len(draws) == 3  # all three captions get drawn over epochs
    # An item's draw depends on (seed, epoch, index) only: a fresh dataset that reads other items
    # and epochs first draws the same captions.
    fresh = MotionTextDataset(test_index, mean=mean, std=std, seed=1)
    for j in range(len(test_index)):
        fresh.get_item(j, epoch=7)
    assert [fresh.get_item(i, epoch=e)["caption"] for e in range(30)] == [
        ds.get_item(i, epoch=e)["caption"] for e in range(30)
    ]
    raw = MotionTextDataset(test_index)[i]["motion"]
    np.testing.assert_array_equal(raw, test_index.motion(i))


def test_eval_item_shapes_and_padding(eval_ds, test_index):
    names = test_index.names()
    item = eval_ds.get_item(names.index("000000"), 0)
    assert item.word_embs.shape == (22, 300) and item.pos_onehot.shape == (22, 15)
    assert item.motion.shape == (196, 263) and item.motion.dtype == np.float32
    assert item.m_length in (56, 60) and item.m_length % 4 == 0
    assert np.all(item.motion[item.m_length :] == 0) and np.any(item.motion[item.m_length - 1] != 0)
    toks = item.tokens.split("_")
    assert len(toks) == 22 and toks[0] == "sos/OTHER" and toks[item.sent_len - 1] == "eos/OTHER"
    assert item.sent_len == 6 and set(toks[item.sent_len :]) == {"unk/OTHER"}
    vec = eval_ds.vectorizer
    np.testing.assert_array_equal(item.word_embs[0], vec.vectors[vec.word2idx["sos"]])
    np.testing.assert_array_equal(item.word_embs[-1], vec.vectors[vec.word2idx["unk"]])
    # The normalised crop is the raw crop mapped with the evaluator's mean/std.
    raw = eval_ds.raw_motion(names.index("000000"), 0)
    np.testing.assert_allclose(item.motion[: item.m_length], (raw - eval_ds.mean) / eval_ds.std, rtol=1e-6)
    # Long caption: first 20 tokens kept, sent_len 22, the unknown word maps to unk.
    long = eval_ds.get_item(names.index("000006"), 0)
    assert long.sent_len == 22 and long.tokens.split("_")[-1] == "eos/OTHER"
    np.testing.assert_array_equal(long.word_embs[20], vec.vectors[vec.word2idx["unk"]])
    assert long.m_length in (36, 40)  # 41 frames -> single 40, double 36
    # 199 frames: single crop 196 fills the padded length.
    top = eval_ds.get_item(names.index("000004"), 0)
    assert top.m_length in (192, 196)


def test_crop_coin_statistics(eval_ds, test_index):
    i = test_index.names().index("000007")  # 100 frames: single 100, double 96
    draws = [eval_ds.draw(i, r) for r in range(3000)]
    lengths = np.array([d.m_length for d in draws])
    assert set(lengths) == {96, 100}
    frac = float(np.mean(lengths == 96))
    assert abs(frac - 1 / 3) < 0.03, frac
    starts = np.array([d.start for d in draws])
    assert starts[lengths == 100].max() == 0 and set(starts[lengths == 96]) == {0, 1, 2, 3, 4}
    assert len({d.caption_index for d in draws}) == 3
    assert crop_length(41, 4, False) == 40 and crop_length(41, 4, True) == 36
    assert crop_length(7, 4, True) == 4  # never crops to zero frames


def test_eval_determinism(eval_ds):
    n = len(eval_ds)
    a = [eval_ds.get_item(i, 2) for i in range(n)]
    b = [eval_ds.get_item(i, 2) for i in reversed(range(n))][::-1]  # other iteration order
    for x, y in zip(a, b, strict=True):
        assert x.tokens == y.tokens and x.m_length == y.m_length and x.name == y.name
        np.testing.assert_array_equal(x.motion, y.motion)
    eval_ds.set_replication(2)
    assert eval_ds[1].tokens == a[1].tokens and eval_ds[(1, 2)].m_length == a[1].m_length
    eval_ds.set_replication(0)
    assert len({eval_ds.draw(1, r) for r in range(20)}) > 1  # replications differ


def test_replication_batches():
    b0 = replication_batches(100, batch_size=32, seed=0, replication=0)
    assert len(b0) == 3 and all(len(b) == 32 for b in b0)
    flat = np.concatenate(b0)
    assert len(set(flat.tolist())) == 96 and flat.max() < 100
    again = replication_batches(100, batch_size=32, seed=0, replication=0)
    assert all(np.array_equal(x, y) for x, y in zip(b0, again, strict=True))
    b1 = replication_batches(100, batch_size=32, seed=0, replication=1)
    assert not np.array_equal(np.concatenate(b1), flat)
    assert replication_batches(31, batch_size=32) == []


def test_loader_independent_of_world_size(eval_ds):
    single = list(make_eval_loader(eval_ds, 4, batch_size=2))
    assert len(single) == len(eval_ds) // 2
    batch = single[0]
    assert batch.word_embs.shape == (2, 22, 300) and batch.motions.shape == (2, 196, 263)
    assert batch.sent_lens.dtype.is_floating_point is False and len(batch.names) == 2
    expected = replication_batches(len(eval_ds), batch_size=2, seed=eval_ds.seed, replication=4)
    assert [b.names for b in single] == [[eval_ds.index.entries[i].name for i in idx] for idx in expected]
    # Two ranks together produce exactly the single-process batches.
    shards = [list(make_eval_loader(eval_ds, 4, batch_size=2, rank=r, world_size=2)) for r in range(2)]
    merged = [shards[k % 2][k // 2] for k in range(len(single))]
    for x, y in zip(single, merged, strict=True):
        assert x.names == y.names and x.tokens == y.tokens
        assert (x.motions == y.motions).all() and (x.m_lengths == y.m_lengths).all()
    # Worker processes give the same batches (items carry their replication).
    workers = list(make_eval_loader(eval_ds, 4, batch_size=2, num_workers=2))
    assert [b.tokens for b in workers] == [b.tokens for b in single]
    assert all((x.motions == y.motions).all() for x, y in zip(single, workers, strict=True))
    # The collate keeps input order (no sorting by sent_len).
    items = [eval_ds.get_item(i, 0) for i in range(len(eval_ds))]
    assert eval_collate(items).names == [it.name for it in items]


def test_eval_crop_is_clamped_to_196_frames(eval_ds, tiny_dataset: Path, tiny_glove: Path):
    spec = eval_ds.spec
    assert spec.max_motion_len == 196 and spec.unit_length == 4
    # 199 frames (the longest kept clip): single crop (199 // 4) * 4 = 196, double 192; the start
    # ranges over [0, 199 - m].
    i = eval_ds.index.names().index("000004")
    full = eval_ds.index.motion(i)
    draws = [eval_ds.draw(i, r) for r in range(400)]
    assert {d.m_length for d in draws} == {192, 196}
    assert {d.start for d in draws if d.m_length == 196} == {0, 1, 2, 3}
    assert {d.start for d in draws if d.m_length == 192} == set(range(8))
    for r in (0, 1, 2, 3):
        d, item = eval_ds.draw(i, r), eval_ds.get_item(i, r)
        raw = eval_ds.raw_motion(i, r)
        np.testing.assert_array_equal(raw, full[d.start : d.start + d.m_length])
        assert item.motion.shape == (196, spec.feat_dim) and item.m_length == d.m_length == len(raw)
        np.testing.assert_allclose(item.motion[: d.m_length], (raw - eval_ds.mean) / eval_ds.std, rtol=1e-6)
        assert not item.motion[d.m_length :].any()  # zero padding after the crop
    # A clip longer than 196 frames (let in by a wider length filter): the crop length is taken on
    # min(T, 196) = 196 frames, so single 196 / double 192, from anywhere in [0, T - m].
    wide = build_clip_index(tiny_dataset, "test", max_len=250, progress=False)
    j = wide.names().index("000003")
    assert wide.entries[j].length == 200
    ds = EvalMotionTextDataset(wide, WordVectorizer(tiny_glove), eval_ds.mean, eval_ds.std, seed=3)
    long_draws = [ds.draw(j, r) for r in range(400)]
    assert {d.m_length for d in long_draws} == {192, 196}
    assert {d.start for d in long_draws if d.m_length == 196} == set(range(5))
    assert max(d.start + d.m_length for d in long_draws) == 200  # the last frames can be cropped
    assert ds.get_item(j, 0).motion.shape == (196, spec.feat_dim)
    # normalise_padded keeps exactly the first 196 frames of a longer motion
    motion = np.random.default_rng(0).normal(size=(250, spec.feat_dim)).astype(np.float32)
    np.testing.assert_allclose(ds.normalise_padded(motion), (motion[:196] - ds.mean) / ds.std, rtol=1e-6)
