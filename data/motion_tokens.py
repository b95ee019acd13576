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

    def add(self, parse: MotionParse, used_fallback: bool = False) -> None:
        self.total += 1
        self.no_span += not parse.found
        self.empty += parse.found and not parse.codes
        self.dropped_tokens += parse.dropped_tokens
        self.unclosed += parse.unclosed
        self.restarts += parse.restarts
        self.stray_ends += parse.stray_ends
        self.fallback += used_fallback

    def as_dict(self) -> dict[str, int]:
        return {
            "motion_parse/total": self.total,
            "motion_parse/no_span": self.no_span,
            "motion_parse/empty": self.empty,
            "motion_parse/dropped_tokens": self.dropped_tokens,
            "motion_parse/unclosed": self.unclosed,
            "motion_parse/restarts": self.restarts,
            "motion_parse/stray_ends": self.stray_ends,
            "motion_parse/fallback": self.fallback,
        }


# An item is "start", "end", an int code, or None for anything else (text / unknown id).
_Item = str | int | None


def _parse_items(items: Sequence[_Item], select: Literal["last", "first"]) -> MotionParse:
    spans: list[list[_Item]] = []
    open_items: list[_Item] | None = None
    unclosed = restarts = stray = 0
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
        unclosed = 1
    span_codes = [[c for c in body if isinstance(c, int)] for body in spans]
    if not spans:
        return MotionParse([], [], unclosed=unclosed, restarts=restarts, stray_ends=stray)
    idx = -1 if select == "last" else 0
    chosen = spans[idx]
    dropped = sum(1 for c in chosen if not isinstance(c, int))
    return MotionParse(
        codes=list(span_codes[idx]),
        spans=span_codes,
        dropped_tokens=dropped,
        unclosed=unclosed,
        restarts=restarts,
        stray_ends=stray,
    )


def parse_motion_ids(
    ids: Sequence[int],
    base_id: int,
    nb_code: int = DEFAULT_NB_CODE,
    select: Literal["last", "first"] = "last",
    stop_ids: Sequence[int] = (),
) -> MotionParse:
    """Codes of the last (or first) complete ``<Motion>...</Motion>`` span in generated ids.

    Args:
        ids: (L,) completion ids (prompt excluded).
        base_id: id of ``<Motion>``; codes are ``id - base_id - 2``.
        select: ``last`` (stage-2/3 final motion, P2) or ``first`` (round-1 attempt).
        stop_ids: ids that end the completion (e.g. ``<eos>``, ``<end_of_turn>``); the parse stops at
            the first one (spec section 11: cut at whichever stop came first).
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
    return _parse_items(items, select)


def parse_motion_text(
    text: str, nb_code: int = DEFAULT_NB_CODE, select: Literal["last", "first"] = "last"
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
    return _parse_items(items, select)


def codes_or_fallback(parse: MotionParse, stats: MotionParseStats | None = None) -> list[int]:
    """The parsed codes, or the reference's caller-side fallback ``[0]`` (4 frames) when empty."""
    used = not parse.codes
    if stats is not None:
        stats.add(parse, used_fallback=used)
    return [0] if used else list(parse.codes)
