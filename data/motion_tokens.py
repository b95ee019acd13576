"""Motion codes as LLM text/ids, and the parsing of generated output back into codes.

Rendering (spec ``sft-and-inference.md`` section 1.3, MUST): a code sequence ``c_1 .. c_n`` is one
contiguous string with no separators, ``<Motion><Motion_c1>...<Motion_cn></Motion>``; an empty
motion is ``<Motion></Motion>``. The vocabulary extension (section 1.2) appends ``<Motion>``,
``</Motion>``, ``<Motion_0>`` ... ``<Motion_{K-1}>`` in that order as non-special tokens, so with a
base vocabulary of ``N_text`` entries the id of ``<Motion_k>`` is ``N_text + 2 + k`` ("offset" k+2).

Parsing (section 1.4): we parse generated *ids* (or text) rather than logits, which equals the
reference under greedy decoding (B6). The span rule is the reference's P2 with the B16 fix: a span
opens at the innermost ``<Motion>`` before a ``</Motion>``; the last (or first) complete span is
selected. Inside the chosen span non-code tokens are dropped and counted (the reference would
substitute a restricted argmax we do not have). Problems are never silent: every parse returns a
``MotionParse`` with counters, and ``MotionParseStats`` aggregates them over a run.

Per eval task (``PARSE_RULES``, ``parse_task_completion``): the forced-``<Motion>`` prompts (``t2m``,
``t2m_motionagent``, ``instructed_motion_refinement``) end with ``<Motion>``, so their completion
starts inside an open span that ``</Motion>`` or the stop token closes (the reference's P1 reading,
never "no motion"); chain-of-thought tasks take the last complete span (``..._initial_gen``: the
first; ``..._w_max_rounds``: span number ``max_refine_round``, the B7 fix). ``ParseStatsTable``
counts parses and fallbacks per task and round.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

MOTION_START = "<Motion>"
MOTION_END = "</Motion>"
DEFAULT_NB_CODE = 512
"""Codebook size of the released T2M-GPT / Motion-Agent VQ-VAE."""

_TOKEN_RE = re.compile(r"<Motion>|</Motion>|<Motion_(\d+)>")


class MotionCodeError(ValueError):
    """A code list cannot be rendered (out of range, not an integer)."""


def code_token(code: int) -> str:
    """``<Motion_k>`` for code ``k``."""
    return f"<Motion_{int(code)}>"


def motion_token_strings(nb_code: int = DEFAULT_NB_CODE) -> list[str]:
    """The ``nb_code + 2`` added token strings, in the order they MUST be added to the tokenizer."""
    return [MOTION_START, MOTION_END, *(code_token(k) for k in range(nb_code))]


def _check_codes(codes: Iterable[int], nb_code: int) -> list[int]:
    out = []
    for i, c in enumerate(codes):
        try:
            k = int(c)
        except (TypeError, ValueError) as err:
            raise MotionCodeError(f"code #{i} is {c!r}, not an integer") from err
        if k != c or not 0 <= k < nb_code:
            raise MotionCodeError(f"code #{i} is {c!r}, outside [0, {nb_code - 1}] (wrong codebook size?)")
        out.append(k)
    return out


def render_codes_inner(codes: Sequence[int], nb_code: int = DEFAULT_NB_CODE) -> str:
    """``<Motion_c1>...<Motion_cn>`` (no tags); raises ``MotionCodeError`` on bad codes."""
    return "".join(code_token(k) for k in _check_codes(codes, nb_code))


def render_codes(codes: Sequence[int] | None, nb_code: int = DEFAULT_NB_CODE) -> str:
    """``<Motion>...</Motion>`` for ``codes`` (N,) in ``[0, nb_code)``; ``None``/empty gives ``<Motion></Motion>``."""
    return MOTION_START + render_codes_inner(codes or (), nb_code) + MOTION_END


def motion_ids(codes: Sequence[int], base_id: int, nb_code: int = DEFAULT_NB_CODE) -> list[int]:
    """Token ids of the rendered span: ``[base] + [base + 2 + c ...] + [base + 1]``.

    Args:
        codes: (N,) code ids.
        base_id: id of ``<Motion>`` (= ``N_text``, 256000 with the gemma-2 tokenizer).
    """
    return [base_id, *(base_id + 2 + k for k in _check_codes(codes, nb_code)), base_id + 1]


@dataclass
class MotionParse:
    """Result of parsing one completion.

    ``spans`` holds the codes of every complete span in order; ``codes`` those of the selected one
    (empty when there is none). Counters say what had to be repaired.
    """

    codes: list[int]
    spans: list[list[int]]
    dropped_tokens: int = 0
    """Non-code tokens (text, out-of-range codes) dropped inside the selected span."""
    unclosed: int = 0
    """``<Motion>`` tags with no ``</Motion>`` after them (ignored)."""
    restarts: int = 0
    """``<Motion>`` tags inside an open span (the span restarts at the inner one, B16)."""
    stray_ends: int = 0
    """``</Motion>`` tags with no open span (ignored)."""
    implicit_end: int = 0
    """1 when the selected span had no ``</Motion>`` and was closed by the stop token or the end of
    the completion (only for completions of forced-``<Motion>`` prompts, ``open_start=True``)."""

    @property
    def found(self) -> bool:
        """True when at least one complete span exists."""
        return bool(self.spans)


@dataclass
class MotionParseStats:
    """Counts over many parses, for logs/metrics (``as_dict`` gives stable keys)."""

    total: int = 0
    no_span: int = 0
    empty: int = 0
    dropped_tokens: int = 0
    unclosed: int = 0
    restarts: int = 0
    stray_ends: int = 0
    fallback: int = 0
    implicit_end: int = 0

    def add(self, parse: MotionParse, used_fallback: bool = False) -> None:
        self.total += 1
        self.no_span += not parse.found
        self.empty += parse.found and not parse.codes
        self.dropped_tokens += parse.dropped_tokens
        self.unclosed += parse.unclosed
        self.restarts += parse.restarts
        self.stray_ends += parse.stray_ends
        self.fallback += used_fallback
        self.implicit_end += parse.implicit_end

    def as_dict(self, prefix: str = "motion_parse") -> dict[str, int]:
        """Counters under ``{prefix}/{name}`` (stable keys for metrics files)."""
        return {
            f"{prefix}/total": self.total,
            f"{prefix}/no_span": self.no_span,
            f"{prefix}/empty": self.empty,
            f"{prefix}/dropped_tokens": self.dropped_tokens,
            f"{prefix}/unclosed": self.unclosed,
            f"{prefix}/restarts": self.restarts,
            f"{prefix}/stray_ends": self.stray_ends,
            f"{prefix}/fallback": self.fallback,
            f"{prefix}/implicit_end": self.implicit_end,
        }


class ParseStatsTable:
    """``MotionParseStats`` per (task, round), e.g. every refinement round of one eval task.

    ``as_dict`` gives ``motion_parse/{task}/round{r}/{counter}`` keys.
    """

    def __init__(self) -> None:
        self._stats: dict[tuple[str, int], MotionParseStats] = {}

    def get(self, task: str, round_idx: int = 0) -> MotionParseStats:
        """The counters of ``task`` at ``round_idx`` (created empty on first use)."""
        return self._stats.setdefault((task, round_idx), MotionParseStats())

    def keys(self) -> list[tuple[str, int]]:
        return sorted(self._stats)

    def as_dict(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for (task, r), st in sorted(self._stats.items()):
            out.update(st.as_dict(prefix=f"motion_parse/{task}/round{r}"))
        return out


# An item is "start", "end", an int code, or None for anything else (text / unknown id).
_Item = str | int | None
Select = Literal["last", "first"] | int
"""Which complete span to take: ``"last"``, ``"first"``, or span number ``k`` (0-based; the last
one when there are fewer)."""


def _parse_items(items: Sequence[_Item], select: Select, open_start: bool = False) -> MotionParse:
    spans: list[list[_Item]] = []
    open_items: list[_Item] | None = [] if open_start else None
    unclosed = restarts = stray = implicit_end = 0
    for it in items:
        if it == "start":
            if open_items is not None:
                restarts += 1
            open_items = []
        elif it == "end":
            if open_items is None:
                stray += 1
            else:
                spans.append(open_items)
                open_items = None
        elif open_items is not None:
            open_items.append(it)
    if open_items is not None:
        if open_start and not spans:
            # The forced span never saw </Motion>: the stop token / end of completion closes it.
            spans.append(open_items)
            implicit_end = 1
        else:
            unclosed = 1
    span_codes = [[c for c in body if isinstance(c, int)] for body in spans]
    if not spans:
        return MotionParse([], [], unclosed=unclosed, restarts=restarts, stray_ends=stray)
    if select == "last":
        idx = -1
    elif select == "first":
        idx = 0
    elif isinstance(select, int) and select >= 0:
        idx = min(select, len(spans) - 1)
    else:
        raise ValueError(f"select must be 'last', 'first' or a span number >= 0, got {select!r}")
    chosen = spans[idx]
    dropped = sum(1 for c in chosen if not isinstance(c, int))
    return MotionParse(
        codes=list(span_codes[idx]),
        spans=span_codes,
        dropped_tokens=dropped,
        unclosed=unclosed,
        restarts=restarts,
        stray_ends=stray,
        implicit_end=implicit_end,
    )


def parse_motion_ids(
    ids: Sequence[int],
    base_id: int,
    nb_code: int = DEFAULT_NB_CODE,
    select: Select = "last",
    stop_ids: Sequence[int] = (),
    open_start: bool = False,
) -> MotionParse:
    """Codes of the last (or first) complete ``<Motion>...</Motion>`` span in generated ids.

    Args:
        ids: (L,) completion ids (prompt excluded).
        base_id: id of ``<Motion>``; codes are ``id - base_id - 2``.
        select: ``last`` (stage-2/3 final motion, P2), ``first`` (round-1 attempt) or span number k.
        stop_ids: ids that end the completion (e.g. ``<eos>``, ``<end_of_turn>``); the parse stops at
            the first one (spec section 11: cut at whichever stop came first).
        open_start: the prompt ended with ``<Motion>`` (forced generation), so the completion starts
            inside a span; if no ``</Motion>`` follows, the stop token or the end closes it
            (``implicit_end``). Use ``select="first"`` with it: later spans are not the answer.
    """
    stops = set(stop_ids)
    items: list[_Item] = []
    for t in ids:
        t = int(t)
        if t in stops:
            break
        if t == base_id:
            items.append("start")
        elif t == base_id + 1:
            items.append("end")
        elif base_id + 2 <= t < base_id + 2 + nb_code:
            items.append(t - base_id - 2)
        else:
            items.append(None)
    return _parse_items(items, select, open_start=open_start)


def parse_motion_text(
    text: str, nb_code: int = DEFAULT_NB_CODE, select: Select = "last", open_start: bool = False
) -> MotionParse:
    """Same rule as ``parse_motion_ids`` on decoded text (motion tokens survive decoding).

    Text between tags counts as one dropped token per non-blank run; ``<Motion_k>`` with
    ``k >= nb_code`` is dropped and counted.
    """
    items: list[_Item] = []
    pos = 0
    for m in _TOKEN_RE.finditer(text):
        if text[pos : m.start()].strip():
            items.append(None)
        pos = m.end()
        tok = m.group(0)
        if tok == MOTION_START:
            items.append("start")
        elif tok == MOTION_END:
            items.append("end")
        else:
            k = int(m.group(1))
            items.append(k if k < nb_code else None)
    if text[pos:].strip():
        items.append(None)
    return _parse_items(items, select, open_start=open_start)


def codes_or_fallback(parse: MotionParse, stats: MotionParseStats | None = None) -> list[int]:
    """The parsed codes, or the reference's caller-side fallback ``[0]`` (4 frames) when empty."""
    used = not parse.codes
    if stats is not None:
        stats.add(parse, used_fallback=used)
    return [0] if used else list(parse.codes)


