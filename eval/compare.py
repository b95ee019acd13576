"""One table from several LLM evaluations: a row per run and round (e.g. the demo's stages 0, 1 and 2).

    python -m eval.compare runs/demo/eval_llm/stage0_t2m runs/demo/eval_llm/stage1_refinement \\
        runs/demo/eval_llm/stage2_cot --labels "stage 0" "stage 1" "stage 2" --out runs/demo/eval_llm/table.md

Each argument is an ``eval.evaluate_llm`` run folder (or its ``eval_<split>.json``). The ``Real motion``
row comes from the first run; every other row is ``<label>: <row name>``. Runs evaluated on another
split, dataset, seed or number of replications than the first are refused (their numbers are not
comparable), naming both values. Printed to stdout and, with ``--out``, written to that file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from data.run_folder import atomic_write_text
from eval.harness import METRIC_KEYS, REAL_MOTION

_COLUMNS = {"top1": "Top-1", "top2": "Top-2", "top3": "Top-3", "fid": "FID", "mm_dist": "MM-Dist",
            "diversity": "Diversity", "mmodality": "MModality"}  # fmt: skip
_SAME = ("split", "dataset", "seed", "replications", "samples_per_replication")


def load_eval(path: str | Path) -> dict[str, Any]:
    """The JSON of an evaluation run folder (``eval_*.json``) or the file itself."""
    p = Path(path)
    if p.is_dir():
        found = sorted(p.glob("eval_*.json"))
        if len(found) != 1:
            raise FileNotFoundError(f"{p}: expected one eval_<split>.json, found {[f.name for f in found]}")
        p = found[0]
    return json.loads(p.read_text())


def comparison_table(runs: list[dict[str, Any]], labels: list[str]) -> str:
    """Markdown table: ``Real motion`` once, then each run's rows prefixed with its label."""
    if len(runs) != len(labels) or not runs:
        raise ValueError(f"{len(runs)} runs for {len(labels)} labels")
    first = runs[0]
    for run, label in zip(runs[1:], labels[1:], strict=True):
        for key in _SAME:
            if run.get(key) != first.get(key):
                raise ValueError(f"{label}: {key}={run.get(key)!r} but {labels[0]} has {first.get(key)!r}; "
                                 "evaluate every run with the same protocol")  # fmt: skip
    keys = [k for k in METRIC_KEYS if any(k in m["summary"] for r in runs for m in r["methods"].values())]
    lines = ["| Model | Row | " + " | ".join(_COLUMNS[k] for k in keys) + " | Failed |",
             "|" + "---|" * (len(keys) + 3)]  # fmt: skip

    def row(label: str, name: str, m: dict[str, Any]) -> str:
        s = m["summary"]
        cells = [f"{s[k]['mean']:.3f} ± {s[k]['ci95']:.3f}" if k in s else "-" for k in keys]
        failed = "-" if name == REAL_MOTION else f"{m['failed_generations']}/{m['generations']}"
        return f"| {label} | {name} | " + " | ".join(cells) + f" | {failed} |"

    lines.append(row("data", REAL_MOTION, first["methods"][REAL_MOTION]))
    for run, label in zip(runs, labels, strict=True):
        for name, m in run["methods"].items():
            if name != REAL_MOTION:
                lines.append(row(label, name, m))
    lines.append("")
    lines.append(f"{first['replications']} replications of {first['samples_per_replication']} samples, split "
                 f"`{first['split']}`, seed {first['seed']}; ± is the 95% CI.")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(prog="python -m eval.compare", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="eval.evaluate_llm run folders (or their eval_<split>.json)")
    p.add_argument("--labels", nargs="+", help="one label per run (default: the folder names)")
    p.add_argument("--out", type=Path, help="also write the table to this Markdown file")
    args = p.parse_args(argv)
    labels = args.labels or [Path(r).name for r in args.runs]
    table = comparison_table([load_eval(r) for r in args.runs], labels)
    print(table)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, table)
    return table


if __name__ == "__main__":
    main()
