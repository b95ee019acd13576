"""RL/rewards.py: the format rewards on hand-written completions, the Guo distance rewards on hand-made
completion ids (well-formed, several spans, no span, truncated, empty, text inside a span) against
values computed by hand through the VQ-VAE and the scorer, the malformed policies, caching, logged
metrics, the registry and pickling."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from data.annotations import MotionResolver
from data.normalization import FeatureNorm
from eval.scoring import MotionTextScorer
from models.motion_llm import MotionVocab, add_motion_tokens
from models.vqvae import MotionVQVAE
from RL.rewards import (
    REWARDS,
    GuoMotionMotionDistance,
    GuoRewardBackend,
    GuoTextMotionDistance,
    MotionTokenShare,
    build_rewards,
    check_reward_names,
    strict_format,
    strict_format_full,
)
from tests.grpo_fixtures import NB_CODE, SPEC, stage2_trace, write_evaluator, write_vq
from tests.llm_fixtures import small_tokenizer

VOCAB = MotionVocab(n_text=100, nb_code=NB_CODE)
EOS = 1
TEXT = [10, 11, 12]  # any ids below n_text are text
WALK = ["a/DET", "person/NOUN", "walk/VERB", "forward/ADV"]
JUMP = ["a/DET", "man/NOUN", "jump/VERB"]

# ---------------------------------------------------------------------------------------------- format

GOOD = stage2_trace([[3, 1, 4], [1, 5, 9, 2]])
THINK_ONLY = "<think>[plan]p[/plan]\n[analyze]a[/analyze]\n[plan]p[/plan]\n</think>"
NO_ANALYZE = GOOD.replace("[analyze]The goal is a walk.[/analyze]\n", "")
ASSESS_LAST = GOOD.replace(
    "[plan]I need to finish thinking as the satisfactory motion is generated.[/plan]\n</think>", "</think>"
)
NO_END_THINK = GOOD.replace("</think>", "")
BAD_GENERATE = GOOD.replace("[generate]<Motion><Motion_3>", "[generate] <Motion>text<Motion_3>", 1)


@pytest.mark.parametrize(
    ("text", "reference", "strict"),
    [
        (GOOD, 1.0, 1.0),  # the stage-2 grammar: both accept it
        # zero generate cycles: the reference's cycle group may repeat 0 times; strict needs one
        (THINK_ONLY, 1.0, 0.0),
        (NO_ANALYZE, 0.0, 0.0),  # the chain must open plan -> analyze -> plan
        (ASSESS_LAST, 0.0, 0.0),  # the last section before </think> must be a [plan]
        (NO_END_THINK, 0.0, 0.0),  # truncated: no </think>
        # a space after [generate] and text inside <Motion>: the lazy .*? of the third [plan] swallows
        # the cycles, so the reference never checks them (its leniency, spec 3.3); strict rejects it
        (BAD_GENERATE, 1.0, 0.0),
        ("Some words first. " + GOOD, 1.0, 0.0),  # the reference is unanchored; strict is anchored
        (GOOD + " trailing words", 1.0, 0.0),  # anything may follow </think> in the reference
        ("", 0.0, 0.0),  # empty completion
        ("[plan]a[/plan][analyze]b[/analyze][plan]c[/plan]</think>", 0.0, 0.0),  # no <think>
        (GOOD.replace("[/assess]", "[plan]x[/plan][/assess]", 1), 1.0, 0.0),  # a section inside another
    ],
)
def test_format_rewards_on_hand_written_completions(text, reference, strict):
    assert strict_format([text]) == [reference]
    assert strict_format_full([text]) == [strict]


def test_format_reward_sees_what_trl_decodes():
    # TRL decodes with skip_special_tokens=True: <eos> goes, the (non-special) motion tokens stay
    # adjacent, so the decoded completion scores as the text it came from
    tok = small_tokenizer()
    add_motion_tokens(tok, nb_code=NB_CODE)
    ids = tok(GOOD, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    decoded = tok.decode(ids, skip_special_tokens=True)
    assert (
        decoded == GOOD and "[generate]<Motion><Motion_3><Motion_1><Motion_4></Motion>[/generate]" in decoded
    )
    assert tok(decoded, add_special_tokens=False)["input_ids"] == ids[:-1]
    assert strict_format([decoded]) == [1.0] and strict_format_full([decoded]) == [1.0]


# ---------------------------------------------------------------------------------------------- Guo rewards


@pytest.fixture(scope="module")
def assets(tmp_path_factory, tiny_dataset: Path, tiny_glove: Path) -> dict:
    root = tmp_path_factory.mktemp("rewards")
    vq_path = write_vq(root / "vq")
    ev = write_evaluator(root / "ev")
    vq = MotionVQVAE.from_checkpoint(vq_path, nfeats=SPEC.feat_dim)
    vq_norm = FeatureNorm.load_meta(root / "vq" / "meta", SPEC)
    scorer = MotionTextScorer.from_files(ev, root / "ev" / "meta", tiny_glove, SPEC)
    return {"vq": vq, "vq_norm": vq_norm, "scorer": scorer, "dataset": tiny_dataset}


def _backend(assets: dict, malformed: str = "mean_pose") -> GuoRewardBackend:
    return GuoRewardBackend(
        assets["vq"], assets["vq_norm"], assets["scorer"], MotionResolver([assets["dataset"]]), VOCAB,
        stop_ids=(EOS,), malformed=malformed,
    )  # fmt: skip


def span(codes: list[int]) -> list[int]:
    return VOCAB.span_ids(codes)


# One local batch; (ids, answer codes or None when malformed, why)
BATCH = [
    (TEXT + span([1, 2, 3, 4, 5]) + [EOS], [1, 2, 3, 4, 5], "well-formed: one span, then <eos>"),
    (span([7, 7]) + TEXT + span([3, 9, 4]) + [EOS], [3, 9, 4], "two spans: the last is the answer"),
    (TEXT + [EOS], None, "no span at all"),
    (
        TEXT + [VOCAB.start_id, *VOCAB.codes_to_ids([2, 3])],
        None,
        "truncated inside a span: unclosed, so no span",
    ),
    ([VOCAB.start_id, VOCAB.end_id, EOS], None, "an empty span: zero codes"),
    (
        [VOCAB.start_id, *VOCAB.codes_to_ids([4]), 50, *VOCAB.codes_to_ids([5]), VOCAB.end_id, EOS],
        [4, 5],
        "text id 50 inside the span is dropped (counted)",
    ),
    ([], None, "empty completion"),
    (TEXT + [EOS] + span([6, 6]), None, "a span after <eos> is not part of the completion"),
]


def _hand_motion_embedding(assets: dict, codes: list[int] | None) -> np.ndarray:
    """The scorer's embedding of one answer, decoded alone (or the still mean pose of the VQ space)."""
    if codes is None:
        motion = np.zeros((SPEC.max_motion_len, SPEC.feat_dim), np.float32)
    else:
        motion = assets["vq"].decode(torch.tensor([codes]))[0].numpy()
    emb, failed = assets["scorer"].embed_motions([motion], assets["vq_norm"])
    assert not failed.any()
    return emb[0].astype(np.float64)


