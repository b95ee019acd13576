"""Structured description of a SynthML motion: a small program of one or two actions.

Schema (JSON-safe, ``MotionProgram.to_dict`` / ``MotionProgram.from_dict``)::

    {"relation": "single" | "sequence" | "simultaneous",
     "actions": [ActionSpec, ...]}           # 1 action for "single", 2 otherwise

    ActionSpec = {"family": str,             # one of FAMILIES
                  "direction": str | None,   # DIRECTIONS
                  "speed": str | None,       # "slow" | "normal" | "fast"
                  "repetitions": int | None, # 1..4 (4 is worded "four times" / "several times")
                  "limb": str | None,        # "left" | "right" | "both" (arm or leg: see FAMILIES)
                  "amplitude": str | None,   # "low" | "normal" | "high"
                  "duration": float | None}  # seconds: locomotion length (required), else optional cut-off

- ``sequence``: ``actions[0]`` then ``actions[1]`` ("walks forward, then sits down").
- ``simultaneous``: ``actions[0]`` is a whole-body base (walk, run, side step, squat) and
  ``actions[1]`` an arm-only overlay (wave, raise arms, clap) performed during it.
- An attribute that is not meaningful for a family must be ``None``; a meaningful one must hold one
  of the family's allowed values (``family_attributes(family)``). ``None`` for a meaningful attribute
  is rejected too, so every program fully determines the motion up to subject and style.
- ``duration`` is meaningful (and required) for locomotion (walk, run). For every other family it
  is ``None`` (natural length from count and speed) or a cut-off in seconds: the action stops there
  (a "truncated" motion, e.g. only two of three squats).

The data engine perturbs a program by replacing attribute values with other allowed values
(``family_attributes``), dropping or swapping the second action, or shortening ``duration``, then
re-renders it with the same ``Subject`` and ``style_seed`` (see ``data.synth.render``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

SPEEDS = ("slow", "normal", "fast")
AMPLITUDES = ("low", "normal", "high")
LIMBS = ("left", "right", "both")
REPETITIONS = (1, 2, 3, 4)
DIRECTIONS = (
    "forward", "backward", "left", "right", "turn_left", "turn_right", "circle_left", "circle_right",
    "up", "sideways",
)  # fmt: skip
"""``left``/``right``: towards that side (locomotion turns to it, steps/jumps go sideways);
``turn_*``: goes forward then turns 90 degrees; ``circle_*``: a full circle turning that way
(``circle_left`` = counterclockwise seen from above); ``up``: in place / upwards; ``sideways``:
arms raised out to the side."""

ATTRIBUTES = ("direction", "speed", "repetitions", "limb", "amplitude", "duration")
MAX_ACTION_SECONDS = 9.8
RELATIONS = ("single", "sequence", "simultaneous")


@dataclass(frozen=True)
class FamilySpec:
    """What one action family means and which attribute values it accepts."""

    name: str
    kind: str
    """``locomotion`` (root travels, duration given), ``body`` (whole body, count-based, feet mostly
    planted) or ``arms`` (upper body only; can be an overlay in a simultaneous pair)."""
    attributes: dict[str, tuple]
    """Meaningful attribute -> allowed values (``duration``: (min, max) seconds)."""
    limb_part: str | None = None
    """``arm`` or ``leg``: what ``limb`` refers to."""
    starts_seated: bool = False
    ends_seated: bool = False


_LOCO_DIRS = (
    "forward",
    "backward",
    "left",
    "right",
    "turn_left",
    "turn_right",
    "circle_left",
    "circle_right",
)
FAMILIES: dict[str, FamilySpec] = {
    f.name: f
    for f in (
        FamilySpec("walk", "locomotion", {"direction": _LOCO_DIRS, "speed": SPEEDS, "duration": (2.5, 6.5)}),
        FamilySpec(
            "run",
            "locomotion",
            {
                "direction": tuple(d for d in _LOCO_DIRS if d != "backward"),
                "speed": SPEEDS,
                "duration": (2.0, 5.0),
            },
        ),  # fmt: skip
        FamilySpec(
            "jump",
            "body",
            {
                "direction": ("up", "forward", "backward", "left", "right"),
                "repetitions": REPETITIONS,
                "amplitude": AMPLITUDES,
            },
        ),  # fmt: skip
        FamilySpec(
            "hop",
            "body",
            {"direction": ("up", "forward"), "repetitions": REPETITIONS, "limb": ("left", "right")},
            limb_part="leg",
        ),  # fmt: skip
        FamilySpec(
            "wave",
            "arms",
            {"limb": LIMBS, "repetitions": REPETITIONS, "speed": SPEEDS, "amplitude": AMPLITUDES},
            limb_part="arm",
        ),  # fmt: skip
        FamilySpec(
            "kick",
            "body",
            {"limb": ("left", "right"), "repetitions": (1, 2, 3), "amplitude": AMPLITUDES, "speed": SPEEDS},
            limb_part="leg",
        ),  # fmt: skip
        FamilySpec("squat", "body", {"repetitions": REPETITIONS, "speed": SPEEDS, "amplitude": AMPLITUDES}),
        FamilySpec(
            "turn", "body", {"direction": ("left", "right"), "amplitude": AMPLITUDES, "speed": SPEEDS}
        ),
        FamilySpec("sit_down", "body", {"speed": SPEEDS}, ends_seated=True),
        FamilySpec("stand_up", "body", {"speed": SPEEDS}, starts_seated=True),
        FamilySpec(
            "raise_arms",
            "arms",
            {
                "limb": LIMBS,
                "direction": ("up", "forward", "sideways"),
                "repetitions": (1, 2, 3),
                "speed": SPEEDS,
            },
            limb_part="arm",
        ),  # fmt: skip
        FamilySpec(
            "punch", "arms", {"limb": LIMBS, "repetitions": REPETITIONS, "speed": SPEEDS}, limb_part="arm"
        ),
        FamilySpec(
            "side_step", "body", {"direction": ("left", "right"), "repetitions": REPETITIONS, "speed": SPEEDS}
        ),
        FamilySpec("jumping_jacks", "body", {"repetitions": REPETITIONS, "speed": SPEEDS}),
        FamilySpec("clap", "arms", {"repetitions": REPETITIONS, "speed": SPEEDS}),
        FamilySpec("bend", "body", {"amplitude": AMPLITUDES, "repetitions": (1, 2), "speed": SPEEDS}),
        FamilySpec(
            "throw",
            "arms",
            {"limb": ("left", "right"), "repetitions": (1, 2, 3), "speed": SPEEDS},
            limb_part="arm",
        ),  # fmt: skip
    )
}
"""The action families (17)."""

SIMULTANEOUS_BASES = ("walk", "run", "side_step", "squat")
SIMULTANEOUS_OVERLAYS = ("wave", "raise_arms", "clap")
"""Allowed simultaneous pairs: any base with any overlay ("walks forward while waving")."""


class ProgramError(ValueError):
    """A program or action dict is malformed; the message names the field and the allowed values."""


def family_attributes(family: str) -> dict[str, tuple]:
    """Meaningful attributes of ``family`` and their allowed values (``duration``: (min, max) s)."""
    if family not in FAMILIES:
        raise ProgramError(f"unknown family {family!r}; known: {sorted(FAMILIES)}")
    return dict(FAMILIES[family].attributes)


def all_family_attributes() -> dict[str, dict[str, tuple]]:
    """``{family: family_attributes(family)}`` for every family (what the data engine perturbs)."""
    return {name: family_attributes(name) for name in FAMILIES}


@dataclass(frozen=True)
class ActionSpec:
    """One action with its attributes (see the module docstring for the value sets)."""

    family: str
    direction: str | None = None
    speed: str | None = None
    repetitions: int | None = None
    limb: str | None = None
    amplitude: str | None = None
    duration: float | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, where: str = "action") -> None:
        """Raise ``ProgramError`` naming the field if a value is not allowed for the family."""
        if self.family not in FAMILIES:
            raise ProgramError(
                f"{where}.family={self.family!r} is not a known family; known: {sorted(FAMILIES)}"
            )
        allowed = FAMILIES[self.family].attributes
        for name in ATTRIBUTES:
            value = getattr(self, name)
            if name == "duration" and name not in allowed:
                # Count-based actions: an optional cut-off (the data engine's "truncated" motions).
                if value is not None and (
                    isinstance(value, bool)
                    or not isinstance(value, int | float)
                    or not 0.5 <= value <= MAX_ACTION_SECONDS
                ):
                    raise ProgramError(
                        f"{where}.duration={value!r}: for {self.family!r} it is an optional cut-off in seconds "
                        f"within [0.5, {MAX_ACTION_SECONDS}] (or null for the natural length)"
                    )
                continue
            if name not in allowed:
                if value is not None:
                    raise ProgramError(
                        f"{where}.{name}={value!r} is not meaningful for family {self.family!r} "
                        f"(meaningful: {sorted(allowed)}); set it to null"
                    )
                continue
            if value is None:
                raise ProgramError(
                    f"{where}.{name} is required for family {self.family!r}; allowed: {allowed[name]}"
                )
            if name == "duration":
                lo, hi = allowed[name]
                if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                    raise ProgramError(f"{where}.duration={value!r} must be a number of seconds")
                if not 0.5 <= float(value) <= hi:
                    raise ProgramError(
                        f"{where}.duration={value!r} out of range [0.5, {hi}] s for {self.family!r} "
                        f"(sampled in [{lo}, {hi}]; shorter values truncate the action)"
                    )
            elif name == "repetitions":
                if isinstance(value, bool) or not isinstance(value, int) or value not in allowed[name]:
                    raise ProgramError(
                        f"{where}.repetitions={value!r} not in {allowed[name]} for {self.family!r}"
                    )
            elif value not in allowed[name]:
                raise ProgramError(
                    f"{where}.{name}={value!r} not allowed for {self.family!r}; allowed: {allowed[name]}"
                )

    @property
    def spec(self) -> FamilySpec:
        return FAMILIES[self.family]

    def meaningful(self) -> dict[str, Any]:
        """The meaningful attributes and their values."""
        return {k: getattr(self, k) for k in FAMILIES[self.family].attributes}

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Any, where: str = "action") -> ActionSpec:
        if not isinstance(data, dict):
            raise ProgramError(f"{where}: expected an object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ProgramError(f"{where}: unknown field(s) {sorted(unknown)}; known: {sorted(known)}")
        if "family" not in data:
            raise ProgramError(f"{where}.family is missing")
        values = dict(data)
        if isinstance(values.get("duration"), int) and not isinstance(values.get("duration"), bool):
            values["duration"] = float(values["duration"])
        try:
            return cls(**values)
        except ProgramError as err:
            raise ProgramError(str(err).replace("action.", f"{where}.", 1)) from None

    def with_(self, **changes: Any) -> ActionSpec:
        """A copy with some attributes replaced (validated)."""
        return replace(self, **changes)


@dataclass(frozen=True)
class MotionProgram:
    """One or two actions and how they combine."""

    actions: tuple[ActionSpec, ...]
    relation: str = "single"
    meta: dict = field(default_factory=dict, compare=False)
    """Free-form notes (not used by rendering)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "actions", tuple(self.actions))
        if self.relation not in RELATIONS:
            raise ProgramError(f"program.relation={self.relation!r}; allowed: {RELATIONS}")
        want = 1 if self.relation == "single" else 2
        if len(self.actions) != want:
            raise ProgramError(
                f"program.relation={self.relation!r} needs {want} action(s), got {len(self.actions)}"
            )
        for i, act in enumerate(self.actions):
            if not isinstance(act, ActionSpec):
                raise ProgramError(f"program.actions[{i}] must be an ActionSpec")
        first, last = self.actions[0], self.actions[-1]
        if self.relation == "simultaneous":
            if first.family not in SIMULTANEOUS_BASES or last.family not in SIMULTANEOUS_OVERLAYS:
                raise ProgramError(
                    f"simultaneous pair {first.family!r} + {last.family!r} not supported; base must be one "
                    f"of {SIMULTANEOUS_BASES} and overlay one of {SIMULTANEOUS_OVERLAYS}"
                )
            return
        for i, act in enumerate(self.actions):
            if act.spec.starts_seated and i > 0 and not self.actions[i - 1].spec.ends_seated:
                raise ProgramError(f"program.actions[{i}]={act.family!r} starts seated; it must come first "
                                   "or follow 'sit_down'")  # fmt: skip
            if (
                act.spec.ends_seated
                and i < len(self.actions) - 1
                and not self.actions[i + 1].spec.starts_seated
            ):
                raise ProgramError(f"program.actions[{i}]={act.family!r} ends seated; only 'stand_up' may "
                                   "follow it")  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {"relation": self.relation, "actions": [a.to_dict() for a in self.actions]}

    @classmethod
    def from_dict(cls, data: Any) -> MotionProgram:
        if not isinstance(data, dict):
            raise ProgramError(f"program: expected an object, got {type(data).__name__}")
        unknown = set(data) - {"relation", "actions", "meta"}
        if unknown:
            raise ProgramError(f"program: unknown field(s) {sorted(unknown)}; known: ['actions', 'relation']")
        acts = data.get("actions")
        if not isinstance(acts, list | tuple) or not acts:
            raise ProgramError("program.actions must be a non-empty list")
        actions = tuple(ActionSpec.from_dict(a, f"program.actions[{i}]") for i, a in enumerate(acts))
        return cls(actions=actions, relation=data.get("relation", "single"))


