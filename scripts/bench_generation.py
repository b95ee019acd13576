"""Benchmark: the stage-1 refinement loop through ``models.generation`` vs ``model.generate``.

Workload: the ``direct_generation-instructed_refinement`` protocol (spec section 8.5) for 32
captions, round 0 plus three refinement rounds (one instruction call and one refinement call per
round), on a tiny random-weight Gemma-2 (float32, CPU; by default the demo's quick profile: width
128, MLP 512, 4 layers, no attention soft-capping, so the ``model.generate`` sides run the fused
SDPA attention the project picks; ``hidden=256`` is the full profile) with a word-level tokenizer
that holds the 514 motion tokens as added tokens. Three implementations of the same loop:

- ``ours``: ``models.generation.refinement_loop`` (one batched KV-cache generator, by default on
  the ``gemma2`` backend, ``models.gemma2_decode``; finished rows leave the batch; only samples
  still refining are generated; each call reuses the cached prefix it shares with the sample's
  previous prompt, and the first call encodes the prompts' shared beginning once);
- ``hf_batched`` (b): the published loop: every call is ``model.generate`` on left-padded batches
  of ``ref_batch_size`` (default 32 like ours; the README's stage-1 command uses 8, and with
  ``ref_scores=true`` the motion calls keep their per-step scores as the published P1 parser
  does), re-encoding each prompt, and every round generates all samples (stopped ones are
  discarded afterwards);
- ``hf_single`` (a): the same loop with ``model.generate`` on one prompt at a time.

Random weights never emit stop tokens, so a logits processor, identical on every side, scripts
what the model may emit: motion calls emit L codes (the model picks which) then ``</Motion><eos>``;
instruction calls emit W words separated by spaces (the model picks) then ``.<eos>``, or
``"No refinements needed."``. Two workloads:

- ``fixed``: L = 49 codes (196 frames), W = 12 words, nobody stops: every call of every side
  does the same number of forward passes;
- ``ragged``: L in 8..49 and W in 4..19 drawn from a hash of each prompt, and about a quarter of the
  instructions are ``"No refinements needed."`` (the loop's stop), as in real evaluations.

Every side is greedy and its outputs (the motions of every round and the stop rounds) must equal
(b)'s; the script exits 1 if they do not. Each (side, workload) runs in its own process, which
reports wall and CPU seconds and its peak resident memory above the post-set-up level, per
sample; the table gives the speed-ups of every side over (a) and (b) in wall and CPU time. The
machine may be shared: run with one thread and with two, and read CPU time too.

The tiny model and tokenizer are built here; ``tests/tiny_lm.py`` builds the same for the tests
(entry points do not import tests).

Run from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python -m scripts.bench_generation threads=1
    OMP_NUM_THREADS=1 .venv/bin/python -m scripts.bench_generation hidden=256   # the full profile
    OMP_NUM_THREADS=1 .venv/bin/python -m scripts.bench_generation backend=hf   # ours without gemma2
    OMP_NUM_THREADS=2 .venv/bin/python -m scripts.bench_generation threads=2 out=bench.json
    OMP_NUM_THREADS=1 .venv/bin/python -m scripts.bench_generation sides=ours,hf_batched ref_batch_size=8 ref_scores=true
"""

from __future__ import annotations

import json
import logging
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import Gemma2Config, Gemma2ForCausalLM, LogitsProcessor, PreTrainedTokenizerFast

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # also runs as ``python scripts/bench_generation.py``

from data.config import parse_cli  # noqa: E402
from data.motion_tokens import (  # noqa: E402
    MOTION_END,
    MOTION_START,
    motion_token_strings,
    parse_task_completion,
    render_codes,
)
from data.prompts import GC, GEN, NO_REFINEMENT, PLAN_SENTENCES, RI, TEST_TEMPLATES, build_inference_prompt  # noqa: E402
from models.generation import BatchedGenerator, DecodeConfig, refinement_loop  # noqa: E402
from models.motion_llm import pick_attention  # noqa: E402

SIDES = ("ours", "hf_batched", "hf_single")
WORKLOADS = ("fixed", "ragged")
STOP_IDS = (1, 4)  # <eos>, <end_of_turn> of the tiny tokenizer
CAPTION_WORDS = (
    "a person walks forward then turns left and waves his right hand slowly the man jumps up "
    "down runs in circle sits on chair kicks with foot raises arms arm leg steps back quickly"
).split()


