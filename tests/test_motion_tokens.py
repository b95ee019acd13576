"""Parsing completions per eval task (spec section 1.4): forced prefix, several spans, unclosed, none."""

from __future__ import annotations

import pytest

from data.motion_tokens import (
    MotionParseStats,
    ParseStatsTable,
    codes_or_fallback,
    parse_motion_ids,
    parse_motion_text,
    parse_rule,
    parse_task_completion,
)

B = 300  # id of <Motion>; </Motion> = 301, code k = 302 + k
END, EOS, EOT, TXT = B + 1, 1, 107, 7


def c(*codes: int) -> list[int]:
    return [B + 2 + k for k in codes]


def test_forced_prefix_completion_is_an_open_span():
    # t2m: the prompt ended with <Motion>; the completion is codes, </Motion>, <eos>.
    p = parse_task_completion("t2m", [*c(5, 6, 7), END, EOS], base_id=B, stop_ids=[EOS, EOT])
    assert p.codes == [5, 6, 7] and p.found and p.implicit_end == 0
    # the same completion parsed as a CoT output has no span at all (what the audit found wrong)
    assert not parse_task_completion("unified_mogen_cot_v3", [*c(5, 6, 7), END, EOS], base_id=B).found


def test_forced_prefix_closed_by_stop_token_or_end():
    # no </Motion>: <end_of_turn> closes the span; the pad after it is never read
    p = parse_task_completion("t2m_motionagent", [*c(1, 2), EOT, 0, 0], base_id=B, stop_ids=[EOS, EOT])
    assert p.codes == [1, 2] and p.implicit_end == 1
    # ran out of length: the end of the completion closes it
    p = parse_task_completion("instructed_motion_refinement", c(9, 9, 3), base_id=B, stop_ids=[EOS])
    assert p.codes == [9, 9, 3] and p.implicit_end == 1
    # stray text inside the forced span is dropped and counted; what follows </Motion> is ignored
    p = parse_task_completion("t2m", [*c(4), TXT, *c(8), END, B, *c(1), END], base_id=B, stop_ids=[EOS])
    assert p.codes == [4, 8] and p.dropped_tokens == 1 and p.spans == [[4, 8], [1]]
    # an immediate stop: an empty motion, which the caller replaces by the fallback [0]
    p = parse_task_completion("t2m", [EOS], base_id=B, stop_ids=[EOS])
    stats = MotionParseStats()
    assert p.codes == [] and codes_or_fallback(p, stats) == [0] and stats.fallback == 1


def test_several_spans_cot_takes_the_last_initial_gen_the_first():
    ids = [TXT, B, *c(1, 2), END, TXT, TXT, B, *c(3), END, TXT, B, *c(4, 5, 6), END, EOS]
    assert parse_task_completion("unified_mogen_cot_v3", ids, base_id=B, stop_ids=[EOS]).codes == [4, 5, 6]
    assert parse_task_completion("unified_mogen_cot_v3_initial_gen", ids, base_id=B).codes == [1, 2]
    # w_max_rounds: span number max_refine_round (B7 fixed); with fewer spans, the last one
    assert parse_task_completion("unified_mogen_cot_v3_w_max_rounds", ids, B, max_refine_round=2).codes == [3]
    assert parse_task_completion("unified_mogen_cot_v3_w_max_rounds", ids, B, max_refine_round=9).codes == [
        4,
        5,
        6,
    ]


def test_unclosed_last_span_falls_back_to_previous_complete_span():
    ids = [B, *c(1, 2), END, TXT, B, *c(3, 4), EOS]
    p = parse_task_completion("unified_mogen_cot_v3", ids, base_id=B, stop_ids=[EOS])
    assert p.codes == [1, 2] and p.unclosed == 1 and p.implicit_end == 0


def test_no_span_is_counted_and_gets_the_fallback():
    table = ParseStatsTable()
    for r, ids in enumerate([[TXT, TXT, EOS], [TXT, *c(3), EOS]]):
        p = parse_task_completion("unified_mogen_cot_v3", ids, base_id=B, stop_ids=[EOS])
        assert not p.found and codes_or_fallback(p, table.get("unified_mogen_cot_v3", r)) == [0]
    ok = parse_task_completion("t2m", [*c(2), END], base_id=B)
    assert codes_or_fallback(ok, table.get("t2m", 0)) == [2]
    d = table.as_dict()
    assert d["motion_parse/unified_mogen_cot_v3/round0/fallback"] == 1
    assert d["motion_parse/unified_mogen_cot_v3/round1/no_span"] == 1
    assert d["motion_parse/t2m/round0/fallback"] == 0 and d["motion_parse/t2m/round0/total"] == 1
    assert table.keys() == [("t2m", 0), ("unified_mogen_cot_v3", 0), ("unified_mogen_cot_v3", 1)]


def test_text_parse_with_forced_prefix_matches_ids_parse():
    text = "<Motion_5><Motion_6></Motion><eos>"
    assert parse_motion_text(text, open_start=True, select="first").codes == [5, 6]
    assert parse_motion_text("<Motion_5><Motion_6>", open_start=True, select="first").implicit_end == 1
    assert parse_motion_ids(c(5, 6), base_id=B, open_start=True, select="first").codes == [5, 6]


def test_unknown_task_and_bad_select_name_the_problem():
    with pytest.raises(KeyError, match="known"):
        parse_rule("t2m_typo")
    with pytest.raises(ValueError, match="max_refine_round"):
        parse_rule("unified_mogen_cot_v3_w_max_rounds")
    with pytest.raises(ValueError, match="select"):
        parse_motion_ids([B, END], base_id=B, select="middle")  # type: ignore[arg-type]
