"""Typed readers and writers for the IRG-MotionLLM annotation JSON files (stages 0, 1 and 2).

Spec: ``sft-and-inference.md`` section 4. A file is ``{"info": {...}, "annotations": [...]}``; each
annotation has ``id``, ``task``, ``motions`` (placeholder -> ``{"motion_name", "f_tag", "to_tag"}``
or ``null``), ``text`` (alias ``texts``; placeholder -> list of strings / string / stage-2
``{"assessment", "refinement"}``), three ``conversations`` turns and optionally
``candidate_motion_text`` (a list of ``{"motions", "text"}`` alternatives, one drawn per access).

Every problem raises ``AnnotationError`` naming the file, the entry id/index and the field.
Motion references resolve against one or more roots in the HumanML3D layout
(``<root>/new_joint_vecs/<id>.npy``); names are parsed explicitly (optional ``X_`` sub-clip letter
prefix, optional ``M`` mirror prefix, the dataset's id width; B4 fix) and windows are cut at the
dataset fps. The TASKS registry says, per released file, which turns and keys an entry must have.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from data.layout import DatasetFileError, DatasetPaths, load_features
from data.run_folder import atomic_write_text
from data.specs import DatasetSpec, get_dataset_spec


class AnnotationError(ValueError):
    """A malformed annotation file or entry; the message names the file, entry and field."""


class MotionMissingError(DatasetFileError):
    """A referenced motion file does not exist under any motion root."""

    def __init__(self, name: str, motion_id: str, tried: Sequence[Path]):
        self.name, self.motion_id, self.tried = name, motion_id, list(tried)
        super().__init__(
            f"motion {name!r} (file id {motion_id}) not found; looked for " + ", ".join(str(p) for p in tried)
        )


GOAL_MOTION, GENERATED_MOTION = "<Goal_Motion>", "<Generated_Motion>"
GOAL_CAPTION, GOAL_ANALYSIS = "<Goal_Caption>", "<Goal_Analysis>"
ASSESSMENT_ANALYSIS, REFINEMENT_INSTRUCTION = "<Assessment_Analysis>", "<Refinement_Instruction>"
PROMPT_ANALYSIS, ASSESS_GOAL = "<Prompt_Analysis>", "<Assess_Goal_Motion>"
COT_TRACE = "<Unified_Mogen_COT_Trace>"
NUM_INTERMEDIATE = 4


def intermediate_key(i: int) -> str:
    """``<Intermediate_Motion_i>`` (stage-2 failed attempt ``i``, worst first)."""
    return f"<Intermediate_Motion_{i}>"


def assess_key(motion_key: str) -> str:
    """``<Assess_X>`` for motion key ``<X>``."""
    return "<Assess_" + motion_key[1:]


_KEY_RE = re.compile(r"^<[A-Za-z][A-Za-z0-9_]*>$")


# --------------------------------------------------------------------------------------------------
# Typed records


@dataclass(frozen=True)
class MotionRef:
    """A motion file id plus an optional window in seconds (``0, 0`` or ``f >= t`` = whole clip)."""

    motion_name: str
    f_tag: float = 0.0
    to_tag: float = 0.0

    def frame_window(self, fps: float) -> tuple[int, int] | None:
        """``[int(f*fps), int(t*fps))`` or ``None`` for the whole clip (spec section 4.3)."""
        if (self.f_tag == 0 and self.to_tag == 0) or self.f_tag >= self.to_tag:
            return None
        return int(self.f_tag * fps), int(self.to_tag * fps)

    def to_dict(self) -> dict[str, Any]:
        return {"motion_name": self.motion_name, "f_tag": self.f_tag, "to_tag": self.to_tag}


@dataclass(frozen=True)
class Assessment:
    """Stage-2 assessment text of one motion."""

    assessment: str
    refinement: str

    def to_dict(self) -> dict[str, str]:
        return {"assessment": self.assessment, "refinement": self.refinement}


TextValue = tuple[str, ...] | str | Assessment
"""A tuple is a list of alternatives (one drawn per access); a str or Assessment is used as is."""


@dataclass(frozen=True)
class Candidate:
    """One set of motions and texts (an annotation's own, or one of its candidates)."""

    motions: Mapping[str, MotionRef | None]
    texts: Mapping[str, TextValue]
    meta_inst_name: str | None = None


@dataclass(frozen=True)
class Turn:
    role: str
    value: str


@dataclass(frozen=True)
class Annotation:
    """One entry of an annotation file."""

    id: int | None
    task: str
    motions: Mapping[str, MotionRef | None]
    texts: Mapping[str, TextValue]
    conversations: tuple[Turn, Turn, Turn]
    candidates: tuple[Candidate, ...] = ()
    source: str = "<memory>"
    index: int = 0
    extra_turns: tuple[Turn, ...] = ()

    @property
    def is_cot(self) -> bool:
        """The reference selects the stage-2 CoT builder by this substring of ``task``."""
        return "unified_mogen_cot" in self.task

    @property
    def where(self) -> str:
        return f"{self.source}: annotation id={self.id} (#{self.index})"

    def all_candidates(self) -> tuple[Candidate, ...]:
        """The candidates, or the annotation's own motions/texts when it has none."""
        return self.candidates or (Candidate(self.motions, self.texts),)

    def choose(self, rng: random.Random) -> Candidate:
        """One candidate uniformly at random, without mutating the annotation (B3 fix)."""
        cands = self.all_candidates()
        return cands[0] if len(cands) == 1 else cands[rng.randrange(len(cands))]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "task": self.task,
            "motions": _motions_to_dict(self.motions),
            "text": _texts_to_dict(self.texts),
            "conversations": [
                {"from": t.role, "value": t.value} for t in (*self.conversations, *self.extra_turns)
            ],
        }
        if self.candidates:
            out["candidate_motion_text"] = [
                {
                    "motions": _motions_to_dict(c.motions),
                    "text": _texts_to_dict(c.texts),
                    **({"meta_inst_name": c.meta_inst_name} if c.meta_inst_name is not None else {}),
                }
                for c in self.candidates
            ]
        return out


