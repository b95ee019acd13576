"""The data engine: SynthML motions + attributes -> the released annotation files for stages 0-3.

Reads a dataset root in the HumanML3D layout with ``attributes/<id>.json`` (SynthML), renders the
imperfect variants of every goal motion of ``split`` with the SynthML generator, and writes::

    <output_dir>/stage_0_annotations.json
    <output_dir>/stage-1/{T2M_direct_generation, T2M_detailed_prompt_generation, M2T_motion_caption,
                       T2T_prompt_analysis, TM2T_assessment_analysis, TM2T_refinement_instruction,
                       TM2M_direct_refinement, TM2M_instructed_motion_refinement}_annots.json
    <output_dir>/stage-2/sft_motion_assess_cot_v2.json
    <output_dir>/stage-3/grpo_prompts.jsonl          (one row per train (motion, caption), grpo.md 1.2)
    <output_dir>/imperfect_motions.json             (id -> goal, rung, job digest, sha256 of its files)
    <output_dir>/engine_summary.json                 (config, counts, timing, attempt distribution)
    <output_dir>/run.json, config.yaml, run_info.json  (the run manifest, :mod:`data.run_folder`)

Where imperfect motions go: by default into the dataset root itself, as ordinary motion files
written by SynthML's ``write_motion`` (``new_joint_vecs``, ``new_joints``, ``texts`` with captions of
the perturbed program, ``attributes/<id>.json`` with the perturbed program and the change records)
under ids ``imperfect_id_start`` + k (900000... for 6-digit ids). They are listed in
``<root>/engine_motions.txt`` and never added to a split file, so the splits, ``Mean.npy``/``Std.npy``
and every split-driven loader are unchanged, while annotation files resolve every motion against
the one dataset root, as the released files do. ``imperfect_root`` redirects them to another root
in the same layout; readers then add it as an extra motion root (``inspect_annotations
--extra-root``, ``MotionResolver(roots=[dataset_root, imperfect_root])``).

Owned outputs (issue 10). The output folder is a run folder of command ``data.engine``: a folder
holding another command's run or files of unknown origin is refused (fix: ``overwrite=true``); a
rerun with the same config and inputs (the split file and the goals' caption and attribute files,
by content) returns the finished run's summary, after checking that its imperfect motions are still
the ones it rendered; another config is refused naming the differing keys (fix: ``force=true`` to
start the run over, or another ``output_dir``). The imperfect motions in the root are owned as
``data.engine.ownership`` describes: a run shares motions another run rendered with the same bytes,
refuses, before writing anything, to render other motions under ids another engine run uses (fix:
``imperfect_root``, ``imperfect_id_start``, or ``overwrite=true`` which re-renders only recorded
engine motions and marks that run superseded), and never writes over files it did not record.
Every file is written atomically; a run killed while rendering is resumed by the next call (motions
whose four files were recorded are kept, the others rendered again).

Entries follow the released files (``data.engine.annotate``): stage 0, T2M direct and M2T hold one
entry per caption window (whole clip or ``#from#to`` sub-clip), T2T one per caption; candidates only
in the TM2x and stage-2 files. Entry ids count from 0 in each file.

Deterministic for a seed: every goal's ladder and texts come from ``default_rng([seed, crc32(id)])``
and rendering is a pure function of (program, subject, style seed), whatever ``workers`` is; the
annotation files and motion files are byte-identical across runs and worker counts (their ``info``
carries no wall-clock time; ``engine_summary.json`` records timing).
Goals without attributes (e.g. real HumanML3D) get only the caption tasks (stage 0, T2M direct,
M2T) and stage-3 rows. Everything left out or replaced is counted in ``engine_summary.json``
(``counts``, ``ignored_stated_keys``), not only logged.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import time
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from data.annotations import NUM_INTERMEDIATE, TASKS, Annotation
from data.config import RunConfig, config_to_dict
from data.engine.annotate import Goal, Variant, attribute_tasks, caption_tasks
from data.engine.ownership import ENGINE_LIST, ENGINE_MANIFEST, EngineMotions, EngineRun, job_digest
from data.engine.perturb import Imperfect, Stated, imperfect_ladder
from data.layout import DatasetFileError, DatasetPaths, read_captions, read_split
from data.progress import progress_bar
from data.prompts import build_cot_prompt
from data.run_folder import ProvenanceError, RunFolder, files_digest
from data.runtime import open_run
from data.sft_examples import choose_attempts, is_no_refinement
from data.specs import get_dataset_spec
from data.synth.body import Subject
from data.synth.captions import caption_program
from data.synth.program import ATTRIBUTES, MotionProgram
from data.synth.render import render_program
from data.synth.writer import write_motion_files

logger = logging.getLogger(__name__)

__all__ = ["ENGINE_LIST", "STAGE3_FILE", "EngineConfig", "EngineSummary", "run_engine"]

COMMAND = "data.engine"
STAGE3_FILE = "stage-3/grpo_prompts.jsonl"
SUMMARY_FILE = "engine_summary.json"
IMPERFECT_FILE = "imperfect_motions.json"
VOLATILE = ("output_dir", "workers", "force", "overwrite", "progress")
"""Config keys that may change between invocations of one run (left out of the resume check)."""
CLI_FIXES = {"overwrite": "pass overwrite=true", "restart": "pass force=true", "out": "choose another --out"}
COUNTS = (
    "goals_without_whole_clip_captions", "subclip_captions_left_out", "ladder_rungs_unrelated_fallback",
    "ladder_rungs_fewer_changes", "stated_keys_ignored", "imperfect_rendered", "imperfect_reused",
    "imperfect_taken_over", "imperfect_released", "temporaries_removed",
)  # fmt: skip
"""The ``counts`` of ``engine_summary.json`` (see :func:`run_engine`); each is written, 0 included."""
ALWAYS_STATED = ("family", "relation")
"""Stated keys that name no perturbable attribute and are expected (not counted as ignored)."""


@dataclass(kw_only=True)
class EngineConfig(RunConfig):
    """Data-engine settings (``configs/tiny/engine.yaml``)."""

    ignored_fields: ClassVar[dict[str, str]] = {
        "device": "the engine renders with numpy; no torch model runs",
        "num_threads": "rendering runs in `workers` processes; set that instead",
        "on_error": "a broken goal file always raises, so the annotation files never lose goals silently",
        "max_skip_fraction": "no file is ever skipped (see on_error)",
        "progress": "its progress bars are always shown",
    }

    dataset_root: str = ""
    """Dataset root in the HumanML3D layout, with ``attributes/`` for SynthML (required)."""
    output_dir: str = ""
    """Where the annotation files go (required)."""
    seed: int = 0
    """Seed of every goal's ladder, texts and candidate caps (``default_rng([seed, crc32(id)])``)."""
    split: str = "train"
    """Goal motions come from this split (the test split stays unseen)."""
    max_goals: int = 0
    """Use only the first N goals of the split (0 = all)."""
    variants_per_goal: int = 4
    """Imperfect renders per goal = stage-2 ``<Intermediate_Motion_0..n-1>`` (4 in the released format)."""
    phrasings: int = 3
    """Phrasings per assessment / refinement message in stage-1 files."""
    tm_max_candidates: int = 10
    """Candidates per TM2x entry (released demo: 10-15)."""
    imperfect_root: str = ""
    """Root for imperfect motions; empty = the dataset root (see the module docstring)."""
    imperfect_id_start: int = 0
    """First imperfect id; 0 = 9 x 10^(digits-1) (900000 for HumanML3D-style ids)."""
    workers: int = 1
    """Processes rendering imperfect motions (results do not depend on it)."""
    stage3: bool = True
    """Write the stage-3 (GRPO) prompt set."""
    force: bool = False
    """Start the output folder's run over: rebuild even when it holds a finished run with the same
    config, and accept one with another config (its files are replaced). Imperfect motions whose
    recorded files are intact and the same job are still reused; others are rendered again, unless
    another engine run uses them (see ``overwrite``)."""
    overwrite: bool = False
    """Accept an ``output_dir`` holding another command's run or files of other origin (they are not
    deleted), and re-render imperfect motions another engine run rendered differently under the ids
    this run needs (that run is marked superseded). Never writes over motion files the engine did not
    record."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.variants_per_goal <= NUM_INTERMEDIATE:
            raise ValueError(
                f"variants_per_goal={self.variants_per_goal} must be in 0..{NUM_INTERMEDIATE} "
                f"(<Intermediate_Motion_0..{NUM_INTERMEDIATE - 1}>)"
            )
        for name in ("phrasings", "tm_max_candidates", "workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.max_goals < 0 or self.imperfect_id_start < 0:
            raise ValueError(
                f"max_goals={self.max_goals} and imperfect_id_start={self.imperfect_id_start} must be >= 0"
            )

    def first_imperfect_id(self) -> int:
        """``imperfect_id_start``, or 9 x 10^(digits-1) when it is 0."""
        return self.imperfect_id_start or 9 * 10 ** (get_dataset_spec(self.dataset).id_digits - 1)

    def imperfect_root_path(self) -> Path:
        """Where imperfect motions are written: ``imperfect_root``, else the dataset root."""
        return Path(self.imperfect_root or self.dataset_root)


@dataclass
class EngineSummary:
    entries: dict[str, int]
    """Entries per task file (a task with 0 has no file)."""
    candidates: dict[str, int]
    imperfect_motions: int
    goals: int
    goals_without_attributes: int
    stage3_rows: int
    seconds: dict[str, float]
    failed_intermediates: dict[int, int]
    """Stage-2 candidates by number of intermediates that are real failures for their caption."""
    attempts_drawn: dict[int, int]
    """Failed attempts per dialogue when the stage-2 builder samples once per candidate."""
    counts: dict[str, int] = field(default_factory=dict)
    """What was left out, fell back or was reused (see :func:`run_engine`)."""
    ignored_stated_keys: dict[str, int] = field(default_factory=dict)
    """Stated-attribute keys of the goals' attribute files that name no attribute (besides family/relation)."""
    imperfect_root: str = ""
    """Where the imperfect motions are (their ownership: ``<imperfect_root>/engine_motions.json``)."""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# --------------------------------------------------------------------------------------------------
