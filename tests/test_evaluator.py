"""Guo evaluator networks: released checkpoint layout, strict loading, ordering."""

from pathlib import Path

import pytest
import torch

from models.evaluator import (
    EvaluatorDims,
    EvaluatorLoadError,
    build_networks,
    load_guo_evaluator,
    save_guo_checkpoint,
)

# Released key names and shapes for HumanML3D (spec section 4.3).
RELEASED_SHAPES = {
    "movement_encoder": {
        "main.0.weight": (512, 259, 4), "main.0.bias": (512,), "main.3.weight": (512, 512, 4),
        "main.3.bias": (512,), "out_net.weight": (512, 512), "out_net.bias": (512,),
    },
    "motion_encoder": {
        "hidden": (2, 1, 1024), "input_emb.weight": (1024, 512), "input_emb.bias": (1024,),
        **{f"gru.{w}_l0{s}": shp for s in ("", "_reverse") for w, shp in (
            ("weight_ih", (3072, 1024)), ("weight_hh", (3072, 1024)), ("bias_ih", (3072,)), ("bias_hh", (3072,)))},
        "output_net.0.weight": (1024, 2048), "output_net.0.bias": (1024,), "output_net.1.weight": (1024,),
        "output_net.1.bias": (1024,), "output_net.3.weight": (512, 1024), "output_net.3.bias": (512,),
    },
    "text_encoder": {
        "hidden": (2, 1, 512), "pos_emb.weight": (300, 15), "pos_emb.bias": (300,),
        "input_emb.weight": (512, 300), "input_emb.bias": (512,),
        **{f"gru.{w}_l0{s}": shp for s in ("", "_reverse") for w, shp in (
            ("weight_ih", (1536, 512)), ("weight_hh", (1536, 512)), ("bias_ih", (1536,)), ("bias_hh", (1536,)))},
        "output_net.0.weight": (512, 1024), "output_net.0.bias": (512,), "output_net.1.weight": (512,),
        "output_net.1.bias": (512,), "output_net.3.weight": (512, 512), "output_net.3.bias": (512,),
    },
}  # fmt: skip

SMALL = EvaluatorDims(dim_text_hidden=16, dim_motion_hidden=24, dim_coemb=512, dim_movement_enc_hidden=16,
                      dim_movement_latent=12)  # fmt: skip


def _write_ckpt(path: Path, dims: EvaluatorDims, seed: int = 0, legacy: bool = False) -> None:
    """Random-weight ``finest.tar`` with Adam states and ints, like the released file."""
    torch.manual_seed(seed)
    text, motion, movement = build_networks(dims)
    opts = {}
    for name, mod in (("opt_text_encoder", text), ("opt_motion_encoder", motion)):
        opt = torch.optim.Adam(mod.parameters(), lr=1e-4)
        mod.hidden.grad = torch.ones_like(mod.hidden)
        opt.step()
        opts[name] = opt
    if legacy:  # the pre-1.6 non-zip serialisation older releases may use
        state = {k: m.state_dict() for k, m in zip(("text_encoder", "motion_encoder", "movement_encoder"),
                                                    (text, motion, movement), strict=True)}  # fmt: skip
        state.update({k: o.state_dict() for k, o in opts.items()}, epoch=7, iter=123)
        torch.save(state, path, _use_new_zipfile_serialization=False)
    else:
        save_guo_checkpoint(path, text, motion, movement, epoch=7, it=123, optimizers=opts)


def test_released_layout_and_weights_only_loading(tmp_path: Path):
    text, motion, movement = build_networks(EvaluatorDims())
    for name, mod in (("text_encoder", text), ("motion_encoder", motion), ("movement_encoder", movement)):
        got = {k: tuple(v.shape) for k, v in mod.state_dict().items()}
        assert got == RELEASED_SHAPES[name], name
    _, _, kit_movement = build_networks(EvaluatorDims(dim_pose=251))
    assert kit_movement.state_dict()["main.0.weight"].shape == (512, 247, 4)
    # Adam states + ints load under weights_only=True, in both serialisation formats.
    for legacy in (False, True):
        f = tmp_path / f"finest_{legacy}.tar"
        _write_ckpt(f, SMALL, legacy=legacy)
        ev = load_guo_evaluator(f, "humanml3d")
        assert ev.epoch == 7 and ev.dim == 512 and not ev.training
        assert ev.motion_encoder.gru.hidden_size == 24 and ev.movement_encoder.out_net.out_features == 12