def _motions_to_dict(m: Mapping[str, MotionRef | None]) -> dict[str, Any]:
    return {k: (v.to_dict() if v is not None else None) for k, v in m.items()}


def _texts_to_dict(t: Mapping[str, TextValue]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in t.items():
        out[k] = v.to_dict() if isinstance(v, Assessment) else (list(v) if isinstance(v, tuple) else v)
    return out


@dataclass
class AnnotationFile:
    path: Path
    info: dict[str, Any]
    annotations: list[Annotation]


# --------------------------------------------------------------------------------------------------
# Task registry


@dataclass(frozen=True)
class TaskSpec:
    """What the entries of one released annotation file look like."""

    name: str
    """Our key for the task (unique; the released ``task`` strings are not)."""
    stage: int
    task_string: str
    """The ``task`` field written into files."""
    file_name: str
    """Released file path relative to the annotation folder."""
    system: str
    user: str
    answer: str
    motion_keys: tuple[str, ...] = ()
    text_keys: tuple[str, ...] = ()


_G = "<General_System_Prompt>"
_TM_TEXTS = (GOAL_CAPTION, ASSESSMENT_ANALYSIS, REFINEMENT_INSTRUCTION)

TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in (
        TaskSpec("stage0_t2m", 0, "t2m_direct_generation", "stage_0_annotations.json",
                 "<MotionAgent_System_Prompt>", "<MotionAgent_Mogen_Template>", GOAL_MOTION,
                 (GOAL_MOTION,), (GOAL_CAPTION,)),
        TaskSpec("t2m_direct_generation", 1, "t2m_direct_generation",
                 "stage-1/T2M_direct_generation_annots.json", _G, "<Text2Motion_Template>",
                 GOAL_MOTION, (GOAL_MOTION,), (GOAL_CAPTION,)),
        TaskSpec("t2m_detailed_prompt_generation", 1, "t2m_detailed_prompt_generation",
                 "stage-1/T2M_detailed_prompt_generation_annots.json", _G, "<Text2Motion_Template>",
                 GOAL_MOTION, (GOAL_MOTION,), (GOAL_CAPTION,)),
        TaskSpec("m2t_motion_caption", 1, "m2t_motion_caption",
                 "stage-1/M2T_motion_caption_annots.json", _G, "<Motion2X_Template>", GOAL_CAPTION,
                 (GOAL_MOTION,), (GOAL_CAPTION,)),
        TaskSpec("t2t_prompt_analysis", 1, "t2t_prompt_analysis",
                 "stage-1/T2T_prompt_analysis_annots.json", _G, "<Goal_Analysis_Template>",
                 GOAL_ANALYSIS, (), (GOAL_CAPTION, GOAL_ANALYSIS)),
        TaskSpec("tm2t_assessment_analysis", 1, "tm2t_assessment_analysis",
                 "stage-1/TM2T_assessment_analysis_annots.json", _G,
                 "<Text_Motion2Alignment_Analysis_Template>", ASSESSMENT_ANALYSIS,
                 (GENERATED_MOTION,), _TM_TEXTS),
        TaskSpec("tm2t_refinement_instruction", 1, "tm2t_refinement_instruction",
                 "stage-1/TM2T_refinement_instruction_annots.json", _G,
                 "<Text_Motion2Refinement_Instruction_Template>", REFINEMENT_INSTRUCTION,
                 (GENERATED_MOTION,), _TM_TEXTS),
        TaskSpec("tm2m_direct_refinement", 1, "tm2m_direct_refinement",
                 "stage-1/TM2M_direct_refinement_annots.json", _G,
                 "<Direct_Motion_Refinement_Template>", GOAL_MOTION,
                 (GENERATED_MOTION, GOAL_MOTION), _TM_TEXTS),
        # The released file reuses the task string "tm2m_direct_refinement" (harmless: the string
        # only selects the CoT builder); the user template key tells the two apart.
        TaskSpec("tm2m_instructed_refinement", 1, "tm2m_direct_refinement",
                 "stage-1/TM2M_instructed_motion_refinement_annots.json", _G,
                 "<Instructed_Motion_Refinement_Template>", GOAL_MOTION,
                 (GENERATED_MOTION, GOAL_MOTION), _TM_TEXTS),
        TaskSpec("irmogen_cot", 2, "unified_mogen_cot_v2", "stage-2/sft_motion_assess_cot_v2.json", _G,
                 "<Generate_Assess_Refien_Template_wo_Answer>", COT_TRACE,
                 (GOAL_MOTION,), (GOAL_CAPTION, PROMPT_ANALYSIS, ASSESS_GOAL)),
    )
}  # fmt: skip
"""Our task key -> spec. Stage-1 keys are the eight meta tasks of spec section 5."""