# Reading goals


def parse_stated(raw: Any, where: str, ignored: Counter | None = None) -> Stated:
    """Stated attributes of one caption as ``{(action, attr)}``.

    Accepts ``["0.speed", "actions[1].limb", ...]``, ``[[0, "speed"], ...]`` or
    ``{"0": ["speed"], ...}`` / ``[{"speed": ...}, {...}]`` (one mapping per action). Keys that
    name no attribute carry none; except ``family``/``relation`` they are counted in ``ignored``.
    """
    out: set[tuple[int, str]] = set()

    def add(idx: Any, attr: Any) -> None:
        if attr not in ATTRIBUTES:
            if ignored is not None and attr not in ALWAYS_STATED:
                ignored[str(attr)] += 1
            return
        out.add((int(idx), str(attr)))

    if isinstance(raw, dict):
        for k, v in raw.items():
            for a in v if isinstance(v, list | tuple | dict) else [v]:
                add(k, a)
    elif isinstance(raw, list | tuple):
        for i, item in enumerate(raw):
            if isinstance(item, str):
                s = item.replace("actions[", "").replace("]", "")
                idx, _, attr = s.partition(".")
                if not attr:
                    idx, attr = "0", idx
                add(idx, attr)
            elif isinstance(item, list | tuple) and len(item) == 2:
                add(item[0], item[1])
            elif isinstance(item, dict):
                for a in item:
                    add(i, a)
    else:
        raise DatasetFileError(f"{where}: cannot read stated attributes from {type(raw).__name__}")
    return frozenset(out)


