"""Code sources: caption windows encoded from their own frames; crops drawn from the item's own rng."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from data.annotations import MotionRef, MotionResolver
from data.motion_codes import CodesDirSource, MappingCodeSource, WindowCodesMissingError, window_code_file
from data.normalization import FeatureNorm
from data.vq_data import read_code_file
from models.vq_tokenize import TokenizeConfig, VQCodeSource, encode_crops, tokenize_dataset
from models.vqvae import MotionVQVAE, VQVAEConfig

D = 263
CLIPS = {"000000": 62, "000001": 45}
"""Clip lengths in frames (62 = 3 crop starts of 60 frames, 45 = 2 starts of 44)."""
WINDOWS = {"000000": [(0.6, 2.15), (1.0, 2.0)], "000001": [(0.25, 1.9)]}
"""Sub-clip captions ``#from#to`` in seconds; frames [12, 43) (31 -> 3 starts), [20, 40), [5, 38)."""


def _item_rng(seed: int, epoch: int, index: int) -> random.Random:
    """The per-item rng an example builder passes to a code source (seed, epoch, index)."""
    return random.Random(f"{seed}:{epoch}:{index}")


@pytest.fixture(scope="module")
def coded(tmp_path_factory):
    """A 2-clip root with sub-clip captions, a tiny random VQ (dilated depth 3) and its code files."""
    base = tmp_path_factory.mktemp("codes")
    root = base / "root"
    for d in ("new_joint_vecs", "texts"):
        (root / d).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for mid, n in CLIPS.items():
        # smooth random motion, so neighbouring frames look alike as in real data
        feats = np.cumsum(rng.normal(size=(n, D)), axis=0).astype(np.float32) * 0.1
        np.save(root / "new_joint_vecs" / f"{mid}.npy", feats)
        lines = ["a person moves.#a/DET person/NOUN move/VERB#0.0#0.0"]
        lines += [f"a person waves.#a/DET person/NOUN wave/VERB#{f}#{t}" for f, t in WINDOWS[mid]]
        (root / "texts" / f"{mid}.txt").write_text("\n".join(lines) + "\n")
    (root / "all.txt").write_text("\n".join(CLIPS) + "\n")
    torch.manual_seed(0)
    cfg = VQVAEConfig(nb_code=512, code_dim=16, output_emb_width=16, width=16, depth=3)
    vq = MotionVQVAE(D, cfg)
    with torch.no_grad():  # non-trivial weights and codebook (a fresh codebook is all zeros)
        for p in vq.parameters():
            p.normal_(0.0, 0.15)
        vq.quantizer.codebook.normal_()
    vq.eval()
    ckpt = base / "vq.pth"
    vq.save_checkpoint(ckpt)
    norm = FeatureNorm.identity(D)
    tok = TokenizeConfig(
        dataset_root=str(root), vq_checkpoint=str(ckpt), output_dir=str(base / "codes"), progress=False
    )
    index = tokenize_dataset(tok, vq, norm)
    return root, base / "codes", vq, norm, index, tok


def _window(ref: MotionRef) -> tuple[int, int]:
    win = ref.frame_window(20)
    assert win is not None
    return win