@dataclass
class BenchConfig:
    """Workload size, model size and thread count."""

    prompts: int = 32
    """Captions (samples) in the workload."""
    rounds: int = 3
    """Refinement rounds after round 0."""
    batch_size: int = 32
    """Rows per batch for ``ours``."""
    ref_batch_size: int = 32
    """Rows per ``model.generate`` call for ``hf_batched`` (the README's stage-1 command uses 8)."""
    ref_scores: bool = False
    """``hf_batched``/``hf_single`` keep the per-step scores of the motion calls, as the published
    P1 parser needs (``output_scores=True``); tiny here (1,194 columns), 1 GB/sample at 256k."""
    hidden: int = 128
    """Model width (the demo's quick profile, configs/tiny/llm.yaml; ``hidden=256`` is its full
    profile). Heads: 4 query, 2 key/value, ``head_dim = hidden / 4``."""
    intermediate: int = 0
    """MLP width; 0: ``4 * hidden`` as both demo profiles (512 / 1024)."""
    attn_softcap: float | None = None
    """Attention logit soft-capping (the tiny demo models: off; gemma-2-2b: 50.0)."""
    attn: str = "auto"
    """``attn_implementation`` of the ``model.generate`` sides: ``auto`` is what the project picks
    (``models.motion_llm.pick_attention``: fused SDPA without soft-capping, else eager)."""
    backend: str = "auto"
    """``BatchedGenerator`` backend of ``ours`` (auto, hf, gemma2)."""
    layers: int = 4
    """Decoder layers (alternating sliding-window and full attention)."""
    n_text: int = 680
    """Text vocabulary; 514 motion tokens come on top."""
    threads: int = 1
    """torch intra-op threads (also exported as OMP_NUM_THREADS to the child processes)."""
    sides: str = ",".join(SIDES)
    """Comma-separated sides to run."""
    workloads: str = ",".join(WORKLOADS)
    """Comma-separated workloads to run."""
    seed: int = 0
    """Model weights seed."""
    out: str = ""
    """Optional JSON file for all numbers."""
    child: str = ""
    """Internal: ``side/workload/result.json`` runs one side in this process."""


# ------------------------------------------------------------------------------------------------
# Tiny model and tokenizer


def build_tokenizer(n_text: int) -> PreTrainedTokenizerFast:
    """Word-level tokenizer: specials, template and caption words, fillers, then motion tokens."""
    words = ["<pad>", "<eos>", "<bos>", "<unk>", "<end_of_turn>"]
    texts = [s for pair in TEST_TEMPLATES.values() for s in pair]
    texts += [*PLAN_SENTENCES.values(), NO_REFINEMENT, " ".join(CAPTION_WORDS)]
    for text in texts:
        words += [w for w in re.findall(r"\w+|[^\w]", text) if w not in words]
    words += [f"w{i}" for i in range(n_text - len(words))]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"\w+|[^\w]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>"
    )
    fast.padding_side = "left"
    fast.add_special_tokens({"additional_special_tokens": ["<end_of_turn>"]})
    fast.add_tokens(motion_token_strings())
    return fast


def build_model(vocab: int, cfg: BenchConfig) -> Gemma2ForCausalLM:
    """Random-weight tiny Gemma-2 (float32, eval mode) with the attention the project would pick."""
    heads = 4
    attn = pick_attention("cpu", cfg.attn, SimpleNamespace(attn_logit_softcapping=cfg.attn_softcap))
    config = Gemma2Config(
        vocab_size=vocab,
        hidden_size=cfg.hidden,
        intermediate_size=cfg.intermediate or 4 * cfg.hidden,
        num_hidden_layers=cfg.layers,
        num_attention_heads=heads,
        num_key_value_heads=heads // 2,
        head_dim=cfg.hidden // heads,
        query_pre_attn_scalar=cfg.hidden // heads,
        pad_token_id=0,
        eos_token_id=list(STOP_IDS),
        bos_token_id=2,
        attn_logit_softcapping=cfg.attn_softcap,
        attn_implementation=attn,
        tie_word_embeddings=False,
    )
    torch.manual_seed(cfg.seed)
    model = Gemma2ForCausalLM(config)
    with torch.no_grad():  # clear argmaxes (the default init gives near-flat logits)
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.5 / p.shape[-1] ** 0.5)
    return model.eval()


