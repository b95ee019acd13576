"""SFT recipe on a very small Gemma2: labels, epochs, learning, exact resume, torchrun, refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from data.annotations import MotionResolver
from data.config import load_config
from data.motion_codes import CodesDirSource
from data.prompts import PromptPools
from data.sft_dataset import SFTCollator, SFTDataset, split_indices
from data.sft_examples import IGNORE_INDEX, AnnotationExampleSet, tokenize_example
from data.vq_data import index_code_files
from models.motion_llm import MotionLLMError, load_motion_llm
from models.sft import SFTConfig, build_datasets, cap_per_source
from SFT import train_sft
from tests.llm_fixtures import build_base, write_annotations, write_dataset, write_fake_vq

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("sft")
    codes = write_dataset(root)
    files = write_annotations(root, sorted(codes))
    vq = write_fake_vq(root / "vq.pth")
    index_code_files(root / "codes", root, checkpoint=vq)  # hand-made codes, recorded as the fake VQ's
    base = build_base(root, root / "base")
    return {"root": root, "files": files, "vq": vq, "base": base}


def test_rebuilding_a_finished_base_keeps_its_folder_byte_for_byte(setup):
    # the next stage fingerprints this folder: a kept build must not rewrite config.yaml, run_info.json
    # or mark the run anything but done (a rerun of the demo failed at stage 0 when it did)
    from data.run_folder import path_digest, read_manifest

    before = path_digest(setup["base"])
    build_base(setup["root"], setup["base"])
    assert path_digest(setup["base"]) == before
    manifest = read_manifest(setup["base"])
    assert manifest["status"] == "done" and len(manifest["attempts"]) == 1


def _args(setup, out: Path, *extra: str) -> list[str]:
    r = setup["root"]
    files = ",".join(str(f) for f in setup["files"])
    return ["--config", str(REPO / "configs/tiny/sft_stage0.yaml"), f"dataset_root={r}", f"model_path={setup['base']}",
            f"vq_checkpoint={setup['vq']}", f"codes_dir={r / 'codes'}", f"annotation_files=[{files}]",
            f"output_dir={out}", "progress=false", "training.report_to=none", "training.logging_steps=1",
            "training.learning_rate=3e-3", "training.warmup_steps=0", "training.lr_scheduler=constant",
            "training.global_batch_size=8", "training.per_device_batch_size=4", *extra]  # fmt: skip


def _losses(out: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


def test_collator_labels_are_the_builder_masks(setup):
    loaded = load_motion_llm(setup["base"])
    tok = loaded.tokenizer
    codes = CodesDirSource(setup["root"] / "codes", MotionResolver([setup["root"]]))
    examples = AnnotationExampleSet([str(f) for f in setup["files"]], codes, PromptPools.builtin(), seed=5)
    ds = SFTDataset(examples, tok, indices=[0, 30, 7])
    items = [ds[i] for i in range(3)]
    for i, item in enumerate(items):
        want = tokenize_example(ds.example(i), tok, 2048)
        assert (item["input_ids"], item["labels"]) == (want.input_ids, want.labels)
        # labels: -100 exactly on <bos> + prompt, the ids themselves on the response and <eos>
        ex = ds.example(i)
        n_prompt = 1 + len(tok(ex.segments[1].text, add_special_tokens=False)["input_ids"])
        assert item["labels"][:n_prompt] == [IGNORE_INDEX] * n_prompt
        assert item["labels"][n_prompt:] == item["input_ids"][n_prompt:] and item["labels"][-1] == 1
    batch = SFTCollator(tok.pad_token_id)(items)
    longest = max(len(it["input_ids"]) for it in items)
    assert batch["input_ids"].shape == (3, longest)
    for row, it in enumerate(items):
        n = len(it["input_ids"])
        assert batch["input_ids"][row, :n].tolist() == it["input_ids"]  # right padding
        assert batch["labels"][row, :n].tolist() == it["labels"]
        assert set(batch["input_ids"][row, n:].tolist()) <= {0} and set(
            batch["labels"][row, n:].tolist()
        ) <= {-100}
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (longest - n)


def test_every_epoch_draws_new_templates(setup):
    tok = load_motion_llm(setup["base"]).tokenizer
    codes = CodesDirSource(setup["root"] / "codes", MotionResolver([setup["root"]]))
    examples = AnnotationExampleSet([str(f) for f in setup["files"]], codes, PromptPools.builtin(), seed=5)
    ds = SFTDataset(examples, tok)
    epoch0 = [ds.example(i).text for i in range(len(ds))]
    ds.set_epoch(1)
    epoch1 = [ds.example(i).text for i in range(len(ds))]
    assert sum(a != b for a, b in zip(epoch0, epoch1, strict=True)) > len(ds) // 2
    ds.set_epoch(0)
    assert [ds.example(i).text for i in range(len(ds))] == epoch0  # a pure function of (seed, epoch, index)
    val = SFTDataset(examples, tok, [0, 1], fixed_epoch=0)
    val.set_epoch(3)
    assert val.example(0).text == epoch0[0]
    train_idx, val_idx = split_indices(200, 0.1, seed=1)
    assert sorted(train_idx + val_idx) == list(range(200)) and 8 <= len(val_idx) <= 35


def test_a_few_steps_lower_the_loss_and_write_the_run_folder(setup, tmp_path):
    out = tmp_path / "run"
    summary = train_sft.main(_args(setup, out, "training.epochs=3", "val_fraction=0.1"))
    losses = [loss for _, loss in _losses(out)]
    assert summary["finished"] and summary["global_step"] == len(losses) >= 15
    assert sum(losses[-3:]) / 3 < 0.85 * sum(losses[:3]) / 3  # measured: 5.36 vs 6.76
    assert summary["epochs_drawn"] == [0, 1, 2] and summary["gradient_accumulation_steps"] == 2
    assert summary["eval_loss"] < losses[0]
    for f in ("loss_curve.png", "metrics.jsonl", "training_samples.txt", "sft_summary.json", "config.yaml",
              "run.json", "model/model.safetensors", "model/motion_llm.json", "model/tokenizer.json"):  # fmt: skip
        assert (out / f).is_file(), f
    assert (out / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    meta = json.loads((out / "model/motion_llm.json").read_text())
    assert meta["info"]["stage"] == 0 and meta["nb_code"] == 512 and len(meta["vq_sha256"]) == 64
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["status"] == "done" and "model/model.safetensors" in manifest["files"]
    # A finished run is kept; rerunning returns its summary without training.
    assert train_sft.main(_args(setup, out, "training.epochs=3", "val_fraction=0.1")) == summary

    # The next stage refuses the model when the configured VQ-VAE is another one.
    other = write_fake_vq(tmp_path / "other.pth", b"vq-other")
    with pytest.raises(
        MotionLLMError, match=r"belong to the VQ-VAE .*vq\.pth.*the config names .*other\.pth"
    ):
        train_sft.main(_args(setup, tmp_path / "s1", f"model_path={out / 'model'}", f"vq_checkpoint={other}"))
    with pytest.raises(FileNotFoundError, match=r"model_path='.*missing' does not exist"):
        train_sft.main(_args(setup, tmp_path / "s2", f"model_path={tmp_path / 'missing'}"))


def test_resume_equals_an_uninterrupted_run(setup, tmp_path):
    common = (
        "training.epochs=2",
        "val_fraction=0",
        "training.save_strategy=steps",
        "training.save_steps=100",
    )
    train_sft.main(_args(setup, tmp_path / "full", *common))
    full = _losses(tmp_path / "full")
    first = train_sft.main(_args(setup, tmp_path / "split", *common, "max_steps=4"))
    assert not first["finished"] and first["global_step"] == 4
    assert (tmp_path / "split" / "trainer" / "checkpoint-4").is_dir()
    second = train_sft.main(_args(setup, tmp_path / "split", *common))
    assert second["finished"] and second["global_step"] == full[-1][0] == 12
    split = _losses(tmp_path / "split")
    assert [s for s, _ in split] == [s for s, _ in full]
    for (step, a), (_, b) in zip(split, full, strict=True):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-7), step


def test_two_process_torchrun_trains_with_the_same_global_batch(setup, tmp_path):
    common = ("training.epochs=1", "val_fraction=0", "training.save_strategy=no")
    one = train_sft.main(_args(setup, tmp_path / "one", *common))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "SFT.train_sft", *_args(setup, tmp_path / "two", *common)]  # fmt: skip
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "sft_summary.json").read_text())
    assert (one["world_size"], one["gradient_accumulation_steps"]) == (1, 2)
    assert (two["world_size"], two["gradient_accumulation_steps"]) == (2, 1)
    assert two["global_step"] == one["global_step"] == 6
    a, b = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert [s for s, _ in a] == [s for s, _ in b]
    for (step, x), (_, y) in zip(a, b, strict=True):
        assert x == pytest.approx(y, rel=2e-4), step


def test_entries_can_be_capped_per_file(setup):
    codes = CodesDirSource(setup["root"] / "codes", MotionResolver([setup["root"]]))
    examples = AnnotationExampleSet([str(f) for f in setup["files"]], codes, PromptPools.builtin(), seed=5)
    capped = cap_per_source(examples.annotations, 5)
    assert [(Path(a.source).name, a.index) for a in capped] == [
        (Path(f).name, i) for f in setup["files"] for i in range(5)
    ]
    whole = Path(setup["files"][0]).name
    partly = cap_per_source(examples.annotations, 5, uncapped=[whole])
    n_whole = sum(Path(a.source).name == whole for a in examples.annotations)
    assert n_whole > 5
    assert [(Path(a.source).name, a.index) for a in partly] == [(whole, i) for i in range(n_whole)] + [
        (Path(f).name, i) for f in setup["files"][1:] for i in range(5)
    ]
    cfg = load_config(
        SFTConfig,
        REPO / "configs/tiny/sft_stage0.yaml",
        _args(setup, setup["root"] / "x")[2:] + ["max_entries_per_file=5"],
    )
    train, val = build_datasets(cfg, load_motion_llm(setup["base"]).tokenizer)
    assert len(train) + (len(val) if val else 0) == 10


def test_lora_stage_trains_the_adapter_and_motion_rows_then_saves_merged(setup, tmp_path):
    out = tmp_path / "lora"
    summary = train_sft.main(_args(setup, out, "training.epochs=1", "val_fraction=0", "lora.enabled=true",
                                   "lora.r=4", "lora.alpha=8", "lora.dropout=0.0"))  # fmt: skip
    assert summary["finished"]
    base = load_motion_llm(setup["base"])  # the base with the motion rows added, as training started
    trained = load_motion_llm(out / "model")
    n_text = base.vocab.n_text
    emb0, emb1 = base.model.get_input_embeddings().weight, trained.model.get_input_embeddings().weight
    assert torch.equal(emb1[:n_text], emb0[:n_text])  # text rows frozen under LoRA
    assert (emb1[n_text:] - emb0[n_text:]).abs().max() > 1e-4  # motion rows trained
    assert not any("lora" in n for n, _ in trained.model.named_parameters())
    q0, q1 = (
        base.model.model.layers[0].self_attn.q_proj.weight,
        trained.model.model.layers[0].self_attn.q_proj.weight,
    )
    assert (q1 - q0).abs().max() > 1e-5  # the merged adapter changed the projection