@dataclass(frozen=True)
class ParseRule:
    """How the final motion of one eval task is read from a completion (spec sections 1.4, 8.4)."""

    open_start: bool
    """The prompt ends with ``<Motion>`` (forced generation)."""
    select: Select
    """Which complete span is the answer."""


FORCED_MOTION_TASKS = ("t2m", "t2m_motionagent", "instructed_motion_refinement")
"""Test prompts that end with ``<Motion>`` (spec section 3.3)."""

PARSE_RULES: dict[str, ParseRule] = {
    **{task: ParseRule(open_start=True, select="first") for task in FORCED_MOTION_TASKS},
    # cot_v2 (P1): the first span (an <answer> block, when present, holds the same final motion).
    "unified_mogen_cot_v2": ParseRule(open_start=False, select="first"),
    "unified_mogen_cot_v3": ParseRule(open_start=False, select="last"),
    "unified_mogen_cot_v3_wo_assess_refine": ParseRule(open_start=False, select="last"),
    "unified_mogen_cot_v3_initial_gen": ParseRule(open_start=False, select="first"),
    "unified_mogen_cot_v3_random_flip": ParseRule(open_start=False, select="last"),
}
"""Parsed prompt/task name -> rule. ``unified_mogen_cot_v3_w_max_rounds`` is
``ParseRule(False, max_refine_round - 1)``, see ``parse_rule``."""