STAGE1_TASKS: tuple[str, ...] = tuple(k for k, t in TASKS.items() if t.stage == 1)

TASK_STRINGS: tuple[str, ...] = tuple(sorted({t.task_string for t in TASKS.values()}))
"""The ``task`` values a file may hold; any other is an error listing these (a typo would
otherwise go unnoticed: the reference loader only looks for ``unified_mogen_cot`` in it)."""


def identify_task(ann: Annotation) -> TaskSpec | None:
    """The registry entry an annotation belongs to (by CoT flag, then turn keys and task string)."""
    if ann.is_cot:
        return TASKS["irmogen_cot"]
    system, user = ann.conversations[0].value, ann.conversations[1].value
    matches = [t for t in TASKS.values() if t.stage < 2 and t.system == system and t.user == user]
    if len(matches) > 1:
        matches = [t for t in matches if t.task_string == ann.task] or matches[:1]
    return matches[0] if matches else None


# --------------------------------------------------------------------------------------------------
# Reading and validation


def _err(path: str, ann_id: Any, index: int, fld: str, problem: str) -> AnnotationError:
    return AnnotationError(f"{path}: annotation id={ann_id} (#{index}): field {fld!r}: {problem}")


def _parse_motions(raw: Any, where: tuple[str, Any, int], fld: str) -> dict[str, MotionRef | None]:
    if not isinstance(raw, dict):
        raise _err(*where, fld, f"expected an object of placeholder -> motion, got {type(raw).__name__}")
    out: dict[str, MotionRef | None] = {}
    for key, ref in raw.items():
        f = f"{fld}.{key}"
        if not _KEY_RE.match(key):
            raise _err(*where, f, "motion keys must be placeholders like <Goal_Motion>")
        if ref is None:
            out[key] = None
            continue
        if not isinstance(ref, dict):
            raise _err(*where, f, f"expected {{motion_name, f_tag, to_tag}} or null, got {ref!r}"[:200])
        name = ref.get("motion_name")
        if not isinstance(name, str) or not name:
            raise _err(*where, f + ".motion_name", f"expected a non-empty string, got {name!r}")
        tags = []
        for tag in ("f_tag", "to_tag"):
            v = ref.get(tag, 0.0)
            if v is None:
                v = 0.0
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0:
                raise _err(*where, f"{f}.{tag}", f"expected seconds >= 0, got {v!r}")
            tags.append(float(v))
        unknown = sorted(set(ref) - {"motion_name", "f_tag", "to_tag"})
        if unknown:
            raise _err(*where, f, f"unknown key(s) {unknown}")
        out[key] = MotionRef(name, tags[0], tags[1])
    return out


