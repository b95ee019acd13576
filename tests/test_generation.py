"""models.generation: batched KV-cache generation equals reference decoding; the refinement loop.

Everything runs a tiny random Gemma-2 (float32, eager) on CPU. ``WINDOW`` models use a sliding
window of 8 tokens on their sliding layers, so the window binds on these short prompts.
"""

from __future__ import annotations

import logging
import random
import re

import pytest
import torch

from data.motion_tokens import ParseStatsTable, render_codes
from data.prompts import NO_REFINEMENT
from models.gemma2_decode import Gemma2Decoder
from models.generation import (
    BatchedGenerator,
    DecodeConfig,
    decode_config_for_task,
    refinement_loop,
    row_seed,
    warp_logits,
)
from scripts.bench_generation import BenchConfig, run_side
from tests.tiny_lm import tiny_model, tiny_tokenizer

WINDOW = 8


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module", params=["full", "window"])
def model(request, tok):
    return tiny_model(len(tok), seed=1, sliding_window=WINDOW if request.param == "window" else 4096)


def random_prompts(n: int, seed: int, lo: int = 3, hi: int = 20) -> list[list[int]]:
    rng = random.Random(seed)
    return [[2] + [rng.randrange(5, 1194) for _ in range(rng.randrange(lo, hi))] for _ in range(n)]


def hf_greedy(model, prompt: list[int], new: int, eos=None) -> list[int]:
    out = model.generate(
        torch.tensor([prompt]), max_new_tokens=new, do_sample=False, eos_token_id=eos, pad_token_id=0
    )
    return out[0, len(prompt) :].tolist()


def uncached_greedy(model, prompt: list[int], new: int) -> list[int]:
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(new):
            seq.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))
    return seq[len(prompt) :]


def test_cached_generation_equals_uncached(model):
    prompts = random_prompts(3, seed=0)
    gen = BatchedGenerator(model).generate(prompts, DecodeConfig(max_new_tokens=14, stop_ids=()))
    for p, g in zip(prompts, gen, strict=True):
        assert g.tokens == uncached_greedy(model, p, 14) and g.finish == "length"


def test_batched_equals_one_by_one(model):
    prompts = random_prompts(7, seed=1)
    gen = BatchedGenerator(model).generate(
        prompts, DecodeConfig(max_new_tokens=12, stop_ids=()), batch_size=4
    )
    assert [g.tokens for g in gen] == [hf_greedy(model, p, 12) for p in prompts]
    assert len({len(p) for p in prompts}) > 3  # the batch really was padded


def test_rows_finish_at_different_times(model):
    prompts = random_prompts(6, seed=2)
    gen = BatchedGenerator(model)
    free = gen.generate(prompts, DecodeConfig(max_new_tokens=16, stop_ids=()))
    # a stop id that some rows produce early, others late or never
    first_at = {}
    for g in free:
        for i, t in enumerate(g.tokens):
            first_at.setdefault(t, []).append(i)
    stop = max(first_at, key=lambda t: (len(set(first_at[t])), -min(first_at[t])))
    cfg = DecodeConfig(max_length=30, max_new_tokens=16, stop_ids=(stop,))
    stopped = gen.generate(prompts, cfg)
    lengths = set()
    for p, f, s in zip(prompts, free, stopped, strict=True):
        budget = min(16, 30 - len(p))
        want = f.tokens[:budget]
        if stop in want:
            want = want[: want.index(stop) + 1]
            assert s.finish == "stop"
        else:
            assert s.finish == "length"
        assert s.tokens == want == hf_greedy(model, p, budget, eos=stop)
        lengths.add(len(s.tokens))
    assert len(lengths) >= 3


def test_min_new_tokens_masks_stop_ids(model):
    prompts = random_prompts(2, seed=3)
    gen = BatchedGenerator(model)
    first = [g.tokens[0] for g in gen.generate(prompts, DecodeConfig(max_new_tokens=1, stop_ids=()))]
    got = gen.generate(prompts, DecodeConfig(max_new_tokens=5, min_new_tokens=5, stop_ids=tuple(first)))
    assert all(len(g.tokens) == 5 and g.finish == "length" for g in got)
    assert all(g.tokens[0] not in first for g in got)


