"""Stage-3 GRPO on TRL (models/grpo.py, RL/train_grpo.py) on a very small Gemma2: the per-group min-max
(hand-computed, NaNs, ties, groups straddling processes), the TRL settings, the frozen reference, a toy
reward that rises, the real rewards' plumbing, the trained folder loading as a motion LLM, and resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import trl.trainer.grpo_trainer as trl_grpo
from safetensors.torch import load_file

from data.config import load_config
from data.prompts import build_cot_prompt
from models.generation import BatchedGenerator, DecodeConfig
from models.grpo import (
    GRPORunConfig,
    MotionGRPOTrainer,
    group_minmax,
    grpo_arguments,
    load_prompt_rows,
    prepare_policy,
    prompt_dataset,
)
from models.motion_llm import VQIdentity, load_motion_llm
from RL import train_grpo
from tests.grpo_fixtures import NB_CODE, write_evaluator, write_motion_llm, write_prompts, write_vq

REPO = Path(__file__).resolve().parent.parent
NAN = float("nan")
EPS = 1e-4


@pytest.fixture(scope="module")
def assets(tmp_path_factory, tiny_dataset: Path, tiny_glove: Path) -> dict:
    root = tmp_path_factory.mktemp("grpo")
    vq = write_vq(root / "vq")
    ev = write_evaluator(root / "ev")
    llm = write_motion_llm(root / "llm", vq)
    prompts = write_prompts(root / "prompts.jsonl", repeat=4)  # 16 rows
    return {"root": root, "vq": vq, "ev": ev, "llm": llm, "prompts": prompts, "dataset": tiny_dataset,
            "glove": tiny_glove}  # fmt: skip


def _overrides(a: dict, out: Path, *extra: str) -> list[str]:
    return [f"dataset_root={a['dataset']}", f"model_path={a['llm']}", f"prompts_file={a['prompts']}", "max_prompts=0",
            f"vq_checkpoint={a['vq']}", f"vq_meta_dir={a['vq'].parent / 'meta'}", f"nb_code={NB_CODE}",
            f"evaluator_checkpoint={a['ev']}", f"evaluator_meta_dir={a['ev'].parent / 'meta'}",
            f"glove_dir={a['glove']}", f"output_dir={out}", "progress=false", "training.report_to=none",
            "generation.max_completion_length=16", *extra]  # fmt: skip


def _args(a: dict, out: Path, *extra: str) -> list[str]:
    return ["--config", str(REPO / "configs/tiny/grpo.yaml"), *_overrides(a, out, *extra)]


def _history(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------------------------------- min-max


def test_group_minmax_on_a_hand_computed_example():
    rewards = torch.tensor([
        # format, tm,   mm
        [1.0, -3.0, -1.0],  # group A
        [0.0, -1.0, NAN],   # mm None (group_min policy): takes the group's min -> 0
        [1.0, -2.0, -3.0],
        [0.0, -5.0, -2.0],
        [1.0, -2.0, NAN],   # group B: tm tied -> all 0; mm all NaN -> all 0
        [1.0, -2.0, NAN],
        [0.0, -2.0, NAN],
        [0.0, -2.0, NAN],
    ])  # fmt: skip
    out = group_minmax(rewards, group_size=4, columns=[1, 2])
    want = torch.tensor([
        [1.0, 2 / (4 + EPS), 2 / (2 + EPS)],
        [0.0, 4 / (4 + EPS), 0.0],
        [1.0, 3 / (4 + EPS), 0.0],
        [0.0, 0.0, 1 / (2 + EPS)],
        [1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0],
    ])  # fmt: skip
    torch.testing.assert_close(out, want)
    assert torch.isnan(rewards[1, 2])  # the input is not modified
    # each scaled column spans [0, 1) inside a group, or is all 0 when the members tie
    assert out[:4, 1].min() == 0 and out[:4, 1].max() < 1
    with pytest.raises(ValueError, match="whole groups of 4"):
        group_minmax(rewards[:6], 4, [1])


def _cfg(a: dict, out: Path, *extra: str) -> GRPORunConfig:
    return load_config(GRPORunConfig, REPO / "configs/tiny/grpo.yaml", _overrides(a, out, *extra))


def _trainer(a: dict, tmp_path: Path, rewards: list, minmax: list[int], *extra: str) -> MotionGRPOTrainer:
    cfg = _cfg(a, tmp_path / "run", "rewards.weights=[]", *extra)
    loaded = prepare_policy(cfg, torch.device("cpu"))
    loaded.model.generation_config.eos_token_id = loaded.tokenizer.eos_token_id
    return MotionGRPOTrainer(
        model=loaded.model, reward_funcs=rewards, args=grpo_arguments(cfg, tmp_path / "t", torch.device("cpu"), len(rewards)),
        train_dataset=prompt_dataset(load_prompt_rows(cfg.prompts_file, 4)), processing_class=loaded.tokenizer,
        minmax_columns=minmax,
    )  # fmt: skip


class Fixed:
    """A reward returning given values (the local rows of one process)."""

    group_minmax = True

    def __init__(self, name: str, values: list[float]):
        self.__name__, self.values = name, values

    def __call__(self, completions, **kwargs):
        return self.values[: len(completions)]


def test_scaling_runs_after_the_gather_so_groups_may_straddle_processes(assets, tmp_path, monkeypatch):
    # Two processes with 2 completions each and G = 4: the group is rows 0-1 of process 0 and rows 0-1
    # of process 1. Process 0's trainer sees its local rewards; TRL's gather appends process 1's rows.
    local = [-3.0, -1.0]
    other = torch.tensor([[1.0, -2.0], [0.0, -5.0]])  # (format, tm) of process 1
    trainer = _trainer(assets, tmp_path, [Fixed("fmt", [1.0, 0.0]), Fixed("tm", local)], minmax=[1])
    monkeypatch.setattr(trl_grpo, "gather", lambda t: torch.cat([t, other.to(t)]))
    inputs = [{"prompt": "p", "caption": "c"}] * 2
    out = trainer._calculate_rewards(inputs, ["p"] * 2, ["c"] * 2, [[1], [1]])
    # min over the whole group is -5 (on process 1), max -1: (r + 5) / (4 + eps)
    want = torch.tensor([[1.0, 2 / (4 + EPS)], [0.0, 4 / (4 + EPS)], [1.0, 3 / (4 + EPS)], [0.0, 0.0]])
    torch.testing.assert_close(out, want)
    # scaling the local rows alone (the reference's rank-local batch) would give other numbers
    assert group_minmax(torch.tensor([[1.0, -3.0], [0.0, -1.0]]), 2, [1])[0, 1] == 0.0 != out[0, 1]


def test_trl_settings_reference_model_and_eos(assets, tmp_path):
    trainer = _trainer(assets, tmp_path, [Fixed("fmt", [0.0] * 8)], minmax=[])
    args = trainer.args
    # the reference's settings TRL defaults differently (grpo.md section 6)
    assert (args.top_k, args.beta, args.loss_type, args.use_bias_correction_kl) == (50, 0.01, "grpo", False)
    assert (args.scale_rewards, args.mask_truncated_completions, args.num_generations) == ("group", False, 4)
    assert (args.num_iterations, args.epsilon, args.temperature, args.top_p) == (1, 0.2, 1.0, 1.0)
    # 2 prompts x 4 = 8 completions per step, generated once per step
    assert (
        args.per_device_train_batch_size,
        args.gradient_accumulation_steps,
        args.generation_batch_size,
    ) == (8, 1, 8)
    assert trainer.eos_token_ids == [1]  # <eos> only; the model folder also declares <end_of_turn> (5)
    # the frozen reference is re-loaded from the stage-2 folder and equals the policy at step 0
    assert trainer.ref_model.config._name_or_path == trainer.model.config._name_or_path == str(assets["llm"])
    ids = torch.tensor([[2, 40, 41, 42, 43, 44]])
    with torch.no_grad():
        torch.testing.assert_close(trainer.ref_model(ids).logits, trainer.model(ids).logits)
    assert trainer.ref_model is not trainer.model and not trainer.ref_model.training


def test_config_errors_name_the_fields(assets, tmp_path):
    with pytest.raises(ValueError, match=r"global_prompts=3 x generation.num_generations=4 = 12 completions"):
        grpo_arguments(_cfg(assets, tmp_path, "training.global_prompts=3"), tmp_path, torch.device("cpu"), 1)
    with pytest.raises(ValueError, match="group_min .* needs rewards.reward_norm_before_add=true"):
        _cfg(assets, tmp_path, "rewards.malformed_motion=group_min", "rewards.reward_norm_before_add=false")
    with pytest.raises(KeyError, match=r"unknown reward 'tm'.*valid"):
        train_grpo.main(_args(assets, tmp_path / "x", "rewards.names=[tm]", "rewards.weights=[]"))
    with pytest.raises(Exception, match="not a motion LLM folder"):
        train_grpo.main(_args(assets, tmp_path / "y", f"model_path={assets['llm']}_base"))


# ---------------------------------------------------------------------------------------------- runs


def test_toy_reward_rises_and_kl_starts_at_zero(assets, tmp_path):
    # Run A of grpo.md section 8: reward = share of motion tokens (baseline ~18/418); top-k off so that
    # the near-uniform random model can sample them.
    out = tmp_path / "toy"
    train_grpo.main(_args(assets, out, "rewards.names=[motion_token_share]", "rewards.weights=[]", "generation.top_k=0",
                          "training.learning_rate=1e-2", "training.lr_scheduler=constant", "training.beta=0.04",
                          "training.epochs=4", "training.save_strategy=no"))  # fmt: skip
    rows = [r for r in _history(out) if "reward" in r]
    rewards = [r["reward"] for r in rows]
    assert len(rows) == 32  # 16 prompts / 2 per step x 4 epochs
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert last > first + 0.08 and last > 0.1, rewards
    kl = [r["kl"] for r in rows]
    assert kl[0] == pytest.approx(0.0, abs=1e-6) and all(0 < k < 5 for k in kl[1:])
    assert all(r["clip_ratio/region_mean"] == 0.0 for r in rows)  # on-policy, one iteration
    assert all(0 < r["completions/mean_length"] <= 16 for r in rows)
    assert all(abs(r["loss"]) < 1 for r in rows)
    assert (out / "reward_curves.png").stat().st_size > 1000


def test_real_rewards_write_a_motion_llm_that_loads_and_generates(assets, tmp_path):
    # Run B: strict_format + guo_tm_distance + guo_mm_distance with the per-group scaling, 3 steps.
    out = tmp_path / "real"
    summary = train_grpo.main(_args(assets, out, "max_prompts=6"))
    rows = [r for r in _history(out) if "reward" in r]
    assert summary["finished"] and summary["global_step"] == 3 == len(rows)
    assert summary["minmax_scaled"] == ["guo_tm_distance", "guo_mm_distance"]
    for r in rows:
        # a random tiny model writes no motion: every answer is the mean pose, so the members of a group
        # tie, the scaled distances are 0 and no group has a learning signal (nor a KL: policy = reference)
        assert r["motion/malformed_frac"] == pytest.approx(1.0)
        for name in ("guo_tm_distance", "guo_mm_distance"):
            assert r[f"rewards/{name}/mean"] == 0.0
            assert r[f"{name}/raw_mean"] < 0  # logged before scaling: minus a distance
        assert r["frac_reward_zero_std"] == 1.0 and r["reward"] == r["rewards/strict_format/mean"] == 0.0
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert {"metrics.jsonl", "reward_curves.png", "grpo_summary.json", "config.yaml", "run.json",
            "model/motion_llm.json", "model/model.safetensors", "model/tokenizer.json"} <= files  # fmt: skip
    # the trained folder is a motion LLM of the same VQ-VAE, stage 3, with the stage-2 generation config
    loaded = load_motion_llm(out / "model", nb_code=NB_CODE, vq=VQIdentity.of(assets["vq"]))
    assert loaded.meta.info["stage"] == 3 and loaded.meta.info["started_from"] == str(assets["llm"])
    assert loaded.model.generation_config.eos_token_id == [1, 5]
    prompt = loaded.tokenizer(build_cot_prompt("a person walks forward."))["input_ids"]
    gen = BatchedGenerator(loaded.model.eval()).generate(
        [prompt], DecodeConfig(max_new_tokens=8, stop_ids=(1,))
    )
    assert len(gen[0].tokens) >= 1
    # rerunning the finished command keeps it, untouched
    info = (out / "run_info.json").read_bytes()
    assert train_grpo.main(_args(assets, out, "max_prompts=6"))["global_step"] == 3
    assert (out / "run_info.json").read_bytes() == info
    assert json.loads((out / "run.json").read_text())["status"] == "done"


def test_resume_continues_the_run(assets, tmp_path):
    extra = ("max_prompts=8", "rewards.names=[motion_token_share]", "rewards.weights=[]", "generation.top_k=0",
             "training.learning_rate=1e-2", "training.save_strategy=no")  # fmt: skip
    whole = tmp_path / "whole"
    train_grpo.main(_args(assets, whole, *extra))
    parts = tmp_path / "parts"
    first = train_grpo.main(_args(assets, parts, *extra, "max_steps=2"))
    assert not first["finished"] and first["global_step"] == 2
    assert (parts / "trainer" / "checkpoint-2").is_dir() and (
        parts / "trainer" / "checkpoint-2" / "motion_llm.json"
    ).is_file()
    second = train_grpo.main(_args(assets, parts, *extra))
    assert second["finished"] and second["global_step"] == 4
    a = load_file(whole / "model" / "model.safetensors")
    b = load_file(parts / "model" / "model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    steps = [r["step"] for r in _history(parts) if "reward" in r]
    assert steps == [1, 2, 3, 4]
