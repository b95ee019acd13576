"""Split SynthML by program, and measure how much a split overlaps training.

A motion's *program key* is its structured description without subject, style or length: the
relation and, per action in order, the family and its discrete attribute values (``duration`` is
left out: it is continuous and no caption states it, so two walks that differ only in length are
the same program here). Its *atoms* are the single values the program combines: the relation, each
family, and each ``(family, attribute, value)``.

``assign_program_splits`` puts every motion of one key into the same split, so no validation or
test program occurs in training, and moves a program out of training only while every one of its
atoms stays in some training program, so held-out programs recombine values training has seen.

``overlap_figures`` / ``split_overlap`` measure what the split is meant to prevent: the share of
held-out motions whose program equals a training program, and the share of held-out caption lines
that occur word for word (``caption_key``) among the training caption lines.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data.layout import DatasetPaths, parse_caption_line, read_split
from data.synth.program import ActionSpec, MotionProgram

logger = logging.getLogger(__name__)

SPLIT_FRACTIONS = {"train": 0.80, "val": 0.05, "test": 0.15}
HELD_OUT = ("test", "val")
"""Held-out splits, in the order they are filled."""
_KEY_ATTRIBUTES = ("direction", "speed", "repetitions", "limb", "amplitude")


def program_key(program: MotionProgram) -> str:
    """Canonical key of a program: relation, then per action its family and discrete attributes.

    >>> program_key(MotionProgram((ActionSpec("sit_down", speed="slow"),)))
    'single|sit_down(speed=slow)'
    """
    parts = []
    for act in program.actions:
        values = ",".join(f"{k}={v}" for k, v in act.meaningful().items() if k in _KEY_ATTRIBUTES)
        parts.append(f"{act.family}({values})")
    return "|".join([program.relation, *parts])


def action_key(action: ActionSpec) -> str:
    """Key of one action performed alone (what a sub-clip caption window shows)."""
    return program_key(MotionProgram((action,), "single"))


def program_atoms(program: MotionProgram) -> frozenset[tuple]:
    """The single values a program combines: relation, families, ``(family, attribute, value)``."""
    atoms: set[tuple] = {("relation", program.relation)}
    for act in program.actions:
        atoms.add(("family", act.family))
        atoms.update((act.family, k, v) for k, v in act.meaningful().items() if k in _KEY_ATTRIBUTES)
    return frozenset(atoms)


_NON_WORD = re.compile(r"[^a-z]+")


def caption_key(text: str) -> str:
    """A caption's words, lower-cased, without punctuation ("A man walks." -> "a man walks")."""
    return " ".join(_NON_WORD.sub(" ", text.lower()).split())


def assign_program_splits(
    programs: Sequence[MotionProgram], seed: int, fractions: Mapping[str, float] = SPLIT_FRACTIONS
) -> list[str]:
    """Split name (``train``/``val``/``test``) for each program, whole program keys at a time.

    Keys are visited in a random order drawn from ``seed``. A key goes to the first held-out split
    (``test``, then ``val``) whose quota (``round(fraction * n)`` motions) it fits without
    overshooting, and only if each of its atoms remains in at least one training key; the others
    stay in training. On tiny builds where that leaves a held-out split empty, one key that fits is
    put there regardless of its atoms (logged). Deterministic for a seed and independent of the
    programs' rendering.
    """
    n = len(programs)
    keys = [program_key(p) for p in programs]
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    names = sorted(groups)
    atoms = {key: program_atoms(programs[groups[key][0]]) for key in names}
    in_train = Counter(a for key in names for a in atoms[key])  # training keys holding each atom
    quota = {s: int(round(fractions[s] * n)) for s in HELD_OUT}
    filled = dict.fromkeys(HELD_OUT, 0)
    split_of = dict.fromkeys(names, "train")
    order = [names[int(j)] for j in np.random.default_rng([int(seed), 2_147_483_629]).permutation(len(names))]
    # Pass 1 keeps every value of a held-out key in training; pass 2 (tiny builds only) gives an
    # otherwise empty held-out split one key whose values training may lack.
    for strict in (True, False):
        for key in order:
            if split_of[key] != "train":
                continue
            size = len(groups[key])
            open_splits = [s for s in HELD_OUT if strict or filled[s] == 0]
            target = next((s for s in open_splits if filled[s] + size <= quota[s]), None)
            if target is None or (strict and any(in_train[a] <= 1 for a in atoms[key])):
                continue
            for a in atoms[key]:
                in_train[a] -= 1
            split_of[key] = target
            filled[target] += size
            if not strict:
                logger.warning(
                    "split by program: %s holds program %s whose values not all occur in training "
                    "(too few motions to hold out a recombination; build more motions)",
                    target,
                    key,
                )
        short = {s: (filled[s], quota[s]) for s in HELD_OUT if filled[s] < quota[s]}
        if strict and short:
            logger.warning(
                "split by program: held-out splits below quota (motions, quota) %s: too few programs "
                "whose values all occur in other programs; build more motions for exact 80/5/15",
                short,
            )
    return [split_of[key] for key in keys]


