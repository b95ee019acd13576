"""The caption -> codes baseline: its examples, schedule and budget, and ``scripts/baseline_t2m.py`` end to end
on a 30-clip dataset (6 training motions, 16 codes): the loss falls, the run folder holds the model,
the training records and an evaluation that ``eval.compare`` puts beside others."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from data.layout import DatasetPaths, read_captions, read_split
from data.run_folder import path_digest, read_manifest
from data.vq_data import index_code_files
from eval.compare import main as compare_main
from eval.llm_runner import load_runner
from models.motion_llm import MotionVocab
from models.plain_t2m import (
    IGNORE_INDEX,
    Budget,
    CaptionedMotion,
    ModelSize,
    Optimisation,
    build_model,
    collate,
    epoch_batches,
    lr_at,
    plain_t2m_prompt,
    tokenize_motions,
    train_plain_t2m,
)
from models.tiny_llm import SPECIAL_TOKENS, WORD_PATTERN, word_level_tokenizer
from scripts.baseline_t2m import BaselineT2MConfig
from scripts.baseline_t2m import main as baseline_main
from tests.conftest import write_tiny_dataset, write_tiny_glove
from tests.llm_fixtures import write_eval_assets
from tests.test_harness import _clips

NB_CODE = 16
TINY = ["hidden_size=32", "intermediate_size=64", "num_hidden_layers=2", "num_attention_heads=2",
        "num_key_value_heads=1", "head_dim=16"]  # fmt: skip


def _codes(i: int) -> np.ndarray:
    """Motion ``i``'s code file: 3 crop rows of a pattern of its own."""
    base = (np.arange(6) * 3 + 5 * i) % NB_CODE
    return np.stack([np.roll(base, k) for k in range(3)]).astype(np.int64)


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("baseline")
    ds = write_tiny_dataset(root / "ds", clips=_clips())  # train = the first 6 ids, test = all 30
    assets = write_eval_assets(root, ds, nb_code=NB_CODE)
    (root / "codes").mkdir()
    for i, mid in enumerate(read_split(ds, "train")):
        np.save(root / "codes" / f"{mid}.npy", _codes(i))
    index_code_files(root / "codes", ds, nb_code=NB_CODE, checkpoint=assets["vq_checkpoint"])
    args = [
        "--config", "configs/tiny/baseline_t2m.yaml", f"dataset_root={ds}", f"codes_dir={root / 'codes'}",
        f"glove_dir={write_tiny_glove(root / 'glove')}", *(f"{k}={v}" for k, v in assets.items()),
        "budget_steps=30", "train_batch_size=3", "warmup_steps=2", "lr=0.02", "log_every=10", *TINY,
        "batch_size=4", "replications=1", "diversity_times=10", "max_new_tokens=8", "gen_batch_size=8",
        "render_samples=0", "progress=false", "seed=5",
    ]  # fmt: skip
    return {"root": root, "ds": ds, "args": args}


def test_baseline_trains_saves_and_is_evaluated_beside_other_runs(setup):
    out = setup["root"] / "run"
    res = baseline_main([*setup["args"], f"output_dir={out}"])
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    model_files = [f for f in files if f.startswith("model/")]
    assert [f for f in files if f not in model_files] == [
        "config.yaml", "eval_test.json", "eval_test.md", "index.html", "metrics.jsonl", "run.json",
        "run_info.json", "samples.jsonl", "train_summary.json",
    ]  # fmt: skip
    assert {
        "model/config.json",
        "model/model.safetensors",
        "model/motion_llm.json",
        "model/tokenizer.json",
    } <= set(model_files)
    # Training: 30 steps of 3 examples over 6 motions = 15 epochs; the loss falls.
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary == res["training"]
    assert summary["steps"] == 30 and summary["epochs"] == 15.0 and summary["motions"] == 6
    assert summary["final_loss"] < 0.5 * summary["first_loss"]
    assert summary["cpu_s"] > 0 and summary["wall_s"] > 0 and summary["tokens_per_cpu_s"] > 0
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [10, 20, 30] and lines[0]["loss"] > lines[1]["loss"] > lines[2][
        "loss"
    ]
    # The vocabulary: the specials, every word of the training captions and of " Response:", then 2 + 16.
    words = {w for mid in read_split(setup["ds"], "train")
             for line in read_captions(DatasetPaths(setup["ds"]).text_file(mid))
             for w in re.findall(WORD_PATTERN, line.caption)}  # fmt: skip
    assert summary["n_text"] == len(SPECIAL_TOKENS) + len(words | {"Response", ":"})
    meta = json.loads((out / "model" / "motion_llm.json").read_text())
    assert meta["nb_code"] == NB_CODE and meta["n_text"] == summary["n_text"] and meta["vq_sha256"]
    # Evaluation: the Real-motion row and the baseline's row, every generation parsed and counted.
    js = json.loads((out / "eval_test.json").read_text())
    assert js == json.loads(json.dumps(res["eval"])) and js["task"] == "t2m_plain"
    assert list(js["methods"]) == ["Real motion", "t2m_plain"] and js["seed"] == 5
    assert js["parse"]["motion_parse/t2m_plain/round0/total"] == 28
    sample = json.loads((out / "samples.jsonl").read_text().splitlines()[0])
    prompt = sample["steps"][0]["prompt"]
    assert prompt == plain_t2m_prompt(sample["caption"]) and prompt.endswith(" Response:<Motion>")
    table = compare_main([str(out), str(out), "--labels", "baseline", "again"]).splitlines()
    assert table[2].startswith("| data | Real motion |") and table[3].startswith("| baseline | t2m_plain |")
    # The saved model loads as a motion LLM; its evaluation prompt is the training prefix + <Motion>.
    runner = load_runner(out / "model", "humanml3d")
    caption = read_captions(DatasetPaths(setup["ds"]).text_file("000000"))[0].caption
    prefix = runner.tokenizer(caption + " Response:")["input_ids"]
    assert runner.encode_prompts([plain_t2m_prompt(caption)])[0] == [*prefix, runner.vocab.start_id]
    # A second call keeps the finished run, its folder byte for byte (no new attempt begun).
    before = path_digest(out)
    again = baseline_main([*setup["args"], f"output_dir={out}", "num_threads=2"])
    assert again["training"] == summary and again["eval"] == js
    assert path_digest(out) == before and read_manifest(out)["status"] == "done"


