"""Tiny on-disk assets for the stage-3 GRPO tests: a motion LLM folder with a small codebook, a random
small VQ-VAE and Guo evaluator with their meta, and stage-3 prompt rows over the conftest dataset.

Everything is built in code (seconds, CPU). The motion LLM uses ``tests/llm_fixtures.py``'s BPE
tokenizer and model sizes; its codebook has ``NB_CODE`` = 16 entries so that the motion tokens are a
small share of the vocabulary (the toy reward's baseline is about 18 / 418).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from data.prompts import PLAN_SENTENCES, build_cot_prompt
from data.specs import get_dataset_spec
from models.evaluator import EvaluatorDims, build_networks, save_guo_checkpoint
from models.motion_llm import VQIdentity, load_motion_llm, save_motion_llm
from models.vqvae import MotionVQVAE, VQVAEConfig
from tests.llm_fixtures import small_model, small_tokenizer

SPEC = get_dataset_spec("humanml3d")
NB_CODE = 16

PROMPT_ROWS = [
    # (motion_id, caption, tokens, f_tag, to_tag): clips of tests/conftest.py TINY_CLIPS
    ("000000", "a person walks forward.", ["a/DET", "person/NOUN", "walk/VERB", "forward/ADV"], 0.0, 0.0),
    ("000001", "a man jumps.", ["a/DET", "man/NOUN", "jump/VERB"], 0.5, 3.0),
    ("000007", "a person dances.", ["a/DET", "person/NOUN", "dance/VERB"], 0.0, 0.0),
    (
        "000004",
        "a person kicks a ball.",
        ["a/DET", "person/NOUN", "kick/VERB", "a/DET", "ball/NOUN"],
        0.0,
        0.0,
    ),
]


def write_vq(folder: Path, seed: int = 0) -> Path:
    """A random VQ-VAE with ``NB_CODE`` codes (``{'net': ...}``) and ``meta/{mean,std}.npy``; returns the .pth."""
    torch.manual_seed(seed)
    cfg = VQVAEConfig(nb_code=NB_CODE, code_dim=16, output_emb_width=16, width=16, depth=1)
    vq = MotionVQVAE(SPEC.feat_dim, cfg).eval()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "net_last.pth"
    torch.save({"net": vq.state_dict()}, path)
    rng = np.random.default_rng(seed)
    (folder / "meta").mkdir(exist_ok=True)
    np.save(folder / "meta" / "mean.npy", rng.normal(scale=0.1, size=SPEC.feat_dim).astype(np.float32))
    np.save(folder / "meta" / "std.npy", rng.uniform(0.8, 1.2, SPEC.feat_dim).astype(np.float32))
    return path


def write_evaluator(folder: Path, seed: int = 0) -> Path:
    """A random small Guo evaluator ``finest.tar`` with ``meta/{mean,std}.npy`` (no provenance record)."""
    torch.manual_seed(seed)
    dims = EvaluatorDims(
        dim_text_hidden=16, dim_motion_hidden=16, dim_movement_enc_hidden=16, dim_movement_latent=16
    )
    save_guo_checkpoint(folder / "finest.tar", *build_networks(dims))
    rng = np.random.default_rng(seed + 1)
    (folder / "meta").mkdir(parents=True, exist_ok=True)
    np.save(folder / "meta" / "mean.npy", rng.normal(scale=0.1, size=SPEC.feat_dim).astype(np.float32))
    np.save(folder / "meta" / "std.npy", rng.uniform(0.8, 1.2, SPEC.feat_dim).astype(np.float32))
    return folder / "finest.tar"


def write_motion_llm(folder: Path, vq_path: Path, seed: int = 0) -> Path:
    """A motion LLM folder (``motion_llm.json``) over the small BPE tokenizer with ``NB_CODE`` codes."""
    base = folder.parent / f"{folder.name}_base"
    tok = small_tokenizer()
    model = small_model(len(tok), seed=seed)
    model.generation_config.eos_token_id = [1, 5]  # like gemma's [<eos>, <end_of_turn>]
    model.save_pretrained(base)
    tok.save_pretrained(base)
    loaded = load_motion_llm(base, nb_code=NB_CODE, vq=VQIdentity.of(vq_path))
    save_motion_llm(loaded.model, loaded.tokenizer, loaded.meta, folder)
    return folder


def write_prompts(path: Path, repeat: int = 1) -> Path:
    """Stage-3 prompt rows (the engine's columns) over ``PROMPT_ROWS``, each repeated ``repeat`` times."""
    lines = []
    for mid, caption, tokens, f, t in PROMPT_ROWS * repeat:
        row = {"prompt": build_cot_prompt(caption), "caption": caption, "caption_tokens": tokens,
               "motion_id": mid, "f_tag": f, "to_tag": t, "dataset": "humanml3d"}  # fmt: skip
        lines.append(json.dumps(row))
    path.write_text("\n".join(lines) + "\n")
    return path


def stage2_trace(codes_per_round: list[list[int]], assessments: list[str] | None = None) -> str:
    """A completion in the stage-2 grammar (grpo.md 1.4), wo-answer: the chain inside ``<think>``."""
    p = PLAN_SENTENCES
    parts = ["<think>", f"[plan]{p['prompt_analysis']}[/plan]\n", "[analyze]The goal is a walk.[/analyze]\n",
             f"[plan]{p['generation']}[/plan]\n"]  # fmt: skip
    for r, codes in enumerate(codes_per_round):
        motion = "<Motion>" + "".join(f"<Motion_{c}>" for c in codes) + "</Motion>"
        last = r == len(codes_per_round) - 1
        refine = "No refinements needed." if last else "Walk faster."
        note = (assessments or ["Assessment: close."] * len(codes_per_round))[r]
        parts += [f"[generate]{motion}[/generate]\n", f"[plan]{p['assessment']}[/plan]\n",
                  f"[assess]{note}\nRefinement: {refine}[/assess]\n",
                  f"[plan]{p['finish_thinking'] if last else p['refinement']}[/plan]\n"]  # fmt: skip
    parts.append("</think>")
    return "".join(parts)