def _parse_texts(raw: Any, where: tuple[str, Any, int], fld: str) -> dict[str, TextValue]:
    if not isinstance(raw, dict):
        raise _err(*where, fld, f"expected an object of placeholder -> text, got {type(raw).__name__}")
    out: dict[str, TextValue] = {}
    for key, val in raw.items():
        f = f"{fld}.{key}"
        if not _KEY_RE.match(key):
            raise _err(*where, f, "text keys must be placeholders like <Goal_Caption>")
        if isinstance(val, str):
            out[key] = val
        elif isinstance(val, list):
            if not val or not all(isinstance(s, str) and s for s in val):
                raise _err(*where, f, "expected a non-empty list of non-empty strings")
            out[key] = tuple(val)
        elif isinstance(val, dict):
            if set(val) != {"assessment", "refinement"} or not all(isinstance(s, str) for s in val.values()):
                raise _err(
                    *where, f, f"expected {{'assessment': str, 'refinement': str}}, got keys {sorted(val)}"
                )
            out[key] = Assessment(val["assessment"], val["refinement"])
        else:
            raise _err(
                *where, f, f"expected a string, a list of strings or an assessment object, got {val!r}"[:200]
            )
    return out


def parse_annotation(raw: Any, source: str = "<memory>", index: int = 0) -> Annotation:
    """Validate one raw entry and return it typed; raises ``AnnotationError``."""
    if not isinstance(raw, dict):
        raise AnnotationError(f"{source}: annotation #{index}: expected an object, got {type(raw).__name__}")
    ann_id = raw.get("id")
    where = (source, ann_id, index)
    if ann_id is not None and (isinstance(ann_id, bool) or not isinstance(ann_id, int)):
        raise _err(*where, "id", f"expected an integer, got {ann_id!r}")
    task = raw.get("task")
    if not isinstance(task, str) or not task:
        raise _err(*where, "task", f"expected a non-empty string, got {task!r}")
    if task not in TASK_STRINGS:
        raise _err(*where, "task", f"unknown task {task!r}; known task names: {', '.join(TASK_STRINGS)}")
    motions = _parse_motions(raw.get("motions", {}), where, "motions")
    text_field = "text" if "text" in raw else "texts"
    texts = _parse_texts(raw.get(text_field, {}), where, text_field)
    conv = raw.get("conversations")
    if not isinstance(conv, list) or len(conv) < 3:
        raise _err(*where, "conversations", "expected a list of 3 turns (system, human, gpt)")
    turns = []
    for i, (t, role) in enumerate(zip(conv[:3], ("system", "human", "gpt"), strict=True)):
        if not isinstance(t, dict) or not isinstance(t.get("value"), str):
            raise _err(*where, f"conversations[{i}]", "expected {'from': str, 'value': str}")
        if t.get("from") != role:
            raise _err(*where, f"conversations[{i}].from", f"expected {role!r}, got {t.get('from')!r}")
        turns.append(Turn(role, t["value"]))
    extra = tuple(Turn(str(t.get("from")), str(t.get("value"))) for t in conv[3:] if isinstance(t, dict))
    candidates = []
    raw_c = raw.get("candidate_motion_text")
    if raw_c is not None:
        if not isinstance(raw_c, list) or not raw_c:
            raise _err(*where, "candidate_motion_text", "expected a non-empty list")
        for i, c in enumerate(raw_c):
            f = f"candidate_motion_text[{i}]"
            if not isinstance(c, dict):
                raise _err(*where, f, "expected an object with motions/text")
            c_text = "text" if "text" in c else "texts"
            # A candidate's keys replace the annotation's (spec 4.2); absent ones keep them.
            c_motions = _parse_motions(c["motions"], where, f + ".motions") if "motions" in c else motions
            c_texts = _parse_texts(c[c_text], where, f"{f}.{c_text}") if c_text in c else texts
            meta = c.get("meta_inst_name")
            candidates.append(Candidate(c_motions, c_texts, str(meta) if meta is not None else None))
    ann = Annotation(
        id=ann_id,
        task=task,
        motions=motions,
        texts=texts,
        conversations=(turns[0], turns[1], turns[2]),
        candidates=tuple(candidates),
        source=source,
        index=index,
        extra_turns=extra,
    )
    validate_against_task(ann)
    return ann