# ------------------------------------------------------------------------------------------------
# The scripted output shapes (identical on every side)


class Script:
    """Per prompt, the plan of what each completion position may hold.

    A plan entry is ``"code"`` (any motion code, the model picks), ``"word"`` (any caption word),
    or a token id that is forced. Past the plan, ``<eos>`` is forced.
    """

    def __init__(self, tok: PreTrainedTokenizerFast, workload: str) -> None:
        self.workload = workload
        vocab = len(tok)
        self.start = tok.convert_tokens_to_ids(MOTION_START)
        self.end = tok.convert_tokens_to_ids(MOTION_END)
        self.eos = tok.convert_tokens_to_ids("<eos>")
        self.space, self.dot = tok.convert_tokens_to_ids(" "), tok.convert_tokens_to_ids(".")
        self.stop_sentence = tok(NO_REFINEMENT)["input_ids"][1:]
        neg = torch.full((vocab,), float("-inf"))
        self.code_mask = neg.clone()
        self.code_mask[self.end + 1 : self.end + 1 + 512] = 0.0
        self.word_mask = neg.clone()
        self.word_mask[tok.convert_tokens_to_ids(sorted(set(CAPTION_WORDS)))] = 0.0
        self.forced = {}
        self.plans: dict[tuple[int, ...], list[str | int]] = {}
        self.keys: dict[int, tuple[object, tuple[int, ...]]] = {}

    def plan(self, prompt: tuple[int, ...]) -> list[str | int]:
        if prompt not in self.plans:
            h = sum((i + 1) * t for i, t in enumerate(prompt)) % 10007
            fixed = self.workload == "fixed"
            if prompt[-1] == self.start:
                n = 49 if fixed else 8 + h % 42
                self.plans[prompt] = ["code"] * n + [self.end]
            elif not fixed and h % 4 == 0:
                self.plans[prompt] = list(self.stop_sentence)
            else:
                n = 12 if fixed else 4 + h % 16
                self.plans[prompt] = ["word", self.space] * (n - 1) + ["word", self.dot]
        return self.plans[prompt]

    def row_mask(self, prompt: tuple[int, ...], step: int) -> torch.Tensor:
        plan = self.plan(prompt)
        entry = plan[step] if step < len(plan) else self.eos
        if entry == "code":
            return self.code_mask
        if entry == "word":
            return self.word_mask
        if entry not in self.forced:
            m = torch.full_like(self.code_mask, float("-inf"))
            m[entry] = 0.0
            self.forced[entry] = m
        return self.forced[entry]

    def __call__(self, prompts, completions, logits: torch.Tensor) -> torch.Tensor:
        """``models.generation.LogitsHook`` interface (called with the same prompt lists each step)."""
        masks = [self.row_mask(self.key(p), len(c)) for p, c in zip(prompts, completions, strict=True)]
        return logits + torch.stack(masks)

    def key(self, prompt) -> tuple[int, ...]:
        """``tuple(prompt)``, remembered per prompt object (kept alive here, so ids stay unique)."""
        hit = self.keys.get(id(prompt))
        if hit is None or hit[0] is not prompt:
            hit = self.keys[id(prompt)] = (prompt, tuple(prompt))
        return hit[1]


class ScriptProcessor(LogitsProcessor):
    """The same script as a ``transformers`` logits processor for one left-padded batch."""

    def __init__(self, script: Script, input_ids: torch.Tensor, pad_id: int) -> None:
        self.script = script
        self.width = input_ids.shape[1]
        self.prompts = [tuple(t for t in row.tolist() if t != pad_id) for row in input_ids]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = input_ids.shape[1] - self.width
        return scores + torch.stack([self.script.row_mask(p, step) for p in self.prompts])


# ------------------------------------------------------------------------------------------------
# The published loop with model.generate (sides a and b)


