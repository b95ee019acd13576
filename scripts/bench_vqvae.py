"""CPU throughput of VQ-VAE encode + decode against this machine's float32 matmul peak.

Measures, in one run and interleaved round by round (so that load from other processes hits both
alike): (a) the float32 matmul peak, best GFLOP/s of ``torch.mm`` on square 1024/2048 matrices,
and (b) ``encode`` + ``decode`` of B x ``max_motion_len``-frame motions (B = 1 and 64; the spec's
length and D, ``--dataset humanml3d`` by default) with the released architecture. FLOPs are
counted from the architecture: 2 x MACs of every Conv1d (the quantiser's distance matmul is listed
separately and left out of the ratio). Best time over rounds is kept.

    OMP_NUM_THREADS=2 .venv/bin/python scripts/bench_vqvae.py
    .venv/bin/python scripts/bench_vqvae.py --threads 2 --rounds 5 --batch-sizes 1 64

Prints frames/second, GFLOP/s and the share of the matmul peak for each batch size (target: >= 60%
for batch 64). The tuned path is eval mode + ``torch.inference_mode()`` + oneDNN (mkldnn) convolutions
with threads = cores. ``--compare`` adds the same model with oneDNN disabled (PyTorch's native
dilated-conv path, ~15x slower) at batch 1 as a baseline.
On a shared machine OpenMP threads compete with other processes: run it when the machine is idle
(with 2 threads on a busy 2-core machine every barrier waits for a descheduled thread).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.specs import get_dataset_spec  # noqa: E402
from models.vqvae import MotionVQVAE, VQVAEConfig  # noqa: E402


def conv_flops_per_sample(vq: MotionVQVAE, frames: int) -> tuple[float, float]:
    """(conv FLOPs, quantiser distance FLOPs) of encode + decode of one ``frames``-frame motion."""
    total = 0.0

    def hook(mod: torch.nn.Conv1d, _inp, out: torch.Tensor) -> None:
        nonlocal total
        b, c_out, length = out.shape
        total += 2.0 * b * c_out * length * (mod.in_channels // mod.groups) * mod.kernel_size[0]

    handles = [m.register_forward_hook(hook) for m in vq.modules() if isinstance(m, torch.nn.Conv1d)]
    with torch.inference_mode():
        codes = vq.encode(torch.zeros(1, frames, vq.nfeats))
        vq.decode(codes)
    for h in handles:
        h.remove()
    n = frames // vq.frames_per_code
    return total, 2.0 * n * vq.nb_code * vq.config.code_dim


def time_best(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: cores)")
    parser.add_argument("--dataset", default="humanml3d", help="spec giving the default frames and nfeats")
    parser.add_argument(
        "--frames", type=int, default=None, help="frames per motion (default: max_motion_len)"
    )
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved measurement rounds")
    parser.add_argument("--nfeats", type=int, default=None, help="feature dim (default: the spec's D)")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--compare", action="store_true", help="also time batch 1 with oneDNN disabled")
    args = parser.parse_args()
    spec = get_dataset_spec(args.dataset)
    args.frames = args.frames or spec.max_motion_len
    args.nfeats = args.nfeats or spec.feat_dim

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="TF32 acceleration")  # printed by mkldnn.flags on CPU
    torch.manual_seed(0)
    cfg = VQVAEConfig(width=args.width, code_dim=args.width, output_emb_width=args.width)
    vq = MotionVQVAE(args.nfeats, cfg).eval()
    conv_flops, quant_flops = conv_flops_per_sample(vq, args.frames)
    print(f"threads {args.threads}, {args.frames} frames/motion, width {args.width}")
    print(
        f"conv GFLOP per motion: {conv_flops / 1e9:.3f} (quantiser distances {quant_flops / 1e9:.4f}, not counted)"
    )

    mats = {n: (torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)) for n in (1024, 2048)}
    inputs = {b: torch.randn(b, args.frames, args.nfeats) for b in args.batch_sizes}
    cases = [("tuned", b) for b in args.batch_sizes]
    if args.compare:
        inputs.setdefault(1, torch.randn(1, args.frames, args.nfeats))
        cases.append(("no-onednn", 1))
    best_mm = dict.fromkeys(mats, float("inf"))
    best_model = dict.fromkeys(cases, float("inf"))

    def run(x: torch.Tensor, mode: str) -> None:
        with torch.inference_mode(), torch.backends.mkldnn.flags(enabled=mode == "tuned"):
            vq.decode(vq.encode(x))

    for mode, b in cases:  # warm-up (oneDNN primitive creation, allocator)
        run(inputs[b], mode)
    for _ in range(args.rounds):
        for n, (a, bm, out) in mats.items():
            torch.mm(a, bm, out=out)
            best_mm[n] = min(best_mm[n], time_best(lambda a=a, bm=bm, out=out: torch.mm(a, bm, out=out), 4))
        for mode, b in cases:
            reps = 3 if b > 8 or mode != "tuned" else 10
            x = inputs[b]
            best_model[mode, b] = min(
                best_model[mode, b], time_best(lambda x=x, mode=mode: run(x, mode), reps)
            )

    peaks = {n: 2.0 * n**3 / t / 1e9 for n, t in best_mm.items()}
    peak = max(peaks.values())
    print(
        "matmul peak GFLOP/s: "
        + ", ".join(f"{n}x{n}: {p:.1f}" for n, p in peaks.items())
        + f" -> peak {peak:.1f}"
    )
    for (mode, b), t in best_model.items():
        gflops = conv_flops * b / t / 1e9
        print(
            f"[{mode:9s}] batch {b:3d}: {b * args.frames / t:9.0f} frames/s, {t * 1e3:8.1f} ms, "
            f"{gflops:6.1f} GFLOP/s = {100 * gflops / peak:5.1f}% of matmul peak"
        )
        print(f"RATIO vqvae_{mode.replace('-', '_')}_batch{b}_share_of_peak {gflops / peak:.3f}")
    if args.compare:
        print(
            f"tuned / no-onednn speed-up at batch 1: {best_model['no-onednn', 1] / best_model['tuned', 1]:.1f}x"
        )


if __name__ == "__main__":
    main()