# ------------------------------------------------------------------------------------------------
# Sampling
# ------------------------------------------------------------------------------------------------

_FAMILY_WEIGHTS = {
    "walk": 3.0, "run": 1.5, "jump": 1.2, "hop": 0.8, "wave": 1.2, "kick": 1.2, "squat": 1.0, "turn": 1.0,
    "sit_down": 0.8, "stand_up": 0.4, "raise_arms": 1.0, "punch": 1.0, "side_step": 0.9,
    "jumping_jacks": 0.7, "clap": 0.7, "bend": 0.7, "throw": 0.7,
}  # fmt: skip
_VALUE_WEIGHTS = {
    "speed": {"slow": 0.3, "normal": 0.4, "fast": 0.3},
    "amplitude": {"low": 0.3, "normal": 0.4, "high": 0.3},
    "direction": {"forward": 2.0, "up": 2.0},
}
_RELATION_WEIGHTS = {"single": 0.5, "sequence": 0.38, "simultaneous": 0.12}
MAX_PROGRAM_SECONDS = 7.8
CIRCLE_MIN_SECONDS = 4.0
"""Shortest sampled duration of a walk/run "in a circle"."""
"""Nominal budget of a sampled program; rendering adds settling time and clamps to 9.8 s."""


def _choose(rng: np.random.Generator, values: tuple, weights: dict | None = None) -> Any:
    w = np.array([(weights or {}).get(v, 1.0) for v in values], dtype=np.float64)
    return values[int(rng.choice(len(values), p=w / w.sum()))]


