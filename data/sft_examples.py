"""Build SFT conversations from annotation entries: prompt text, response segments, loss mask.

Spec: ``sft-and-inference.md`` sections 3.1-3.3, 4.3 and 6. An example is a list of
``Segment(text, trainable)`` pieces whose concatenation is exactly the single-turn layout

    <bos>{SYSTEM}\\n\\nUser: {USER}\\n\\n Response:{RESPONSE}<eos>

and whose pieces are also the tokenisation units (the reference tokenises piecewise: the prompt
string once, the stage-1 response once, each stage-2 tag/plan/motion piece on its own, section
6.4). ``tokenize_example`` turns the segments into ids and labels (``-100`` on masked pieces) with
any Hugging Face tokenizer. The tokenizer that knows the motion tokens is built elsewhere; any
tokenizer that splits out the added ``<Motion...>`` tokens gives the reference ids.

Piece boundaries inside a stage-2 ``[assess]`` block are not given by the spec; we use
``[assess]`` / ``Assessment: <text>`` / ``\n`` / ``Refinement: <text>`` / ``[/assess]`` / ``\n``.
The reference's exact split there is unknown to us; it changes ids only where a tokenizer merge
would cross one of these boundaries.

Stage-0/1 entries all go through one substitution builder (``build_stage1``) driven by the entry's
turns; each task's required keys are checked by ``data.annotations.TASKS``. Stage-2 entries go
through ``build_cot`` (section 6). Every piece of prompt text (layout, substitution, fixed
templates, pools) comes from ``data.prompts``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from data.annotations import (
    GOAL_CAPTION,
    GOAL_MOTION,
    PROMPT_ANALYSIS,
    Annotation,
    AnnotationError,
    Assessment,
    Candidate,
    TextValue,
    assess_key,
    identify_task,
    read_annotation_file,
)
from data.motion_tokens import MOTION_END, MOTION_START, render_codes, render_codes_inner
from data.prompts import (
    BOS,
    EOS,
    PLAN_SENTENCES,
    PromptPools,
    render_prompt,
    substitute,
    unfilled_placeholders,
)

IGNORE_INDEX = -100

CodeLookup = Callable[..., Sequence[int] | None]
"""A code source: ``codes(ref)`` -> VQ codes ``(N,)`` of the motion cropped at frame 0, and
``codes(ref, rng)`` -> the codes of a crop whose 0-3 frame offset is drawn from ``rng`` (spec
section 4.3); ``None`` or empty = empty motion. The builders call the second form only when given a
``crop_rng``."""

# Spec 6.1 also lists the exact strings "No refinement(s) needed."; the substring test covers them.
_NO_REFINEMENT_SUB = ("No refinement needed", "No refinements needed")


@dataclass(frozen=True)
class Segment:
    """One piece of an example; ``trainable`` pieces carry loss."""

    text: str
    trainable: bool
    kind: str = "text"
    """``bos``, ``prompt``, ``response``, ``eos``, ``tag``, ``plan``, ``motion``, ... (for inspection)."""


@dataclass
class Example:
    """A built conversation: system/user turns and the segment list (prompt included)."""

    task: str
    system: str
    user: str
    segments: list[Segment]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """The full training text (``<bos>`` ... ``<eos>``)."""
        return "".join(s.text for s in self.segments)

    @property
    def response(self) -> str:
        """Everything after ``" Response:"`` (the part that carries loss by default)."""
        return "".join(s.text for s in self.segments if s.kind not in ("bos", "prompt"))

    def spans(self) -> list[tuple[str, bool]]:
        """``(text, trainable)`` pairs."""
        return [(s.text, s.trainable) for s in self.segments]


@dataclass(frozen=True)
class BuildOptions:
    """Stage-2 trace options (spec section 6.4); defaults are the released stage-2 flags."""

    ignore_incorrect: bool = True
    """Mask intermediate ``[generate]...[/generate]\\n`` pieces (``--ignore-incorrect``)."""
    answer_block: bool = False
    """Append ``<answer><Motion>...</Motion></answer>`` (the released stage 2 uses ``--wo-answer``)."""
    plan: bool = True
    """Emit the ``[plan]`` pieces (``--wo-plan`` drops them)."""
    assess_refine: bool = True
    """``False`` (``--wo_assess_refine``, only with no answer block): analyse, then one motion."""
    max_attempts: int = 4
    """``n`` is drawn uniformly from ``0..max_attempts`` (section 6.1)."""


# --------------------------------------------------------------------------------------------------
# Builders


def _check_no_placeholder(text: str, where: str) -> None:
    left = unfilled_placeholders(text)
    if left:
        raise AnnotationError(f"{where}: unsubstituted placeholder(s) {left} remain")


def _draw_text(val: TextValue, rng: random.Random) -> str | Assessment:
    return rng.choice(val) if isinstance(val, tuple) else val


def _motion_codes(cand: Candidate, codes: CodeLookup, crop_rng: random.Random | None) -> dict[str, list[int]]:
    """Placeholder -> codes of every motion of the candidate (in the candidate's key order)."""
    out: dict[str, list[int]] = {}
    for key, ref in cand.motions.items():
        if ref is None:
            out[key] = []
        else:
            out[key] = list((codes(ref) if crop_rng is None else codes(ref, crop_rng)) or ())
    return out


def build_stage1(
    ann: Annotation,
    cand: Candidate,
    codes: CodeLookup,
    pools: PromptPools,
    rng: random.Random,
    crop_rng: random.Random | None = None,
) -> Example:
    """Stage-0/1 example: fill the turns, substitute motions then texts (section 4.3 steps 3-6).

    ``rng`` draws captions and templates; ``crop_rng`` (when given) the motions' crop offsets.
    """
    where = ann.where
    texts: dict[str, str] = {}
    for key, val in cand.texts.items():
        drawn = _draw_text(val, rng)
        if isinstance(drawn, Assessment):
            raise AnnotationError(
                f"{where}: field 'text.{key}': assessment objects only belong in stage-2 entries"
            )
        texts[key] = drawn
    system = pools.fill_turn(ann.conversations[0].value, rng)
    user = pools.fill_turn(ann.conversations[1].value, rng)
    answer = ann.conversations[2].value
    spans = {k: render_codes(c) for k, c in _motion_codes(cand, codes, crop_rng).items()}
    values = {**spans, **texts}
    user = substitute(user, values, list(texts))
    answer = substitute(answer, values, list(texts))
    for name, s in (("system", system), ("user", user), ("answer", answer)):
        if "_Template>" in s:
            raise AnnotationError(f"{where}: {name} turn still holds a pool key after filling: {s[:80]!r}")
        _check_no_placeholder(s, f"{where}: {name} turn")
    spec = identify_task(ann)
    segments = [
        Segment(BOS, False, "bos"),
        Segment(render_prompt(system, user), False, "prompt"),
        Segment(answer, True, "response"),
        Segment(EOS, True, "eos"),
    ]
    return Example(spec.name if spec else ann.task, system, user, segments)


def is_no_refinement(refinement: str) -> bool:
    """Whether a refinement text means the motion needs no change (section 6.1 rules)."""
    r = refinement.strip()
    return any(s in r for s in _NO_REFINEMENT_SUB) or len(r.split(" ")) <= 3


def choose_attempts(cand: Candidate, rng: random.Random, max_attempts: int = 4) -> list[str]:
    """Intermediate motion keys used as failed attempts (section 6.1), worst first.

    ``n ~ U{0..max_attempts}``; ``n`` distinct keys among the candidate's ``<Intermediate_Motion_i>``
    (capped at how many exist), sorted by index; keys whose refinement says no refinement is needed
    (or has <= 3 words) are dropped, since they are not failures.
    """
    available = sorted(
        (k for k in cand.motions if k.startswith("<Intermediate_Motion_")),
        key=lambda k: int(k[len("<Intermediate_Motion_") : -1]),
    )
    n = rng.randint(0, max_attempts)
    if n == 0 or not available:
        return []
    chosen = rng.sample(range(len(available)), min(n, len(available)))
    keys = [available[i] for i in sorted(chosen)]
    kept = []
    for k in keys:
        a = cand.texts.get(assess_key(k))
        if isinstance(a, Assessment) and not is_no_refinement(a.refinement):
            kept.append(k)
    return kept


def build_cot(
    ann: Annotation,
    cand: Candidate,
    codes: CodeLookup,
    pools: PromptPools,
    rng: random.Random,
    options: BuildOptions,
    crop_rng: random.Random | None = None,
) -> Example:
    """Stage-2 IRMoGen trace (sections 6.1-6.4), piecewise segments and masks.

    ``rng`` draws the template, texts and attempts; ``crop_rng`` (when given) the crop offsets.
    """
    where = ann.where
    if options.answer_block and not options.assess_refine:
        raise ValueError("assess_refine=False is only defined without the answer block (--wo-answer)")
    system = pools.fill_turn(ann.conversations[0].value, rng)
    user = pools.fill_turn(ann.conversations[1].value, rng)
    caption = _draw_text(cand.texts[GOAL_CAPTION], rng)
    analysis = _draw_text(cand.texts[PROMPT_ANALYSIS], rng)
    if not isinstance(caption, str) or not isinstance(analysis, str):
        raise AnnotationError(f"{where}: field 'text.{GOAL_CAPTION}'/'{PROMPT_ANALYSIS}' must be text")
    user = substitute(user, {GOAL_CAPTION: caption}, [GOAL_CAPTION])
    _check_no_placeholder(user, f"{where}: user turn")
    motion_codes = _motion_codes(cand, codes, crop_rng)
    attempts = choose_attempts(cand, rng, options.max_attempts) if options.assess_refine else []

    segs: list[Segment] = [Segment(BOS, False, "bos"), Segment(render_prompt(system, user), False, "prompt")]

    def add(text: str, kind: str, trainable: bool = True) -> None:
        segs.append(Segment(text, trainable, kind))

    def add_all(*pieces: tuple[str, str]) -> None:
        for text, kind in pieces:
            add(text, kind)

    def plan(key: str) -> None:
        if options.plan:
            add_all(("[plan]", "tag"), (PLAN_SENTENCES[key], "plan"), ("[/plan]", "tag"), ("\n", "newline"))

    def generate(key: str, trainable: bool) -> None:
        add("[generate]", "tag", trainable)
        add(MOTION_START, "motion", trainable)
        add(render_codes_inner(motion_codes[key]), "motion", trainable)
        add(MOTION_END, "motion", trainable)
        add("[/generate]", "tag", trainable)
        add("\n", "newline", trainable)

    def assess(key: str) -> None:
        a = cand.texts.get(assess_key(key))
        if not isinstance(a, Assessment):
            raise AnnotationError(f"{where}: field 'text.{assess_key(key)}': missing assessment object")
        add_all(("[assess]", "tag"), ("Assessment: " + a.assessment, "assess"), ("\n", "newline"))
        add_all(("Refinement: " + a.refinement, "assess"), ("[/assess]", "tag"), ("\n", "newline"))

    add("<think>", "tag")
    plan("prompt_analysis")
    add_all(("[analyze]", "tag"), (analysis, "analyze"), ("[/analyze]", "tag"), ("\n", "newline"))
    plan("generation")
    if options.assess_refine:
        for key in attempts:
            generate(key, trainable=not options.ignore_incorrect)
            plan("assessment")
            assess(key)
            plan("refinement")
        generate(GOAL_MOTION, trainable=True)
        plan("assessment")
        assess(GOAL_MOTION)
        plan("finish_thinking")
    else:
        generate(GOAL_MOTION, trainable=True)
    add("</think>", "tag")
    if options.answer_block:
        goal_inner = render_codes_inner(motion_codes[GOAL_MOTION])
        add_all(("<answer>", "tag"), (MOTION_START, "motion"), (goal_inner, "motion"))
        add_all((MOTION_END, "motion"), ("</answer>", "tag"))
    add(EOS, "eos")
    return Example(
        "irmogen_cot",
        system,
        user,
        segs,
        meta={"num_attempts": len(attempts), "attempt_keys": attempts, "caption": caption},
    )


def build_example(
    ann: Annotation,
    codes: CodeLookup,
    pools: PromptPools,
    rng: random.Random,
    options: BuildOptions | None = None,
    candidate: int | None = None,
    crop_rng: random.Random | None = None,
) -> Example:
    """One training example from an annotation entry.

    Args:
        ann: the entry.
        codes: a code source (``CodeLookup``), e.g. from ``data.motion_codes``.
        pools: prompt pools filling the turns.
        rng: drives candidate, caption, template and attempt choices (seed it per example).
        options: stage-2 options.
        candidate: force candidate ``i`` instead of drawing one.
        crop_rng: draws each motion's crop offset (seed it per example); ``None`` = crop at frame 0.
    """
    cands = ann.all_candidates()
    cand = cands[candidate] if candidate is not None else ann.choose(rng)
    if ann.is_cot:
        return build_cot(ann, cand, codes, pools, rng, options or BuildOptions(), crop_rng)
    return build_stage1(ann, cand, codes, pools, rng, crop_rng)


# --------------------------------------------------------------------------------------------------
# Tokenisation


@dataclass
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]
    """``-100`` on masked positions (bos, prompt, masked pieces)."""
    truncated: bool = False


