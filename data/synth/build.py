"""Build a SynthML dataset folder (HumanML3D or KIT-ML layout) from the procedural generator.

Reads nothing. Writes under ``out``: ``new_joints/``, ``new_joint_vecs/``, ``texts/``,
``attributes/``, ``train.txt`` ``val.txt`` ``test.txt`` ``train_val.txt`` ``all.txt`` (about
80/5/15), ``Mean.npy``/``Std.npy`` (HumanML3D way: mean over all frames of the train clips; std
averaged within each feature block), ``synthml_build.json`` (parameters + statistics) and the run
manifest ``run.json`` (:mod:`data.run_folder`, command ``data.synth``; written first and last).

Splits are by program (``data.synth.splits``): every motion of one program key is in one split, no
validation or test program occurs in training, and held-out programs only combine values that
training programs have. The build runs in three passes: sample every program and assign splits;
render the training motions; render the held-out motions, whose captions must differ from every
training caption line (a colliding caption is redrawn from the motion's own second random stream,
stating more attributes after a few tries) and whose sub-clip lines are dropped when their window
shows a training program. Training sub-clip lines whose window shows a held-out program are dropped
too. Motion ``i`` depends only on ``(seed, i)`` (``np.random.default_rng([seed, i])``) and its
split's filter, so the output is identical for any number of worker processes.

A complete folder built with the same parameters is left alone unless ``force=True``. A folder
holding files this command did not write (e.g. a real dataset) is refused unless ``overwrite=True``,
and its files are never deleted; ``force=True`` rebuilds this command's own earlier build (also with
other parameters) and removes only the motions of that build that are not written again.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from data.layout import DatasetPaths
from data.progress import progress_bar
from data.run_folder import RunFolder
from data.specs import DatasetSpec, get_dataset_spec
from data.synth.body import sample_subject
from data.synth.captions import Caption, caption_action, caption_program
from data.synth.program import MotionProgram
from data.synth.render import render_program_info
from data.synth.sampling import sample_program
from data.synth.splits import (
    SPLIT_FRACTIONS,
    MotionRecord,
    action_key,
    assign_program_splits,
    caption_key,
    overlap_figures,
    program_key,
)
from data.synth.writer import write_motion

logger = logging.getLogger(__name__)

MARKER = "synthml_build.json"
COMMAND = "data.synth"
CLI_FIXES = {"overwrite": "pass --overwrite", "restart": "pass --force", "out": "choose another --out"}
GENERATOR_VERSION = 2
"""2: splits by program, held-out captions distinct from training captions (1: random split)."""
MIN_CAPTIONS = 3
"""Whole-clip captions every motion keeps (the spec asks for 3 or more)."""
MAX_REDRAWS = 200
"""Caption draws a held-out motion may spend on replacing captions that occur in training."""


@dataclass(frozen=True)
class CaptionFilter:
    """What a motion's caption lines must avoid (set per split by ``build_synthml``)."""

    texts: frozenset[str] = frozenset()
    """``caption_key`` of lines the motion must not emit (redrawn, see ``make_motion``)."""
    windows: frozenset[str] = frozenset()
    """``action_key`` of sub-clip windows whose line is dropped."""


@dataclass(frozen=True)
class _Job:
    out: str
    dataset: str
    seed: int
    index: int
    motion_id: str
    subclip_prob: float


def motion_program(seed: int, index: int) -> MotionProgram:
    """The program of motion ``index`` (the first draws of ``make_motion``'s random stream)."""
    return sample_program(np.random.default_rng([int(seed), int(index)]))