def test_sampling_is_seeded_per_row(model):
    prompts = random_prompts(5, seed=4)
    gen = BatchedGenerator(model)
    cfg = DecodeConfig(max_new_tokens=10, stop_ids=(), do_sample=True, top_k=40, top_p=0.95)
    seeds = [row_seed(7, i) for i in range(5)]
    batched = [g.tokens for g in gen.generate(prompts, cfg, seeds=seeds, batch_size=5)]
    alone = [gen.generate([p], cfg, seeds=[s])[0].tokens for p, s in zip(prompts, seeds, strict=True)]
    reversed_order = [g.tokens for g in gen.generate(prompts[::-1], cfg, seeds=seeds[::-1], batch_size=2)]
    assert batched == alone == reversed_order[::-1]
    other = [g.tokens for g in gen.generate(prompts, cfg, seeds=[s + 1 for s in seeds])]
    assert other != batched
    # top_k=1 sampling is greedy
    greedy = gen.generate(prompts, DecodeConfig(max_new_tokens=10, stop_ids=()))
    top1 = gen.generate(prompts, DecodeConfig(max_new_tokens=10, stop_ids=(), do_sample=True, top_k=1))
    assert [g.tokens for g in top1] == [g.tokens for g in greedy]


def test_warp_logits_keeps_top_k_and_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = torch.isfinite(warp_logits(logits, DecodeConfig(max_new_tokens=1, top_k=3, top_p=0.8)))
    assert kept.tolist() == [[True, True, False, False]]  # 0.5 + 0.3 reaches 0.8
    kept = torch.isfinite(warp_logits(logits, DecodeConfig(max_new_tokens=1, top_k=2, top_p=1.0)))
    assert kept.tolist() == [[True, True, False, False]]
    hot = warp_logits(logits, DecodeConfig(max_new_tokens=1, temperature=2.0, top_k=None))
    assert torch.allclose(hot, logits / 2)


