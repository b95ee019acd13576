"""Annotation entries for the three SFT stages from goal motions and their imperfect variants.

Pure functions (no I/O): ``Goal`` records (motion id, program, captions, stated attributes) plus
each goal's imperfect ladder (``data.engine.perturb``) become ``Annotation`` objects in the released
format (spec ``sft-and-inference.md`` sections 4.4, 5, 6). Entries are one per caption window or
caption, as in the released files; candidates (``candidate_motion_text``) appear only where the
released files use them (TM2x and stage 2). Per goal:

* stage 0, T2M direct, M2T: one entry per caption window (the whole clip, ``f_tag = to_tag = 0``,
  and each sub-clip ``#from#to`` of the caption file), holding that window's captions as the
  ``<Goal_Caption>`` list; so an epoch sees whole clips and sub-clips in the dataset's proportion;
* T2M detailed: one entry, four descriptions stating every attribute of the program;
* T2T prompt analysis: one entry per caption, four analyses of what that caption states;
* TM2T assessment / refinement, TM2M direct / instructed: one entry whose candidates are (the goal
  itself + each imperfect variant) x captions, capped at ``tm_max_candidates`` (the goal itself
  always kept); assessment and refinement phrasings are lists (one drawn per access);
* stage 2: one entry, one candidate per caption, the goal plus ``<Intermediate_Motion_0..n-1>``
  (worst first) with one assessment object each, ``<Assess_Goal_Motion>`` saying no refinement is
  needed.

Entries carry ``id=None``; the writer numbers them per file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from data.annotations import (
    ASSESS_GOAL,
    ASSESSMENT_ANALYSIS,
    GENERATED_MOTION,
    GOAL_ANALYSIS,
    GOAL_CAPTION,
    GOAL_MOTION,
    PROMPT_ANALYSIS,
    REFINEMENT_INSTRUCTION,
    TASKS,
    Annotation,
    Assessment,
    Candidate,
    MotionRef,
    Turn,
    assess_key,
    intermediate_key,
)
from data.engine.perturb import Imperfect, Stated
from data.engine.phrasing import MATCH_ASSESSMENTS, analyses, assess, detailed_descriptions
from data.prompts import NO_REFINEMENT
from data.synth.program import MotionProgram


@dataclass(frozen=True)
class Goal:
    """A dataset motion used as a goal."""

    motion_id: str
    captions: tuple[str, ...]
    windows: tuple[tuple[float, float], ...]
    """``(f_tag, to_tag)`` per caption (``(0, 0)`` = whole clip)."""
    program: MotionProgram | None = None
    stated: tuple[Stated, ...] = ()
    """Per caption; empty when the dataset has no attributes."""


@dataclass(frozen=True)
class Variant:
    """An imperfect motion written to disk under ``motion_id``."""

    motion_id: str
    imperfect: Imperfect


def _turns(task: str) -> tuple[Turn, Turn, Turn]:
    t = TASKS[task]
    return (Turn("system", t.system), Turn("human", t.user), Turn("gpt", t.answer))


def _ann(task: str, motions: dict, texts: dict, candidates: Sequence[Candidate] = ()) -> Annotation:
    return Annotation(
        id=None,
        task=TASKS[task].task_string,
        motions=motions,
        texts=texts,
        conversations=_turns(task),
        candidates=tuple(candidates),
    )


def _by_window(goal: Goal) -> list[tuple[MotionRef, list[str]]]:
    groups: dict[tuple[float, float], list[str]] = {}
    for cap, win in zip(goal.captions, goal.windows, strict=True):
        groups.setdefault(win, []).append(cap)
    return [(MotionRef(goal.motion_id, f, t), caps) for (f, t), caps in groups.items()]


def _caption_motion(goal: Goal, caption_idx: int) -> MotionRef:
    f, t = goal.windows[caption_idx]
    return MotionRef(goal.motion_id, f, t)


def caption_tasks(goal: Goal) -> dict[str, list[Annotation]]:
    """Stage-0, T2M-direct and M2T entries, one per caption window (need no attributes)."""
    groups = _by_window(goal)
    return {
        task: [_ann(task, {GOAL_MOTION: ref}, {GOAL_CAPTION: tuple(caps)}) for ref, caps in groups]
        for task in ("stage0_t2m", "t2m_direct_generation", "m2t_motion_caption")
    }


def attribute_tasks(
    goal: Goal,
    variants: Sequence[Variant],
    rng: np.random.Generator,
    phrasings: int = 3,
    tm_max_candidates: int = 10,
) -> dict[str, list[Annotation]]:
    """T2M-detailed, T2T (one entry per caption), the four TM2x tasks and the stage-2 entry of one goal."""
    assert goal.program is not None and len(goal.stated) == len(goal.captions)
    prog = goal.program
    out: dict[str, list[Annotation]] = {}
    whole = _caption_motion(goal, 0)
    out["t2m_detailed_prompt_generation"] = [
        _ann(
            "t2m_detailed_prompt_generation",
            {GOAL_MOTION: whole},
            {GOAL_CAPTION: tuple(detailed_descriptions(prog))},
        )
    ]
    out["t2t_prompt_analysis"] = [
        _ann("t2t_prompt_analysis", {}, {GOAL_CAPTION: (cap,), GOAL_ANALYSIS: tuple(analyses(prog, st))})
        for cap, st in zip(goal.captions, goal.stated, strict=True)
    ]

    # TM2x candidates: (goal itself | variant) x caption
    pairs: list[tuple[MotionRef, int, tuple[list[str], list[str]]]] = []
    for ci, st in enumerate(goal.stated):
        order = rng.permutation(len(MATCH_ASSESSMENTS))
        match = ([MATCH_ASSESSMENTS[int(k)] for k in order][:phrasings], [NO_REFINEMENT])
        pairs.append((_caption_motion(goal, ci), ci, match))
        for v in variants:
            pairs.append((MotionRef(v.motion_id), ci, assess(v.imperfect.changes, prog, st, rng, phrasings)))
    # the goal itself against caption 0 is always kept (a "no refinement needed" example)
    others = list(range(1, len(pairs)))
    if len(others) > tm_max_candidates - 1:
        others = sorted(int(k) for k in rng.choice(others, size=max(tm_max_candidates - 1, 0), replace=False))
    keep = [0, *others]
    tm_t, tm_m = [], []
    for k in keep:
        ref, ci, (a_list, r_list) = pairs[k]
        texts = {
            GOAL_CAPTION: (goal.captions[ci],),
            ASSESSMENT_ANALYSIS: tuple(dict.fromkeys(a_list)),
            REFINEMENT_INSTRUCTION: tuple(dict.fromkeys(r_list)),
        }
        name = f"{goal.motion_id}_{ci}"
        tm_t.append(Candidate({GENERATED_MOTION: ref}, texts, name))
        tm_m.append(Candidate({GENERATED_MOTION: ref, GOAL_MOTION: _caption_motion(goal, ci)}, texts, name))
    for task, cands in (
        ("tm2t_assessment_analysis", tm_t),
        ("tm2t_refinement_instruction", tm_t),
        ("tm2m_direct_refinement", tm_m),
        ("tm2m_instructed_refinement", tm_m),
    ):
        out[task] = [_ann(task, dict(cands[0].motions), dict(cands[0].texts), cands)]

    # stage 2: one candidate per caption
    cot = []
    for ci, (cap, st) in enumerate(zip(goal.captions, goal.stated, strict=True)):
        motions: dict = {GOAL_MOTION: _caption_motion(goal, ci)}
        texts: dict = {
            GOAL_CAPTION: cap,
            PROMPT_ANALYSIS: tuple(analyses(prog, st)),
            ASSESS_GOAL: Assessment(
                MATCH_ASSESSMENTS[int(rng.integers(len(MATCH_ASSESSMENTS)))], NO_REFINEMENT
            ),
        }
        for k, v in enumerate(variants):
            a_list, r_list = assess(v.imperfect.changes, prog, st, rng, 1)
            motions[intermediate_key(k)] = MotionRef(v.motion_id)
            texts[assess_key(intermediate_key(k))] = Assessment(a_list[0], r_list[0])
        cot.append(Candidate(motions, texts, f"{goal.motion_id}_{ci}"))
    out["irmogen_cot"] = [_ann("irmogen_cot", dict(cot[0].motions), dict(cot[0].texts), cot)]
    return out