def make_motion(
    seed: int,
    index: int,
    dataset: str = "humanml3d",
    subclip_prob: float = 0.25,
    avoid: CaptionFilter | None = None,
) -> dict[str, Any]:
    """Sample and render motion ``index`` of the dataset with ``seed`` (no files written).

    ``avoid`` (held-out motions): whole-clip captions whose ``caption_key`` is in ``avoid.texts``
    are replaced by fresh ones drawn from ``default_rng([seed, index, 1])`` (the last quarter of the
    ``MAX_REDRAWS`` tries state every attribute); if fewer than ``MIN_CAPTIONS`` distinct
    non-colliding captions come out, colliding ones fill up (counted in ``collisions``). A sub-clip
    line is dropped if its window's ``action_key`` is in ``avoid.windows`` or no non-colliding
    caption is found for it.

    Returns a dict with ``joints`` ``(T, J, 3)``, ``captions`` (list of ``Caption``),
    ``attributes`` (JSON-safe: program, subject, style seed, segments), ``program``, ``record``
    (``MotionRecord``) and the counts ``redraws``, ``collisions``, ``subclips_dropped``.
    """
    spec = get_dataset_spec(dataset)
    avoid = avoid or CaptionFilter()
    rng = np.random.default_rng([int(seed), int(index)])
    program = sample_program(rng)
    subject = sample_subject(rng)
    style_seed = int(rng.integers(2**31 - 1))
    n_caps = int(rng.choice([3, 3, 4, 5]))
    result = render_program_info(program, subject, style_seed, spec.name)
    captions: list[Caption] = caption_program(program, rng, n_caps)
    subclip: Caption | None = None
    subclip_action = -1
    if program.relation == "sequence" and rng.random() < subclip_prob:
        seg = result.segments[int(rng.integers(len(result.segments)))]
        start, end = round(seg.start, 2), round(seg.end, 2)
        frames = int(end * spec.fps) - int(start * spec.fps)
        if spec.min_motion_len + 1 <= frames < spec.max_clip_len and end > 0:
            cap = caption_action(program, seg.action, rng)
            subclip = Caption(cap.text, cap.tokens, cap.stated, start=start, end=end)
            subclip_action = seg.action
    redraws = collisions = dropped = 0
    fix_rng = np.random.default_rng([int(seed), int(index), 1])
    if avoid.texts:
        captions, redraws, collisions = _avoid_captions(
            captions, lambda full: caption_program(program, fix_rng, 1, state_all=full)[0], avoid.texts
        )
    if subclip is not None and action_key(program.actions[subclip_action]) in avoid.windows:
        subclip, dropped = None, 1
    if subclip is not None and caption_key(subclip.text) in avoid.texts:
        fresh, n, _ = _avoid_captions(
            [subclip],
            lambda full: caption_action(program, subclip_action, fix_rng, state_all=full),
            avoid.texts,
            minimum=0,
        )
        redraws += n
        if fresh:
            subclip = Caption(
                fresh[0].text, fresh[0].tokens, fresh[0].stated, start=subclip.start, end=subclip.end
            )
        else:
            subclip, dropped = None, 1
    if subclip is not None:
        captions.append(subclip)
    attributes = {
        "program": program.to_dict(),
        "subject": subject.to_dict(),
        "style_seed": style_seed,
        "segments": [{"action": s.action, "start": s.start, "end": s.end} for s in result.segments],
        "seed": int(seed),
        "index": int(index),
        "generator_version": GENERATOR_VERSION,
    }
    record = MotionRecord.from_parts(
        program, [c.text for c in captions], [subclip_action] if subclip is not None else []
    )
    return {"joints": result.joints, "captions": captions, "attributes": attributes, "program": program,
            "record": record, "redraws": redraws, "collisions": collisions, "subclips_dropped": dropped}  # fmt: skip