def parse_rule(task: str, max_refine_round: int | None = None) -> ParseRule:
    """The ``ParseRule`` of ``task``; ``..._w_max_rounds`` needs ``max_refine_round`` (>= 1).

    Raises:
        KeyError: unknown task (the message lists the known ones).
        ValueError: ``..._w_max_rounds`` without a valid ``max_refine_round``.
    """
    if task == "unified_mogen_cot_v3_w_max_rounds":
        if max_refine_round is None or max_refine_round < 1:
            raise ValueError(f"{task}: max_refine_round must be >= 1, got {max_refine_round!r}")
        return ParseRule(open_start=False, select=max_refine_round - 1)
    if task not in PARSE_RULES:
        known = sorted([*PARSE_RULES, "unified_mogen_cot_v3_w_max_rounds"])
        raise KeyError(f"no motion parse rule for task {task!r}; known: {known}")
    return PARSE_RULES[task]


def parse_task_completion(
    task: str,
    ids: Sequence[int],
    base_id: int,
    stop_ids: Sequence[int] = (),
    nb_code: int = DEFAULT_NB_CODE,
    max_refine_round: int | None = None,
) -> MotionParse:
    """``parse_motion_ids`` with the rule of ``task`` (see ``PARSE_RULES``).

    Args:
        task: prompt/task name, e.g. ``t2m`` or ``unified_mogen_cot_v3``.
        ids: (L,) completion ids (prompt excluded).
        base_id: id of ``<Motion>``.
        stop_ids: ids that end the completion.
    """
    rule = parse_rule(task, max_refine_round)
    return parse_motion_ids(
        ids,
        base_id=base_id,
        nb_code=nb_code,
        select=rule.select,
        stop_ids=stop_ids,
        open_start=rule.open_start,
    )