def sample_action(rng: np.random.Generator, family: str, max_duration: float | None = None) -> ActionSpec:
    """Draw attribute values for ``family`` (uniform-ish, normal speed/amplitude a bit more often)."""
    values: dict[str, Any] = {}
    for name, allowed in FAMILIES[family].attributes.items():
        if name == "duration":
            lo, hi = allowed
            if str(values.get("direction", "")).startswith("circle"):
                # A full circle needs time; shorter ones become implausibly tight spins.
                lo = max(lo, CIRCLE_MIN_SECONDS)
                max_duration = None if max_duration is None else max(max_duration, lo)
            if max_duration is not None:
                hi = max(lo, min(hi, max_duration))
            values[name] = round(float(rng.uniform(lo, hi)), 2)
        else:
            values[name] = _choose(rng, allowed, _VALUE_WEIGHTS.get(name))
    return ActionSpec(family=family, **values)


def _choose_family(rng: np.random.Generator, allowed: tuple[str, ...]) -> str:
    return _choose(rng, allowed, _FAMILY_WEIGHTS)


def draw_program(rng: np.random.Generator) -> MotionProgram:
    """One program draw: ~50% single actions, ~38% "A then B", ~12% "A while B".

    Sequences never repeat a family and respect seating (``sit_down`` last or followed by
    ``stand_up``; ``stand_up`` first). The length is not checked here: ``data.synth.sampling.
    sample_program`` redraws programs longer than ``MAX_PROGRAM_SECONDS``.
    """
    relation = _choose(rng, RELATIONS, _RELATION_WEIGHTS)
    names = tuple(FAMILIES)
    if relation == "single":
        return MotionProgram((sample_action(rng, _choose_family(rng, names)),), "single")
    if relation == "simultaneous":
        base = sample_action(rng, _choose_family(rng, SIMULTANEOUS_BASES))
        overlay = sample_action(rng, _choose_family(rng, SIMULTANEOUS_OVERLAYS))
        return MotionProgram((base, overlay), "simultaneous")
    first = _choose_family(rng, names)
    if FAMILIES[first].ends_seated:
        second = "stand_up"
    else:
        second_names = tuple(n for n in names if n != first and not FAMILIES[n].starts_seated)
        second = _choose_family(rng, second_names)
    a = sample_action(rng, first, max_duration=4.0)
    b = sample_action(rng, second, max_duration=4.0)
    return MotionProgram((a, b), "sequence")