def test_strict_loading_errors(tmp_path: Path):
    with pytest.raises(EvaluatorLoadError, match="not found.*download_extractor"):
        load_guo_evaluator(tmp_path / "nope.tar")
    f = tmp_path / "finest.tar"
    _write_ckpt(f, SMALL)
    with pytest.raises(EvaluatorLoadError, match=r"259 inputs.*HUMANML3D checkpoint.*dataset='humanml3d'"):
        load_guo_evaluator(f, "kit")
    _write_ckpt(f, EvaluatorDims(dim_pose=251, dim_text_hidden=8, dim_motion_hidden=8, dim_movement_enc_hidden=8,
                                 dim_movement_latent=8))  # fmt: skip
    with pytest.raises(EvaluatorLoadError, match=r"247 inputs.*259.*looks like a KIT checkpoint"):
        load_guo_evaluator(f, "humanml3d")
    ck = torch.load(f, weights_only=True)
    del ck["text_encoder"]
    torch.save(ck, f)
    with pytest.raises(EvaluatorLoadError, match=r"missing state dict.*text_encoder"):
        load_guo_evaluator(f, "kit")
    _write_ckpt(f, SMALL)
    ck = torch.load(f, weights_only=True)
    ck["motion_encoder"]["extra.weight"] = torch.zeros(1)
    torch.save(ck, f)
    with pytest.raises(EvaluatorLoadError, match=r"(?s)motion_encoder does not match.*extra.weight"):
        load_guo_evaluator(f)
    torch.save({"text_encoder": {}, "motion_encoder": object(), "movement_encoder": {}}, f)
    with pytest.raises(EvaluatorLoadError, match="weights_only"):
        load_guo_evaluator(f)


@pytest.fixture(scope="module")
def evaluator(tmp_path_factory):
    f = tmp_path_factory.mktemp("ev") / "finest.tar"
    _write_ckpt(f, SMALL, seed=3)
    return load_guo_evaluator(f, "humanml3d")


def test_any_order_equals_one_at_a_time(evaluator):
    g = torch.Generator().manual_seed(0)
    motions = torch.randn(5, 40, 263, generator=g)
    lengths = torch.tensor([16, 40, 4, 27, 33])
    for i, n in enumerate(lengths):
        motions[i, n:] = 0
    emb = evaluator.embed_motion(motions, lengths)
    assert emb.shape == (5, 512) and not emb.requires_grad
    for i in range(5):
        one = evaluator.embed_motion(motions[i : i + 1], lengths[i : i + 1])
        torch.testing.assert_close(emb[i], one[0], atol=1e-5, rtol=1e-5)
    # 27 frames -> 6 GRU steps: identical to 24 frames on the same padded input only if the
    # padding is the same; a different padded tensor changes the last movement step.
    rows = evaluator.embed_motion(motions[[3, 3]], torch.tensor([27, 24]))
    torch.testing.assert_close(rows[0], rows[1])
    words = torch.randn(4, 22, 300, generator=g)
    pos = torch.nn.functional.one_hot(torch.randint(0, 15, (4, 22), generator=g), 15).float()
    sent = torch.tensor([5, 22, 3, 12])
    t = evaluator.embed_text(words, pos, sent)
    garbage = words.clone()
    garbage[0, 5:] = 1e3  # past the caption's length: ignored
    torch.testing.assert_close(evaluator.embed_text(garbage, pos, sent), t)
    for i in range(4):
        one = evaluator.embed_text(words[i : i + 1, : sent[i]], pos[i : i + 1, : sent[i]], sent[i : i + 1])
        torch.testing.assert_close(t[i], one[0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(t[0], t[1])


def test_embedding_errors(evaluator):
    motions = torch.zeros(2, 16, 263)
    with pytest.raises(ValueError, match=r"below 4.*one movement step"):
        evaluator.embed_motion(motions, torch.tensor([16, 3]))
    with pytest.raises(ValueError, match="exceed the padded size 16"):
        evaluator.embed_motion(motions, torch.tensor([20, 16]))
    with pytest.raises(ValueError, match="expects 263"):
        evaluator.embed_motion(torch.zeros(2, 16, 251), torch.tensor([16, 16]))
    motions[1, 2, 7] = float("nan")
    with pytest.raises(FloatingPointError, match=r"row\(s\) \[1\]"):
        evaluator.embed_motion(motions, torch.tensor([16, 16]))
