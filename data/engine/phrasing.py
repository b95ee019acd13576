"""Texts the data engine writes: analyses, detailed prompts, assessments and refinement instructions.

All wording is ours. Every text is generated from a program (``data.synth.program``) and, for
assessments, from the ``Change`` records of ``data.engine.perturb``, so it is true by construction.
Only attributes a caption states (``Stated``) are mentioned when the text is about that caption.
Each function returns several phrasings; callers draw among them with a seeded RNG.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from data.engine.perturb import Change, Stated
from data.prompts import NO_REFINEMENT
from data.synth.program import ActionSpec, MotionProgram

# family -> (third person, -ing form, base form, noun)
VERBS: dict[str, tuple[str, str, str, str]] = {
    "walk": ("walks", "walking", "walk", "walk"),
    "run": ("runs", "running", "run", "run"),
    "jump": ("jumps", "jumping", "jump", "jump"),
    "hop": ("hops", "hopping", "hop", "hop"),
    "wave": ("waves", "waving", "wave", "wave"),
    "kick": ("kicks", "kicking", "kick", "kick"),
    "squat": ("squats", "squatting", "squat", "squat"),
    "turn": ("turns", "turning", "turn", "turn"),
    "sit_down": ("sits down", "sitting down", "sit down", "sitting motion"),
    "stand_up": ("stands up", "standing up", "stand up", "standing motion"),
    "raise_arms": ("raises", "raising", "raise", "arm raise"),
    "punch": ("punches", "punching", "punch", "punch"),
    "side_step": ("steps sideways", "stepping sideways", "step sideways", "side step"),
    "jumping_jacks": ("does jumping jacks", "doing jumping jacks", "do jumping jacks", "jumping jacks"),
    "clap": ("claps", "clapping", "clap", "clapping"),
    "bend": ("bends over", "bending over", "bend over", "bend"),
    "throw": ("throws", "throwing", "throw", "throw"),
}

_DIRECTION = {
    "forward": "forward",
    "backward": "backward",
    "left": "to the left",
    "right": "to the right",
    "turn_left": "forward with a left turn",
    "turn_right": "forward with a right turn",
    "circle_left": "in a counterclockwise circle",
    "circle_right": "in a clockwise circle",
    "up": "in place",
    "sideways": "out to the sides",
}
_SPEED = {"slow": "slowly", "normal": "at a normal pace", "fast": "quickly"}
_REPS = {1: "once", 2: "twice", 3: "three times", 4: "four times"}
_AMPLITUDE = {
    "low": "with small movements",
    "normal": "with moderate movements",
    "high": "with large movements",
}
_ATTR_NAME = {
    "direction": "direction",
    "speed": "speed",
    "repetitions": "number of repetitions",
    "limb": "limb",
    "amplitude": "amplitude",
    "duration": "duration",
}
ATTR_ORDER = ("limb", "direction", "repetitions", "speed", "amplitude", "duration")


def value_phrase(act: ActionSpec, attr: str, value) -> str:
    """How attribute ``attr`` = ``value`` of ``act`` is worded after the verb."""
    if attr == "direction":
        if act.family == "raise_arms" and value == "up":
            return "overhead"
        return _DIRECTION[value]
    if attr == "speed":
        return _SPEED[value]
    if attr == "repetitions":
        return _REPS.get(int(value), f"{int(value)} times")
    if attr == "amplitude":
        return _AMPLITUDE[value]
    if attr == "duration":
        return f"for about {max(1, round(float(value)))} seconds"
    if attr == "limb":
        part = act.spec.limb_part or "arm"
        if act.family == "raise_arms":
            return "both arms" if value == "both" else f"the {value} arm"
        if act.family == "hop":
            return f"on the {value} leg"
        return f"with both {part}s" if value == "both" else f"with the {value} {part}"
    raise KeyError(attr)


_FACT = {
    "speed": {"slow": "slow", "normal": "normal", "fast": "fast"},
    "amplitude": {"low": "small", "normal": "moderate", "high": "large"},
    "repetitions": {1: "one", 2: "two", 3: "three", 4: "four"},
}


def fact_value(act: ActionSpec, attr: str, value) -> str:
    """Attribute value worded as a predicate ("the speed of the walk is slow")."""
    if attr in _FACT:
        return _FACT[attr].get(value, str(value))
    if attr == "duration":
        return f"about {max(1, round(float(value)))} seconds"
    return value_phrase(act, attr, value)


def describe_action(act: ActionSpec, form: str = "v3", keep: set[str] | None = None) -> str:
    """``walks forward slowly for about 4 seconds`` (``form``: v3, ing or base).

    ``keep``: attributes to mention (``None`` = all meaningful ones).
    """
    verb = VERBS[act.family][{"v3": 0, "ing": 1, "base": 2}[form]]
    parts = [verb]
    attrs = act.meaningful()
    for attr in ATTR_ORDER:
        if attr in attrs and (keep is None or attr in keep):
            parts.append(value_phrase(act, attr, attrs[attr]))
    if act.family == "raise_arms" and keep is not None and "limb" not in keep:
        parts.insert(1, "the arms")
    return " ".join(parts)


def _keep(stated: Stated | None, idx: int) -> set[str] | None:
    return None if stated is None else {a for i, a in stated if i == idx}


def describe_program(program: MotionProgram, form: str = "v3", stated: Stated | None = None) -> str:
    """One clause for the whole program: ``walks forward, then sits down`` / ``walks while waving``."""
    acts = [describe_action(a, form, _keep(stated, i)) for i, a in enumerate(program.actions)]
    if program.relation == "sequence":
        return f"{acts[0]}, then {acts[1]}"
    if program.relation == "simultaneous":
        return f"{acts[0]} while " + describe_action(program.actions[1], "ing", _keep(stated, 1))
    return acts[0]


def _a(noun: str) -> str:
    """Noun with its indefinite article (plural nouns such as "jumping jacks" take none)."""
    if noun.endswith("jacks"):
        return noun
    return ("an " if noun[:1] in "aeiou" else "a ") + noun


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _structure(program: MotionProgram) -> str:
    names = [VERBS[a.family][1] for a in program.actions]
    if program.relation == "sequence":
        return f"two actions in sequence, first {names[0]} and then {names[1]}"
    if program.relation == "simultaneous":
        return f"two actions at the same time, {names[0]} while {names[1]}"
    return f"a single action, {names[0]}"


def _facts(program: MotionProgram, stated: Stated | None) -> list[str]:
    facts = []
    for i, act in enumerate(program.actions):
        keep = _keep(stated, i)
        attrs = act.meaningful()
        for attr in ATTR_ORDER:
            if attr in attrs and (keep is None or attr in keep):
                facts.append(
                    f"the {_ATTR_NAME[attr]} of the {VERBS[act.family][3]} is {fact_value(act, attr, attrs[attr])}"
                )
    return facts


def _open_attrs(program: MotionProgram, stated: Stated | None) -> list[str]:
    if stated is None:
        return []
    out = []
    for i, act in enumerate(program.actions):
        for attr in ATTR_ORDER:
            if attr in act.meaningful() and (i, attr) not in stated:
                out.append(f"the {_ATTR_NAME[attr]} of the {VERBS[act.family][3]}")
    return out


def analyses(program: MotionProgram, stated: Stated) -> list[str]:
    """Four key-element analyses of a caption (``<Goal_Analysis>`` / ``<Prompt_Analysis>``)."""
    facts = _facts(program, stated)
    open_ = _open_attrs(program, stated)
    fact_txt = "; ".join(facts) if facts else "no further details are given"
    open_txt = (
        f" The text does not constrain {', '.join(open_)}, so natural values are acceptable." if open_ else ""
    )
    short = describe_program(program, "ing", stated)
    return [
        f"The goal describes {_structure(program)}. Key elements: {fact_txt}.{open_txt}",
        f"To match the goal text, the motion must show the person {short}. "
        f"The essential details are: {fact_txt}.{open_txt}",
        f"Critical aspects: {_structure(program)}; {fact_txt}.{open_txt}",
        f"The person should be {short}. I must get the action type right"
        + (f" and respect that {fact_txt}." if facts else ".")
        + open_txt,
    ]


def detailed_descriptions(program: MotionProgram) -> list[str]:
    """Four rich descriptions stating every attribute (``T2M_detailed_prompt_generation`` captions)."""
    full = describe_program(program, "v3")
    facts = "; ".join(_facts(program, None))
    return [
        f"a person {full}.",
        f"the motion shows someone {describe_program(program, 'ing')}.",
        f"a person performs {_structure(program)}: they {describe_program(program, 'base')}.",
        f"{_structure(program)}, where {facts}.",
    ]


# --------------------------------------------------------------------------------------------------
# Assessments and refinements


def _change_texts(change: Change, goal: MotionProgram, stated: Stated) -> tuple[list[str], list[str]]:
    """(assessment phrasings, refinement phrasings) for one change."""
    if change.kind in ("attr", "truncate"):
        act = goal.actions[change.action]
        v3, ing, base, noun = VERBS[act.family]
        if act.family == "raise_arms" and change.attr != "limb":
            v3, ing, base = (f"{w} the arms" for w in (v3, ing, base))
        got, want = value_phrase(act, change.attr, change.got), value_phrase(act, change.attr, change.goal)
        name = _ATTR_NAME[change.attr]
        if change.kind == "truncate" and change.attr == "duration":
            return (
                [f"The {noun} stops too early: it lasts {got[4:]} instead of {want[4:]}.",
                 f"The person {v3} {got} only, but the goal asks for {want[4:]}.",
                 f"The {noun} is cut short; it should continue {want}."],
                [f"Continue {ing} {want} instead of stopping early.",
                 f"Make the {noun} last longer, {want}.",
                 f"Extend the {noun} so that it lasts {want[4:]}."],
            )  # fmt: skip
        if change.kind == "truncate":
            return (
                [f"The person {v3} only {got}, but the goal text asks for {want}.",
                 f"The {noun} is repeated {got} instead of {want}.",
                 f"Too few repetitions: the motion shows the {noun} {got}, the goal says {want}."],
                [f"Repeat the {noun} {want} in total instead of {got}.",
                 f"{_cap(base)} {want} rather than {got}.",
                 f"Add repetitions so that the person {v3} {want}."],
            )  # fmt: skip
        return (
            [f"The person {v3} {got}, but the goal text says the person {v3} {want}.",
             f"The {name} of the {noun} is wrong: {got} instead of {want}.",
             f"The motion gets the {name} wrong; it shows {ing} {got} while the goal asks for {ing} {want}."],
            [f"Make the person {base} {want} instead of {got}.",
             f"Change the {name} of the {noun}: it should be {want}, not {got}.",
             f"{_cap(base)} {want} rather than {got}."],
        )  # fmt: skip
    goal_v3 = describe_program(goal, "v3", stated)
    goal_base = describe_program(goal, "base", stated)
    if change.kind == "family":
        got = change.got.actions[0]
        return (
            [f"The motion is unrelated to the goal: the person {describe_action(got, 'v3')}, "
             f"while the goal text says the person {goal_v3}.",
             f"The motion shows {describe_action(got, 'ing')}, which does not match the goal at all; "
             f"the goal describes {_structure(goal)}.",
             f"Wrong action: {describe_action(got, 'ing')} instead of {describe_program(goal, 'ing', stated)}."],
            [f"Replace the whole motion: the person should {goal_base}.",
             f"Discard this motion and make the person {goal_base}.",
             f"Generate a motion in which the person {goal_v3} instead."],
        )  # fmt: skip
    first, second = goal.actions[0], goal.actions[-1]
    k1, k2 = _keep(stated, 0), _keep(stated, 1)
    if change.kind == "drop_second":
        if goal.relation == "simultaneous":
            return (
                [f"The person {describe_action(first, 'v3', k1)}, but the second action is missing: "
                 f"the goal has the person {describe_action(second, 'ing', k2)} at the same time.",
                 f"Only the {VERBS[first.family][3]} is present; the {VERBS[second.family][3]} is missing.",
                 f"The motion lacks the simultaneous {VERBS[second.family][3]} the goal asks for."],
                [f"{_cap(describe_action(second, 'base', k2))} while {describe_action(first, 'ing', k1)}.",
                 f"Add {describe_action(second, 'ing', k2)} during the {VERBS[first.family][3]}.",
                 f"Keep the {VERBS[first.family][3]} and {describe_action(second, 'base', k2)} at the same time."],
            )  # fmt: skip
        return (
            [f"The person {describe_action(first, 'v3', k1)}, but the second action is missing: "
             f"the goal continues with {describe_action(second, 'ing', k2)}.",
             f"Only the first action is present; the motion never {VERBS[second.family][0]}.",
             f"The motion stops after the {VERBS[first.family][3]} and lacks the {VERBS[second.family][3]}."],
            [f"After {describe_action(first, 'ing', k1)}, {describe_action(second, 'base', k2)}.",
             f"Add {describe_action(second, 'ing', k2)} at the end.",
             f"Continue the motion: {describe_action(second, 'base', k2)} after the {VERBS[first.family][3]}."],
        )  # fmt: skip
    if change.kind == "replace_second":
        got = change.got
        return (
            [f"The second action is wrong: the person {describe_action(got, 'v3')} instead of "
             f"{describe_action(second, 'ing', k2)}.",
             f"The {VERBS[first.family][3]} is right, but it is combined with {describe_action(got, 'ing')} "
             f"rather than {describe_action(second, 'ing', k2)}.",
             f"The motion contains {_a(VERBS[got.family][3])} where the goal asks for {_a(VERBS[second.family][3])}."],
            [f"Replace the {VERBS[got.family][3]} with {describe_action(second, 'ing', k2)}.",
             f"{_cap(describe_action(second, 'base', k2))} instead of {VERBS[got.family][1]}.",
             f"Keep the {VERBS[first.family][3]} but change the second action to {describe_action(second, 'ing', k2)}."],
        )  # fmt: skip
    if change.kind == "swap_order":
        return (
            [f"The two actions are in the wrong order: the person {VERBS[second.family][0]} first and then "
             f"{VERBS[first.family][0]}.",
             f"The order is reversed; the goal has {VERBS[first.family][1]} before {VERBS[second.family][1]}.",
             f"The {VERBS[second.family][3]} comes first, but the goal text starts with the {VERBS[first.family][3]}."],
            [f"{_cap(VERBS[first.family][2])} first, then {VERBS[second.family][2]}.",
             f"Swap the order: {VERBS[first.family][1]} should come before {VERBS[second.family][1]}.",
             f"Start with the {VERBS[first.family][3]} and end with the {VERBS[second.family][3]}."],
        )  # fmt: skip
    raise ValueError(f"unknown change kind {change.kind!r}")


MATCH_ASSESSMENTS = (
    "The motion matches the goal text.",
    "The generated motion is well aligned with the goal description.",
    "All key elements of the goal text are present in the motion.",
)


def assess(
    changes: Sequence[Change], goal: MotionProgram, stated: Stated, rng: np.random.Generator, n: int = 3
) -> tuple[list[str], list[str]]:
    """``n`` (assessment, refinement) phrasings of an attempt against a caption stating ``stated``.

    Changes the caption does not state are not errors for it; with none left, the attempt matches
    (assessment from ``MATCH_ASSESSMENTS``, refinement ``"No refinements needed."``).

    Returns:
        two lists of ``n`` strings (paired by index).
    """
    relevant = [c for c in changes if c.stated_by(stated)]
    if not relevant:
        order = rng.permutation(len(MATCH_ASSESSMENTS))
        return [MATCH_ASSESSMENTS[int(order[i % len(order)])] for i in range(n)], [NO_REFINEMENT] * n
    texts = [_change_texts(c, goal, stated) for c in relevant]
    out_a, out_r = [], []
    for i in range(n):
        picks = [int(rng.integers(len(a))) for a, _ in texts]
        out_a.append(" ".join(a[p] for (a, _), p in zip(texts, picks, strict=True)))
        out_r.append(" ".join(r[(p + i) % len(r)] for (_, r), p in zip(texts, picks, strict=True)))
    return out_a, out_r
