"""Build every training example of annotation files and summarise them.

Library of ``python -m prepare.inspect_annotations`` (the command line, the code source and the
exit status live there). One example is built per (entry, candidate) with a seeded RNG per
example; a file's summary gives its entries, the examples per task, the stage-2 attempt
distribution and one rendered example. Missing motion files are counted, not raised.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from data.annotations import AnnotationFile, MotionMissingError
from data.prompts import ORIGINAL_TEMPLATE_SHA256, PromptPools, load_prompt_pools
from data.sft_examples import BuildOptions, CodeLookup, Example, build_example

_SHA256_RE = re.compile(r"[0-9a-f]{64}")


@dataclass
class InspectConfig:
    """What ``prepare.inspect_annotations`` reads; each field is one of its flags."""

    dataset_root: str
    """Motion root in the HumanML3D layout (``--dataset-root``)."""
    files: list[str] = field(default_factory=list)
    """Annotation JSON files (positional arguments)."""
    annotations_dir: str = ""
    """Also read every annotation file under this folder (``--annotations-dir``)."""
    extra_roots: list[str] = field(default_factory=list)
    """More motion roots, searched after ``dataset_root`` (``--extra-root``, repeatable)."""
    dataset: str = "humanml3d"
    """Dataset spec name (``--dataset``)."""
    vq_checkpoint: str = ""
    """VQ-VAE checkpoint encoding the motions; exactly one of this and ``codes_dir``."""
    codes_dir: str = ""
    """Folder of ``<id>.npy`` code files written by ``prepare.tokenize_motions``."""
    vq_mean: str = ""
    """VQ mean.npy (default: ``<checkpoint dir>/meta/mean.npy``, else the dataset's Mean.npy)."""
    vq_std: str = ""
    """VQ std.npy (default: ``<checkpoint dir>/meta/std.npy``, else the dataset's Std.npy)."""
    prompt_template: str = ""
    """Original ``prompt_template-2.json``; empty = our built-in paraphrase pools."""
    prompt_template_sha256: str | None = ORIGINAL_TEMPLATE_SHA256
    """Expected sha256 of ``prompt_template`` (default: the released file's); ``None`` skips the check."""
    seed: int = 0
    """Seed of the per-example RNGs."""
    with_answer: bool = False
    """Stage 2: keep the ``<answer>`` block (``--with-answer``)."""
    fail_on_missing: bool = False
    """Exit 3 when motion files are missing (``--fail-on-missing``)."""

    def __post_init__(self) -> None:
        if not self.dataset_root:
            raise ValueError("dataset_root (--dataset-root) is required")
        if bool(self.vq_checkpoint) == bool(self.codes_dir):
            raise ValueError(
                f"give exactly one of vq_checkpoint (--vq-checkpoint) and codes_dir (--codes-dir); got "
                f"vq_checkpoint={self.vq_checkpoint!r}, codes_dir={self.codes_dir!r}"
            )
        sha = self.prompt_template_sha256
        if sha is not None and not _SHA256_RE.fullmatch(sha):
            raise ValueError(
                f"prompt_template_sha256={sha!r} is not 64 lowercase hex digits (or null to skip the check)"
            )

    def annotation_files(self) -> list[Path]:
        """``files`` followed by the annotation files under ``annotations_dir``."""
        found = [Path(f) for f in self.files]
        return found + (find_annotation_files(self.annotations_dir) if self.annotations_dir else [])

    def prompt_pools(self) -> PromptPools:
        """The original template file (sha256-checked) when ``prompt_template`` is set, else built-in pools."""
        return load_prompt_pools(self.prompt_template or None, sha256=self.prompt_template_sha256)

    def build_options(self) -> BuildOptions:
        return BuildOptions(answer_block=self.with_answer)


@dataclass
class FileReport:
    """Counts and one sample example for one annotation file."""

    path: Path
    entries: int = 0
    examples: Counter = field(default_factory=Counter)
    """Task name -> examples built."""
    attempts: Counter = field(default_factory=Counter)
    """Stage 2: failed attempts per dialogue -> dialogues."""
    missing: Counter = field(default_factory=Counter)
    """Missing motion id -> references."""
    skipped: int = 0
    """Examples not built because a motion is missing."""
    sample: Example | None = None

    def summary_lines(self) -> list[str]:
        """The human-readable summary: counts, attempts, and the rendered sample example."""
        lines = [
            f"== {self.path}",
            f"   entries: {self.entries}   examples: {sum(self.examples.values())}   "
            f"skipped (missing motion): {self.skipped}",
        ]
        lines += [f"   task {task}: {n} examples" for task, n in sorted(self.examples.items())]
        if self.attempts:
            dist = ", ".join(f"{k}: {self.attempts[k]}" for k in sorted(self.attempts))
            lines.append(f"   failed attempts per dialogue: {dist}")
        if self.sample is not None:
            n_train = sum(len(s.text) for s in self.sample.segments if s.trainable)
            lines += [
                f"   --- example ({self.sample.task}) ---",
                self.sample.text,
                f"   --- {len(self.sample.segments)} segments, {n_train} trainable characters ---",
            ]
        return lines


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


def missing_summary_lines(missing: Counter) -> list[str]:
    """Every missing motion id (sorted) with the distinct and total counts; empty when none."""
    if not missing:
        return []
    ids = sorted(missing)
    return [
        f"MISSING motion files: {len(ids)} distinct ids, {sum(missing.values())} references:",
        "   " + " ".join(ids),
    ]


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