def test_multi_round_reuse_equals_reencoding(model):
    gen = BatchedGenerator(model)
    prompts = random_prompts(5, seed=5)
    cfg = DecodeConfig(max_new_tokens=9, stop_ids=())
    r1 = gen.generate(prompts, cfg, keep_state=True)
    turns = random_prompts(5, seed=6, lo=1, hi=12)
    # (a) a conversation growing by a user turn; (b) a fresh prompt sharing only its beginning
    grown = [g.state.tokens + t[1:] for g, t in zip(r1, turns, strict=True)]
    forked = [p[: max(2, len(p) // 2)] + t[1:] for p, t in zip(prompts, turns, strict=True)]
    for new in (grown, forked):
        states = [g.state for g in r1]
        reused = gen.generate(new, cfg, states=states, keep_state=True)
        fresh = gen.generate(new, cfg)
        assert (
            [g.tokens for g in reused] == [g.tokens for g in fresh] == [hf_greedy(model, p, 9) for p in new]
        )
        if new is grown:  # re-encoded: the last generated token and the new turn (<= 11 tokens)
            assert all(g.reused >= g.prompt_len - 12 for g in reused)
        # a third round on top of reused states
        third = [g.state.tokens + [5, 6, 7] for g in reused]
        again = gen.generate(third, cfg, states=[g.state for g in reused])
        assert [g.tokens for g in again] == [hf_greedy(model, p, 9) for p in third]
    assert sum(g.reused for g in gen.generate(grown, cfg, states=[g.state for g in r1])) > sum(
        map(len, prompts)
    )


def test_state_is_complete_on_sliding_layers(tok):
    model = tiny_model(len(tok), seed=1, sliding_window=WINDOW)
    gen = BatchedGenerator(model)
    prompt = random_prompts(1, seed=7, lo=15, hi=16)
    (g,) = gen.generate(prompt, DecodeConfig(max_new_tokens=4, stop_ids=()), keep_state=True)
    assert gen.windows == [WINDOW, None]
    assert g.state.n_cached == len(g.state.tokens) - 1 == 19
    assert [k.shape[1] for k in g.state.keys] == [19, 19]


def test_prompt_over_max_length_gets_empty_completion(model):
    gen = BatchedGenerator(model)
    long, short = [2] + [9] * 12, [2, 9, 9]
    out = gen.generate([long, short], DecodeConfig(max_length=10, stop_ids=()))
    assert out[0].tokens == [] and out[0].finish == "length" and len(out[1].tokens) == 7


def test_task_decoding_limits():
    cfg = decode_config_for_task("direct_generation-instructed_refinement", do_sample=True)
    assert cfg.max_length == 1024 and not cfg.do_sample and cfg.stop_ids == (1, 107)
    assert decode_config_for_task("unified_mogen_cot_v3", do_sample=True).do_sample
    assert decode_config_for_task("m2t").max_length == 256
    with pytest.raises(KeyError, match="known"):
        decode_config_for_task("t2m_typo")
    with pytest.raises(ValueError, match="max_new_tokens or max_length"):
        DecodeConfig()


# --------------------------------------------------------------------------------------------------
# The refinement loop, with outputs scripted through the logits hook


class ScriptedModel:
    """Forces the tiny model's outputs: sample i (caption ``w{i}``) answers round r as follows.

    Motion calls emit the codes ``[i, r]`` (``[]`` for samples in ``empty``) then ``</Motion><eos>``.
    Instruction calls emit ``replies[i][r]`` (default ``"move faster."``) then ``<eos>``. The round
    is the number of earlier calls of the same kind for the sample (every call has a new prompt).
    """

    def __init__(self, tok, replies: dict[int, dict[int, str]], empty: frozenset[int] = frozenset()):
        self.tok, self.replies, self.empty = tok, replies, empty
        self.eos = tok.convert_tokens_to_ids("<eos>")
        self.seen: dict[tuple[int, ...], list[int]] = {}
        self.calls: dict[tuple[int, bool], int] = {}

    def target(self, prompt: list[int]) -> list[int]:
        text = self.tok.decode(prompt)
        i = int(re.search(r"\bw(\d+)\b", text).group(1))
        is_motion = text.endswith("Response:<Motion>")
        n = self.calls[i, is_motion] = self.calls.get((i, is_motion), -1) + 1
        if is_motion:
            codes = [] if i in self.empty else [i, n]
            ids = [self.tok.convert_tokens_to_ids(f"<Motion_{c}>") for c in codes]
            return ids + [self.tok.convert_tokens_to_ids("</Motion>"), self.eos]
        reply = self.replies.get(i, {}).get(n + 1, "move faster.")
        return self.tok(reply)["input_ids"][1:] + [self.eos]

    def __call__(self, prompts, completions, logits):
        forced = torch.full_like(logits, float("-inf"))
        for b, (p, c) in enumerate(zip(prompts, completions, strict=True)):
            key = tuple(p)
            if key not in self.seen:
                self.seen[key] = self.target(list(p))
            forced[b, self.seen[key][len(c)]] = 0.0
        return forced


def test_refinement_loop_stops_exactly_on_the_stop_sentence(tok):
    model = tiny_model(len(tok), seed=2)
    replies = {
        0: {1: NO_REFINEMENT},  # stops at round 1, keeps its round-0 motion
        1: {3: NO_REFINEMENT},  # two refinements, stops at round 3
        2: {1: "No refinements needed"},  # near misses never stop
        3: {1: " No refinements needed.", 2: "No refinements needed. move"},
    }
    script = ScriptedModel(tok, replies, empty=frozenset({4}))
    stats = ParseStatsTable()
    captions = [f"w{i} walks." for i in range(5)]
    dec = DecodeConfig(max_length=1024, stop_ids=(1, 4))
    res = refinement_loop(
        BatchedGenerator(model), tok, captions, max_rounds=4, decode=dec, stats=stats, logits_hook=script
    )
    assert [r.stopped_at for r in res] == [1, 3, None, None, None]
    assert [r.rounds_used for r in res] == [0, 2, 4, 4, 4]
    assert res[0].motions == [[0, 0]] and res[0].final == [0, 0]
    assert res[1].motions == [[1, 0], [1, 1], [1, 2]]
    assert res[2].final == [2, 4]
    # sample 4 never emits a code: the fallback [0] each round, counted per round
    assert res[4].motions == [[0]] * 5
    table = stats.as_dict()
    assert [
        table[f"motion_parse/direct_generation-instructed_refinement/round{r}/fallback"] for r in range(5)
    ] == [1] * 5
    assert table["motion_parse/direct_generation-instructed_refinement/round3/total"] == 3
    # the prompts carry the previous motion wrapped in its tags, and the instruction
    step = [s for s in res[1].steps if s.kind == "instructed_motion_refinement" and s.round == 2][0]
    assert f"Motion: {render_codes([1, 1])}. Goal text: w1 walks. Refine" in step.prompt
    assert step.prompt.endswith("instruction: move faster.\n\n Response:<Motion>")
    kinds = [(s.round, s.kind) for s in res[0].steps]
    assert kinds == [(0, "t2m"), (1, "refine_instruction")]


def test_refinement_loop_reuse_and_batching_do_not_change_results(tok):
    model = tiny_model(len(tok), seed=3)
    replies = {0: {2: NO_REFINEMENT}, 2: {1: NO_REFINEMENT}}
    captions = [f"w{i} turns left." for i in range(4)]
    dec = DecodeConfig(max_length=1024, stop_ids=(1, 4))
    script = ScriptedModel(tok, replies)
    a = refinement_loop(BatchedGenerator(model), tok, captions, max_rounds=3, decode=dec, logits_hook=script)
    b = refinement_loop(
        BatchedGenerator(model),
        tok,
        captions,
        max_rounds=3,
        decode=dec,
        logits_hook=ScriptedModel(tok, replies),
        reuse_cache=False,
        batch_size=1,
    )
    assert [r.motions for r in a] == [r.motions for r in b]
    assert [[s.prompt for s in r.steps] for r in a] == [[s.prompt for s in r.steps] for r in b]


def test_bench_workloads_match_the_published_loop():
    # scripts/bench_generation at toy size: ours equals batched model.generate round by round,
    # including samples that stop on "No refinements needed." in the ragged workload
    cfg = BenchConfig(prompts=6, rounds=2, hidden=32, layers=2)
    for workload in ("fixed", "ragged"):
        ours, ref = run_side(cfg, "ours", workload), run_side(cfg, "hf_batched", workload)
        assert ours["outputs"] == ref["outputs"]
        assert ref["refinements"] == (12 if workload == "fixed" else ref["refinements"])
    assert 0 < ref["stopped"] < 6 and len({len(o["motions"][-1]) for o in ref["outputs"]}) > 2


# --------------------------------------------------------------------------------------------------
# The gemma2 backend (models.gemma2_decode)


@pytest.fixture(scope="module", params=[(None, WINDOW), (None, 4096), (50.0, WINDOW), (50.0, 4096)],
                ids=["nocap-window", "nocap-full", "cap50-window", "cap50-full"])  # fmt: skip
def capped_model(request, tok):
    softcap, window = request.param
    return tiny_model(len(tok), seed=4, sliding_window=window, attn_softcap=softcap)


def _prefill_batches(monkeypatch) -> list[tuple[int, int]]:
    """Record the ``(batch, tokens)`` shape of every ``Gemma2Decoder.prefill`` call."""
    calls: list[tuple[int, int]] = []
    original = Gemma2Decoder.prefill

    def spy(self, cache, ids, *args, **kwargs):
        calls.append(tuple(ids.shape))
        return original(self, cache, ids, *args, **kwargs)

    monkeypatch.setattr(Gemma2Decoder, "prefill", spy)
    return calls


@pytest.mark.parametrize("shared", [False, True], ids=["distinct", "shared-prefix"])
def test_gemma2_backend_equals_hf_generate(capped_model, shared, monkeypatch):
    # left padding (several prompt lengths), prompts longer than the window, prefill in pieces
    prompts = random_prompts(6, seed=8, lo=2, hi=26)
    if shared:
        prompts = [[2, 40, 41, 42, 43, 44, 45] + p[1:] for p in prompts]
    calls = _prefill_batches(monkeypatch)
    gen = BatchedGenerator(capped_model, backend="gemma2", prefill_piece=5)
    out = gen.generate(prompts, DecodeConfig(max_new_tokens=12, stop_ids=()))
    assert gen.last_backend == "gemma2"
    assert [g.tokens for g in out] == [hf_greedy(capped_model, p, 12) for p in prompts]
    assert (calls[0] == (1, 7)) is shared  # the shared prefix is encoded once, alone
    assert all(g.reused == 0 for g in out)


def test_gemma2_backend_compaction_keeps_outputs(capped_model):
    # rows finish at many different steps: finished rows leave the batch lazily (compaction)
    prompts = random_prompts(12, seed=9)
    free = BatchedGenerator(capped_model, backend="hf").generate(
        prompts, DecodeConfig(max_new_tokens=16, stop_ids=())
    )
    counts: dict[int, set[int]] = {}
    for g in free:
        for i, t in enumerate(g.tokens):
            counts.setdefault(t, set()).add(i)
    stops = tuple(sorted(counts, key=lambda t: -len(counts[t]))[:3])
    cfg = DecodeConfig(max_new_tokens=16, stop_ids=stops)
    hf = BatchedGenerator(capped_model, backend="hf").generate(prompts, cfg, keep_state=True)
    ours = BatchedGenerator(capped_model, backend="gemma2").generate(prompts, cfg, keep_state=True)
    assert [g.tokens for g in ours] == [g.tokens for g in hf]
    assert [g.finish for g in ours] == [g.finish for g in hf]
    assert len({len(g.tokens) for g in ours}) >= 4
    for a, b in zip(ours, hf, strict=True):
        assert a.state.tokens == b.state.tokens and a.state.n_cached == b.state.n_cached
        for ka, kb in zip(a.state.keys, b.state.keys, strict=True):
            assert torch.allclose(ka, kb, atol=1e-4)
    # the states of either backend serve the next round of the other
    turns = [g.state.tokens + [7, 8, 9] for g in ours]
    again = BatchedGenerator(capped_model, backend="gemma2").generate(
        turns, DecodeConfig(max_new_tokens=6, stop_ids=()), states=[g.state for g in hf]
    )
    assert [g.tokens for g in again] == [hf_greedy(capped_model, p, 6) for p in turns]
    assert all(g.reused > 0 for g in again)


def test_gemma2_decoder_refresh_after_weight_change(tok):
    model = tiny_model(len(tok), seed=5, sliding_window=WINDOW, attn_softcap=None)
    prompts = random_prompts(4, seed=10)
    cfg = DecodeConfig(max_new_tokens=10, stop_ids=())
    gen = BatchedGenerator(model, backend="gemma2")
    before = [g.tokens for g in gen.generate(prompts, cfg)]
    decoder = gen._decoder
    # an in-place update (what an optimizer step does) is noticed through the version counters
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3 * p.std())
    assert decoder.is_stale()
    after = [g.tokens for g in gen.generate(prompts, cfg)]
    assert after != before
    assert after == [hf_greedy(model, p, 10) for p in prompts]
    # a write through .data is not: refresh() re-reads, and equals a fresh decoder
    for p in model.parameters():
        p.data.mul_(1.2)
    assert not decoder.is_stale()
    decoder.refresh()
    fresh = BatchedGenerator(model, backend="gemma2").generate(prompts, cfg)
    assert [g.tokens for g in gen.generate(prompts, cfg)] == [g.tokens for g in fresh]
    assert [g.tokens for g in fresh] == [hf_greedy(model, p, 10) for p in prompts]


def test_auto_backend_falls_back_to_hf(tok, caplog):
    import copy

    from peft import LoraConfig, get_peft_model

    model = tiny_model(len(tok), seed=6)
    prompts = random_prompts(3, seed=11)
    cfg = DecodeConfig(max_new_tokens=6, stop_ids=())
    gen = BatchedGenerator(model)
    want = [g.tokens for g in gen.generate(prompts, cfg)]
    assert gen.last_backend == "gemma2"
    with caplog.at_level(logging.INFO, logger="models.generation"):
        model.train()
        assert [g.tokens for g in gen.generate(prompts, cfg)] == want
        assert gen.last_backend == "hf"
        model.eval()
        gen.generate(prompts, cfg)
        assert gen.last_backend == "gemma2"
        peft = get_peft_model(
            copy.deepcopy(model), LoraConfig(r=2, target_modules=["q_proj", "v_proj"])
        ).eval()
        peft_gen = BatchedGenerator(peft)
        assert [g.tokens for g in peft_gen.generate(prompts, cfg)] == want  # LoRA B starts at zero
        assert peft_gen.last_backend == "hf"
        inner = BatchedGenerator(peft.base_model.model)  # adapters injected in a Gemma2ForCausalLM
        inner.generate(prompts, cfg)
        assert inner.last_backend == "hf"
    assert "training mode" in caplog.text and "not a plain Gemma2ForCausalLM" in caplog.text
    assert "not a plain nn.Linear" in caplog.text
    with pytest.raises(ValueError, match="cannot run this model"):
        BatchedGenerator(peft, backend="gemma2")
    with pytest.raises(ValueError, match="backend"):
        BatchedGenerator(model, backend="fast")