def test_config_refuses_a_model_and_needs_a_budget():
    with pytest.raises(ValueError, match="leave both unset"):
        BaselineT2MConfig(model="runs/x")
    with pytest.raises(ValueError, match="must be > 0"):
        BaselineT2MConfig(budget_cpu_s=0, budget_steps=0)
    assert BaselineT2MConfig(budget_steps=7).budget() == Budget(cpu_s=0.0, steps=7)
    ecfg = BaselineT2MConfig(replications=2, seed=3).eval_config(Path("m"))
    assert (ecfg.model, ecfg.task, ecfg.replications, ecfg.seed) == ("m", "t2m_plain", 2, 3)


def test_lr_schedule_warms_up_then_follows_the_budget():
    kw = {"lr": 1e-3, "warmup_steps": 50, "min_lr_ratio": 0.05}
    assert lr_at(0, 0.0, **kw) == pytest.approx(1e-3 / 50)
    assert lr_at(49, 0.0, **kw) == pytest.approx(1e-3)
    assert lr_at(100, 0.5, **kw) == pytest.approx(1e-3 * (0.05 + 0.95 * 0.5))
    assert lr_at(100, 1.0, **kw) == pytest.approx(5e-5) and lr_at(100, 3.0, **kw) == pytest.approx(5e-5)


def _examples(tokenizer, vocab: MotionVocab) -> list:
    motions = [CaptionedMotion(f"{i:06d}", (f"a man walks {i}.", "someone waves."), ((i, 1), (2, 3, i)))
               for i in range(5)]  # fmt: skip
    return tokenize_motions(motions, tokenizer, vocab)


def test_examples_epochs_and_batches():
    tokenizer = word_level_tokenizer(["a man walks 0 1 2 3 4.", "someone waves.", " Response:"])
    n_text = len(tokenizer)
    vocab = MotionVocab(n_text, nb_code=8)
    ex = _examples(tokenizer, vocab)
    e = ex[2][1]  # "someone waves." -> codes (2, 3, 2)
    assert e.prompt_ids == tuple(tokenizer("someone waves. Response:")["input_ids"]) and e.prompt_ids[0] == 2
    assert e.response_ids == (n_text, n_text + 4, n_text + 5, n_text + 4, n_text + 1, 1)
    # Each epoch: every motion once, one caption each; a pure function of (seed, epoch).
    for epoch in range(3):
        batches = epoch_batches(ex, batch_size=2, seed=1, epoch=epoch)
        assert [len(b) for b in batches] == [2, 2, 1]
        seen = sorted(next(i for i, m in enumerate(ex) if e in m) for b in batches for e in b)
        assert seen == [0, 1, 2, 3, 4]
        assert batches == epoch_batches(ex, batch_size=2, seed=1, epoch=epoch)
    orders = {tuple(e.prompt_ids for b in epoch_batches(ex, 2, 1, k) for e in b) for k in range(6)}
    assert len(orders) > 1
    # Collation: right padding; labels only on the response.
    batch = collate([ex[0][0], e], pad_id=0)
    n0 = len(ex[0][0].prompt_ids) + len(ex[0][0].response_ids)
    n1 = len(e.prompt_ids) + len(e.response_ids)
    assert batch["input_ids"].shape == (2, max(n0, n1))
    assert batch["attention_mask"].sum(1).tolist() == [n0, n1]
    lab = batch["labels"][1]
    assert (lab[: len(e.prompt_ids)] == IGNORE_INDEX).all() and lab[len(e.prompt_ids) : n1].tolist() == list(
        e.response_ids
    )
    assert (lab[n1:] == IGNORE_INDEX).all()


def test_cpu_budget_stops_training_once_spent():
    tokenizer = word_level_tokenizer(["a man walks 0 1 2 3 4.", "someone waves.", " Response:"])
    n_text = len(tokenizer)
    vocab = MotionVocab(n_text, nb_code=8)
    model = build_model(vocab.size, ModelSize(32, 64, 1, 2, 1, 16), seed=0)
    logged = []
    res = train_plain_t2m(model, _examples(tokenizer, vocab), budget=Budget(cpu_s=0.2), opt=Optimisation(batch_size=4),
                          seed=0, pad_id=0, log_every=1000, metrics=lambda **v: logged.append(v), progress=False)  # fmt: skip
    assert res.cpu_s >= 0.2 and res.steps >= 1 and len(res.losses) == res.steps
    assert len(logged) == 1 and logged[0]["step"] == res.steps  # the final record
    assert not model.training and all(torch.isfinite(p).all() for p in model.parameters())