def test_window_codes_are_the_codes_of_the_window_frames(coded):
    root, codes_dir, vq, _, index, _ = coded
    src = CodesDirSource(codes_dir, MotionResolver([root]))
    assert sorted(index["windows"]) == ["000000_12_43", "000000_20_40", "000001_5_38"]
    assert index["windows"]["000000_12_43"] == {
        "id": "000000", "window": [12, 43], "frames": 31, "offsets": [0, 1, 2, 3], "n_codes": 7,
    }  # fmt: skip
    differs = 0
    for mid, wins in WINDOWS.items():
        feats = np.load(root / "new_joint_vecs" / f"{mid}.npy")
        clip_rows = read_code_file(codes_dir / f"{mid}.npy")
        for f, t in wins:
            ref = MotionRef(mid, f, t)
            s, e = _window(ref)
            sub = feats[s:e]
            m = (len(sub) // 4) * 4
            rows = src.rows(ref)
            assert rows.shape == (len(sub) - m + 1, m // 4)
            for k in range(len(rows)):
                want = vq.encode(torch.from_numpy(sub[None, k : k + m]))[0].numpy()
                np.testing.assert_array_equal(rows[k], want)
            # the slice of the clip's codes that covers the same frames (row with the same start mod 4)
            if s % 4 < len(clip_rows):
                sliced = clip_rows[s % 4][s // 4 : s // 4 + m // 4]
                if len(sliced) == m // 4:
                    differs += int(not np.array_equal(sliced, rows[0]))
    assert differs >= 2  # the dilated encoder sees across the cut: a slice is not the window's codes
    assert window_code_file(codes_dir, "000000", (12, 43)).is_file()


def test_vq_source_matches_the_code_files_for_every_item_rng(coded):
    root, codes_dir, vq, norm, _, _ = coded
    res = MotionResolver([root])
    files, live = CodesDirSource(codes_dir, res), VQCodeSource(res, vq, norm)
    refs = [MotionRef(mid, f, t) for mid, wins in WINDOWS.items() for f, t in [(0.0, 0.0), *wins]]
    seen: dict[int, set] = {}
    for epoch in range(6):
        for i, ref in enumerate(refs):
            a = files(ref, _item_rng(1, epoch, i))
            assert live(ref, _item_rng(1, epoch, i)) == a
            seen.setdefault(i, set()).add(tuple(a))
    assert files(refs[0]) == read_code_file(codes_dir / "000000.npy")[0].tolist()  # no rng: start 0
    assert max(len(v) for v in seen.values()) > 1  # crops vary across epochs


def test_item_codes_do_not_depend_on_access_order(coded):
    """Same (seed, epoch, index) -> same codes, whatever was read before and by which source object."""
    root, codes_dir, *_ = coded
    refs = [MotionRef(mid, f, t) for mid, wins in WINDOWS.items() for f, t in [(0.0, 0.0), *wins]] * 3

    def read(order: list[int], src: CodesDirSource) -> dict[int, list[int]]:
        return {i: src(refs[i], _item_rng(7, 2, i)) for i in order}

    forward = read(list(range(len(refs))), CodesDirSource(codes_dir, MotionResolver([root])))
    shuffled = list(range(len(refs)))
    random.Random(3).shuffle(shuffled)
    shared = CodesDirSource(codes_dir, MotionResolver([root]))
    read(shuffled[:4], shared)  # warm the cache with other items first
    assert read(shuffled, shared) == forward
    # a "worker" that only reads every other item gets the same codes for them
    odd = read(list(range(1, len(refs), 2)), CodesDirSource(codes_dir, MotionResolver([root])))
    assert odd == {i: forward[i] for i in odd}
    assert len({tuple(forward[i]) for i in range(0, len(refs), 4)}) > 1


def test_untokenised_window_is_reported_with_the_fix(coded):
    root, codes_dir, *_ = coded
    src = CodesDirSource(codes_dir, MotionResolver([root]))
    with pytest.raises(WindowCodesMissingError, match=r"000000_3_30\.npy.*windows=true"):
        src(MotionRef("000000", 0.15, 1.5))
    assert MappingCodeSource({"a": [1, 2]})(MotionRef("a"), random.Random(0)) == [1, 2]


def test_retokenising_reuses_window_files(coded):
    root, codes_dir, vq, norm, index, tok = coded
    path = window_code_file(codes_dir, "000001", (5, 38))
    mtime = path.stat().st_mtime_ns
    again = tokenize_dataset(tok, vq, norm)
    assert again["windows"] == index["windows"] and path.stat().st_mtime_ns == mtime
    # encode_crops on the window gives the file's rows (the library call the source uses)
    feats = np.load(Path(root) / "new_joint_vecs" / "000001.npy")[5:38]
    np.testing.assert_array_equal(encode_crops(vq, feats, [0, 1]), read_code_file(path))