def _hand_gt_embedding(assets: dict, motion_id: str, start: int, stop: int) -> np.ndarray:
    raw = np.load(assets["dataset"] / "new_joint_vecs" / f"{motion_id}.npy")[start:stop]
    emb, _ = assets["scorer"].embed_motions([raw], FeatureNorm.identity(SPEC.feat_dim))
    return emb[0].astype(np.float64)


def test_distance_rewards_match_hand_computed_values(assets):
    backend = _backend(assets)
    tm, mm = GuoTextMotionDistance(backend), GuoMotionMotionDistance(backend)
    ids = [b[0] for b in BATCH]
    n = len(BATCH)
    # rows alternate between the whole clip 000000 and 000001's window [0.5, 3.0) s = frames [10, 60)
    caps = [WALK if i % 2 == 0 else JUMP for i in range(n)]
    cols = {"motion_id": ["000000" if i % 2 == 0 else "000001" for i in range(n)],
            "f_tag": [0.0 if i % 2 == 0 else 0.5 for i in range(n)],
            "to_tag": [0.0 if i % 2 == 0 else 3.0 for i in range(n)]}  # fmt: skip
    logged: dict[str, float] = {}
    kwargs = dict(completion_ids=ids, caption_tokens=caps, log_metric=logged.__setitem__, **cols)
    got_tm = tm(["unused"] * n, **kwargs)
    got_mm = mm(["unused"] * n, **kwargs)

    text = {tuple(c): assets["scorer"].embed_texts([c])[0].astype(np.float64) for c in (WALK, JUMP)}
    # 000000 has 60 frames (a multiple of 4); the window of 000001 holds 50 frames, floored to 48
    gt = {
        "000000": _hand_gt_embedding(assets, "000000", 0, 60),
        "000001": _hand_gt_embedding(assets, "000001", 10, 58),
    }
    for i, (_, codes, why) in enumerate(BATCH):
        m = _hand_motion_embedding(assets, codes)
        want_tm = -np.linalg.norm(text[tuple(caps[i])] - m)
        want_mm = -np.linalg.norm(gt[cols["motion_id"][i]] - m)
        assert got_tm[i] == pytest.approx(want_tm, rel=1e-5), why
        assert got_mm[i] == pytest.approx(want_mm, rel=1e-5), why
    # every malformed row scores the still mean pose: with one caption per parity the values repeat
    malformed = [i for i, b in enumerate(BATCH) if b[1] is None]
    assert len({round(got_tm[i], 6) for i in malformed if i % 2 == 0}) == 1
    # the metrics of the batch, logged once
    assert logged["motion/malformed_frac"] == pytest.approx(5 / 8)
    assert logged["motion/spans_mean"] == pytest.approx((1 + 2 + 0 + 0 + 1 + 1 + 0 + 0) / 8)
    assert logged["motion/dropped_tokens_mean"] == pytest.approx(1 / 8)
    assert logged["motion/answer_codes_mean"] == pytest.approx((5 + 3 + 2) / 3)
    assert logged["motion/decoded_frames_mean"] == pytest.approx(4 * (5 + 3 + 2) / 3)
    assert logged["motion/over_max_len_frac"] == 0.0
    assert logged["guo_tm_distance/raw_mean"] == pytest.approx(np.mean(got_tm))
    wellformed = [i for i in range(n) if i not in malformed]
    assert logged["guo_mm_distance/distance_wellformed"] == pytest.approx(
        -np.mean([got_mm[i] for i in wellformed])
    )


