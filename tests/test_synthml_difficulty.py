"""Smoke test of scripts/synthml_difficulty.py on a tiny SynthML build and a random evaluator."""

import re
import shutil

import numpy as np
import torch

from data.synth.build import build_synthml
from models.evaluator import EvaluatorDims, build_networks, save_guo_checkpoint
from scripts.synthml_difficulty import main


def test_difficulty_script_prints_diversity_and_multimodality(tmp_path, capsys):
    root = tmp_path / "synth"
    build_synthml(root, num=60, seed=0, workers=1)
    torch.manual_seed(0)
    dims = EvaluatorDims(
        dim_text_hidden=8, dim_motion_hidden=8, dim_movement_enc_hidden=8, dim_movement_latent=8
    )
    save_guo_checkpoint(tmp_path / "ev" / "finest.tar", *build_networks(dims))
    (tmp_path / "ev" / "meta").mkdir()
    shutil.copy(root / "Mean.npy", tmp_path / "ev" / "meta" / "mean.npy")
    shutil.copy(root / "Std.npy", tmp_path / "ev" / "meta" / "std.npy")
    main(["--dataset-root", str(root), "--evaluator", str(tmp_path / "ev"), "--split", "train",
          "--programs", "3", "--renders", "11"])  # fmt: skip
    out = capsys.readouterr().out
    div = float(re.search(r"ground truth \(train, \d+ motions\): diversity ([\d.]+)", out).group(1))
    mm = float(re.search(r"multimodality \(3 programs x 11 renders\): ([\d.]+)", out).group(1))
    assert np.isfinite(div) and div > 0
    # Other subjects and style seeds render a different motion for the same program.
    assert mm > 0


def test_difficulty_script_prints_split_overlap_without_evaluator(tmp_path, capsys):
    root = tmp_path / "synth"
    build_synthml(root, num=60, seed=0, workers=1, progress=False)
    main(["--dataset-root", str(root), "--split", "test"])
    out = capsys.readouterr().out.strip()
    # A program split: nothing of the test split (9 motions at 60) occurs in training.
    assert out.startswith("test vs train: programs in train 0.0% (0/9), captions in train 0.0% (0/")
    assert out.endswith("motions with a value unseen in train 0.0% (0/9)")
    assert len(out.splitlines()) == 1  # no evaluator: overlap only