def hf_generate(
    model, tok, prompts: list[str], script: Script, batch_size: int, max_new: int, scores: bool = False
) -> list[list[int]]:
    """Completion ids per prompt, cut after the first stop id (``model.generate`` pads after it)."""
    out: list[list[int]] = []
    for start in range(0, len(prompts), batch_size):
        enc = tok(prompts[start : start + batch_size], return_tensors="pt", padding=True)
        with torch.inference_mode():
            ids = model.generate(
                **enc,
                max_new_tokens=max_new,
                do_sample=False,
                eos_token_id=list(STOP_IDS),
                pad_token_id=0,
                logits_processor=[ScriptProcessor(script, enc["input_ids"], pad_id=0)],
                output_scores=scores,
                return_dict_in_generate=scores,
            )
        if scores:
            ids = ids.sequences
        for row in ids[:, enc["input_ids"].shape[1] :].tolist():
            cut = next((i for i, t in enumerate(row) if t in STOP_IDS), len(row) - 1)
            out.append(row[: cut + 1])
    return out


def published_loop(model, tok, captions, rounds, script, batch_size, max_new, scores=False):
    """Section 8.5 as the reference runs it: whole batches every call, flags select the results."""
    base = tok.convert_tokens_to_ids(MOTION_START)

    def motions(kind, values):
        prompts = [build_inference_prompt(kind, v) for v in values]
        comps = hf_generate(model, tok, prompts, script, batch_size, max_new, scores=scores)
        return [parse_task_completion(kind, c, base_id=base, stop_ids=STOP_IDS).codes or [0] for c in comps]

    from_text = [{GC: c} for c in captions]
    history = [[m] for m in motions("t2m", from_text)]
    refining, stopped_at = [True] * len(captions), [None] * len(captions)
    for rnd in range(1, rounds + 1):
        values = [{GEN: render_codes(h[-1]), GC: c} for h, c in zip(history, captions, strict=True)]
        prompts = [build_inference_prompt("refine_instruction", v) for v in values]
        instr = [
            tok.decode([t for t in c if t not in STOP_IDS], skip_special_tokens=True)
            for c in hf_generate(model, tok, prompts, script, batch_size, max_new)
        ]
        for i, text in enumerate(instr):
            if refining[i] and text == NO_REFINEMENT:
                refining[i], stopped_at[i] = False, rnd
        if not any(refining):
            break
        new = motions(
            "instructed_motion_refinement", [{**v, RI: t} for v, t in zip(values, instr, strict=True)]
        )
        for i, m in enumerate(new):
            if refining[i]:
                history[i].append(m)
    return [{"motions": h, "stopped_at": s} for h, s in zip(history, stopped_at, strict=True)]


# ------------------------------------------------------------------------------------------------
# One side in one process


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_side(cfg: BenchConfig, side: str, workload: str) -> dict:
    torch.set_num_threads(cfg.threads)
    tok = build_tokenizer(cfg.n_text)
    model = build_model(len(tok), cfg)
    captions = [
        " ".join(CAPTION_WORDS[(7 * i + j) % len(CAPTION_WORDS)] for j in range(3 + i % 6)) + "."
        for i in range(cfg.prompts)
    ]
    script = Script(tok, workload)
    max_new = 64
    # warm-up outside the timing (first-call allocations, lazy imports), the same for every side:
    # the side's own code path on one short prompt
    if side == "ours":
        refinement_loop(
            BatchedGenerator(model, backend=cfg.backend),
            tok,
            ["a person walks."],
            max_rounds=1,
            decode=DecodeConfig(max_new_tokens=4, stop_ids=STOP_IDS),
            batch_size=1,
            logits_hook=Script(tok, workload),
        )
    else:
        hf_generate(model, tok, ["a person walks."], script, 1, 4)
    baseline = rss_mb()
    wall, cpu = time.perf_counter(), time.process_time()
    backend = None
    if side == "ours":
        generator = BatchedGenerator(model, backend=cfg.backend)
        res = refinement_loop(
            generator,
            tok,
            captions,
            max_rounds=cfg.rounds,
            decode=DecodeConfig(max_new_tokens=max_new, stop_ids=STOP_IDS),
            batch_size=cfg.batch_size,
            logits_hook=script,
        )
        outputs = [{"motions": r.motions, "stopped_at": r.stopped_at} for r in res]
        backend = generator.last_backend
    else:
        batch = cfg.ref_batch_size if side == "hf_batched" else 1
        outputs = published_loop(model, tok, captions, cfg.rounds, script, batch, max_new, cfg.ref_scores)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "side": side,
        "workload": workload,
        "backend": backend,
        "wall_s": wall,
        "cpu_s": cpu,
        "peak_rss_above_setup_mb_per_sample": max(0.0, peak - baseline) / cfg.prompts,
        "refinements": sum(len(o["motions"]) - 1 for o in outputs),
        "stopped": sum(o["stopped_at"] is not None for o in outputs),
        "outputs": outputs,
    }


