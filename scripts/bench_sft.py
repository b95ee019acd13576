"""SFT training throughput on CPU and model FLOPs utilisation against this machine's matmul peak.

Measures in one run, interleaved round by round so that load from other processes hits both alike:
(a) the float32 matmul peak (best GFLOP/s of ``torch.mm`` on square 1024 and 2048 matrices) and
(b) training steps (forward, backward, AdamW step) of the tiny config's Gemma2
(``configs/tiny/llm.yaml``: 4 layers, width 256) and of the same model at two larger widths, on
batches of ``--batch`` sequences of ``--seq`` tokens with the motion vocabulary (2048 text + 514
motion tokens). FLOPs per trained token are counted from the architecture (the PaLM-appendix
count, as MFU is usually quoted): ``6 x`` the matmul parameters (attention and MLP projections and
the LM head; not the embedding lookup or the norms) ``+ 12 x layers x seq x (heads x head_dim)``
for the attention scores and values. MFU = achieved FLOP/s / matmul peak.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_sft.py --threads 1
    .venv/bin/python scripts/bench_sft.py --threads 2 --widths 256 512 1024 --rounds 3

``--gemma`` also prints the Gemma2-2b figures of the README (parameters, ZeRO-2 memory per GPU
and the expected step time per SFT stage at a given GPU peak and MFU).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
from transformers import Gemma2Config, Gemma2ForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.config import load_config  # noqa: E402
from models.tiny_llm import TinyLLMConfig  # noqa: E402

MOTION_TOKENS = 514


def matmul_peak(sizes=(1024, 2048), repeats: int = 3) -> float:
    """Best float32 ``torch.mm`` GFLOP/s over the sizes."""
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.mm(a, b)
            best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


def matmul_params(cfg) -> int:
    """Parameters that take part in matmuls: q, k, v, o, gate, up, down per layer, plus the LM head."""
    d, f = cfg.hidden_size, cfg.intermediate_size
    q = cfg.num_attention_heads * cfg.head_dim
    kv = cfg.num_key_value_heads * cfg.head_dim
    per_layer = d * q + 2 * d * kv + q * d + 3 * d * f
    return cfg.num_hidden_layers * per_layer + cfg.vocab_size * d


def train_flops_per_token(cfg, seq: int) -> float:
    return (
        6.0 * matmul_params(cfg) + 12.0 * cfg.num_hidden_layers * seq * cfg.num_attention_heads * cfg.head_dim
    )


def make_model(tiny: TinyLLMConfig, width: int, vocab: int):
    heads = max(1, width // tiny.head_dim)
    kv = max(1, heads // 2)
    cfg = tiny.gemma2_config(vocab)
    cfg.hidden_size, cfg.intermediate_size = width, 4 * width
    cfg.num_attention_heads, cfg.num_key_value_heads = heads, kv
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    return Gemma2ForCausalLM(cfg).train(), cfg


def bench_width(tiny: TinyLLMConfig, width: int, batch: int, seq: int, steps: int) -> dict:
    vocab = tiny.vocab_size + MOTION_TOKENS
    model, cfg = make_model(tiny, width, vocab)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(3, vocab, (batch, seq))
    best = float("inf")
    for i in range(steps + 1):
        t0 = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i:  # the first step warms up allocations
            best = min(best, time.perf_counter() - t0)
    tokens = batch * seq
    return {
        "width": width,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "tokens_per_s": tokens / best,
        "gflops": train_flops_per_token(cfg, seq) * tokens / best / 1e9,
    }


# --------------------------------------------------------------------------------------------------
# Gemma2-2b on 8 GPUs with ZeRO-2 (README figures)

STAGES = {
    # stage: (global batch, mean tokens per example, per-GPU micro batch, padded length per micro batch)
    0: (32, 85, 4, 128),
    1: (32, 100, 4, 192),
    2: (8, 620, 1, 620),
}
"""Batch per stage from the configs; mean tokens per example measured on a SynthML run (tokens seen / examples), rounded."""


def gemma_report(gpus: int, peak_tflops: float, mfu: float, bus_gbps: float) -> None:
    cfg = Gemma2Config(vocab_size=256000 + MOTION_TOKENS)
    d, layers, vocab = cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size
    q, kv, f = (
        cfg.num_attention_heads * cfg.head_dim,
        cfg.num_key_value_heads * cfg.head_dim,
        cfg.intermediate_size,
    )
    per_layer = d * q + 2 * d * kv + q * d + 3 * d * f + 4 * d
    psi = layers * per_layer + vocab * d + d  # tied embedding counted once, final norm
    gb = 1e9
    print(f"Gemma2-2b with the motion vocabulary ({vocab} tokens): {psi / 1e9:.3f}B parameters "
          f"({vocab * d / 1e9:.3f}B in the tied embedding)")  # fmt: skip
    ddp = 16 * psi
    zero2 = 2 * psi + (2 * psi + 12 * psi) / gpus
    print(f"model states per GPU: DDP (fp32 weights+grads, Adam m, v) 16 Psi = {ddp / gb:.1f} GB; "
          f"ZeRO-2 bf16 (2 Psi + (2 Psi + 12 Psi) / {gpus}) = {zero2 / gb:.1f} GB")  # fmt: skip
    for stage, (global_batch, mean_len, micro, padded) in STAGES.items():
        tokens = global_batch * mean_len
        flops = (6.0 * matmul_params(cfg) + 12.0 * layers * mean_len * q) * tokens
        step = flops / (gpus * peak_tflops * 1e12 * mfu)
        # ZeRO-2 per step: reduce-scatter of the bf16 gradients and all-gather of the updated bf16
        # weights, each moving (N-1)/N x 2 Psi bytes per GPU over the bus (not overlapped: upper bound).
        comm = 2 * (gpus - 1) / gpus * 2 * psi / (bus_gbps * 1e9)
        # Activations kept for backward (bf16, no recomputation), Korthikanti et al. per layer:
        # s b h (34 + 5 a s / h) bytes, plus fp32 logits and their gradient s b V x 8 bytes.
        act = (
            layers * padded * micro * d * (34 + 5 * cfg.num_attention_heads * padded / d)
            + padded * micro * vocab * 8
        )
        print(f"stage {stage}: {tokens} tokens/step ({global_batch} x ~{mean_len}), {flops / 1e15:.2f} PFLOP/step, "
              f"compute {step * 1e3:.0f} ms at {mfu:.0%} of {peak_tflops:.0f} TFLOP/s x {gpus} + ZeRO-2 traffic "
              f"{comm * 1e3:.0f} ms at {bus_gbps:.0f} GB/s = step <= {(step + comm) * 1e3:.0f} ms; "
              f"activations ~{act / gb:.1f} GB per GPU (micro batch {micro} x {padded}), "
              f"total ~{(zero2 + act) / gb:.0f} GB per GPU")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/tiny/llm.yaml")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--widths", type=int, nargs="+", default=[256, 512, 1024])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--gemma", action="store_true", help="print the Gemma2-2b figures too")
    p.add_argument("--gpus", type=int, default=8)
    p.add_argument("--gpu-peak-tflops", type=float, default=989.0, help="bf16 dense peak per GPU (H100 SXM)")
    p.add_argument("--bus-gbps", type=float, default=300.0, help="all-reduce bus bandwidth per GPU (NVLink)")
    p.add_argument("--mfu", type=float, default=0.0, help="MFU for the step times (0 = the widest width's)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    tiny = load_config(TinyLLMConfig, args.config)
    print(
        f"threads {args.threads}, batch {args.batch} x {args.seq} tokens, vocab {tiny.vocab_size}+{MOTION_TOKENS}"
    )
    best: dict[int, dict] = {}
    peak = 0.0
    for r in range(args.rounds):
        peak = max(peak, matmul_peak())
        for w in args.widths:
            res = bench_width(tiny, w, args.batch, args.seq, args.steps)
            if w not in best or res["tokens_per_s"] > best[w]["tokens_per_s"]:
                best[w] = res
        print(f"round {r + 1}/{args.rounds} done (matmul peak so far {peak:.1f} GFLOP/s)", flush=True)
    print(f"float32 matmul peak: {peak:.1f} GFLOP/s")
    print("| width | params | tokens/s | GFLOP/s | MFU |")
    print("|---|---|---|---|---|")
    for w in args.widths:
        b = best[w]
        print(
            f"| {w} | {b['params_m']:.1f}M | {b['tokens_per_s']:.0f} | {b['gflops']:.1f} | {b['gflops'] / peak:.0%} |"
        )
    for w in args.widths:
        print(f"RATIO sft_mfu_width{w} {best[w]['gflops'] / peak:.3f}")
    if args.gemma:
        mfu = args.mfu or best[args.widths[-1]]["gflops"] / peak
        gemma_report(args.gpus, args.gpu_peak_tflops, mfu, args.bus_gbps)
        if not math.isclose(mfu, 0.4):
            gemma_report(args.gpus, args.gpu_peak_tflops, 0.4, args.bus_gbps)


if __name__ == "__main__":
    main()
