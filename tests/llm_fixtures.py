"""Tiny on-disk inputs for the motion LLM tests: a dataset with captions, code files, annotation
files, a stand-in VQ-VAE file and a very small Gemma2 base folder (built by the real entry point)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
from transformers import Gemma2Config, Gemma2ForCausalLM

from data.prompts import GC, GM
from data.specs import get_dataset_spec
from models.evaluator import EvaluatorDims, build_networks, save_guo_checkpoint
from models.evaluator_training import evaluator_meta
from models.tiny_llm import fixed_texts, train_text_tokenizer
from models.vqvae import MotionVQVAE, VQVAEConfig
from prepare import build_tiny_llm

ACTIONS = ["walks forward", "waves the right hand", "jumps in place", "turns left", "sits down", "kicks"]
NB_CODE = 512
# Model sizes that train in milliseconds per step.
TINY_MODEL = ["hidden_size=32", "intermediate_size=64", "num_hidden_layers=2", "num_attention_heads=2",
              "num_key_value_heads=1", "head_dim=16", "vocab_size=400", "max_position_embeddings=512"]  # fmt: skip


def write_dataset(root: Path, n: int = 24, seed: int = 0) -> dict[str, list[int]]:
    """``train.txt``, ``texts/<id>.txt`` and ``codes/<id>.npy`` for ``n`` motions; returns id -> codes (row 0).

    Each action has its own code pattern so that a model can learn captions <-> codes in a few steps.
    """
    rng = np.random.default_rng(seed)
    (root / "texts").mkdir(parents=True, exist_ok=True)
    (root / "codes").mkdir(exist_ok=True)
    ids, out = [], {}
    for i in range(n):
        mid = f"{i:06d}"
        act = ACTIONS[i % len(ACTIONS)]
        base = np.arange(8) * 7 + 40 * (i % len(ACTIONS))
        rows = np.stack([np.roll(base, k) for k in range(3)]) + rng.integers(0, 2, size=(3, 8))
        np.save(root / "codes" / f"{mid}.npy", rows.astype(np.int64))
        (root / "texts" / f"{mid}.txt").write_text(f"a person {act}.#a/DET person/NOUN#0.0#0.0\n")
        ids.append(mid)
        out[mid] = rows[0].tolist()
    (root / "train.txt").write_text("\n".join(ids) + "\n")
    return out


def _entry(i: int, task: str, mid: str, turns: tuple[str, str, str]) -> dict:
    act = ACTIONS[int(mid) % len(ACTIONS)]
    return {
        "id": i,
        "task": task,
        "motions": {GM: {"motion_name": mid, "f_tag": 0.0, "to_tag": 0.0}},
        "text": {GC: [f"a person {act}.", f"someone {act}."]},
        "conversations": [
            {"from": r, "value": v} for r, v in zip(("system", "human", "gpt"), turns, strict=True)
        ],
    }


def write_annotations(root: Path, ids: list[str]) -> list[Path]:
    """A T2M and an M2T annotation file over ``ids`` (stage-0/1 layout)."""
    t2m = [_entry(i, "t2m_direct_generation", m, ("<General_System_Prompt>", "<Text2Motion_Template>", GM))
           for i, m in enumerate(ids)]  # fmt: skip
    m2t = [_entry(i, "m2t_motion_caption", m, ("<General_System_Prompt>", "<Motion2X_Template>", GC))
           for i, m in enumerate(ids)]  # fmt: skip
    paths = []
    for name, anns in (("T2M_direct_generation_annots.json", t2m), ("M2T_motion_caption_annots.json", m2t)):
        p = root / "annotations" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps({"info": {}, "annotations": anns}))
        paths.append(p)
    return paths


def write_fake_vq(path: Path, content: bytes = b"vq-a") -> Path:
    """A stand-in VQ-VAE file: the motion LLM only records and compares its sha256."""
    path.write_bytes(content)
    return path


def write_eval_assets(root: Path, ds: Path, nb_code: int = 16) -> dict[str, Path]:
    """A random Guo evaluator and a random ``nb_code``-code VQ-VAE, each with its normalisation, for ``ds``.

    Returns the paths: ``evaluator_checkpoint``, ``evaluator_meta_dir``, ``vq_checkpoint``, ``vq_meta_dir``.
    """
    spec = get_dataset_spec("humanml3d")
    torch.manual_seed(0)
    dims = EvaluatorDims(dim_text_hidden=16, dim_motion_hidden=16, dim_movement_enc_hidden=16,
                         dim_movement_latent=16)  # fmt: skip
    save_guo_checkpoint(root / "ev" / "finest.tar", *build_networks(dims))
    mean, std = evaluator_meta(np.load(ds / "Mean.npy"), np.load(ds / "Std.npy"), spec)
    (root / "ev" / "meta").mkdir()
    np.save(root / "ev" / "meta" / "mean.npy", mean)
    np.save(root / "ev" / "meta" / "std.npy", std)
    vq = MotionVQVAE(
        spec.feat_dim, VQVAEConfig(nb_code=nb_code, code_dim=8, output_emb_width=8, width=8, depth=1)
    )
    vq.quantizer.mark_initialised()
    vq.save_checkpoint(root / "vq" / "net_last.pth")
    (root / "vq" / "meta").mkdir()
    np.save(root / "vq" / "meta" / "mean.npy", np.load(ds / "Mean.npy"))
    np.save(root / "vq" / "meta" / "std.npy", np.load(ds / "Std.npy"))
    return {"evaluator_checkpoint": root / "ev" / "finest.tar", "evaluator_meta_dir": root / "ev" / "meta",
            "vq_checkpoint": root / "vq" / "net_last.pth", "vq_meta_dir": root / "vq" / "meta"}  # fmt: skip


def build_base(root: Path, out: Path) -> Path:
    """The tiny base folder, through ``prepare.build_tiny_llm`` (captions of ``root``)."""
    build_tiny_llm.main(["--config", "configs/tiny/llm.yaml", f"dataset_root={root}", "annotations_dir=",
                         f"output_dir={out}", "num_threads=1", *TINY_MODEL])  # fmt: skip
    return out


def small_tokenizer():
    """A byte-level BPE tokenizer on the prompt strings and a few captions (no motion tokens)."""
    texts = fixed_texts() + [f"a person {a}." for a in ACTIONS]
    return train_text_tokenizer(texts, vocab_size=400, min_frequency=2)


def small_model(vocab_size: int, seed: int = 0) -> Gemma2ForCausalLM:
    torch.manual_seed(seed)
    cfg = Gemma2Config(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16,
                       max_position_embeddings=256, pad_token_id=0, eos_token_id=1, bos_token_id=2,
                       attn_implementation="eager")  # fmt: skip
    return Gemma2ForCausalLM(cfg).eval()


def random_codes(n: int, seed: int = 0) -> list[int]:
    r = random.Random(seed)
    return [r.randrange(NB_CODE) for _ in range(n)]