def tokenize_example(example: Example, tokenizer: Any, max_length: int = 2048) -> TokenizedExample:
    """Ids and labels, tokenising each segment on its own (section 3.2 / 6.4).

    ``<bos>`` is the tokenizer's ``bos_token_id``; every other segment is encoded with
    ``add_special_tokens=False`` (so ``<eos>`` maps to the eos id through the special-token split).
    The result is cut to ``max_length`` tokens, as the reference does after padding.
    """
    ids: list[int] = []
    labels: list[int] = []
    for seg in example.segments:
        if seg.kind == "bos":
            if tokenizer.bos_token_id is None:
                raise ValueError("tokenizer has no bos_token_id; the layout starts with <bos>")
            piece = [tokenizer.bos_token_id]
        else:
            piece = list(tokenizer(seg.text, add_special_tokens=False)["input_ids"])
        ids.extend(piece)
        labels.extend(piece if seg.trainable else [IGNORE_INDEX] * len(piece))
    truncated = len(ids) > max_length
    return TokenizedExample(ids[:max_length], labels[:max_length], truncated)


def item_rng(seed: int, epoch: int, index: int, stream: str = "") -> random.Random:
    """A ``Random`` owned by one item: seeded from ``(seed, epoch, index[, stream])`` alone.

    String seeds go through sha512 in CPython (not ``hash()``), so the state is the same in every
    process and for every ``PYTHONHASHSEED``; it never depends on which items were drawn before or
    on how many workers share the data. ``stream`` separates independent draws of one item.
    """
    return random.Random(f"{seed}:{epoch}:{index}" + (f":{stream}" if stream else ""))