def test_group_min_policy_returns_none_for_malformed_and_the_same_values_otherwise(assets):
    ids = [b[0] for b in BATCH]
    kwargs = dict(completion_ids=ids, caption_tokens=[WALK] * len(ids), motion_id=["000000"] * len(ids))
    mean_pose = GuoTextMotionDistance(_backend(assets, "mean_pose"))(["x"] * len(ids), **kwargs)
    group_min = GuoTextMotionDistance(_backend(assets, "group_min"))(["x"] * len(ids), **kwargs)
    for i, (_, codes, why) in enumerate(BATCH):
        if codes is None:
            assert group_min[i] is None, why  # the trainer gives it the group's worst (0 after scaling)
        else:
            assert group_min[i] == pytest.approx(mean_pose[i], rel=1e-6), why


def test_one_decode_per_batch_and_cached_captions_and_ground_truth(assets, monkeypatch):
    backend = _backend(assets)
    calls = []
    decode = backend.decode
    monkeypatch.setattr(backend, "decode", lambda codes: calls.append(len(codes)) or decode(codes))
    group = [TEXT + span([i, i + 1]) + [EOS] for i in range(4)]  # a group of G = 4 completions
    kwargs = dict(completion_ids=group, caption_tokens=[JUMP] * 4, motion_id=["000001"] * 4,
                  f_tag=[0.5] * 4, to_tag=[3.0] * 4)  # fmt: skip
    first = GuoTextMotionDistance(backend)(["x"] * 4, **kwargs)
    GuoMotionMotionDistance(backend)(["x"] * 4, **kwargs)
    assert calls == [4]  # both rewards share one batched decode of the 4 answers
    assert list(backend._gt_cache) == [("000001", 0.5, 3.0)]  # one ground truth, embedded once
    assert tuple(JUMP) in assets["scorer"]._text_cache
    # a new batch with the same caption decodes again, reuses the caption and ground truth
    again = GuoTextMotionDistance(backend)(["x"] * 4, **{**kwargs, "completion_ids": group[::-1]})
    assert calls == [4, 4] and again == pytest.approx(first[::-1], rel=1e-6)


def test_a_row_without_ground_truth_gets_none_from_mm(assets):
    backend = _backend(assets)
    out = GuoMotionMotionDistance(backend)(
        ["x"] * 2, completion_ids=[span([1]) + [EOS]] * 2, caption_tokens=[WALK] * 2, motion_id=["000000", ""]
    )
    assert out[0] is not None and out[0] < 0 and out[1] is None


def test_missing_columns_are_named(assets):
    with pytest.raises(ValueError, match="caption_tokens"):
        GuoTextMotionDistance(_backend(assets))(["x"], completion_ids=[[1]])


# ---------------------------------------------------------------------------------------------- others


def test_motion_token_share():
    reward = MotionTokenShare(VOCAB, stop_ids=(EOS,))
    ids = [
        [VOCAB.start_id, VOCAB.start_id + 5, 10, EOS],  # 2 motion tokens of 3 (eos excluded)
        TEXT + [EOS],  # none
        [],  # empty: 0
        span([1, 2]),  # all 4 are motion tokens
    ]
    assert reward(["x"] * 4, completion_ids=ids) == pytest.approx([2 / 3, 0.0, 0.0, 1.0])


def test_registry_names_errors_and_pickling(assets):
    with pytest.raises(KeyError, match=r"unknown reward 'guo_distance'.*valid: \['guo_mm_distance'"):
        check_reward_names(["strict_format", "guo_distance"])
    with pytest.raises(KeyError, match="more than once"):
        check_reward_names(["strict_format", "strict_format"])
    assert set(REWARDS) >= {"strict_format", "strict_format_full", "guo_tm_distance", "guo_mm_distance"}
    backend = _backend(assets)
    funcs = [
        strict_format,
        GuoTextMotionDistance(backend),
        GuoMotionMotionDistance(backend),
        MotionTokenShare(VOCAB),
    ]
    names = [f.__name__ for f in funcs]
    assert names == ["strict_format", "guo_tm_distance", "guo_mm_distance", "motion_token_share"]
    for f in funcs:  # picklable for worker processes, and the logged name survives
        assert pickle.loads(pickle.dumps(f)).__name__ == f.__name__
    assert [getattr(f, "group_minmax", False) for f in funcs] == [False, True, True, False]


def test_build_rewards_shares_one_backend(assets):
    class Ctx:
        vocab, stop_ids, backend = VOCAB, (EOS,), _backend(assets)

        def guo_backend(self):
            return self.backend

    tm, mm, fmt = build_rewards(["guo_tm_distance", "guo_mm_distance", "strict_format"], Ctx())
    assert tm.backend is mm.backend and fmt is strict_format
