"""Move motion LLM weights between the released ``.pth`` layouts and Hugging Face folders.

Import (a released ``.pth`` -> a motion LLM folder)::

    python -m prepare.convert_checkpoint --base DIR --checkpoint FILE --out DIR \\
        [--vq-checkpoint vqvae.pth] [--nb-code 512] [--lora-alpha A] [--dtype bfloat16]

``--base`` is the base model folder (``gemma-2-2b-it`` or any Gemma2 folder, e.g. the tiny one of
``prepare/build_tiny_llm.py``); the motion tokens are added to it, then the checkpoint is loaded:
Motion-Agent's ``motionllm.pth`` (adapter ``t2m`` merged with scaling ``alpha / r``, 1 unless
``--lora-alpha`` says otherwise; its ``K + 2`` embedding rows copied to rows ``N_text:``) or an
IRG-MotionLLM SFT / GRPO layout (spec ``sft-and-inference.md`` section 2.4). ``--vq-checkpoint``
names the VQ-VAE the codes belong to (recorded with its sha256 in ``motion_llm.json``; training
and evaluation refuse another one).

Export (a folder -> the IRG-MotionLLM SFT writer's layout)::

    python -m prepare.convert_checkpoint --to-pth --checkpoint MODEL_DIR --out DIR [--epoch E] [--dtype bfloat16]

writes ``DIR/motionllm_unified_sft_latest.pth`` (``--pth-name``), which the original scripts load
with ``--resume-llm``.

``--out`` is a run folder (``run.json``, ``config.yaml``, ``run_info.json``, ``convert_report.json``
beside the outputs). The report of loaded, missing, unexpected and ignored keys is printed; a shape
mismatch exits with status 1 and a message naming the tensor.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import asdict

from data.runtime import open_run, setup_logging
from models.llm_checkpoint import (
    CheckpointLayoutError,
    export_reference_state,
    import_reference_state,
    read_pth,
)
from models.motion_llm import (
    DEFAULT_NB_CODE,
    MotionLLMError,
    MotionLLMMeta,
    VQIdentity,
    load_motion_llm,
    pick_dtype,
    save_motion_llm_into,
)

logger = logging.getLogger("prepare.convert_checkpoint")
COMMAND = "prepare.convert_checkpoint"
PTH_NAME = "motionllm_unified_sft_latest.pth"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m prepare.convert_checkpoint",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--checkpoint", required=True, help=".pth to import, or (with --to-pth) the model folder")
    p.add_argument("--out", required=True, help="output run folder")
    p.add_argument("--base", default="", help="base model folder (import only)")
    p.add_argument("--to-pth", action="store_true", help="export a folder to the SFT writer's .pth layout")
    p.add_argument("--vq-checkpoint", default="", help="VQ-VAE checkpoint the codes belong to (import)")
    p.add_argument("--nb-code", type=int, default=DEFAULT_NB_CODE, help="codebook size K (import)")
    p.add_argument("--lora-alpha", type=float, default=None, help="LoRA alpha of the checkpoint (default: r)")
    p.add_argument("--dtype", default="bfloat16", help="dtype of the written weights (bfloat16, float32)")
    p.add_argument("--epoch", type=int, default=0, help="epoch written into the .pth (export)")
    p.add_argument("--pth-name", default=PTH_NAME, help="file name of the exported .pth")
    p.add_argument("--overwrite", action="store_true", help="accept an --out folder of other origin")
    args = p.parse_args(argv)
    if not args.to_pth and not args.base:
        p.error("--base is required to import a .pth (the model folder the weights are loaded into)")
    return args


def _import(args: argparse.Namespace, run) -> dict:
    vq = VQIdentity.of(args.vq_checkpoint) if args.vq_checkpoint else None
    state, info = read_pth(args.checkpoint)
    loaded = load_motion_llm(args.base, nb_code=args.nb_code, vq=vq, device="cpu", dtype="float32")
    if loaded.meta.vq_sha256 == "" and vq is None:
        logger.warning("no --vq-checkpoint: motion_llm.json will not name the VQ-VAE of this model")
    model, report = import_reference_state(
        loaded.model, state, loaded.vocab, lora_alpha=args.lora_alpha, info=info
    )
    meta = loaded.meta
    meta.info = {"imported_from": str(args.checkpoint), "layout": report.layout, **report.info}
    meta.info = {
        k: (v if isinstance(v, (int, float, str, dict, list)) else str(v)) for k, v in meta.info.items()
    }
    save_motion_llm_into(run, model, loaded.tokenizer, meta, dtype=pick_dtype("cpu", args.dtype))
    return asdict(report)


def _export(args: argparse.Namespace, run) -> dict:
    loaded = load_motion_llm(
        args.checkpoint, nb_code=MotionLLMMeta.load(args.checkpoint).nb_code, device="cpu"
    )
    obj = export_reference_state(loaded.model, epoch=args.epoch, dtype=pick_dtype("cpu", args.dtype))
    run.save_torch(args.pth_name, obj)
    return {"pth": args.pth_name, "tensors": len(obj["state_dict"]), "epoch": args.epoch}


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parse_args(argv)
    config = dict(vars(args))
    try:
        with open_run(
            args.out, command=COMMAND, config=config, seed=0, overwrite=args.overwrite, resume=False
        ) as run:
            result = _export(args, run) if args.to_pth else _import(args, run)
            run.write_json("convert_report.json", result)
            run.done()
    except (CheckpointLayoutError, MotionLLMError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if not args.to_pth:
        for key in ("layout", "rows"):
            print(f"{key}: {result[key]}")
        for key in ("missing", "unexpected", "ignored"):
            print(f"{key} ({len(result[key])}): {', '.join(result[key][:20])}")
        print(f"loaded {len(result['loaded'])} tensors into {args.out}")
    else:
        print(f"wrote {args.out}/{result['pth']} ({result['tensors']} tensors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
