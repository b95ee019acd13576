"""The eval tasks of the reference (spec ``sft-and-inference.md`` sections 3.3-3.4, 8.4-8.6) on a motion LLM.

One name per task, as the reference's ``--eval-task``:

============================================  =================================================  ======
task                                          what runs                                          rows
============================================  =================================================  ======
``t2m``                                       ``t2m`` prompt, forced ``<Motion>``                 1
``t2m_motionagent``                           Motion-Agent prompt, forced ``<Motion>``            1
``t2m_stage0``                                ours: the stage-0 training prompt (Motion-Agent      1
                                              strings in the section 3.1 layout), forced
                                              ``<Motion>``
``t2m_plain``                                 ours: the caption -> codes baseline's prompt         1
                                              (``caption Response:<Motion>``,
                                              ``scripts/baseline_t2m.py``)
``analysis_guided_t2m``                       ``prompt_analysis``, its text lower-cased as the     1
                                              caption of ``t2m`` (forced greedy)
``direct_generation-instructed_refinement``   ``t2m``, then the section 8.5 loop (at most           R+1
                                              ``max_refine_round`` = R rounds, exact-match stop)
``analysis_generation-instructed_refinement`` the same loop after the analysis-guided first        R+1
                                              generation
``unified_mogen_cot_v3``                      the stage-2/3 reasoning chain, every motion a row    C
``unified_mogen_cot_v3_initial_gen``          the chain's first motion                             1
``unified_mogen_cot_v3_w_max_rounds``         the chain's motion number ``max_refine_round``       1
                                              (B7 fixed: that span, or the last when fewer)
``unified_mogen_cot_v3_random_flip``          section 8.6: pass 1 up to the first ``</Motion>``,   C
                                              the negative motion injected, pass 2 continues
``pure_random_flip``                          the negative motion itself (baseline)                1
``m2t``                                       captioning (``eval.captioning``), not a motion row   -
============================================  =================================================  ======

Rows (``Method(rounds=...)`` of ``eval.harness``): a refinement task has ``max_refine_round + 1``
rows, row k = the motion after k refinements; a sample that stopped (its instruction was exactly
``"No refinements needed."``) keeps its motion in the later rows. A chain task has ``chain_rounds``
= C rows: row k < C - 1 is the chain's motion number k (0-based; the last one for shorter chains),
and the last row is always the task's answer, the last complete span (P2), so chains longer than C
lose middle motions from the table, never their answer. ``random_flip``'s row 0 is the injected
negative motion, its later rows the continuation's motions (the negative again when the
continuation has none, as the reference scores it).

Parsing (``data.motion_tokens``): every motion is parsed from the generated ids by the task's rule
and an empty result gets the reference's fallback ``[0]``; both are counted per task and row in a
``ParseStatsTable`` (``motion_parse/<task>/round<k>/...``). Random flip counts the samples whose
pass 1 had no ``<Motion>`` before its first ``</Motion>`` (B8) under
``motion_parse/<task>/flip/round0/fallback`` (of ``.../total`` samples): their negative motion is injected after the whole pass-1 completion instead of in place of its first
motion.

Decoding follows ``models.generation.decode_config_for_task`` (greedy unless sampling; the
forced-greedy tasks stay greedy except under multimodality, section 8.8); the stop ids are the
tokenizer's ``<eos>`` and ``<end_of_turn>``. Each row of a generate call draws from its own seeded
stream (``row_seed(batch seed, sample, call)``), so results do not depend on the process count.

``TaskMethod`` wraps a task as a harness generation callable: captions -> prompts -> batched
generation -> parse -> codes -> VQ decode -> motions in the VQ's normalisation space (the harness
maps them to the evaluator's). It keeps the per-sample traces of replication 0, the rounds used by
every sample, and the evaluator distance of each sample's first and last motion (``TraceRecorder``).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from data.motion_tokens import (
    MOTION_START,
    ParseStatsTable,
    codes_or_fallback,
    parse_motion_ids,
    parse_task_completion,
    render_codes,
)
from data.prompts import (
    GC,
    GM,
    MOTIONAGENT_MOGEN_TEMPLATE,
    MOTIONAGENT_SYSTEM_PROMPT,
    build_cot_prompt,
    build_inference_prompt,
    render_prompt,
    substitute,
)
from data.runtime import all_gather_objects, gather_dicts
from eval.harness import HarnessBatch, Method
from eval.llm_runner import MotionLLMRunner, SampleTrace, Step, TaskOptions
from eval.scoring import MotionTextScorer
from models.generation import (
    DecodeConfig,
    Generation,
    refinement_loop,
    row_seed,
)
from models.plain_t2m import plain_t2m_prompt

logger = logging.getLogger(__name__)

_NEGATIVE_TAG = 0x4E47
"""Seed word of the negative-motion draw."""


# --------------------------------------------------------------------------------------------------
# Task implementations


@dataclass
class TaskCall:
    """What a task function gets for one batch of captions."""

    captions: list[str]
    seed: int
    """Batch seed; row seeds are ``row_seed(seed, sample, call)``."""
    sample: bool
    """Sample (``do_sample``, or a multimodality pass)."""
    honour_sampling: bool
    """Forced-greedy tasks sample too (multimodality pass, section 8.8)."""
    stats: ParseStatsTable
    negatives: list[list[int]] | None = None
    """Negative-motion codes per caption (random-flip tasks)."""


def _seeds(call: TaskCall, n: int, tag: int) -> list[int]:
    return [row_seed(call.seed, i, tag) for i in range(n)]


def _single_call(
    runner: MotionLLMRunner, task: str, call: TaskCall, prompts: list[str], tag: int = 0
) -> tuple[list[Generation], DecodeConfig]:
    dec = runner.decode_config(get_task(task).decoding, call.sample, call.honour_sampling)
    gens = runner.generate(runner.encode_prompts(prompts), dec, _seeds(call, len(prompts), tag))
    return gens, dec


def _direct(runner: MotionLLMRunner, task: str, prompt_task: str, call: TaskCall,
            captions: list[str] | None = None) -> list[SampleTrace]:  # fmt: skip
    """One forced-``<Motion>`` generation per caption (``t2m`` / ``t2m_motionagent`` prompts)."""
    shown = captions if captions is not None else call.captions
    if prompt_task in OWN_LAYOUTS:
        prompts = [OWN_LAYOUTS[prompt_task](c) for c in shown]
        prompt_task = "t2m"  # same forced-<Motion> parse rule
    else:
        prompts = [build_inference_prompt(prompt_task, {GC: c}) for c in shown]
    gens, dec = _single_call(runner, task, call, prompts, tag=1)
    out = []
    for cap, prompt, g in zip(call.captions, prompts, gens, strict=True):
        parse = parse_task_completion(prompt_task, g.tokens, base_id=runner.base_id, stop_ids=dec.stop_ids,
                                      nb_code=runner.vocab.nb_code)  # fmt: skip
        codes = codes_or_fallback(parse, call.stats.get(task, 0))
        out.append(SampleTrace(cap, [Step(0, prompt_task, prompt, runner.text(g.tokens), codes)], [codes]))
    return out


def _analyses(runner: MotionLLMRunner, task: str, call: TaskCall) -> tuple[list[str], list[Step]]:
    """``prompt_analysis`` per caption -> (lower-cased analysis texts, their steps)."""
    prompts = [build_inference_prompt("prompt_analysis", {GC: c}) for c in call.captions]
    gens, _ = _single_call(runner, task, call, prompts, tag=0)
    texts = [runner.text(g.tokens).strip() for g in gens]
    steps = [Step(0, "prompt_analysis", p, t) for p, t in zip(prompts, texts, strict=True)]
    return [t.lower() for t in texts], steps


def run_t2m(runner: MotionLLMRunner, task: str, call: TaskCall) -> list[SampleTrace]:
    return _direct(runner, task, "t2m", call)


STAGE0_PROMPT = "stage0"


def stage0_prompt(caption: str) -> str:
    """Our stage-0 training prompt: Motion-Agent's system and user strings in the section 3.1 layout
    (``User: ... Response:``, as ``stage_0_annotations.json`` renders through the SFT builders), then
    the forced ``<Motion>``. The reference's ``t2m_motionagent`` uses Motion-Agent's own layout instead."""
    user = substitute(MOTIONAGENT_MOGEN_TEMPLATE, {GC: caption}, [GC], text_first=True)
    return render_prompt(MOTIONAGENT_SYSTEM_PROMPT, user) + MOTION_START


def run_t2m_stage0(runner: MotionLLMRunner, task: str, call: TaskCall) -> list[SampleTrace]:
    return _direct(runner, task, STAGE0_PROMPT, call)


PLAIN_PROMPT = "plain"


def run_t2m_plain(runner: MotionLLMRunner, task: str, call: TaskCall) -> list[SampleTrace]:
    return _direct(runner, task, PLAIN_PROMPT, call)


OWN_LAYOUTS: dict[str, Callable[[str], str]] = {STAGE0_PROMPT: stage0_prompt, PLAIN_PROMPT: plain_t2m_prompt}
"""Forced-``<Motion>`` prompts of our own training layouts (not the reference's test templates): name -> builder."""


def run_t2m_motionagent(runner: MotionLLMRunner, task: str, call: TaskCall) -> list[SampleTrace]:
    return _direct(runner, task, "t2m_motionagent", call)


def run_analysis_guided(runner: MotionLLMRunner, task: str, call: TaskCall) -> list[SampleTrace]:
    analyses, steps = _analyses(runner, task, call)
    out = _direct(runner, task, "t2m", call, captions=analyses)
    for trace, step in zip(out, steps, strict=True):
        trace.steps.insert(0, step)
    return out


def _refinement(
    runner: MotionLLMRunner, task: str, call: TaskCall, analysis_first: bool
) -> list[SampleTrace]:
    rounds = runner.options.max_refine_round
    first, pre = (None, [[] for _ in call.captions])
    if analysis_first:
        first, steps = _analyses(runner, task, call)
        pre = [[s] for s in steps]
    results = refinement_loop(
        runner.generator, runner.tokenizer, call.captions, max_rounds=rounds,
        decode=runner.decode_config(get_task(task).decoding, call.sample, call.honour_sampling), task=task,
        first_captions=first, seed=row_seed(call.seed, "refine"), stats=call.stats, nb_code=runner.vocab.nb_code,
        batch_size=runner.options.batch_size, reuse_cache=runner.options.reuse_cache,
        logits_hook=runner.logits_hook,
    )  # fmt: skip
    out = []
    for res, before in zip(results, pre, strict=True):
        steps = [*before, *(Step(s.round, s.kind, s.prompt, s.completion, s.codes) for s in res.steps)]
        motions = [res.motions[min(k, len(res.motions) - 1)] for k in range(rounds + 1)]
        out.append(
            SampleTrace(res.caption, steps, motions, rounds_used=res.rounds_used, stopped_at=res.stopped_at)
        )
    return out


def run_refinement(runner: MotionLLMRunner, task: str, call: TaskCall) -> list[SampleTrace]:
    return _refinement(runner, task, call, analysis_first=False)


def run_analysis_refinement(runner: MotionLLMRunner, task: str, call: TaskCall) -> list[SampleTrace]:
    return _refinement(runner, task, call, analysis_first=True)


def chain_rows(spans: Sequence[Sequence[int]], final: Sequence[int], rounds: int) -> list[list[int]]:
    """Rows of a chain task: span k for k < rounds - 1 (the last span when fewer), then ``final``.

    Empty spans and missing chains give the fallback ``[0]``.
    """
    final = list(final) or [0]
    if not spans:
        return [final] * rounds
    body = [list(spans[min(k, len(spans) - 1)]) or [0] for k in range(rounds - 1)]
    return [*body, final]


def _count_rows(stats: ParseStatsTable, task: str, parse: Any, rounds: int) -> None:
    for k in range(rounds):
        stats.get(task, k).add(parse, used_fallback=not parse.codes)


def run_cot(runner: MotionLLMRunner, task: str, call: TaskCall) -> list[SampleTrace]:
    """The reasoning chain (``unified_mogen_cot_v3`` and its selection variants)."""
    opts = runner.options
    prompts = [build_cot_prompt(c) for c in call.captions]
    gens, dec = _single_call(runner, task, call, prompts, tag=2)
    rounds = task_rounds(task, opts)
    out = []
    for cap, prompt, g in zip(call.captions, prompts, gens, strict=True):
        parse = parse_task_completion(task, g.tokens, base_id=runner.base_id, stop_ids=dec.stop_ids,
                                      nb_code=runner.vocab.nb_code, max_refine_round=opts.max_refine_round)  # fmt: skip
        if rounds == 1:
            motions = [codes_or_fallback(parse, call.stats.get(task, 0))]
        else:
            _count_rows(call.stats, task, parse, rounds)
            motions = chain_rows(parse.spans, parse.codes, rounds)
        text = runner.text(g.tokens)
        steps = [Step(0, "cot", prompt, text, motions[-1])]
        out.append(SampleTrace(cap, steps, motions, rounds_used=max(len(parse.spans) - 1, 0), text=text))
    return out


def _first_motion_cut(completion: Sequence[int], start_id: int, end_id: int) -> int | None:
    """Index of pass 1's first ``<Motion>`` when it comes before its first ``</Motion>`` (else None)."""
    for i, t in enumerate(completion):
        if t == start_id:
            return i
        if t == end_id:
            return None
    return None


def run_random_flip(runner: MotionLLMRunner, task: str, call: TaskCall) -> list[SampleTrace]:
    """Section 8.6: the model's first motion replaced by a random test clip, then its continuation."""
    if call.negatives is None:
        raise ValueError(f"{task} needs negative motions")
    opts, vocab = runner.options, runner.vocab
    rounds = task_rounds(task, opts)
    prompts = [build_cot_prompt(c) for c in call.captions]
    ids = runner.encode_prompts(prompts)
    dec = runner.decode_config(get_task(task).decoding, call.sample, call.honour_sampling)
    pass1 = runner.generate(
        ids, replace(dec, stop_ids=(runner.stop_ids[0], vocab.end_id)),
        _seeds(call, len(ids), 3), keep_state=opts.reuse_cache,
    )  # fmt: skip
    prefixes, fallback = [], call.stats.get(f"{task}/flip", 0)
    for p, g, neg in zip(ids, pass1, call.negatives, strict=True):
        cut = _first_motion_cut(g.tokens, vocab.start_id, vocab.end_id)
        if cut is None:  # B8: no <Motion> before the first </Motion> -> inject after the whole pass 1
            fallback.fallback += 1
            kept = [t for t in g.tokens if t not in (*runner.stop_ids, vocab.end_id)]
        else:
            kept = list(g.tokens[:cut])
        fallback.total += 1
        prefixes.append(p + kept + vocab.span_ids(neg))
    states = [g.state for g in pass1] if opts.reuse_cache else None
    pass2 = runner.generate(prefixes, dec, _seeds(call, len(ids), 4), states=states)
    out = []
    for cap, prompt, g1, prefix, g2, neg in zip(call.captions, prompts, pass1, prefixes, pass2, call.negatives,
                                                strict=True):  # fmt: skip
        parse = parse_motion_ids(g2.tokens, base_id=vocab.start_id, nb_code=vocab.nb_code, select="last",
                                 stop_ids=dec.stop_ids)  # fmt: skip
        _count_rows(call.stats, task, parse, rounds)
        final = parse.codes if parse.spans else list(neg)
        motions = chain_rows([neg, *parse.spans], final, rounds) if rounds > 1 else [final or [0]]
        text2 = runner.text(g2.tokens)
        steps = [
            Step(0, "cot_pass1", prompt, runner.text(g1.tokens)),
            Step(0, "negative", "", render_codes(neg, vocab.nb_code), list(neg)),
            Step(
                1, "cot_pass2", runner.tokenizer.decode(prefix, skip_special_tokens=True), text2, motions[-1]
            ),
        ]
        out.append(SampleTrace(cap, steps, motions, rounds_used=len(parse.spans), text=text2))
    return out


def run_pure_random_flip(runner: MotionLLMRunner, task: str, call: TaskCall) -> list[SampleTrace]:
    if call.negatives is None:
        raise ValueError(f"{task} needs negative motions")
    return [
        SampleTrace(c, [Step(0, "negative", "", render_codes(n, runner.vocab.nb_code), list(n))], [list(n)])
        for c, n in zip(call.captions, call.negatives, strict=True)
    ]


def m2t_prompts(codes: Sequence[Sequence[int]], nb_code: int) -> list[str]:
    """``m2t`` prompts with each motion span (section 3.4)."""
    return [build_inference_prompt("m2t", {GM: render_codes(c, nb_code)}) for c in codes]


def generate_captions(runner: MotionLLMRunner, codes: Sequence[Sequence[int]], seed: int,
                      sample: bool = False) -> list[SampleTrace]:  # fmt: skip
    """``m2t``: one caption per code sequence (greedy unless ``sample``; max_length 256)."""
    prompts = m2t_prompts(codes, runner.vocab.nb_code)
    dec = runner.decode_config("m2t", sample)
    gens = runner.generate(
        runner.encode_prompts(prompts), dec, [row_seed(seed, i, 5) for i in range(len(codes))]
    )
    out = []
    for c, p, g in zip(codes, prompts, gens, strict=True):
        text = runner.text(g.tokens).strip()
        out.append(SampleTrace("", [Step(0, "m2t", p, text, list(c))], [list(c)], text=text))
    return out


# --------------------------------------------------------------------------------------------------
# Registry


TaskFn = Callable[[MotionLLMRunner, str, TaskCall], list[SampleTrace]]


@dataclass(frozen=True)
class EvalTask:
    """One eval task: how it runs and how many rows it has."""

    name: str
    run: TaskFn | None
    """``None`` for ``m2t`` (``eval.captioning`` runs it)."""
    kind: str
    """``single``, ``refinement`` or ``chain`` (decides the number of rows)."""
    needs_negative: bool = False
    description: str = ""
    decoding: str = ""
    """Key of ``models.generation.TASK_DECODING`` (default: the task's name)."""

    def __post_init__(self) -> None:
        if not self.decoding:
            object.__setattr__(self, "decoding", self.name)


TASKS: dict[str, EvalTask] = {
    t.name: t
    for t in (
        EvalTask("t2m", run_t2m, "single", description="direct text-to-motion (stage 1)"),
        EvalTask(
            "t2m_stage0",
            run_t2m_stage0,
            "single",
            decoding="t2m",
            description="ours: direct text-to-motion with the stage-0 training prompt",
        ),  # fmt: skip
        EvalTask(
            "t2m_plain",
            run_t2m_plain,
            "single",
            decoding="t2m",
            description="ours: the caption -> codes baseline's prompt (scripts/baseline_t2m.py)",
        ),  # fmt: skip
        EvalTask("t2m_motionagent", run_t2m_motionagent, "single", description="Motion-Agent prompt"),
        EvalTask(
            "analysis_guided_t2m",
            run_analysis_guided,
            "single",
            description="prompt analysis, then t2m on the analysis",
        ),  # fmt: skip
        EvalTask(
            "direct_generation-instructed_refinement",
            run_refinement,
            "refinement",
            description="t2m, then instructed refinement rounds (stage 1)",
        ),  # fmt: skip
        EvalTask(
            "analysis_generation-instructed_refinement",
            run_analysis_refinement,
            "refinement",
            description="analysis-guided t2m, then instructed refinement rounds",
        ),  # fmt: skip
        EvalTask("unified_mogen_cot_v3", run_cot, "chain", description="the reasoning chain (stage 2/3)"),
        EvalTask(
            "unified_mogen_cot_v3_initial_gen", run_cot, "single", description="the chain's first motion"
        ),
        EvalTask(
            "unified_mogen_cot_v3_w_max_rounds",
            run_cot,
            "single",
            description="the chain's motion number max_refine_round",
        ),  # fmt: skip
        EvalTask(
            "unified_mogen_cot_v3_random_flip",
            run_random_flip,
            "chain",
            needs_negative=True,
            description="first motion replaced by a random clip; the continuation is scored",
        ),  # fmt: skip
        EvalTask(
            "pure_random_flip",
            run_pure_random_flip,
            "single",
            needs_negative=True,
            description="the random clip itself (baseline)",
        ),  # fmt: skip
        EvalTask("m2t", None, "captioning", description="motion-to-text captioning"),
    )
}
"""Eval task name -> task (the reference's ``--eval-task`` names)."""


def get_task(name: str) -> EvalTask:
    """The task called ``name``.

    Raises:
        KeyError: unknown name (the message lists the known ones).
    """
    if name not in TASKS:
        raise KeyError(f"unknown eval task {name!r}; known: {sorted(TASKS)}")
    return TASKS[name]


def task_rounds(name: str, options: TaskOptions) -> int:
    """Rows the task contributes to the table."""
    kind = get_task(name).kind
    if kind == "refinement":
        return options.max_refine_round + 1
    if kind == "chain":
        return options.chain_rounds
    return 1


def run_task(runner: MotionLLMRunner, name: str, call: TaskCall) -> list[SampleTrace]:
    """Run task ``name`` on one batch of captions; every trace has ``task_rounds`` motions."""
    task = get_task(name)
    if task.run is None:
        raise ValueError(f"task {name} is not a motion-generation task (use eval.captioning)")
    if task.needs_negative and call.negatives is None:
        raise ValueError(f"task {name} needs negative motions (TaskCall.negatives)")
    traces = task.run(runner, name, call)
    rounds = task_rounds(name, runner.options)
    assert all(len(t.motions) == rounds for t in traces), "task returned the wrong number of rows"
    return traces


# --------------------------------------------------------------------------------------------------
# Harness adapter


@dataclass
class BatchRecord:
    """What one harness batch leaves for the report."""

    traces: list[dict[str, Any]] = field(default_factory=list)
    """Per-sample traces (replication 0 only)."""
    rounds_used: list[int] = field(default_factory=list)
    first_distance: list[float] = field(default_factory=list)
    last_distance: list[float] = field(default_factory=list)


class TraceRecorder:
    """Per-rank records of ``TaskMethod`` (keyed by (replication, batch)), gathered once at the end."""

    def __init__(self) -> None:
        self.records: dict[tuple[int, int], BatchRecord] = {}
        self.stats = ParseStatsTable()
        """Parse counters of the main pass."""
        self.mm_stats = ParseStatsTable()
        """Parse counters of the multimodality passes."""

    def gather(self) -> tuple[dict[tuple[int, int], BatchRecord], dict[str, int], dict[str, int]]:
        """Every rank's records (a collective) and the summed parse counters (main, multimodality)."""
        records = gather_dicts(self.records)

        def summed(table: ParseStatsTable) -> dict[str, int]:
            total: Counter[str] = Counter()
            for part in all_gather_objects(table.as_dict()):
                total.update(part)
            return dict(sorted(total.items()))

        return records, summed(self.stats), summed(self.mm_stats)


def round_summary(records: dict[tuple[int, int], BatchRecord], rounds: int) -> dict[str, Any]:
    """Distribution of rounds used and the share of samples whose last motion beats their first.

    "Beats" means a smaller evaluator text-motion distance ``||E_t - E_m||``; ties count as not
    better. Over every sample of every replication.
    """
    used = Counter(u for rec in records.values() for u in rec.rounds_used)
    first = np.array([d for rec in records.values() for d in rec.first_distance])
    last = np.array([d for rec in records.values() for d in rec.last_distance])
    out: dict[str, Any] = {
        "samples": int(sum(used.values())),
        "rounds_used": {str(k): int(v) for k, v in sorted(used.items())},
    }
    if rounds > 1 and len(first):
        out.update(
            last_better_than_first=float(np.mean(last < first)),
            last_worse_than_first=float(np.mean(last > first)),
            mean_distance_first=float(first.mean()),
            mean_distance_last=float(last.mean()),
        )
    return out


def negative_motions(runner: MotionLLMRunner, batch: HarnessBatch) -> list[list[int]]:
    """One random test clip per row (section 8.2: any clip, possibly the same one), VQ-encoded.

    The clip and its crop come from ``batch.seed``, so the draw does not depend on the process count.
    """
    rng = np.random.default_rng([batch.seed, _NEGATIVE_TAG])
    picks = rng.integers(len(batch.dataset), size=len(batch.indices))
    return runner.encode_motions([batch.dataset.raw_motion(int(i), batch.replication) for i in picks])


def caption_tokens(batch: HarnessBatch) -> list[list[str]]:
    """The ``word/POS`` tokens of each row's drawn caption."""
    ds = batch.dataset
    out = []
    for i in batch.indices:
        entry = ds.index.entries[int(i)]
        out.append(list(entry.captions[ds.draw(int(i), batch.replication).caption_index].tokens))
    return out


class TaskMethod:
    """Harness generation callable for one eval task (see the module docstring).

    Args:
        runner: the model and its VQ-VAE.
        task: task name.
        recorder: collects traces, rounds used and distances.
        scorer: the harness's scorer, for the first/last distance of each sample (``None``: skip).
        keep_traces: replication-0 samples whose traces are kept (all of them by default).
    """

    def __init__(
        self,
        runner: MotionLLMRunner,
        task: str,
        recorder: TraceRecorder,
        scorer: MotionTextScorer | None = None,
    ):
        self.runner, self.task, self.recorder, self.scorer = runner, task, recorder, scorer
        self.rounds = task_rounds(task, runner.options)
        self._space = scorer.space_map(runner.vq_norm) if scorer is not None else runner.vq_norm
        self.__name__ = f"TaskMethod[{task}]"

    def method(self, name: str | None = None) -> Method:
        """The harness ``Method`` (rows ``<name> round k`` when the task has several)."""
        return Method(name=name or self.task, generate=self, space=self.runner.vq_norm, rounds=self.rounds)

    def __call__(self, captions: list[str], lengths: np.ndarray, batch: HarnessBatch) -> list[Any]:
        mm = batch.multimodality
        needs_neg = get_task(self.task).needs_negative
        call = TaskCall(
            captions=list(captions), seed=batch.seed, sample=self.runner.options.do_sample or mm,
            honour_sampling=mm, stats=self.recorder.mm_stats if mm else self.recorder.stats,
            negatives=negative_motions(self.runner, batch) if needs_neg else None,
        )  # fmt: skip
        traces = run_task(self.runner, self.task, call)
        flat = self.runner.motions([m for t in traces for m in t.motions])
        per = [flat[j * self.rounds : (j + 1) * self.rounds] for j in range(len(traces))]
        if not mm:
            rec = BatchRecord(rounds_used=[t.rounds_used for t in traces])
            if batch.replication == 0:
                for j, t in enumerate(traces):
                    rec.traces.append({"name": batch.names[j], "batch": batch.batch_index, **t.to_json()})
            if self.scorer is not None and self.rounds > 1:
                toks = caption_tokens(batch)
                ends = [p[0] for p in per] + [p[-1] for p in per]
                dist, _ = self.scorer.text_motion_distance(
                    toks + toks, ends, self.runner.vq_norm, label=self.task
                )
                n = len(per)
                rec.first_distance, rec.last_distance = dist[:n].tolist(), dist[n:].tolist()
            self.recorder.records[(batch.replication, batch.batch_index)] = rec
        return [p[0] for p in per] if self.rounds == 1 else per
