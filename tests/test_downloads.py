"""Download scripts fail gracefully offline, never delete, and verify complete trees."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from eval.assets import (
    AssetError,
    released_evaluator_paths,
    verify_dataset,
    verify_evaluator_tree,
    verify_glove,
)
from models.evaluator import EvaluatorDims, build_networks, save_guo_checkpoint

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = ["download_glove.sh", "download_extractor.sh", "download_datasets.sh"]


def _run(script: str, *args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    # No gdown on PATH and the venv python for verification.
    env = {"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "HOME": os.environ.get("HOME", "/tmp")}
    env.update(env_extra or {})
    return subprocess.run(
        ["bash", str(REPO / "prepare" / script), *args], capture_output=True, text=True, env=env, timeout=60
    )


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_parse(script: str):
    assert subprocess.run(["bash", "-n", str(REPO / "prepare" / script)]).returncode == 0


def _fake_tree(ckpt_dir: Path, dataset: str = "humanml3d") -> None:
    paths = released_evaluator_paths(ckpt_dir, dataset)
    d = 263 if dataset == "humanml3d" else 251
    dims = EvaluatorDims(dim_pose=d, dim_text_hidden=8, dim_motion_hidden=8, dim_movement_enc_hidden=8,
                         dim_movement_latent=8)  # fmt: skip
    save_guo_checkpoint(paths["checkpoint"], *build_networks(dims))
    for key in ("eval_meta", "vq_meta"):
        paths[key].mkdir(parents=True)
        np.save(paths[key] / "mean.npy", np.zeros(d, np.float32))
        np.save(paths[key] / "std.npy", np.ones(d, np.float32))


def test_offline_messages_and_nothing_deleted(tmp_path: Path):
    ckpt = tmp_path / "checkpoints"
    (ckpt / "t2m").mkdir(parents=True)
    (ckpt / "vqvae.pth").write_text("user weights")
    r = _run("download_extractor.sh", str(ckpt), "humanml3d")
    assert r.returncode == 1
    assert "gdown is not installed" in r.stderr and f"{ckpt}/t2m/text_mot_match/model/finest.tar" in r.stderr
    assert (ckpt / "vqvae.pth").read_text() == "user weights"
    # gdown present but the download fails (offline): same manual instructions, still no deletion.
    fake = tmp_path / "gdown"
    fake.write_text("#!/bin/sh\necho 'network unreachable' >&2\nexit 1\n")
    fake.chmod(0o755)
    r = _run(
        "download_extractor.sh", str(ckpt), "kit", env_extra={"GDOWN": str(fake), "SKIP_NETWORK_CHECK": "1"}
    )
    assert r.returncode == 1 and "gdown failed for id 1KNU8CsMAnxFrwopKBBkC8jEULGLPBHQp" in r.stderr
    assert "kit/Comp_v6_KLD005/meta/mean.npy" in r.stderr and (ckpt / "vqvae.pth").exists()
    r = _run("download_glove.sh", str(tmp_path / "glove"))
    assert r.returncode == 1 and "our_vab_words.pkl" in r.stderr and "prepare.build_word_vectors" in r.stderr


def test_complete_trees_verify_without_network(tmp_path: Path, tiny_glove: Path, tiny_dataset: Path):
    _fake_tree(tmp_path / "ck")
    r = _run("download_extractor.sh", str(tmp_path / "ck"), "humanml3d")
    assert r.returncode == 0 and "verify: OK: evaluator humanml3d" in r.stdout, r.stderr
    r = _run("download_glove.sh", str(tiny_glove))
    assert r.returncode == 0 and "verify: OK: glove: 38 words x 300 dims" in r.stdout
    r = _run("download_datasets.sh", str(tiny_dataset), str(tmp_path / "no_kit"))
    assert r.returncode == 1 and "dataset humanml3d" in r.stdout and "kit is not at" in r.stderr
    assert "8 test ids" in verify_dataset(tiny_dataset, "humanml3d")
    assert "38 words" in verify_glove(tiny_glove)
    with pytest.raises(AssetError, match=r"finest.tar.*download_extractor"):
        verify_evaluator_tree(tmp_path / "ck", "kit")
