"""Imperfect motions by construction: perturb a SynthML program and record exactly what changed.

A goal program (``data.synth.program.MotionProgram``) is turned into a ladder of imperfect programs
from worst to best (spec ``sft-and-inference.md`` section 4.4: intermediate attempts go from an
unrelated gesture, through partly right motions, to a near miss):

* rung 0: an unrelated action (a different family, fresh attributes);
* middle rungs: two changes (structure and/or attributes);
* last rung: one change (a near miss).

Each change is a ``Change`` record; the assessment and refinement texts are generated from the
records (``data.engine.phrasing``), so they are true by construction. A change only counts against
a caption that states the changed attribute (``Stated``): a speed change is no error for a caption
that does not mention speed. Perturbations prefer attributes every caption of the motion states.

Change kinds (``Change.kind``): ``attr`` (direction, speed, repetitions, limb, amplitude),
``truncate`` (shorter locomotion ``duration`` or fewer repetitions), ``family`` (the whole motion
replaced by an unrelated action), ``drop_second`` (the second action is missing), ``replace_second``
(a different second action), ``swap_order`` (the two actions in the wrong order).

``apply_changes(goal, changes)`` rebuilds an imperfect program from its goal and its change records
(checking each record's goal value on the way), so a record set that does not describe the imperfect
program exactly is caught (the engine stores both in ``attributes/<id>.json``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from data.synth.program import (
    FAMILIES,
    ActionSpec,
    MotionProgram,
    ProgramError,
    family_attributes,
    sample_action,
)

Stated = frozenset[tuple[int, str]]
"""(action index, attribute) pairs a caption states; the families and the structure always count."""

PERTURBABLE = ("direction", "speed", "repetitions", "limb", "amplitude")


@dataclass(frozen=True)
class Change:
    """One difference between an imperfect program and its goal."""

    kind: str
    action: int = 0
    """Index of the affected goal action."""
    attr: str | None = None
    goal: Any = None
    """Goal value (attribute value, or the goal ``ActionSpec`` for structural kinds)."""
    got: Any = None
    """Value in the imperfect program."""

    def stated_by(self, stated: Stated) -> bool:
        """Whether a caption stating ``stated`` would notice this change."""
        if self.kind in ("attr", "truncate"):
            return (self.action, self.attr) in stated
        return True

    def to_dict(self) -> dict[str, Any]:
        def conv(v: Any) -> Any:
            return v.to_dict() if isinstance(v, ActionSpec | MotionProgram) else v

        return {
            "kind": self.kind,
            "action": self.action,
            "attr": self.attr,
            "goal": conv(self.goal),
            "got": conv(self.got),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Change:
        """Inverse of ``to_dict`` (programs and actions come back as ``MotionProgram``/``ActionSpec``)."""
        kind = data["kind"]
        if kind not in CHANGE_KINDS:
            raise ValueError(f"change kind {kind!r} unknown; known: {CHANGE_KINDS}")
        goal, got = data.get("goal"), data.get("got")
        if kind == "family":
            goal, got = MotionProgram.from_dict(goal), MotionProgram.from_dict(got)
        elif kind in ("drop_second", "replace_second", "swap_order"):
            goal = ActionSpec.from_dict(goal, "change.goal")
            got = ActionSpec.from_dict(got, "change.got") if got is not None else None
        return cls(kind, int(data.get("action", 0)), data.get("attr"), goal, got)


CHANGE_KINDS = ("attr", "truncate", "family", "drop_second", "replace_second", "swap_order")


@dataclass(frozen=True)
class Imperfect:
    """An imperfect program with the changes that separate it from the goal."""

    program: MotionProgram
    changes: tuple[Change, ...]


def _other_value(rng: np.random.Generator, allowed: tuple, current: Any) -> Any:
    options = [v for v in allowed if v != current]
    return options[int(rng.integers(len(options)))] if options else None


def _attr_candidates(program: MotionProgram, index_map: list[int | None]) -> list[tuple[int, str]]:
    """Perturbable (action index in ``program``, attr) pairs of actions that come from the goal."""
    return [
        (i, a)
        for i, act in enumerate(program.actions)
        if index_map[i] is not None
        for a in PERTURBABLE
        if a in act.spec.attributes and len(act.spec.attributes[a]) > 1
    ]


def _try(
    program: MotionProgram, actions: Iterable[ActionSpec], relation: str | None = None
) -> MotionProgram | None:
    try:
        return MotionProgram(tuple(actions), relation or program.relation)
    except ProgramError:
        return None


def attr_change(
    rng: np.random.Generator, program: MotionProgram, idx: int, attr: str
) -> tuple[MotionProgram, Change] | None:
    """Replace one attribute by another allowed value."""
    act = program.actions[idx]
    new = _other_value(rng, tuple(family_attributes(act.family)[attr]), getattr(act, attr))
    if new is None:
        return None
    acts = list(program.actions)
    acts[idx] = act.with_(**{attr: new})
    out = _try(program, acts)
    return (out, Change("attr", idx, attr, getattr(act, attr), new)) if out else None


def truncate(
    rng: np.random.Generator, program: MotionProgram, idx: int
) -> tuple[MotionProgram, Change] | None:
    """Cut an action short: 40-60% of a locomotion duration, or fewer repetitions."""
    act = program.actions[idx]
    acts = list(program.actions)
    if act.duration is not None:
        new = round(max(0.5, act.duration * float(rng.uniform(0.4, 0.6))), 2)
        acts[idx] = act.with_(duration=new)
        out = _try(program, acts)
        return (out, Change("truncate", idx, "duration", act.duration, new)) if out else None
    if act.repetitions is not None and act.repetitions > 1:
        allowed = [r for r in family_attributes(act.family)["repetitions"] if r < act.repetitions]
        new = allowed[int(rng.integers(len(allowed)))]
        acts[idx] = act.with_(repetitions=new)
        out = _try(program, acts)
        return (out, Change("truncate", idx, "repetitions", act.repetitions, new)) if out else None
    return None


def unrelated(rng: np.random.Generator, program: MotionProgram) -> tuple[MotionProgram, Change]:
    """A single action of a family the goal does not contain."""
    used = {a.family for a in program.actions}
    names = [f for f in FAMILIES if f not in used and not FAMILIES[f].starts_seated]
    fam = names[int(rng.integers(len(names)))]
    new = MotionProgram((sample_action(rng, fam),), "single")
    return new, Change("family", 0, None, program, new)


def structural(rng: np.random.Generator, program: MotionProgram) -> list[tuple[MotionProgram, Change]]:
    """All valid structural changes of a two-action program (drop / replace / swap the second)."""
    if len(program.actions) < 2:
        return []
    first, second = program.actions
    out = []
    dropped = _try(program, [first], "single")
    if dropped:
        out.append((dropped, Change("drop_second", 1, None, second, None)))
    pool = (
        ("wave", "raise_arms", "clap")
        if program.relation == "simultaneous"
        else tuple(
            f for f in FAMILIES if f not in (first.family, second.family) and not FAMILIES[f].starts_seated
        )
    )
    pool = tuple(f for f in pool if f != second.family)
    if pool:
        fam = pool[int(rng.integers(len(pool)))]
        replaced = _try(program, [first, sample_action(rng, fam, max_duration=4.0)])
        if replaced:
            out.append((replaced, Change("replace_second", 1, None, second, replaced.actions[1])))
    if program.relation == "sequence":
        swapped = _try(program, [second, first])
        if swapped:
            out.append((swapped, Change("swap_order", 0, None, first, second)))
    return out


def _one_change(
    rng: np.random.Generator,
    program: MotionProgram,
    index_map: list[int | None],
    stated_all: Stated,
    used: set[tuple[int, str]],
    stated_any: Stated | None = None,
) -> tuple[MotionProgram, Change] | None:
    """A random attribute (else truncation) change on an unused goal attribute, stated ones first.

    ``index_map[i]`` is the goal index of ``program.actions[i]`` (``None`` for a replaced action);
    the returned ``Change.action`` is a goal index.
    """
    cands = [p for p in _attr_candidates(program, index_map) if (index_map[p[0]], p[1]) not in used]
    # truncation competes with attribute changes, keyed by the attribute it shortens
    for idx, gidx in enumerate(index_map):
        act = program.actions[idx]
        if gidx is None or (gidx, "truncate") in used:
            continue
        if act.duration is not None:
            cands.append((idx, "truncate:duration"))
        elif act.repetitions is not None and act.repetitions > 1 and (gidx, "repetitions") not in used:
            cands.append((idx, "truncate:repetitions"))

    def stated_key(p: tuple[int, str]) -> tuple[int | None, str]:
        return index_map[p[0]], p[1].split(":")[-1]

    # stated by every caption > by some caption > (only when stated_any is None) any attribute
    preferred = [p for p in cands if stated_key(p) in stated_all] or [
        p for p in cands if stated_any is None or stated_key(p) in stated_any
    ]
    for k in rng.permutation(len(preferred)):
        idx, attr = preferred[int(k)]
        res = (
            truncate(rng, program, idx)
            if attr.startswith("truncate")
            else attr_change(rng, program, idx, attr)
        )
        if res:
            gidx = index_map[idx]
            prog, ch = res
            used.update({(gidx, ch.attr), (gidx, "truncate")} if ch.kind == "truncate" else {(gidx, attr)})
            return prog, Change(ch.kind, gidx, ch.attr, ch.goal, ch.got)
    return None


_INDEX_MAPS = {"drop_second": [0], "replace_second": [0, None], "swap_order": [1, 0]}


def apply_changes(goal: MotionProgram, changes: Iterable[Change]) -> MotionProgram:
    """The imperfect program that ``changes`` (in ladder order) make of ``goal``.

    Structural kinds act on the program as it is; ``attr``/``truncate`` act on goal action
    ``change.action`` wherever it now sits. Raises ``ValueError`` when a record does not fit the
    program (its ``goal`` value differs, or its action is gone), i.e. when the records are not the
    truth about the imperfect program.
    """
    program = goal
    index_map: list[int | None] = list(range(len(goal.actions)))
    for ch in changes:
        acts = program.actions
        if ch.kind == "family":
            if ch.goal != program:
                raise ValueError(f"family change recorded against {ch.goal}, applied to {program}")
            program, index_map = ch.got, [None] * len(ch.got.actions)
            continue
        if ch.kind in _INDEX_MAPS:
            if len(acts) != 2 or acts[1 if ch.kind != "swap_order" else 0] != ch.goal:
                raise ValueError(f"{ch.kind} records goal action {ch.goal}, program has {acts}")
            if ch.kind == "drop_second":
                program = MotionProgram((acts[0],), "single")
            elif ch.kind == "replace_second":
                program = MotionProgram((acts[0], ch.got), program.relation)
            else:
                if acts[1] != ch.got:
                    raise ValueError(f"swap_order records second action {ch.got}, program has {acts[1]}")
                program = MotionProgram((acts[1], acts[0]), program.relation)
            index_map = [index_map[i] if i is not None else None for i in _INDEX_MAPS[ch.kind]]
            continue
        if ch.action not in index_map:
            raise ValueError(f"{ch.kind} change on goal action {ch.action}, which {program} no longer has")
        pos = index_map.index(ch.action)
        if getattr(acts[pos], ch.attr) != ch.goal:
            raise ValueError(
                f"{ch.kind} records {ch.attr}={ch.goal!r}, action has {getattr(acts[pos], ch.attr)!r}"
            )
        new = list(acts)
        new[pos] = acts[pos].with_(**{ch.attr: ch.got})
        program = MotionProgram(tuple(new), program.relation)
    return program


def imperfect_ladder(
    rng: np.random.Generator,
    goal: MotionProgram,
    stated_all: Stated,
    n: int = 4,
    stated_any: Stated | None = None,
) -> list[Imperfect]:
    """``n`` imperfect versions of ``goal``, worst first (see the module docstring).

    Args:
        rng: seeded generator (one per goal motion keeps the engine order-independent).
        goal: the goal program.
        stated_all: attributes every caption of the goal states (preferred for perturbation).
        n: rungs; rung 0 is an unrelated action, the last a single change.
        stated_any: attributes some caption states; when given, attribute changes are limited to
            these (a change no caption states would read as "no refinement needed" for all of
            them), and a rung with no such change falls back to a structural change, else to an
            unrelated action.
    """
    ladder: list[Imperfect] = []
    if n <= 0:
        return ladder
    prog, change = unrelated(rng, goal)
    ladder.append(Imperfect(prog, (change,)))
    for rung in range(1, n):
        n_changes = 1 if rung == n - 1 else 2
        program, changes, used = goal, [], set()
        index_map: list[int | None] = list(range(len(goal.actions)))
        structs = structural(rng, goal)
        stated_pool = [
            (i, a) for i, act in enumerate(goal.actions) for a in act.meaningful()
            if stated_any is None or (i, a) in stated_any
        ]  # fmt: skip
        if structs and (rng.random() < 0.5 or not stated_pool):
            program, ch = structs[int(rng.integers(len(structs)))]
            changes.append(ch)
            index_map = list(_INDEX_MAPS[ch.kind])
        while len(changes) < n_changes:
            res = _one_change(rng, program, index_map, stated_all, used, stated_any)
            if res is None:
                break
            program, ch = res
            changes.append(ch)
        if not changes:
            program, ch = unrelated(rng, goal)
            changes = [ch]
        ladder.append(Imperfect(program, tuple(changes)))
    return ladder