def main() -> int:
    cfg = parse_cli(BenchConfig, description=__doc__.splitlines()[0])
    logging.basicConfig(level=logging.WARNING)
    if cfg.child:
        side, workload, path = cfg.child.split("/", 2)
        with open(path, "w") as f:
            json.dump(run_side(cfg, side, workload), f)
        return 0

    sides = [s for s in cfg.sides.split(",") if s]
    workloads = [w for w in cfg.workloads.split(",") if w]
    bad = [s for s in sides if s not in SIDES] + [w for w in workloads if w not in WORKLOADS]
    if bad:
        raise SystemExit(f"unknown side/workload {bad}; sides: {SIDES}, workloads: {WORKLOADS}")
    print(
        f"torch {torch.__version__}, python {sys.version.split()[0]}, cores {os.cpu_count()}, threads {cfg.threads}"
    )
    print(f"config: {cfg}")
    env = {**os.environ, "OMP_NUM_THREADS": str(cfg.threads), "HF_HUB_OFFLINE": "1"}
    results: list[dict] = []
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for workload in workloads:
            by_side = {}
            for side in sides:
                path = os.path.join(tmp, f"{side}-{workload}.json")
                args = [f"{k}={v}" for k, v in asdict(cfg).items() if k not in ("child", "out")]
                cmd = [
                    sys.executable,
                    "-m",
                    "scripts.bench_generation",
                    *args,
                    f"child={side}/{workload}/{path}",
                ]
                subprocess.run(cmd, check=True, env=env, cwd=ROOT)
                with open(path) as f:
                    by_side[side] = json.load(f)
            ref = by_side.get("hf_batched")
            print(f"\nworkload {workload}: {cfg.prompts} samples, round 0 + {cfg.rounds} rounds")
            print(f"{'side':<11} {'wall s':>8} {'cpu s':>8} {'x(a) wall':>9} {'x(a) cpu':>9} {'x(b) wall':>9} "
                  f"{'x(b) cpu':>9} {'MB/sample':>9} {'refined':>7} {'stopped':>7} same-as-(b)")  # fmt: skip
            a = by_side.get("hf_single")
            for side, r in by_side.items():
                same = None if ref is None else r["outputs"] == ref["outputs"]
                ok &= same is not False
                r["speedup_vs_a_wall"] = a["wall_s"] / r["wall_s"] if a else None
                r["speedup_vs_a_cpu"] = a["cpu_s"] / r["cpu_s"] if a else None
                r["speedup_vs_b_wall"] = ref["wall_s"] / r["wall_s"] if ref else None
                r["speedup_vs_b_cpu"] = ref["cpu_s"] / r["cpu_s"] if ref else None
                r["same_as_b"] = same

                def fmt(x):
                    return f"{x:9.2f}" if x is not None else f"{'-':>9}"

                print(
                    f"{side:<11} {r['wall_s']:8.2f} {r['cpu_s']:8.2f} {fmt(r['speedup_vs_a_wall'])} "
                    f"{fmt(r['speedup_vs_a_cpu'])} {fmt(r['speedup_vs_b_wall'])} {fmt(r['speedup_vs_b_cpu'])} "
                    f"{r['peak_rss_above_setup_mb_per_sample']:9.3f} {r['refinements']:7d} {r['stopped']:7d} {same}"
                )
                results.append({k: v for k, v in r.items() if k != "outputs"})
            if "ours" in by_side:
                ours = by_side["ours"]
                print(f"ours backend: {ours['backend']}")
                for key, name in (("speedup_vs_a", "hf_single"), ("speedup_vs_b", "hf_batched")):
                    if ours[f"{key}_cpu"] is not None:
                        print(f"RATIO generation_{workload}_vs_{name}_cpu {ours[f'{key}_cpu']:.3f} "
                              f"wall {ours[f'{key}_wall']:.3f}")  # fmt: skip
    if cfg.out:
        with open(cfg.out, "w") as f:
            json.dump({"config": asdict(cfg), "results": results}, f, indent=1)
    if not ok:
        print("FAIL: outputs differ from (b)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
