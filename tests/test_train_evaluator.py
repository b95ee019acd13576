"""prepare/train_evaluator.py end to end on a tiny dataset; evaluator meta rule; loss pieces."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from data.config import load_config
from data.specs import get_dataset_spec
from data.vq_data import Clip, MotionWindows
from eval.harness import EvalConfig
from models.evaluator import MovementConvDecoder, MovementConvEncoder, load_guo_evaluator
from models.evaluator_training import (
    EvaluatorTrainConfig,
    MovementAEConfig,
    contrastive_loss,
    evaluator_meta,
    negative_shift,
    train_movement_autoencoder,
)
from prepare.train_evaluator import main
from tests.conftest import write_tiny_dataset, write_tiny_glove
from tests.test_harness import _clips

REPO = Path(__file__).resolve().parent.parent


def test_evaluator_meta_rule():
    spec = get_dataset_spec("kit")
    mean, std = np.arange(251, dtype=np.float32), np.ones(251, np.float32)
    m, s = evaluator_meta(mean, std, spec, feat_bias=5.0)
    np.testing.assert_array_equal(m, mean)
    assert (s[:4] == 0.2).all() and (s[-4:] == 0.2).all() and (s[4:-4] == 1).all() and (std == 1).all()


def test_losses_and_shift():
    a = torch.zeros(3, 2)
    b = torch.tensor([[3.0, 4.0], [0.0, 0.0], [0.0, 12.0]])  # distances 5, 0, 12
    assert contrastive_loss(a, b, negative=False, margin=10).item() == pytest.approx(
        (25 + 0 + 144) / 3, rel=1e-5
    )
    assert contrastive_loss(a, b, negative=True, margin=10).item() == pytest.approx(
        (25 + 100 + 0) / 3, rel=1e-4
    )
    shifts = {negative_shift(4, 0, 0, k) for k in range(200)}
    assert shifts == {1, 2, 3}  # never 0: a shift of 0 would label positives as negatives


def test_movement_autoencoder_learns_smooth_motion():
    torch.manual_seed(0)
    t = np.arange(48)[:, None] / 8.0
    clips = [Clip(f"{i}", np.sin(t * (1 + i % 5) * 0.3 + np.arange(20)[None, :]).astype(np.float32))
             for i in range(16)]  # fmt: skip
    windows = MotionWindows(clips, window=24, batch_size=8, seed=0)
    enc, dec = MovementConvEncoder(16, 32, 16), MovementConvDecoder(16, 32, 20)
    cfg = MovementAEConfig(window=24, batch_size=8, iters=150, lr=3e-3, log_every=149)
    with torch.no_grad():
        before = torch.nn.functional.l1_loss(dec(enc(windows.batch(0)[..., :-4])), windows.batch(0)).item()
    after = train_movement_autoencoder(windows, enc, dec, cfg, progress=False)
    assert after["rec"] < 0.3 * before and not enc.training


@pytest.mark.parametrize("name", ["tiny", "humanml3d", "kit"])
def test_configs_load(name: str):
    cfg = load_config(EvaluatorTrainConfig, REPO / "configs" / name / "evaluator.yaml")
    assert cfg.margin == 10.0 and cfg.batch_size == 32
    ev = load_config(EvalConfig, REPO / "configs" / name / "eval.yaml")
    assert ev.batch_size == 32 and ev.split == "test"


def test_train_evaluator_end_to_end(tmp_path: Path):
    ds = write_tiny_dataset(tmp_path / "ds", clips=_clips())
    ids = (ds / "all.txt").read_text().split()
    (ds / "train.txt").write_text("\n".join(ids[:20]) + "\n")
    (ds / "val.txt").write_text("\n".join(ids[20:]) + "\n")
    glove = write_tiny_glove(tmp_path / "glove")
    out = tmp_path / "ev"
    args = [
        f"dataset_root={ds}", f"glove_dir={glove}", f"output_dir={out}", "batch_size=4", "epochs=2",
        "model={dim_text_hidden: 8, dim_motion_hidden: 8, dim_coemb: 16, dim_movement_enc_hidden: 8, "
        "dim_movement_latent: 8, dim_movement_dec_hidden: 8}",
        "movement.iters=30", "movement.batch_size=8", "movement.lr=0.01", "movement.log_every=29",
        "final_replications=1", "final_diversity_times=10", "progress=false", "num_threads=1",
    ]  # fmt: skip
    summary = main(args)
    for f in ("finest.tar", "meta/mean.npy", "meta/std.npy", "movement_ae.pt", "metrics.jsonl", "config.yaml",
              "train_result.json", "eval_test.json", "eval_test.md"):  # fmt: skip
        assert (out / f).is_file(), f
    ev = load_guo_evaluator(out / "finest.tar", "humanml3d")
    assert ev.dim == 16 and ev.epoch == summary["best"]["best_epoch"]
    ck = torch.load(out / "finest.tar", weights_only=True)
    assert {"text_encoder", "motion_encoder", "movement_encoder", "opt_text_encoder", "opt_motion_encoder",
            "epoch", "iter"} == set(ck)  # fmt: skip
    # The frozen movement encoder inside finest.tar is the pre-trained one.
    ae = torch.load(out / "movement_ae.pt", weights_only=True)
    for k, v in ae["movement_encoder"].items():
        torch.testing.assert_close(ck["movement_encoder"][k], v)
    log = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in log if x["stage"] == "movement_ae"] == [0, 29]
    assert [x["epoch"] for x in log if x["stage"] == "matching"] == [0, 1]
    assert set(summary["ground_truth"]) == {"top1", "top2", "top3", "fid", "mm_dist", "diversity"}
    std = np.load(out / "meta" / "std.npy")
    np.testing.assert_allclose(std[:4] * 5, np.load(ds / "Std.npy")[:4], rtol=1e-6)
    again = main(args)  # finished run: not retrained
    assert again == json.loads((out / "train_result.json").read_text())
