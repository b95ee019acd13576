"""Code sources: caption windows encoded from their own frames; crops drawn from the item's own rng."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from data.annotations import MotionRef, MotionResolver
from data.layout import DatasetFileError
from data.motion_codes import CodesDirSource, MappingCodeSource, WindowCodesMissingError, window_code_file
from data.normalization import FeatureNorm
from data.run_folder import ProvenanceError, RunFolderError, file_sha256, read_manifest
from data.vq_data import read_code_file
from models.vq_tokenize import TokenizeConfig, VQCodeSource, encode_crops, tokenize_dataset
from models.vqvae import MotionVQVAE, VQVAEConfig
from prepare.tokenize_motions import main as tokenize_main

D = 263
CLIPS = {"000000": 62, "000001": 45}
"""Clip lengths in frames (62 = 3 crop starts of 60 frames, 45 = 2 starts of 44)."""
WINDOWS = {"000000": [(0.6, 2.15), (1.0, 2.0)], "000001": [(0.25, 1.9)]}
"""Sub-clip captions ``#from#to`` in seconds; frames [12, 43) (31 -> 3 starts), [20, 40), [5, 38)."""


def tree(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under ``root``, hidden ones included."""
    out = {}
    for dirpath, _, filenames in os.walk(root):
        for f in filenames:
            p = Path(dirpath, f)
            out[p.relative_to(root).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


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
    entry = index["windows"]["000000_12_43"]
    assert {k: entry[k] for k in ("id", "window", "frames", "offsets", "n_codes")} == {
        "id": "000000", "window": [12, 43], "frames": 31, "offsets": [0, 1, 2, 3], "n_codes": 7,
    }  # fmt: skip
    # provenance: the motion file it was encoded from and the code file itself, by content
    assert entry["motion_sha256"] == file_sha256(root / "new_joint_vecs" / "000000.npy")
    assert entry["codes_sha256"] == file_sha256(window_code_file(codes_dir, "000000", (12, 43)))
    assert index["checkpoint_sha256"] == file_sha256(Path(codes_dir).parent / "vq.pth")
    assert index["counts"] == {
        "ids": 2, "windows": 3, "encoded": 5, "reused": 0, "reencoded_motion_changed": 0,
        "reencoded_other": 0, "empty": 0, "skipped": 0, "no_caption_file": 0, "windows_past_clip_end": 0,
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
    before = tree(codes_dir)
    again = tokenize_dataset(tok, vq, norm)
    assert again == index and tree(codes_dir) == before  # nothing changed: nothing written
    # encode_crops on the window gives the file's rows (the library call the source uses)
    feats = np.load(Path(root) / "new_joint_vecs" / "000001.npy")[5:38]
    np.testing.assert_array_equal(encode_crops(vq, feats, [0, 1]), read_code_file(path))


@pytest.fixture
def own_copy(coded, tmp_path):
    """A private copy of the fixture's root and codes (mtimes kept), for tests that change files."""
    root, codes_dir, vq, norm, _, tok = coded
    shutil.copytree(root, tmp_path / "root")
    shutil.copytree(codes_dir, tmp_path / "codes")
    shutil.copy2(Path(codes_dir).parent / "vq.pth", tmp_path / "vq.pth")
    tok = dataclasses.replace(
        tok, dataset_root=str(tmp_path / "root"), output_dir=str(tmp_path / "codes"),
        vq_checkpoint=str(tmp_path / "vq.pth"),
    )  # fmt: skip
    return tmp_path / "root", tmp_path / "codes", vq, norm, tok


def test_a_changed_motion_is_re_encoded_not_reused_by_id(own_copy):
    """Issue 10: after the engine re-rendered a motion, tokenisation reused its old codes by id."""
    root, codes_dir, vq, norm, tok = own_copy
    motion = root / "new_joint_vecs" / "000001.npy"
    new = np.cumsum(np.random.default_rng(5).normal(size=(45, D)), axis=0).astype(np.float32) * 0.1
    np.save(motion, new)
    # the code source notices at the first access of the changed motion, naming both hashes
    src = CodesDirSource(codes_dir, MotionResolver([root]))
    assert src(MotionRef("000000")) == read_code_file(codes_dir / "000000.npy")[0].tolist()
    with pytest.raises(
        ProvenanceError,
        match=rf"000001\.npy was encoded from a motion with sha256 .*{file_sha256(motion)[:16]}",
    ):
        src(MotionRef("000001"))
    untouched = codes_dir / "000000.npy"
    mtime = untouched.stat().st_mtime_ns
    index = tokenize_dataset(tok, vq, norm)
    c = index["counts"]
    assert (c["encoded"], c["reused"], c["reencoded_motion_changed"]) == (2, 3, 2)  # 000001 and its window
    assert untouched.stat().st_mtime_ns == mtime
    want = vq.encode(torch.from_numpy(np.stack([new[o : o + 44] for o in (0, 1)])))
    np.testing.assert_array_equal(read_code_file(codes_dir / "000001.npy"), want.numpy())
    assert index["entries"]["000001"]["motion_sha256"] == file_sha256(motion)
    fresh = CodesDirSource(codes_dir, MotionResolver([root]))
    assert fresh(MotionRef("000001")) == want[0].tolist()


def test_codes_used_with_another_vq_checkpoint_are_refused(own_copy, tmp_path):
    root, codes_dir, vq, _, tok = own_copy
    other = tmp_path / "other.pth"
    torch.manual_seed(1)
    MotionVQVAE(
        D, VQVAEConfig(nb_code=512, code_dim=16, output_emb_width=16, width=16, depth=3)
    ).save_checkpoint(other)
    res = MotionResolver([root])
    with pytest.raises(ProvenanceError) as err:
        CodesDirSource(codes_dir, res, vq_checkpoint=other)
    msg = str(err.value)
    recorded = json.loads((codes_dir / "codes_index.json").read_text())["checkpoint"]  # the fixture's path
    assert f"checkpoint {recorded} (sha256" in msg and f"configured checkpoint is {other}" in msg
    assert file_sha256(tok.vq_checkpoint)[:16] in msg and file_sha256(other)[:16] in msg
    assert CodesDirSource(codes_dir, res, vq_checkpoint=tok.vq_checkpoint)(MotionRef("000000"))
    with pytest.raises(ProvenanceError, match="codebook of 512 codes"):
        CodesDirSource(codes_dir, res, nb_code=256)
    # a code file replaced after tokenisation, or one the index does not list
    np.save(codes_dir / "000001.npy", np.zeros((2, 11), np.int64))
    with pytest.raises(ProvenanceError, match="changed after tokenisation"):
        CodesDirSource(codes_dir, res)(MotionRef("000001"))
    (codes_dir / "codes_index.json").unlink()
    with pytest.raises(DatasetFileError, match="provenance is unknown"):
        CodesDirSource(codes_dir, res)


def _tokenize_cli(tok: TokenizeConfig, *extra: str) -> dict:
    return tokenize_main([
        f"dataset_root={tok.dataset_root}", f"vq_checkpoint={tok.vq_checkpoint}", f"output_dir={tok.output_dir}",
        "progress=false", "device=cpu", *extra,
    ])  # fmt: skip


def test_tokenize_command_owns_its_folder_and_refuses_another_checkpoint(own_copy, tmp_path):
    root, _, vq, _, tok = own_copy
    meta = tmp_path / "meta"
    meta.mkdir()
    np.save(meta / "mean.npy", np.zeros(D, np.float32))
    np.save(meta / "std.npy", np.ones(D, np.float32))
    (root / "texts" / "000001.txt").unlink()  # counted: no caption file, so no windows for it
    out = tmp_path / "cmd_codes"
    tok = dataclasses.replace(tok, output_dir=str(out))
    good = np.load(root / "new_joint_vecs" / "000001.npy")
    bad = good.copy()
    bad[3, 7] = np.nan
    np.save(root / "new_joint_vecs" / "000001.npy", bad)
    with pytest.raises(DatasetFileError, match=r"000001\.npy: 1 frame\(s\) contain NaN"):
        _tokenize_cli(tok)
    assert not out.exists()  # inputs are checked before the first byte is written
    np.save(root / "new_joint_vecs" / "000001.npy", good)
    index = _tokenize_cli(tok)
    assert read_manifest(out)["status"] == "done" and index["counts"]["no_caption_file"] == 1
    assert (index["counts"]["encoded"], index["counts"]["windows"]) == (4, 2)
    before = tree(out)
    assert _tokenize_cli(tok) == index and tree(out) == before  # a finished run: nothing written
    # another checkpoint into the same folder: refused before anything is written
    other = tmp_path / "other.pth"
    torch.manual_seed(2)
    MotionVQVAE(
        D, VQVAEConfig(nb_code=512, code_dim=16, output_emb_width=16, width=16, depth=3)
    ).save_checkpoint(other)
    shutil.copytree(meta, tmp_path / "other_meta")
    (tmp_path / "meta").rename(tmp_path / "meta_kept")
    (tmp_path / "other_meta").rename(tmp_path / "meta")  # same mean/std next to the other checkpoint
    other_tok = dataclasses.replace(tok, vq_checkpoint=str(other))
    with pytest.raises(
        RunFolderError,
        match=rf"input vq_checkpoint \({other}\) was sha256:{file_sha256(tok.vq_checkpoint)} and is sha256:{file_sha256(other)}.*force=true",
    ):
        _tokenize_cli(other_tok)
    assert tree(out) == before
    forced = _tokenize_cli(other_tok, "force=true")
    assert forced["checkpoint_sha256"] == file_sha256(other) and forced["counts"]["encoded"] == 4
    CodesDirSource(out, MotionResolver([root]), vq_checkpoint=other)(MotionRef("000000"))
    # a folder of another command is refused too, byte for byte
    engine_like = tmp_path / "vq_run"
    engine_like.mkdir()
    (engine_like / "net_last.pth").write_bytes(b"weights")
    before = tree(engine_like)
    with pytest.raises(RunFolderError, match="overwrite=true"):
        _tokenize_cli(dataclasses.replace(tok, output_dir=str(engine_like)))
    assert tree(engine_like) == before