def read_attributes(
    path: Path, n_captions: int, ignored: Counter | None = None
) -> tuple[MotionProgram, dict, int, tuple[Stated, ...]]:
    """(program, subject dict, style seed, stated per caption) from ``attributes/<id>.json``."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DatasetFileError(f"{path}: cannot read attributes: {err}") from err
    for key in ("program", "subject", "style_seed"):
        if key not in data:
            raise DatasetFileError(f"{path}: field {key!r} missing (expected a SynthML attributes file)")
    program = MotionProgram.from_dict(data["program"])
    captions = data.get("captions")
    stated: list[Stated] = []
    if isinstance(captions, list):
        for i, c in enumerate(captions):
            raw = c.get("stated", []) if isinstance(c, dict) else c
            stated.append(parse_stated(raw, f"{path}: captions[{i}].stated", ignored))
    elif "stated" in data:
        stated = [parse_stated(s, f"{path}: stated[{i}]", ignored) for i, s in enumerate(data["stated"])]
    if len(stated) != n_captions:
        raise DatasetFileError(
            f"{path}: {len(stated)} per-caption stated-attribute lists for {n_captions} caption lines in texts/"
        )
    return program, data["subject"], int(data["style_seed"]), tuple(stated)


@dataclass(frozen=True)
class _GoalRecord:
    goal: Goal
    subject: dict | None
    style_seed: int


def whole_clip_goal(goal: Goal) -> Goal | None:
    """The goal restricted to its whole-clip captions (``None`` without attributes or such captions).

    Sub-clip captions (a window on one action of a sequence) describe a part of the program; they
    feed the caption tasks and stage 3, not the attribute tasks, whose imperfect motions are
    renders of the whole program.
    """
    if goal.program is None:
        return None
    keep = [i for i, (f, t) in enumerate(goal.windows) if (f == 0 and t == 0) or f >= t]
    if not keep:
        return None
    return Goal(
        goal.motion_id,
        tuple(goal.captions[i] for i in keep),
        tuple((0.0, 0.0) for _ in keep),
        goal.program,
        tuple(goal.stated[i] for i in keep),
    )


def load_goals(cfg: EngineConfig, ignored: Counter | None = None) -> list[_GoalRecord]:
    """The goals of ``cfg.split`` (first ``max_goals``); stated keys that name no attribute go to ``ignored``."""
    paths = DatasetPaths(cfg.dataset_root)
    ids = read_split(cfg.dataset_root, cfg.split)
    if cfg.max_goals:
        ids = ids[: cfg.max_goals]
    out = []
    for mid in progress_bar(ids, desc="read goals", leave=False):
        lines = read_captions(paths.text_file(mid))
        captions = tuple(line.caption for line in lines)
        windows = tuple((line.start, line.end) for line in lines)
        attr_file = paths.attributes_file(mid)
        if attr_file.is_file():
            program, subject, style_seed, stated = read_attributes(attr_file, len(lines), ignored)
            out.append(_GoalRecord(Goal(mid, captions, windows, program, stated), subject, style_seed))
        else:
            out.append(_GoalRecord(Goal(mid, captions, windows), None, 0))
    return out


def goals_digest(cfg: EngineConfig, goal_ids: Sequence[str]) -> str:
    """``files-sha256:<hex>`` over the caption and attribute files of the goals (what the engine reads).

    The dataset root itself is not fingerprinted: the engine adds its own motions to it.
    """
    paths = DatasetPaths(cfg.dataset_root)
    return files_digest(
        (mid, f) for mid in goal_ids for f in (paths.text_file(mid), paths.attributes_file(mid))
    )


# --------------------------------------------------------------------------------------------------
# Rendering imperfect motions


def _render_write(job: tuple[str, str, dict, dict, int, str, dict, str]) -> tuple[str, dict[str, str]]:
    """Render one imperfect program and write it with SynthML's writer (runs in worker processes).

    The motion gets its own captions (``caption_program``, seeded by its id) so that the files are
    a complete SynthML motion; ``attributes/<id>.json`` also holds ``engine`` (goal id, rung, changes).
    Returns the id and the sha256 of its four files.
    """
    root, mid, program, subject, style_seed, dataset, meta, tag = job
    prog = MotionProgram.from_dict(program)
    joints = render_program(prog, Subject.from_dict(subject), style_seed, dataset)
    captions = caption_program(prog, np.random.default_rng(zlib.crc32(mid.encode())), 1)
    attrs = {"program": program, "subject": subject, "style_seed": style_seed, "engine": meta}
    written = write_motion_files(root, mid, joints, captions, attrs, dataset, tag=tag)
    return mid, written.sha256


def _ladder_counts(ladder: Sequence[Imperfect], counts: Counter) -> None:
    """Count the rungs that fell back (see ``imperfect_ladder``): to an unrelated action, or to fewer changes."""
    n = len(ladder)
    for rung, imp in enumerate(ladder[1:], start=1):
        planned = 1 if rung == n - 1 else 2
        if len(imp.changes) == 1 and imp.changes[0].kind == "family":
            counts["ladder_rungs_unrelated_fallback"] += 1
        elif len(imp.changes) < planned:
            counts["ladder_rungs_fewer_changes"] += 1


# --------------------------------------------------------------------------------------------------
# Main


def run_engine(cfg: EngineConfig) -> EngineSummary:
    """Build and write every annotation file (see the module docstring); returns the summary.

    ``engine_summary.json`` ``counts``: ``goals_without_whole_clip_captions`` (goals with attributes
    whose captions are all sub-clips: no attribute tasks), ``subclip_captions_left_out`` (sub-clip
    caption lines of goals with attributes: caption tasks and stage 3 only),
    ``ladder_rungs_unrelated_fallback`` / ``ladder_rungs_fewer_changes`` (rungs with no stated
    change to make), ``stated_keys_ignored``, ``imperfect_rendered``, ``imperfect_reused`` (recorded
    with the same job digest and intact), ``imperfect_taken_over`` (re-rendered from another run with
    ``overwrite=true``), ``imperfect_released`` (re-rendered from runs whose output folder is gone),
    ``temporaries_removed`` (of killed writers).

    Raises:
        ValueError: ``dataset_root``/``output_dir`` unset, or the output folder is the imperfect root.
        RunFolderError: the output folder cannot be used (see :mod:`data.run_folder`); nothing written.
        EngineMotionsError: the imperfect ids are another run's or of unknown origin; nothing written.
    """
    if not cfg.dataset_root or not cfg.output_dir:
        raise ValueError("dataset_root and output_dir must be set")
    imp_root = cfg.imperfect_root_path()
    if Path(cfg.output_dir).resolve() == imp_root.resolve():
        raise ValueError(
            f"output_dir={cfg.output_dir} is the root the imperfect motions go to; choose another output_dir"
        )
    t0 = time.perf_counter()
    spec = get_dataset_spec(cfg.dataset)
    ignored: Counter = Counter()
    records = load_goals(cfg, ignored)
    goal_ids = [r.goal.motion_id for r in records]
    inputs = {
        "split": DatasetPaths(cfg.dataset_root).split_file(cfg.split),
        "goals": {
            "path": f"{cfg.dataset_root}: texts/ and attributes/ of the {len(goal_ids)} {cfg.split} goals",
            "digest": goals_digest(cfg, goal_ids),
        },
    }
    with open_run(
        cfg.output_dir, command=COMMAND, config=config_to_dict(cfg), seed=cfg.seed, inputs=inputs,
        volatile=VOLATILE, overwrite=cfg.overwrite, resume=not cfg.force, fixes=CLI_FIXES,
    ) as run:  # fmt: skip
        if run.finished:
            done = _finished_summary(run, imp_root)
            if done is not None:
                logger.info(
                    "engine: %s already holds a run with this config; skipping (force=true rebuilds)",
                    run.root,
                )
                return done
        summary = _build(cfg, run, records, ignored, imp_root, spec.name, spec.id_digits, t0)
        run.done()
    logger.info("engine: %s", json.dumps(summary.to_dict(), default=str))
    return summary


def _build(
    cfg: EngineConfig,
    run: RunFolder,
    records: list[_GoalRecord],
    ignored: Counter,
    imp_root: Path,
    dataset: str,
    id_digits: int,
    t0: float,
) -> EngineSummary:
    counts: Counter = Counter(dict.fromkeys(COUNTS, 0))
    t_read = time.perf_counter()

    # 1. ladders and imperfect ids (deterministic per goal)
    start = cfg.first_imperfect_id()
    # goals with attributes and whole-clip captions, restricted to those captions
    whole = {r.goal.motion_id: gw for r in records if (gw := whole_clip_goal(r.goal)) is not None}
    for r in records:
        if r.goal.program is not None:
            counts["subclip_captions_left_out"] += sum(
                f < t and not (f == 0 and t == 0) for f, t in r.goal.windows
            )
            counts["goals_without_whole_clip_captions"] += r.goal.motion_id not in whole
    with_attr = [r for r in records if r.goal.motion_id in whole]
    n_imp = len(with_attr) * cfg.variants_per_goal
    if start + n_imp > 10**id_digits:
        raise ValueError(f"imperfect ids {start}..{start + n_imp - 1} do not fit in {id_digits} digits; "
                         "lower imperfect_id_start or max_goals")  # fmt: skip
    clash = [
        r.goal.motion_id
        for r in records
        if r.goal.motion_id.isdigit() and start <= int(r.goal.motion_id) < start + n_imp
    ]
    if clash:
        raise ValueError(
            f"imperfect id range {start}..{start + n_imp - 1} collides with goal motions {sorted(clash)[:5]}; "
            "set imperfect_id_start"
        )
    variants: dict[str, list[Variant]] = {}
    jobs: dict[str, tuple] = {}
    records_by_id: dict[str, dict[str, Any]] = {}
    tag = run.manifest["run_id"] + "-"
    for gi, rec in enumerate(with_attr):
        g = whole[rec.goal.motion_id]
        rng = np.random.default_rng([cfg.seed, zlib.crc32(g.motion_id.encode())])
        stated_all = frozenset.intersection(*g.stated) if g.stated else frozenset()
        stated_any = frozenset.union(*g.stated) if g.stated else frozenset()
        ladder = imperfect_ladder(rng, g.program, stated_all, cfg.variants_per_goal, stated_any)
        _ladder_counts(ladder, counts)
        vs = []
        for k, imp in enumerate(ladder):
            mid = str(start + gi * cfg.variants_per_goal + k).zfill(id_digits)
            vs.append(Variant(mid, imp))
            meta = {"goal": g.motion_id, "rung": k, "changes": [c.to_dict() for c in imp.changes]}
            program = imp.program.to_dict()
            jobs[mid] = (str(imp_root), mid, program, rec.subject, rec.style_seed, dataset, meta, tag)
            digest = job_digest({"id": mid, "program": program, "subject": rec.subject,
                                 "style_seed": rec.style_seed, "dataset": dataset, "engine": meta})  # fmt: skip
            records_by_id[mid] = {"job": digest, "goal": g.motion_id, "rung": k}
        variants[g.motion_id] = vs

    # 2. render + write imperfect motions (the root's lock is held; its manifest decides what to render)
    me = EngineRun(run.manifest["run_id"], str(run.root.resolve()), cfg.seed, run.manifest["config_hash"])
    with EngineMotions.open(imp_root, me) as motions:
        plan = motions.plan(me, {m: r["job"] for m, r in records_by_id.items()}, overwrite=cfg.overwrite)
        run.begin()
        counts["temporaries_removed"] += motions.remove_temporaries()
        motions.claim(me, records_by_id, plan)
        todo = [jobs[m] for m in plan.render]
        if cfg.workers > 1 and len(todo) > 1:
            with ProcessPoolExecutor(cfg.workers) as ex:
                results = ex.map(_render_write, todo, chunksize=8)
                for mid, sha in progress_bar(results, total=len(todo), desc="render imperfect"):
                    motions.record(mid, sha)
        else:
            for job in progress_bar(todo, desc="render imperfect"):
                motions.record(*_render_write(job))
        files = {
            m: {rel: e["sha256"] for rel, e in motions.motions[m]["files"].items()} for m in records_by_id
        }
    counts["imperfect_rendered"] = len(plan.render)
    counts["imperfect_reused"] = len(plan.reuse)
    counts["imperfect_taken_over"] = sum(len(v) for v in plan.taken_over.values())
    counts["imperfect_released"] = len(plan.released)
    counts["stated_keys_ignored"] = sum(ignored.values())
    run.write_json(IMPERFECT_FILE, {m: {**r, "files": files[m]} for m, r in records_by_id.items()}, indent=1)
    t_render = time.perf_counter()

    # 3. annotations
    per_task: dict[str, list[Annotation]] = {k: [] for k in TASKS}
    failed_hist: Counter = Counter()
    for rec in records:
        g = rec.goal
        rng = np.random.default_rng([cfg.seed, zlib.crc32(g.motion_id.encode()), 1])
        anns = caption_tasks(g)
        gw = whole.get(g.motion_id)
        if gw is not None:
            anns.update(attribute_tasks(gw, variants[g.motion_id], rng, cfg.phrasings, cfg.tm_max_candidates))
            for cand in anns["irmogen_cot"][0].candidates:
                failed_hist[sum(1 for k, v in cand.texts.items() if k.startswith("<Assess_Intermediate")
                                and not is_no_refinement(v.refinement))] += 1  # fmt: skip
        for k, entries in anns.items():
            first = len(per_task[k])
            per_task[k].extend(dataclasses.replace(a, id=first + i) for i, a in enumerate(entries))
    for task, anns in per_task.items():
        if not anns:
            continue  # e.g. attribute tasks for a dataset without attributes (counted: entries[task] == 0)
        # the released envelopes: {} (stage 0), num_instances/time (1), datetime/num_annotations (2);
        # the time is left empty so that a run's files are a function of its config and data
        stage = TASKS[task].stage
        info: dict[str, Any] = {}
        if stage == 1:
            info = {"num_instances": str(len(anns)), "time": ""}
        elif stage == 2:
            info = {"datetime": "", "num_annotations": str(len(anns))}
        if stage:
            info.update(generator="data.engine", seed=cfg.seed)
        run.write_text(TASKS[task].file_name, annotation_file_text(anns, info))

    # 4. stage 3
    stage3_rows = 0
    if cfg.stage3:
        text, stage3_rows = stage3_text(cfg, [r.goal.motion_id for r in records])
        run.write_text(STAGE3_FILE, text)
    t_write = time.perf_counter()

    attempts = simulate_attempts(per_task["irmogen_cot"], cfg.seed)
    summary = EngineSummary(
        entries={k: len(v) for k, v in per_task.items()},
        candidates={k: sum(len(a.all_candidates()) for a in v) for k, v in per_task.items()},
        imperfect_motions=len(jobs),
        goals=len(records),
        goals_without_attributes=sum(r.goal.program is None for r in records),
        stage3_rows=stage3_rows,
        seconds={
            "read": round(t_read - t0, 2),
            "render_imperfect": round(t_render - t_read, 2),
            "annotate_write": round(t_write - t_render, 2),
            "total": round(time.perf_counter() - t0, 2),
        },
        failed_intermediates=dict(sorted(failed_hist.items())),
        attempts_drawn=attempts,
        counts={k: counts[k] for k in COUNTS},
        ignored_stated_keys=dict(sorted(ignored.items())),
        imperfect_root=str(imp_root),
    )
    run.write_text(
        SUMMARY_FILE, json.dumps({"config": config_to_dict(cfg), **summary.to_dict()}, indent=1, default=str)
    )
    return summary


def annotation_file_text(annotations: Sequence[Annotation], info: Mapping[str, Any]) -> str:
    """The bytes ``data.annotations.write_annotation_file`` writes (released envelope), as text."""
    payload = {"info": dict(info), "annotations": [a.to_dict() for a in annotations]}
    return json.dumps(payload, ensure_ascii=False, indent=1)


def _finished_summary(run: RunFolder, imp_root: Path) -> EngineSummary | None:
    """The stored summary of the folder's finished run if its files and imperfect motions are intact.

    Its motions must still be recorded in the root for this run with the sha256 it recorded in
    ``imperfect_motions.json`` (another run with ``overwrite=true``, or an edit, makes it run again).
    """
    if run.missing_files() or not run.has(SUMMARY_FILE) or not run.has(IMPERFECT_FILE):
        return None
    changed = changed_imperfect_motions(run.root, imp_root, run_id=run.manifest["run_id"])
    if changed:
        logger.warning(
            "engine: %d imperfect motions in %s (e.g. %s) are no longer the ones this run rendered; running again",
            len(changed), imp_root, changed[0],
        )  # fmt: skip
        return None
    data = run.read_json(SUMMARY_FILE)
    fields = {k: data[k] for k in EngineSummary.__dataclass_fields__ if k in data}
    return EngineSummary(**fields)


def changed_imperfect_motions(
    output_dir: str | Path, imperfect_root: str | Path | None = None, run_id: str | None = None
) -> list[str]:
    """Ids of the engine output's imperfect motions whose files are no longer the ones it rendered.

    Reads ``<output_dir>/imperfect_motions.json`` (id -> job digest and file sha256) and the root's
    ``engine_motions.json`` (``imperfect_root``: default the summary's); a motion has changed when the
    root records another job for it or its files differ (size and mtime, else sha256), or, with
    ``run_id``, when that run no longer uses it. An output without ``imperfect_motions.json`` has none.
    """
    out = Path(output_dir)
    mine_path = out / IMPERFECT_FILE
    if not mine_path.is_file():
        return []
    if imperfect_root is None:
        imperfect_root = json.loads((out / SUMMARY_FILE).read_text())["imperfect_root"]
    mine = json.loads(mine_path.read_text())
    motions = EngineMotions.read(imperfect_root)
    changed = []
    for mid, rec in mine.items():
        entry = motions.motions.get(mid)
        if (
            entry is None
            or entry["job"] != rec["job"]
            or (run_id is not None and run_id not in entry["runs"])
            or not motions.intact(mid, rec["files"])
        ):
            changed.append(mid)
    return changed


def check_imperfect_motions(output_dir: str | Path) -> None:
    """Check that an engine output's imperfect motions are still the ones its annotation files describe.

    For readers of the annotation files (``prepare.inspect_annotations``, the SFT datasets).

    Raises:
        ProvenanceError: some changed (e.g. another engine run re-rendered them with
            ``overwrite=true``); the message names the folder, the root, the ids and the fix.
    """
    changed = changed_imperfect_motions(output_dir)
    if changed:
        root = json.loads((Path(output_dir) / SUMMARY_FILE).read_text())["imperfect_root"]
        shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        raise ProvenanceError(
            f"the annotation files in {output_dir} describe imperfect motions that changed since this engine "
            f"run rendered them: {shown} in {root} (see {Path(root) / ENGINE_MANIFEST} for the run that "
            f"rendered them now). Rerun data.engine with --out {output_dir} (it refuses while another run "
            "uses those ids; give one of the two runs another imperfect_root)"
        )


def simulate_attempts(annotations: Sequence[Annotation], seed: int) -> dict[int, int]:
    """Failed attempts per dialogue when the stage-2 builder draws once per candidate (section 6.1)."""
    hist: Counter = Counter()
    for a in annotations:
        for ci, cand in enumerate(a.all_candidates()):
            hist[len(choose_attempts(cand, random.Random(f"{seed}:{a.id}:{ci}")))] += 1
    return dict(sorted(hist.items()))


def stage3_text(cfg: EngineConfig, motion_ids: Sequence[str]) -> tuple[str, int]:
    """One JSONL row per (motion, caption line): the stage-3 GRPO prompt set (grpo.md 1.2/1.3); (text, rows)."""
    spec = get_dataset_spec(cfg.dataset)
    paths = DatasetPaths(cfg.dataset_root)
    rows = []
    for mid in motion_ids:
        for line in read_captions(paths.text_file(mid)):
            row = {
                "prompt": build_cot_prompt(line.caption),
                "caption": line.caption,
                "caption_tokens": list(line.tokens),
                "motion_id": mid,
                "f_tag": line.start,
                "to_tag": line.end,
                "dataset": spec.name,
            }
            rows.append(json.dumps(row, ensure_ascii=False) + "\n")
    return "".join(rows), len(rows)
