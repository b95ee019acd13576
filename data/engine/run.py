"""The data engine: SynthML motions + attributes -> the released annotation files for stages 0-3.

Reads a dataset root in the HumanML3D layout with ``attributes/<id>.json`` (SynthML), renders the
imperfect variants of every goal motion of ``split`` with the SynthML generator, and writes::

    <output_dir>/stage_0_annotations.json
    <output_dir>/stage-1/{T2M_direct_generation, T2M_detailed_prompt_generation, M2T_motion_caption,
                       T2T_prompt_analysis, TM2T_assessment_analysis, TM2T_refinement_instruction,
                       TM2M_direct_refinement, TM2M_instructed_motion_refinement}_annots.json
    <output_dir>/stage-2/sft_motion_assess_cot_v2.json
    <output_dir>/stage-3/grpo_prompts.jsonl          (one row per train (motion, caption), grpo.md 1.2)
    <output_dir>/engine_summary.json                 (config, counts, timing, attempt distribution)

Where imperfect motions go: by default into the dataset root itself, as ordinary motion files
written by SynthML's ``write_motion`` (``new_joint_vecs``, ``new_joints``, ``texts`` with captions of
the perturbed program, ``attributes/<id>.json`` with the perturbed program and the change records) under ids ``imperfect_id_start`` + k (900000... for 6-digit ids).
They are listed in ``<root>/engine_motions.txt`` and never added to a split file, so the splits,
``Mean.npy``/``Std.npy`` and every split-driven loader are unchanged, while annotation files resolve
every motion against the one dataset root, as the released files do. ``imperfect_root`` redirects
them to another root in the same layout; readers then add it as an extra motion root
(``inspect_annotations --extra-root``, ``MotionResolver(roots=[dataset_root, imperfect_root])``).

Entries follow the released files (``data.engine.annotate``): stage 0, T2M direct and M2T hold one
entry per caption window (whole clip or ``#from#to`` sub-clip), T2T one per caption; candidates only
in the TM2x and stage-2 files. Entry ids count from 0 in each file.

Deterministic for a seed: every goal's ladder and texts come from ``default_rng([seed, crc32(id)])``
and rendering is a pure function of (program, subject, style seed), whatever ``workers`` is; the
annotation files and motion files are byte-identical across runs and worker counts (their ``info``
carries no wall-clock time; ``engine_summary.json`` records timing).
Goals without attributes (e.g. real HumanML3D) get only the caption tasks (stage 0, T2M direct,
M2T) and stage-3 rows.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import time
import zlib
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from tqdm import tqdm

from data.annotations import NUM_INTERMEDIATE, TASKS, Annotation, write_annotation_file
from data.config import RunConfig, config_to_dict
from data.engine.annotate import Goal, Variant, attribute_tasks, caption_tasks
from data.engine.perturb import Stated, imperfect_ladder
from data.layout import DatasetFileError, DatasetPaths, read_captions, read_split
from data.prompts import build_cot_prompt
from data.sft_examples import choose_attempts, is_no_refinement
from data.specs import get_dataset_spec
from data.synth.body import Subject
from data.synth.captions import caption_program
from data.synth.program import ATTRIBUTES, MotionProgram
from data.synth.render import render_program
from data.synth.writer import write_motion

logger = logging.getLogger(__name__)

ENGINE_LIST = "engine_motions.txt"
STAGE3_FILE = "stage-3/grpo_prompts.jsonl"


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
    """Rebuild even when ``output_dir`` holds a finished run with the same config."""

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

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# --------------------------------------------------------------------------------------------------
# Reading goals


def parse_stated(raw: Any, where: str) -> Stated:
    """Stated attributes of one caption as ``{(action, attr)}``.

    Accepts ``["0.speed", "actions[1].limb", ...]``, ``[[0, "speed"], ...]`` or
    ``{"0": ["speed"], ...}`` / ``[{"speed": ...}, {...}]`` (one mapping per action).
    """
    out: set[tuple[int, str]] = set()

    def add(idx: Any, attr: Any) -> None:
        if attr not in ATTRIBUTES:
            return  # family / relation are always stated; unknown keys carry no attribute
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


def read_attributes(path: Path, n_captions: int) -> tuple[MotionProgram, dict, int, tuple[Stated, ...]]:
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
            stated.append(parse_stated(raw, f"{path}: captions[{i}].stated"))
    elif "stated" in data:
        stated = [parse_stated(s, f"{path}: stated[{i}]") for i, s in enumerate(data["stated"])]
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


def load_goals(cfg: EngineConfig) -> list[_GoalRecord]:
    paths = DatasetPaths(cfg.dataset_root)
    ids = read_split(cfg.dataset_root, cfg.split)
    if cfg.max_goals:
        ids = ids[: cfg.max_goals]
    out = []
    for mid in tqdm(ids, desc="read goals", leave=False):
        lines = read_captions(paths.text_file(mid))
        captions = tuple(line.caption for line in lines)
        windows = tuple((line.start, line.end) for line in lines)
        attr_file = paths.attributes_file(mid)
        if attr_file.is_file():
            program, subject, style_seed, stated = read_attributes(attr_file, len(lines))
            out.append(_GoalRecord(Goal(mid, captions, windows, program, stated), subject, style_seed))
        else:
            out.append(_GoalRecord(Goal(mid, captions, windows), None, 0))
    return out


# --------------------------------------------------------------------------------------------------
# Rendering imperfect motions


def _render_write(job: tuple[str, str, dict, dict, int, str, dict]) -> str:
    """Render one imperfect program and write it with SynthML's writer (runs in worker processes).

    The motion gets its own captions (``caption_program``, seeded by its id) so that the files are
    a complete SynthML motion; ``attributes/<id>.json`` also holds ``engine`` (goal id, rung, changes).
    """
    root, mid, program, subject, style_seed, dataset, meta = job
    prog = MotionProgram.from_dict(program)
    joints = render_program(prog, Subject.from_dict(subject), style_seed, dataset)
    captions = caption_program(prog, np.random.default_rng(zlib.crc32(mid.encode())), 1)
    attrs = {"program": program, "subject": subject, "style_seed": style_seed, "engine": meta}
    write_motion(root, mid, joints, captions, attrs, dataset)
    return mid


def _read_engine_list(root: Path) -> set[str]:
    """Ids listed in ``<root>/engine_motions.txt`` (empty when there is none)."""
    list_file = root / ENGINE_LIST
    return set(list_file.read_text().split()) if list_file.is_file() else set()


def _check_id_range(cfg: EngineConfig, root: Path, start: int, n: int, goal_ids: Sequence[str]) -> None:
    spec = get_dataset_spec(cfg.dataset)
    if start + n > 10**spec.id_digits:
        raise ValueError(f"imperfect ids {start}..{start + n - 1} do not fit in {spec.id_digits} digits; "
                         "lower imperfect_id_start or max_goals")  # fmt: skip
    listed = _read_engine_list(root)
    taken = []
    vec_dir = DatasetPaths(root).vecs_dir
    if vec_dir.is_dir():
        for p in vec_dir.glob("*.npy"):
            stem = p.stem
            if stem.isdigit() and start <= int(stem) < start + n and stem not in listed:
                taken.append(stem)
    clash = [g for g in goal_ids if g.isdigit() and start <= int(g) < start + n]
    if taken or clash:
        raise ValueError(
            f"imperfect id range {start}..{start + n - 1} collides with existing motions "
            f"{sorted(taken + clash)[:5]} in {root} (not written by the engine); set imperfect_id_start"
        )


# --------------------------------------------------------------------------------------------------
# Main


def run_engine(cfg: EngineConfig) -> EngineSummary:
    """Build and write every annotation file (see the module docstring); returns the summary."""
    if not cfg.dataset_root or not cfg.output_dir:
        raise ValueError("dataset_root and output_dir must be set")
    t0 = time.perf_counter()
    spec = get_dataset_spec(cfg.dataset)
    out = Path(cfg.output_dir)
    done = _finished_run(cfg)
    if done is not None:
        logger.info("engine: %s already holds a run with this config; skipping (force=true rebuilds)", out)
        return done
    imp_root = cfg.imperfect_root_path()
    records = load_goals(cfg)
    t_read = time.perf_counter()

    # 1. ladders and imperfect ids (deterministic per goal)
    start = cfg.first_imperfect_id()
    # goals with attributes and whole-clip captions, restricted to those captions
    whole = {r.goal.motion_id: gw for r in records if (gw := whole_clip_goal(r.goal)) is not None}
    with_attr = [r for r in records if r.goal.motion_id in whole]
    n_imp = len(with_attr) * cfg.variants_per_goal
    _check_id_range(cfg, imp_root, start, n_imp, [r.goal.motion_id for r in records])
    variants: dict[str, list[Variant]] = {}
    jobs = []
    for gi, rec in enumerate(with_attr):
        g = whole[rec.goal.motion_id]
        rng = np.random.default_rng([cfg.seed, zlib.crc32(g.motion_id.encode())])
        stated_all = frozenset.intersection(*g.stated) if g.stated else frozenset()
        stated_any = frozenset.union(*g.stated) if g.stated else frozenset()
        ladder = imperfect_ladder(rng, g.program, stated_all, cfg.variants_per_goal, stated_any)
        vs = []
        for k, imp in enumerate(ladder):
            mid = str(start + gi * cfg.variants_per_goal + k).zfill(spec.id_digits)
            vs.append(Variant(mid, imp))
            meta = {"goal": g.motion_id, "rung": k, "changes": [c.to_dict() for c in imp.changes]}
            jobs.append(
                (str(imp_root), mid, imp.program.to_dict(), rec.subject, rec.style_seed, spec.name, meta)
            )
        variants[g.motion_id] = vs

    # 2. render + write imperfect motions
    if cfg.workers > 1 and jobs:
        with ProcessPoolExecutor(cfg.workers) as ex:
            list(tqdm(ex.map(_render_write, jobs, chunksize=32), total=len(jobs), desc="render imperfect"))
    else:
        for job in tqdm(jobs, desc="render imperfect"):
            _render_write(job)
    listed = _read_engine_list(imp_root)
    (imp_root / ENGINE_LIST).write_text(
        "\n".join(sorted(listed | {j[1] for j in jobs})) + ("\n" if jobs else "")
    )
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
            continue  # e.g. attribute tasks for a dataset without attributes
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
        write_annotation_file(out / TASKS[task].file_name, anns, info)

    # 4. stage 3
    stage3_rows = 0
    if cfg.stage3:
        stage3_rows = write_stage3(cfg, [r.goal.motion_id for r in records], out / STAGE3_FILE)
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
    )
    (out / "engine_summary.json").write_text(
        json.dumps({"config": config_to_dict(cfg), **summary.to_dict()}, indent=1, default=str)
    )
    logger.info("engine: %s", json.dumps(summary.to_dict(), default=str))
    return summary


def _finished_run(cfg: EngineConfig) -> EngineSummary | None:
    """The summary of a finished run in ``output_dir`` with the same config (ignoring ``force``/``workers``)."""
    path = Path(cfg.output_dir) / "engine_summary.json"
    if cfg.force or not path.is_file():
        return None
    data = json.loads(path.read_text())
    ignore = ("force", "workers")
    old = {k: v for k, v in data.get("config", {}).items() if k not in ignore}
    if old != {k: v for k, v in config_to_dict(cfg).items() if k not in ignore}:
        return None
    files = [
        Path(cfg.output_dir) / t.file_name
        for t, n in zip(TASKS.values(), data["entries"].values(), strict=True)
        if n
    ]
    if not all(f.is_file() for f in files):
        return None
    if data.get("imperfect_motions"):  # the dataset may have been rebuilt since (which drops them)
        digits = get_dataset_spec(cfg.dataset).id_digits
        last = str(cfg.first_imperfect_id() + int(data["imperfect_motions"]) - 1).zfill(digits)
        if not DatasetPaths(cfg.imperfect_root_path()).vec_file(last).is_file():
            return None
    fields = {k: data[k] for k in EngineSummary.__dataclass_fields__}
    return EngineSummary(**fields)


def simulate_attempts(annotations: Sequence[Annotation], seed: int) -> dict[int, int]:
    """Failed attempts per dialogue when the stage-2 builder draws once per candidate (section 6.1)."""
    hist: Counter = Counter()
    for a in annotations:
        for ci, cand in enumerate(a.all_candidates()):
            hist[len(choose_attempts(cand, random.Random(f"{seed}:{a.id}:{ci}")))] += 1
    return dict(sorted(hist.items()))


def write_stage3(cfg: EngineConfig, motion_ids: Sequence[str], path: Path) -> int:
    """One JSONL row per (motion, caption line): the stage-3 GRPO prompt set (grpo.md 1.2/1.3)."""
    spec = get_dataset_spec(cfg.dataset)
    paths = DatasetPaths(cfg.dataset_root)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8") as f:
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
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                n += 1
    return n
