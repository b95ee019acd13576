"""Read annotation files, build every example, print counts and one rendered example per file.

Usage::

    python -m data.inspect_annotations --dataset-root DIR --vq-checkpoint FILE A.json [B.json ...]
    python -m data.inspect_annotations --dataset-root DIR --codes-dir CODES A.json ...
    python -m data.inspect_annotations --dataset-root DIR --annotations-dir ENGINE_OUT

One example is built per (entry, candidate), with a seeded RNG per example. Output per file: the
entries, the examples per task, the stage-2 attempt distribution, and one rendered example.
Exit status: 0 when every file is well formed (missing motion files are reported, all of them and
counted, and do not fail the run unless ``--fail-on-missing``), 1 on a malformed file (the message
names the file, the entry id and the field), 3 with ``--fail-on-missing`` when motions are missing.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from data.annotations import (
    AnnotationError,
    AnnotationFile,
    MotionMissingError,
    MotionResolver,
    read_annotation_file,
)
from data.prompts import PromptPools, load_prompt_pools
from data.sft_examples import BuildOptions, CodeLookup, Example, build_example

logger = logging.getLogger(__name__)


@dataclass
class FileReport:
    path: Path
    entries: int = 0
    examples: Counter = field(default_factory=Counter)
    attempts: Counter = field(default_factory=Counter)
    missing: Counter = field(default_factory=Counter)
    skipped: int = 0
    sample: Example | None = None


def inspect_file(
    ann_file: AnnotationFile,
    codes: CodeLookup,
    pools: PromptPools,
    seed: int = 0,
    options: BuildOptions | None = None,
) -> FileReport:
    """Build one example per (entry, candidate); missing motions are counted, not raised."""
    report = FileReport(ann_file.path, entries=len(ann_file.annotations))
    for ann in ann_file.annotations:
        for ci in range(len(ann.all_candidates())):
            rng = random.Random(f"{seed}:{ann.index}:{ci}")
            try:
                ex = build_example(ann, codes, pools, rng, options, candidate=ci)
            except MotionMissingError as err:
                report.missing[err.motion_id] += 1
                report.skipped += 1
                continue
            report.examples[ex.task] += 1
            if "num_attempts" in ex.meta:
                report.attempts[ex.meta["num_attempts"]] += 1
            if report.sample is None:
                report.sample = ex
    return report


def find_annotation_files(folder: str | Path) -> list[Path]:
    """The annotation files under ``folder``: ``stage*.json`` and ``stage*/**.json`` (sorted).

    Other JSON files (e.g. the engine's ``engine_summary.json``) are not annotation files.
    """
    root = Path(folder)
    return sorted(
        p
        for p in root.rglob("*.json")
        if p.is_file() and any(part.startswith("stage") for part in p.relative_to(root).parts)
    )


def _make_code_source(args: argparse.Namespace, resolver: MotionResolver) -> CodeLookup:
    from data.motion_codes import CodesDirSource
    from models.vq_tokenize import VQCodeSource

    if args.codes_dir:
        return CodesDirSource(args.codes_dir, resolver)
    from data.normalization import FeatureNorm
    from data.specs import get_dataset_spec
    from models.vqvae import MotionVQVAE

    spec = get_dataset_spec(args.dataset)
    vq = MotionVQVAE.from_checkpoint(args.vq_checkpoint, nfeats=spec.feat_dim)
    # as prepare/tokenize_motions.py: the checkpoint's meta/ folder; unlike it, a missing meta
    # file falls back (logged) to the dataset's Mean/Std, since inspection is only a preview
    norm = FeatureNorm.resolve(
        spec, args.vq_mean, args.vq_std, checkpoint=args.vq_checkpoint, dataset_root=args.dataset_root
    )
    return VQCodeSource(resolver, vq, norm)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("files", nargs="*", help="annotation JSON files")
    parser.add_argument("--annotations-dir", default=None, help="also read every *.json under this folder")
    parser.add_argument("--dataset-root", required=True, help="motion root in the HumanML3D layout")
    parser.add_argument("--extra-root", action="append", default=[], help="more motion roots, searched after")
    parser.add_argument("--dataset", default="humanml3d", help="dataset spec name (humanml3d, kit)")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--vq-checkpoint", help="VQ-VAE checkpoint ({'net': state_dict})")
    src.add_argument("--codes-dir", help="folder of <id>.npy code files (prepare/tokenize_motions.py)")
    parser.add_argument(
        "--vq-mean", default="", help="VQ mean.npy (default: <ckpt dir>/meta/mean.npy, else dataset Mean.npy)"
    )
    parser.add_argument(
        "--vq-std", default="", help="VQ std.npy (default: <ckpt dir>/meta/std.npy, else dataset Std.npy)"
    )
    parser.add_argument(
        "--prompt-template", default=None, help="original prompt_template-2.json (sha256-checked)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--with-answer", action="store_true", help="stage 2: keep the <answer> block")
    parser.add_argument("--fail-on-missing", action="store_true", help="exit 3 when motion files are missing")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    files = [Path(f) for f in args.files]
    if args.annotations_dir:
        files += find_annotation_files(args.annotations_dir)
    if not files:
        parser.error("no annotation files given (pass FILE... or --annotations-dir)")
    try:
        pools = load_prompt_pools(args.prompt_template)
        resolver = MotionResolver([args.dataset_root, *args.extra_root], dataset=args.dataset)
        codes = _make_code_source(args, resolver)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    options = BuildOptions(answer_block=args.with_answer)
    all_missing: Counter = Counter()
    t0 = time.perf_counter()
    for path in files:
        try:
            report = inspect_file(read_annotation_file(path), codes, pools, args.seed, options)
        except AnnotationError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        all_missing.update(report.missing)
        print(f"== {path}")
        print(f"   entries: {report.entries}   examples: {sum(report.examples.values())}   "
              f"skipped (missing motion): {report.skipped}")  # fmt: skip
        for task, n in sorted(report.examples.items()):
            print(f"   task {task}: {n} examples")
        if report.attempts:
            dist = ", ".join(f"{k}: {report.attempts[k]}" for k in sorted(report.attempts))
            print(f"   failed attempts per dialogue: {dist}")
        if report.sample is not None:
            print("   --- example (" + report.sample.task + ") ---")
            print(report.sample.text)
            n_train = sum(len(s.text) for s in report.sample.segments if s.trainable)
            print(f"   --- {len(report.sample.segments)} segments, {n_train} trainable characters ---")
    print(f"built in {time.perf_counter() - t0:.1f}s")
    if all_missing:
        ids = sorted(all_missing)
        print(f"MISSING motion files: {len(ids)} distinct ids, {sum(all_missing.values())} references:")
        print("   " + " ".join(ids))
        if args.fail_on_missing:
            return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