class AnnotationExampleSet:
    """Indexable training examples over one or more annotation files (spec section 4.3).

    The length is the number of annotations (not candidates). ``example(i, epoch)`` draws the
    candidate, captions, templates and stage-2 attempts from ``item_rng(seed, epoch, i)`` and the
    motions' crop offsets from ``item_rng(seed, epoch, i, "crop")`` (passed to the code source as
    ``codes(ref, rng)``), so an item is the same whatever the access order, the object or the
    number of workers, and nothing is mutated (B3). Use ``seed + rank`` per rank if ranks should
    differ (B5).

    Args:
        files: paths, or one ``a.json:b.json`` string as in ``--data-json-files``.
        codes: a code source taking ``(ref, rng)`` (``CodeLookup``, ``data.motion_codes``).
        pools: prompt pools (``data.prompts.load_prompt_pools``).
        seed: base seed.
        options: stage-2 trace options.
        crop_augment: draw crop offsets as above; ``False`` = every motion cropped at frame 0.
    """

    def __init__(
        self,
        files: Sequence[str] | str,
        codes: CodeLookup,
        pools: PromptPools,
        seed: int = 0,
        options: BuildOptions | None = None,
        crop_augment: bool = True,
    ) -> None:
        paths = files.split(":") if isinstance(files, str) else list(files)
        self.annotations = [a for p in paths for a in read_annotation_file(p).annotations]
        self.codes, self.pools, self.seed, self.options = codes, pools, seed, options
        self.crop_augment = crop_augment

    def __len__(self) -> int:
        return len(self.annotations)

    def example(self, index: int, epoch: int = 0) -> Example:
        """Item ``index`` of ``epoch``: a pure function of (seed, epoch, index) and the inputs."""
        if not 0 <= index < len(self.annotations):
            raise IndexError(f"example index {index} out of range 0..{len(self.annotations) - 1}")
        return build_example(
            self.annotations[index],
            self.codes,
            self.pools,
            item_rng(self.seed, epoch, index),
            self.options,
            crop_rng=item_rng(self.seed, epoch, index, "crop") if self.crop_augment else None,
        )