@dataclass(frozen=True)
class MotionRecord:
    """What the overlap figures need from one motion."""

    program: str
    """``program_key`` of the whole clip."""
    atoms: frozenset[tuple]
    captions: tuple[str, ...]
    """``caption_key`` of every caption line (whole clip and sub-clips)."""
    windows: tuple[str, ...] = ()
    """``action_key`` of each sub-clip caption window."""

    @classmethod
    def from_parts(
        cls, program: MotionProgram, captions: Iterable[str], subclip_actions: Iterable[int] = ()
    ) -> MotionRecord:
        return cls(
            program=program_key(program),
            atoms=program_atoms(program),
            captions=tuple(caption_key(t) for t in captions),
            windows=tuple(action_key(program.actions[i]) for i in subclip_actions),
        )


def overlap_figures(train: Sequence[MotionRecord], held: Sequence[MotionRecord]) -> dict[str, Any]:
    """How much ``held`` (e.g. the test split) repeats ``train``.

    Returns counts and shares (0-1, rounded to 4 places): ``programs_in_train`` (held-out motions
    whose program key is a training program key), ``captions_in_train`` (held-out caption lines
    whose words equal a training caption line's), ``windows_in_train`` (held-out programs and
    sub-clip windows that equal a training program or window) and ``unseen_values`` (held-out
    motions with a value, family or relation that no training program has).
    """
    train_programs = {r.program for r in train}
    train_windows = train_programs | {w for r in train for w in r.windows}
    train_captions = {c for r in train for c in r.captions}
    train_atoms = set().union(*(r.atoms for r in train)) if train else set()
    captions = [c for r in held for c in r.captions]
    windows = [w for r in held for w in (r.program, *r.windows)]

    def share(k: int, n: int) -> float:
        return round(k / n, 4) if n else 0.0

    prog_hits = sum(r.program in train_programs for r in held)
    cap_hits = sum(c in train_captions for c in captions)
    win_hits = sum(w in train_windows for w in windows)
    unseen = sum(not r.atoms <= train_atoms for r in held)
    return {
        "motions": len(held),
        "programs_in_train": share(prog_hits, len(held)),
        "captions": len(captions),
        "captions_in_train": share(cap_hits, len(captions)),
        "windows": len(windows),
        "windows_in_train": share(win_hits, len(windows)),
        "unseen_values": share(unseen, len(held)),
        "counts": {"programs": prog_hits, "captions": cap_hits, "windows": win_hits, "unseen_values": unseen},
    }


def read_record(root: str | Path, motion_id: str) -> MotionRecord:
    """``MotionRecord`` of a built SynthML motion (``attributes/<id>.json`` and ``texts/<id>.txt``)."""
    paths = DatasetPaths(root)
    attrs_file = paths.attributes_file(motion_id)
    if not attrs_file.is_file():
        raise FileNotFoundError(
            f"SynthML attributes file not found: {attrs_file} (is this a SynthML folder?)"
        )
    attrs = json.loads(attrs_file.read_text())
    program = MotionProgram.from_dict(attrs["program"])
    lines = paths.text_file(motion_id).read_text().splitlines()
    captions = [parse_caption_line(line, motion_id, k + 1) for k, line in enumerate(lines)]
    # A sub-clip line states its action's family only ("<index>.family"): that is its action.
    subclips = [
        int(s.split(".")[0])
        for c in attrs.get("captions", [])
        if not (c["from"] == 0 and c["to"] == 0)
        for s in c["stated"]
        if s.endswith(".family")
    ]
    return MotionRecord.from_parts(program, [c.caption for c in captions], subclips)


def split_overlap(root: str | Path, split: str = "test", reference: str = "train") -> dict[str, Any]:
    """``overlap_figures`` of split ``split`` against ``reference`` in a built SynthML folder."""
    train = [read_record(root, i) for i in read_split(root, reference)]
    held = [read_record(root, i) for i in read_split(root, split)]
    return overlap_figures(train, held)
