"""Generate motions for your own prompts with a motion LLM: direct, refinement rounds or the reasoning chain.

    python -m eval.generate --model runs/demo/sft_stage2/model "a person walks forward, then waves"
    python -m eval.generate --model runs/demo/sft_stage1/model --task direct_generation-instructed_refinement \\
        --file prompts.txt --out runs/generate/stage1
    python -m eval.generate --model DIR --task t2m --do-sample --seed 3 "someone jumps twice"

The task defaults to the model's kind: ``unified_mogen_cot_v3`` (the reasoning chain) unless
``--task`` says otherwise (``t2m``, ``t2m_motionagent``, ``analysis_guided_t2m``,
``direct_generation-instructed_refinement``, ``analysis_generation-instructed_refinement``,
``unified_mogen_cot_v3[_initial_gen|_w_max_rounds]``). The VQ-VAE and its normalisation come from
the model's ``motion_llm.json`` (``--vq-checkpoint``/``--vq-meta-dir`` override).

For each prompt the reasoning text (every generate call's completion, motion spans shortened) is
printed, and ``<out>/<k>_<words>/`` receives, per round r the model produced (the refinements it
applied, or the motions of its chain; the last one is the answer):

* ``round<r>_features.npy``: ``(T, D)`` features (de-normalised, the dataset's representation);
* ``round<r>_joints.npy``: ``(T, J, 3)`` joint positions (``recover_from_ric``);
* ``round<r>.bvh``: the joints as BVH on the dataset's skeleton, for Blender (``data.bvh_export``);
* ``rounds.gif``: every round side by side;
* ``trace.json``: prompts, completions and codes of every call.

``<out>`` is a run folder (``run.json``, ``config.yaml``); a new call replaces the earlier one's files.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from pathlib import Path

import numpy as np

from data.bvh_export import motion_to_bvh
from data.motion_repr import recover_from_ric
from data.motion_tokens import ParseStatsTable
from data.runtime import open_run, resolve_device, set_seed
from data.specs import DATASET_NAMES, get_dataset_spec
from eval.llm_runner import TaskOptions, load_runner
from eval.render import render_motions
from eval.report_html import shorten_motions
from eval.tasks import TASKS, TaskCall, get_task, run_task

logger = logging.getLogger("eval.generate")

COMMAND = "eval.generate"
GENERATION_TASKS = sorted(n for n, t in TASKS.items() if t.run is not None and not t.needs_negative)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eval.generate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)  # fmt: skip
    p.add_argument("prompts", nargs="*", help="motion descriptions (one motion each)")
    p.add_argument("--file", type=Path, help="a text file with one prompt per line (blank lines skipped)")
    p.add_argument("--model", required=True, help="motion LLM folder (with motion_llm.json)")
    p.add_argument("--task", default="unified_mogen_cot_v3", choices=GENERATION_TASKS)
    p.add_argument("--out", default="runs/generate", help="run folder for the outputs")
    p.add_argument(
        "--dataset", default="humanml3d", choices=DATASET_NAMES, help="feature layout of the VQ-VAE"
    )
    p.add_argument("--vq-checkpoint", default="", help="VQ-VAE (default: the one motion_llm.json names)")
    p.add_argument("--vq-meta-dir", default="", help="VQ normalisation (default: meta/ beside the VQ-VAE)")
    p.add_argument("--max-refine-round", type=int, default=5, help="most refinement rounds (stage-1 loop)")
    p.add_argument(
        "--chain-rounds", type=int, default=8, help="most chain motions written (the answer is kept)"
    )
    p.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument(
        "--max-new-tokens", type=int, default=0, help="cap per generate call (0 = the task's limit)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--overwrite", action="store_true", help="write into a folder another command owns")
    p.add_argument("--no-gif", action="store_true", help="skip the GIFs")
    p.add_argument("--no-bvh", action="store_true", help="skip the BVH files")
    return p


def read_prompts(args: argparse.Namespace) -> list[str]:
    prompts = list(args.prompts)
    if args.file is not None:
        if not args.file.is_file():
            raise SystemExit(f"--file {args.file}: no such file")
        prompts += [line.strip() for line in args.file.read_text().splitlines() if line.strip()]
    if not prompts:
        raise SystemExit("give at least one prompt (or --file with one prompt per line)")
    return prompts


def produced_rounds(task: str, rounds_used: int, rows: int) -> int:
    """Rows that hold motions the model produced (refinements applied / chain motions)."""
    return rows if get_task(task).kind == "single" else min(rounds_used + 1, rows)


def main(argv: list[str] | None = None) -> list[dict]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    prompts = read_prompts(args)
    seed = set_seed(args.seed)
    device = resolve_device(args.device)
    options = TaskOptions(do_sample=args.do_sample, temperature=args.temperature,
                          max_refine_round=args.max_refine_round, chain_rounds=args.chain_rounds,
                          max_new_tokens=args.max_new_tokens)  # fmt: skip
    runner = load_runner(args.model, args.dataset, device=device, options=options,
                         vq_checkpoint=args.vq_checkpoint, vq_meta_dir=args.vq_meta_dir)  # fmt: skip
    spec = get_dataset_spec(args.dataset)
    stats = ParseStatsTable()
    traces = run_task(runner, args.task, TaskCall(captions=prompts, seed=seed, sample=args.do_sample,
                                                  honour_sampling=False, stats=stats))  # fmt: skip
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    out = []
    with open_run(args.out, command=COMMAND, config=config, seed=seed, inputs={"model": Path(args.model)},
                  volatile=("out", "overwrite", "device"), overwrite=args.overwrite, resume=False) as run:  # fmt: skip
        for k, trace in enumerate(traces):
            words = "_".join(re.findall(r"[a-z0-9]+", trace.caption.lower())[:6]) or "prompt"
            folder = f"{k:03d}_{words}"
            n = produced_rounds(args.task, trace.rounds_used, len(trace.motions))
            codes = trace.motions[: n - 1] + [trace.motions[-1]] if n > 1 else [trace.motions[-1]]
            feats = [runner.vq_norm.denormalise(m) for m in runner.motions(codes)]
            print(f"\n=== [{k}] {trace.caption}")
            for step in trace.steps:
                print(f"--- round {step.round} ({step.kind}):\n{shorten_motions(step.completion)}")
            for r, f in enumerate(feats):
                joints = recover_from_ric(np.asarray(f, np.float32), spec.joints_num)
                run.save_npy(f"{folder}/round{r}_features.npy", np.asarray(f, np.float32))
                run.save_npy(f"{folder}/round{r}_joints.npy", joints)
                if not args.no_bvh:
                    run.write_text(f"{folder}/round{r}.bvh", motion_to_bvh(joints, spec).text)
            if not args.no_gif:
                gif = run.path(f"{folder}/rounds.gif")
                titles = [f"round {r}" + (" (answer)" if r == len(feats) - 1 and len(feats) > 1 else "")
                          for r in range(len(feats))]  # fmt: skip
                render_motions(feats, gif, spec=spec, titles=titles, mp4="no")
                run.record(f"{folder}/rounds.gif")
            record = {**trace.to_json(), "written_rounds": len(feats), "codes": codes}
            run.write_json(f"{folder}/trace.json", record)
            print(f"    {len(feats)} round(s) -> {run.root / folder}")
            out.append(record)
        run.write_json("parse_stats.json", stats.as_dict())
        run.done()
    logger.info("parse counters: %s", json.dumps({k: v for k, v in stats.as_dict().items() if v}))
    return out


if __name__ == "__main__":
    main()