def _avoid_captions(
    captions: list[Caption],
    draw: Callable[[bool], Caption],
    avoid: frozenset[str],
    minimum: int = MIN_CAPTIONS,
) -> tuple[list[Caption], int, int]:
    """Replace captions whose key is in ``avoid`` by draws (``draw(state_all)``), keeping lines distinct.

    Returns ``(captions, draws made, colliding captions kept to reach min(minimum, len(captions)))``.
    """
    kept = [c for c in captions if caption_key(c.text) not in avoid]
    seen = {caption_key(c.text) for c in kept}
    draws = 0
    while len(kept) < len(captions) and draws < MAX_REDRAWS:
        cap = draw(draws >= MAX_REDRAWS * 3 // 4)
        draws += 1
        key = caption_key(cap.text)
        if key not in avoid and key not in seen:
            kept.append(cap)
            seen.add(key)
    need = min(minimum, len(captions)) - len(kept)
    if need > 0:
        kept += [c for c in captions if caption_key(c.text) in avoid][:need]
    return kept, draws, max(need, 0)


_FILTER = CaptionFilter()
"""The current pass's filter in this process (set by ``_set_filter``, the pool initializer)."""


def _set_filter(avoid: CaptionFilter) -> None:
    global _FILTER
    _FILTER = avoid


def _run_job(job: _Job) -> dict[str, Any]:
    m = make_motion(job.seed, job.index, job.dataset, job.subclip_prob, _FILTER)
    feats = write_motion(job.out, job.motion_id, m["joints"], m["captions"], m["attributes"], job.dataset)
    f64 = feats.astype(np.float64)
    return {
        "index": job.index,
        "frames": int(feats.shape[0]),
        "families": [a.family for a in m["program"].actions],
        "relation": m["program"].relation,
        "captions": len(m["captions"]),
        "subclips": sum(not (c.start == 0 and c.end == 0) for c in m["captions"]),
        "words": sorted({t.split("/")[0] for c in m["captions"] for t in c.tokens}),
        "sum": f64.sum(0),
        "sumsq": (f64 * f64).sum(0),
        "record": m["record"],
        "redraws": m["redraws"],
        "collisions": m["collisions"],
        "subclips_dropped": m["subclips_dropped"],
    }


def _program_job(job: _Job) -> MotionProgram:
    return motion_program(job.seed, job.index)


def _map(
    fn: Callable, jobs: Sequence[_Job], workers: int, avoid: CaptionFilter, bar: tqdm | None = None
) -> list:
    """``[fn(job) for job in jobs]`` in ``workers`` processes, each with ``avoid`` as its filter."""
    if workers <= 1 or len(jobs) < 2:
        _set_filter(avoid)
        try:
            out = []
            for job in jobs:
                out.append(fn(job))
                if bar is not None:
                    bar.update(1)
            return out
        finally:
            _set_filter(CaptionFilter())
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    out = []
    with ctx.Pool(workers, initializer=_set_filter, initargs=(avoid,)) as pool:
        for r in pool.imap(fn, jobs, chunksize=8):
            out.append(r)
            if bar is not None:
                bar.update(1)
    return out


def _params(dataset: str, num: int, seed: int, subclip_prob: float) -> dict[str, Any]:
    return {"dataset": dataset, "num": num, "seed": seed, "subclip_prob": subclip_prob,
            "generator_version": GENERATOR_VERSION}  # fmt: skip


def mean_std(
    sums: np.ndarray, sumsqs: np.ndarray, count: int, spec_name: str
) -> tuple[np.ndarray, np.ndarray]:
    """HumanML3D normalisation from per-feature sums over ``count`` frames.

    mean = sum / n; std = sqrt(sumsq / n - mean^2), then replaced within each feature block
    (``spec.feature_slices``) by the block's average std. Returns float32 ``(D,)`` arrays.
    """
    spec = get_dataset_spec(spec_name)
    mean = sums / count
    std = np.sqrt(np.maximum(sumsqs / count - mean * mean, 0.0))
    for name, sl in spec.feature_slices.items():
        block = float(std[sl].mean())
        if block < 1e-6:
            logger.warning("feature block %s has ~zero std (%.2e); using 1.0", name, block)
            block = 1.0
        std[sl] = block
    return mean.astype(np.float32), std.astype(np.float32)


def build_synthml(
    out: str | Path,
    dataset: str = "humanml3d",
    num: int = 3000,
    seed: int = 0,
    workers: int | None = None,
    force: bool = False,
    subclip_prob: float = 0.25,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Build (or reuse) a SynthML folder; returns the summary statistics.

    Args:
        out: output folder.
        dataset: ``humanml3d`` or ``kit``; joints, feature size, fps and units come from its spec.
        num: number of motions (at least 20, so that every split is non-empty).
        seed: dataset seed; motion ``i`` uses ``default_rng([seed, i])``.
        workers: processes (``None``: all CPUs; 1: in-process).
        force: rebuild even if a complete build with the same parameters exists; needed to rebuild
            this command's earlier build with other parameters.
        subclip_prob: probability that a sequence motion gets one extra sub-clip caption line.
        progress: show a tqdm bar.
        overwrite: write into a folder holding files this command did not write (they are kept
            unless a motion id collides) or another command's run.

    Raises:
        RunFolderError: ``out`` holds files of another origin or another command's run (fix:
            ``overwrite``), a build with other parameters (fix: ``force``), or is locked.
    """
    t0 = time.perf_counter()
    spec = get_dataset_spec(dataset)
    if num < 20:
        raise ValueError(
            f"build_synthml: num={num} is too small; at least 20 motions are needed for 80/5/15 splits"
        )
    out = Path(out)
    params = _params(spec.name, int(num), int(seed), float(subclip_prob))
    ids = [f"{i:0{spec.id_digits}d}" for i in range(num)]
    with RunFolder.open(
        out, command=COMMAND, config=params, resume=not force, overwrite=overwrite, fixes=CLI_FIXES
    ) as run:
        if run.finished and not run.missing_files():
            logger.info("SynthML at %s is complete (%d motions); skipping (use --force to rebuild)", out, num)
            return json.loads((out / MARKER).read_text())["summary"]
        if run.finished:
            logger.warning("%s: %d recorded files are missing; rebuilding", out, len(run.missing_files()))
        summary = _build(run, spec, ids, params, workers, progress, t0)
        run.done()
    return summary


def _build(
    run: RunFolder,
    spec: DatasetSpec,
    ids: list[str],
    params: dict[str, Any],
    workers: int | None,
    progress: bool,
    t0: float,
) -> dict[str, Any]:
    out, num, seed, subclip_prob = run.root, params["num"], params["seed"], params["subclip_prob"]
    run.begin()  # the manifest exists before the workers write motions
    workers = workers or os.cpu_count() or 1
    jobs = [_Job(str(out), spec.name, int(seed), i, ids[i], float(subclip_prob)) for i in range(num)]
    # Pass 1: programs -> splits. Pass 2: training motions. Pass 3: held-out motions.
    programs = _map(_program_job, jobs, workers, CaptionFilter())
    split_of = assign_program_splits(programs, int(seed))
    train_jobs = [j for j in jobs if split_of[j.index] == "train"]
    held_jobs = [j for j in jobs if split_of[j.index] != "train"]
    held_programs = frozenset(program_key(p) for p, s in zip(programs, split_of, strict=True) if s != "train")
    bar = progress_bar(total=num, desc=f"SynthML {spec.name}", unit="motion", disable=not progress)
    train_results = _map(_run_job, train_jobs, workers, CaptionFilter(windows=held_programs), bar)
    train_records = [r["record"] for r in train_results]
    held_avoid = CaptionFilter(
        texts=frozenset(c for r in train_records for c in r.captions),
        windows=frozenset(w for r in train_records for w in (r.program, *r.windows)),
    )
    held_results = _map(_run_job, held_jobs, workers, held_avoid, bar)
    bar.close()
    results: list[dict[str, Any]] = sorted(train_results + held_results, key=lambda r: r["index"])

    splits = {name: sorted(ids[i] for i in range(num) if split_of[i] == name) for name in SPLIT_FRACTIONS}
    splits["train_val"] = sorted(splits["train"] + splits["val"])
    splits["all"] = list(ids)
    paths = DatasetPaths(out)
    _record_motions(run, paths, ids)
    for name, members in splits.items():
        run.write_text(paths.split_file(name).relative_to(out), "".join(m + "\n" for m in members))
    train = {int(m) for m in splits["train"]}
    # Reduce in index order so the statistics do not depend on the worker count.
    d = spec.feat_dim
    sums, sumsqs, count = np.zeros(d), np.zeros(d), 0
    for r in results:
        if r["index"] in train:
            sums += r["sum"]
            sumsqs += r["sumsq"]
            count += r["frames"]
    mean, std = mean_std(sums, sumsqs, count, spec.name)
    run.save_npy(paths.mean_file.relative_to(out), mean)
    run.save_npy(paths.std_file.relative_to(out), std)

    elapsed = time.perf_counter() - t0
    summary = _summary(results, splits, split_of, elapsed, workers, spec.fps)
    run.write_text(MARKER, json.dumps({"params": params, "summary": summary}, indent=1))
    _log_summary(out, summary)
    return summary


def _record_motions(run: RunFolder, paths: DatasetPaths, ids: list[str]) -> None:
    """Record the files the workers wrote, so that a rebuild can tell them from files of other origin."""
    for motion_id in ids:
        for f in (paths.vec_file(motion_id), paths.joint_file(motion_id), paths.text_file(motion_id),
                  paths.attributes_file(motion_id)):  # fmt: skip
            run.record(f.relative_to(paths.root))


def _summary(
    results: list, splits: dict[str, list[str]], split_of: list[str], elapsed: float, workers: int, fps: float
) -> dict[str, Any]:
    frames = np.array([r["frames"] for r in results])
    records = {s: [r["record"] for r in results if split_of[r["index"]] == s] for s in SPLIT_FRACTIONS}
    families = Counter(f for r in results for f in r["families"])
    vocab = set().union(*(r["words"] for r in results))
    return {
        "motions": len(results),
        "splits": {k: len(v) for k, v in splits.items()},
        "frames": {
            "total": int(frames.sum()),
            "mean": round(float(frames.mean()), 1),
            "min": int(frames.min()),
            "max": int(frames.max()),
            "hours": round(float(frames.sum()) / fps / 3600, 3),
        },  # fmt: skip
        "relations": dict(Counter(r["relation"] for r in results)),
        "families": dict(sorted(families.items())),
        "captions": {
            "total": int(sum(r["captions"] for r in results)),
            "subclip_lines": int(sum(r["subclips"] for r in results)),
            "per_motion": round(float(np.mean([r["captions"] for r in results])), 2),
            "vocabulary": len(vocab),
        },  # fmt: skip
        "split_by_program": {
            "programs": {s: len({r.program for r in recs}) for s, recs in records.items()},
            "caption_redraws": int(sum(r["redraws"] for r in results)),
            "caption_collisions": int(sum(r["collisions"] for r in results)),
            "subclips_dropped": int(sum(r["subclips_dropped"] for r in results)),
            "overlap": {s: overlap_figures(records["train"], records[s]) for s in ("val", "test")},
        },
        "seconds": round(elapsed, 1),
        "workers": workers,
    }


def _log_summary(out: Path, s: dict[str, Any]) -> None:
    logger.info("SynthML written to %s in %.1f s with %d worker(s)", out, s["seconds"], s["workers"])
    logger.info("motions %d, splits %s", s["motions"], s["splits"])
    logger.info("frames %s", s["frames"])
    logger.info("relations %s", s["relations"])
    logger.info("families %s", s["families"])
    logger.info("captions %s", s["captions"])
    split = s["split_by_program"]
    logger.info(
        "split by program: programs %s, caption redraws %d, collisions %d, sub-clip lines dropped %d",
        split["programs"], split["caption_redraws"], split["caption_collisions"], split["subclips_dropped"],
    )  # fmt: skip
    if split["caption_collisions"]:
        logger.warning(
            "%d held-out caption lines equal a training caption (no distinct caption found in %d draws); "
            "the test split is not fully caption-disjoint",
            split["caption_collisions"],
            MAX_REDRAWS,
        )
    for name, fig in split["overlap"].items():
        logger.info(
            "%s vs train: programs in train %.1f%%, captions in train %.1f%%, unseen values %.1f%%",
            name, 100 * fig["programs_in_train"], 100 * fig["captions_in_train"], 100 * fig["unseen_values"],
        )  # fmt: skip
