"""Stage-3 rewards scored per second on CPU: groups of G completions scored in one batched call against
one completion at a time, in the same run.

The assets come from a GRPO config (``vq_checkpoint``, ``vq_meta_dir``, the evaluator, ``glove_dir``,
``dataset_root``, ``prompts_file``): by default the tiny demo's (``runs/demo/...``). The completions
are synthetic stage-2 chains (no LLM needed): ``--attempts`` motions of ``--min-codes`` to
``--max-codes`` random codes, the last one the answer, for the captions and ground truths of the first
``--groups`` prompt rows. A first pass fills the caption and ground-truth caches (reported as
``cold``); then, round by round (interleaved, so that load from other processes hits both alike),
``guo_tm_distance`` + ``guo_mm_distance`` score every group (a) in one call per group of G and (b) one
completion per call; ``strict_format`` is timed on the same texts.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_rewards.py --config configs/tiny/grpo.yaml
    .venv/bin/python scripts/bench_rewards.py --config configs/tiny/grpo.yaml --groups 32 --rounds 5 --out bench.json
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.config import load_config  # noqa: E402
from data.motion_tokens import render_codes  # noqa: E402
from data.prompts import PLAN_SENTENCES  # noqa: E402
from models.grpo import GRPORunConfig, load_prompt_rows  # noqa: E402
from models.motion_llm import MotionVocab  # noqa: E402
from RL.rewards import GuoMotionMotionDistance, GuoRewardBackend, GuoTextMotionDistance, strict_format  # noqa: E402

EOS = 1
TEXT_IDS = list(range(10, 30))  # stand-ins for the chain's text tokens (any ids below n_text)


def synthetic_completion(
    rng: random.Random, vocab: MotionVocab, attempts: int, lo: int, hi: int
) -> tuple[str, list[int]]:
    """A stage-2-like chain as text and as ids: ``attempts`` motions, the last one the answer."""
    p = PLAN_SENTENCES
    text = (
        f"<think>[plan]{p['prompt_analysis']}[/plan]\n[analyze]x[/analyze]\n[plan]{p['generation']}[/plan]\n"
    )
    ids = rng.choices(TEXT_IDS, k=60)
    for a in range(attempts):
        codes = [rng.randrange(vocab.nb_code) for _ in range(rng.randint(lo, hi))]
        last = a == attempts - 1
        text += (f"[generate]{render_codes(codes, vocab.nb_code)}[/generate]\n[plan]{p['assessment']}[/plan]\n"
                 f"[assess]Assessment: ok.\nRefinement: none.[/assess]\n"
                 f"[plan]{p['finish_thinking'] if last else p['refinement']}[/plan]\n")  # fmt: skip
        ids += vocab.span_ids(codes) + rng.choices(TEXT_IDS, k=40)
    return text + "</think>", ids + [EOS]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="configs/tiny/grpo.yaml", help="GRPO YAML naming the assets")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the GRPO config")
    parser.add_argument("--groups", type=int, default=16, help="groups (prompt rows) scored per round")
    parser.add_argument("--group-size", type=int, default=4, help="completions per group G")
    parser.add_argument("--attempts", type=int, default=2, help="motions per chain (the last is the answer)")
    parser.add_argument("--min-codes", type=int, default=10)
    parser.add_argument("--max-codes", type=int, default=49)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="", help="write the results as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    cfg = load_config(GRPORunConfig, args.config, args.overrides)
    vocab = MotionVocab(n_text=cfg.expected_n_text or 2048, nb_code=cfg.nb_code)
    backend = GuoRewardBackend.from_config(cfg, vocab, (EOS,), "cpu")
    tm, mm = GuoTextMotionDistance(backend), GuoMotionMotionDistance(backend)
    rows = load_prompt_rows(cfg.prompts_file, args.groups)
    rng = random.Random(args.seed)
    g = args.group_size
    groups = []
    for row in rows:
        comps = [
            synthetic_completion(rng, vocab, args.attempts, args.min_codes, args.max_codes) for _ in range(g)
        ]
        cols = {"caption_tokens": [row["caption_tokens"]] * g, "motion_id": [row["motion_id"]] * g,
                "f_tag": [row["f_tag"]] * g, "to_tag": [row["to_tag"]] * g}  # fmt: skip
        groups.append(([c[0] for c in comps], [c[1] for c in comps], cols))
    n = len(groups) * g

    def score(batched: bool) -> float:
        t0 = time.perf_counter()
        for texts, ids, cols in groups:
            spans = [slice(0, g)] if batched else [slice(i, i + 1) for i in range(g)]
            for s in spans:
                sub = {k: v[s] for k, v in cols.items()}
                tm(texts[s], completion_ids=ids[s], **sub)
                mm(texts[s], completion_ids=ids[s], **sub)
        return n / (time.perf_counter() - t0)

    cold = score(batched=True)  # fills the caption and ground-truth caches
    batched, single, fmt = [], [], []
    for _ in range(args.rounds):
        batched.append(score(batched=True))
        single.append(score(batched=False))
        t0 = time.perf_counter()
        for texts, _, _ in groups:
            strict_format(texts)
        fmt.append(n / (time.perf_counter() - t0))
    result = {
        "config": args.config,
        "completions_per_round": n,
        "group_size": g,
        "codes_per_answer": [args.min_codes, args.max_codes],
        "threads": args.threads,
        "cold_batched_per_s": cold,
        "batched_per_s_median": statistics.median(batched),
        "single_per_s_median": statistics.median(single),
        "speedup_median": statistics.median(b / s for b, s in zip(batched, single, strict=True)),
        "strict_format_per_s_median": statistics.median(fmt),
        "rounds": {"batched": batched, "single": single},
    }
    print(f"guo_tm_distance + guo_mm_distance, {n} completions per round, G={g}, {args.threads} thread(s)")
    print(f"  cold (caches empty), one call per group : {cold:8.1f} completions/s")
    print(f"  one batched call per group of {g}       : {result['batched_per_s_median']:8.1f} completions/s")
    print(f"  one completion per call                : {result['single_per_s_median']:8.1f} completions/s")
    print(f"  speed-up (median of rounds)            : {result['speedup_median']:8.2f} x")
    print(
        f"strict_format                            : {result['strict_format_per_s_median']:8.0f} completions/s"
    )
    print(f"RATIO rewards_batched_group_vs_single {result['speedup_median']:.3f}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