def validate_against_task(ann: Annotation) -> None:
    """Check the keys the entry's task needs exist in every candidate (when the task is known)."""
    spec = identify_task(ann)
    if spec is None:
        return
    where = (ann.source, ann.id, ann.index)
    for ci, cand in enumerate(ann.all_candidates()):
        prefix = f"candidate_motion_text[{ci}]." if ann.candidates else ""
        for key in spec.motion_keys:
            if key not in cand.motions:
                raise _err(*where, f"{prefix}motions.{key}",
                           f"missing; task {spec.name} needs motions {list(spec.motion_keys)}")  # fmt: skip
        for key in spec.text_keys:
            if key not in cand.texts:
                raise _err(*where, f"{prefix}text.{key}",
                           f"missing; task {spec.name} needs texts {list(spec.text_keys)}")  # fmt: skip
        if spec.stage == 2:
            for key, val in cand.texts.items():
                if key.startswith("<Assess_") and not isinstance(val, Assessment):
                    raise _err(
                        *where, f"{prefix}text.{key}", "expected an {'assessment', 'refinement'} object"
                    )
            for key in cand.motions:
                if key.startswith("<Intermediate_Motion_") and assess_key(key) not in cand.texts:
                    raise _err(*where, f"{prefix}text.{assess_key(key)}", f"missing assessment for {key}")


def read_annotation_file(path: str | Path) -> AnnotationFile:
    """Read and validate a whole annotation file (JSON envelope ``{"info", "annotations"}``)."""
    p = Path(path)
    if not p.is_file():
        raise AnnotationError(f"annotation file not found: {p}")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise AnnotationError(f"{p}: invalid JSON: {err}") from err
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise AnnotationError(f"{p}: expected an object with an 'annotations' list (and an 'info' object)")
    info = data.get("info", {})
    if not isinstance(info, dict):
        raise AnnotationError(f"{p}: field 'info' must be an object, got {type(info).__name__}")
    anns = [parse_annotation(a, str(p), i) for i, a in enumerate(data["annotations"])]
    return AnnotationFile(p, info, anns)


def write_annotation_file(path: str | Path, annotations: Sequence[Annotation], info: dict[str, Any]) -> Path:
    """Write the released envelope atomically; ``json.dumps`` with ``ensure_ascii=False`` and indent 1."""
    p = Path(path)
    payload = {"info": info, "annotations": [a.to_dict() for a in annotations]}
    atomic_write_text(p, json.dumps(payload, ensure_ascii=False, indent=1))
    return p


# --------------------------------------------------------------------------------------------------
# Motion resolution


def motion_file_id(name: str, spec: DatasetSpec | str) -> str:
    """The file id inside a motion name, parsed explicitly (B4 fix).

    ``name`` is split on ``_``; the first part that is the dataset's zero-padded id (optionally with
    an ``M`` mirror prefix) is the id. A single capital letter before it (``T_007471``) is the
    evaluation loader's sub-clip prefix and is ignored; trailing parts (``000002_0``) too.

    Raises:
        AnnotationError: no part looks like an id of this dataset.
    """
    spec = get_dataset_spec(spec)
    pattern = re.compile(rf"^M?\d{{{spec.id_digits}}}$")
    for part in name.split("_"):
        if pattern.match(part):
            return part
    raise AnnotationError(
        f"motion_name {name!r}: no '_'-separated part is a {spec.name} id (optional 'M' + "
        f"{spec.id_digits} digits, e.g. {'0' * (spec.id_digits - 1)}2 or M{'0' * (spec.id_digits - 1)}2)"
    )


@dataclass
class MotionResolver:
    """Finds and crops motion features for ``MotionRef``s.

    ``roots`` are searched in order (the dataset root first; an engine output root with imperfect
    motions may follow). ``load`` returns ``(T, D)`` float32 features cropped to the ref's window.
    """

    roots: Sequence[str | Path]
    dataset: str = "humanml3d"
    _cache: dict[str, Path] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.spec = get_dataset_spec(self.dataset)
        self.paths = [DatasetPaths(r) for r in self.roots]

    def file_id(self, ref: MotionRef) -> str:
        return motion_file_id(ref.motion_name, self.spec)

    def path(self, ref: MotionRef) -> Path:
        """The feature file of ``ref``; raises ``MotionMissingError`` when no root has it."""
        mid = self.file_id(ref)
        if mid not in self._cache:
            tried = [p.vec_file(mid) for p in self.paths]
            found = next((t for t in tried if t.is_file()), None)
            if found is None:
                raise MotionMissingError(ref.motion_name, mid, tried)
            self._cache[mid] = found
        return self._cache[mid]

    def load(self, ref: MotionRef) -> np.ndarray:
        """(T', D) features of the window (the whole clip when the window is empty or inverted)."""
        feats = load_features(self.path(ref), self.spec)
        win = ref.frame_window(self.spec.fps)
        return feats if win is None else feats[win[0] : win[1]]
