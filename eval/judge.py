"""The motion LLM as a reward model: its own alignment score, and how good a judge it is.

**Alignment score.** For a caption ``c`` and a motion with codes ``m``, the model is asked the
stage-1 ``refine_instruction`` question (spec section 3.4: ``"Motion: <Motion>m</Motion>. Goal
text: c. Determine how to refine the generated motion for better alignment."``), and the score is
the log-probability it gives, teacher-forced, to the answer that ends the refinement loop::

    score(c, m) = log P("No refinements needed." <eos> | prompt(c, m))
                = sum_t log p(y_t | prompt, y_<t),   y = tokens("No refinements needed.") + [<eos>]

i.e. the log of the probability that greedy-free sampling would answer exactly the stop sentence
(``exp(score)`` is that probability). The answer is tokenised on its own, as the SFT responses are
(spec section 3.2). All pairs run in left-padded batches, one forward each, keeping only the logits
of the answer positions. A stage-1 model was trained to give this answer for matching pairs
(``TM2T_refinement_instruction``) and an instruction otherwise, so the score should be high for a
motion that fits its caption. (The paper reports such a score; the released code has none.)

**Judge quality** on SynthML, where the truth is known by construction: every goal clip that the
annotation engine perturbed has imperfect variants (``<root>/engine_motions.json``: id -> goal,
rung; rung 0 an unrelated action ... the last rung a single change). For each goal's caption:

* accuracy against a **mismatched** motion: score(goal) > score(another goal's clip) (a fixed
  derangement of the chosen goals);
* accuracy against the engine's **imperfect** motions: score(goal) > score(imperfect), overall and
  per rung (ties count one half);
* **Spearman** rank correlation between the score and the negated evaluator distance
  ``-||E_t - E_m||`` over every scored pair (true, mismatched and imperfect): 1 means the model
  orders pairs exactly as the evaluator does.

The same accuracies with the evaluator distance as the score are reported beside them
(``evaluator_*``) as the reference judge. Note that the engine renders imperfect variants for the
goals of the split it annotated (the training split in the demo), so a model trained on those
annotations has seen these pairs; the numbers then measure fit, not generalisation, unless the
engine was also run on held-out goals (``judge_split``).
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr

from data.layout import DatasetPaths, load_features, read_captions, read_split
from data.motion_tokens import render_codes
from data.normalization import FeatureNorm
from data.prompts import GC, GEN, NO_REFINEMENT, build_inference_prompt
from data.runtime import gather_dicts, group_rank_world
from eval.llm_runner import MotionLLMRunner
from eval.scoring import MotionTextScorer

logger = logging.getLogger(__name__)

ENGINE_MOTIONS = "engine_motions.json"
"""Index of the annotation engine's imperfect motions in the dataset root (``data.engine``)."""


# --------------------------------------------------------------------------------------------------
# The score


@torch.no_grad()
def alignment_scores(
    model: torch.nn.Module,
    tokenizer: Any,
    captions: Sequence[str],
    codes: Sequence[Sequence[int]],
    *,
    nb_code: int,
    batch_size: int = 32,
    answer: str = NO_REFINEMENT,
) -> np.ndarray:
    """``(N,)`` float64 log P(answer <eos> | refine_instruction prompt) per (caption, codes) pair.

    Args:
        model: the motion LLM (eval mode).
        tokenizer: its tokenizer (adds ``<bos>``).
        captions: N goal captions.
        codes: N code sequences (the motions judged).
        batch_size: pairs per forward.
        answer: the judged answer (the stop sentence by default).
    """
    if len(captions) != len(codes):
        raise ValueError(f"{len(captions)} captions for {len(codes)} motions")
    target = list(tokenizer(answer, add_special_tokens=False)["input_ids"]) + [int(tokenizer.eos_token_id)]
    n_t = len(target)
    prompts = [build_inference_prompt("refine_instruction", {GEN: render_codes(m, nb_code), GC: c})
               for c, m in zip(captions, codes, strict=True)]  # fmt: skip
    ids = tokenizer(prompts)["input_ids"]
    keep_kw = "logits_to_keep" in inspect.signature(model.forward).parameters
    device = next(model.parameters()).device
    pad = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
    out = np.zeros(len(prompts), np.float64)
    order = sorted(range(len(prompts)), key=lambda i: -len(ids[i]))  # similar lengths share a batch
    tgt = torch.tensor(target, device=device)
    for s in range(0, len(order), batch_size):
        rows = order[s : s + batch_size]
        seqs = [list(ids[i]) + target for i in rows]
        width = max(len(q) for q in seqs)
        x = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for b, q in enumerate(seqs):  # left padding: the answer sits in the last n_t positions of every row
            x[b, width - len(q) :] = torch.tensor(q)
            mask[b, width - len(q) :] = 1
        pos = (mask.cumsum(1) - 1).clamp(min=0)
        kwargs = {"logits_to_keep": n_t + 1} if keep_kw else {}
        logits = model(input_ids=x.to(device), attention_mask=mask.to(device), position_ids=pos.to(device),
                       use_cache=False, **kwargs).logits  # fmt: skip
        logp = logits[:, -n_t - 1 : -1, :].float().log_softmax(-1)  # (B, n_t, V): predicts the answer
        picked = logp.gather(-1, tgt.expand(len(rows), n_t)[..., None])[..., 0]
        out[rows] = picked.sum(-1).double().cpu().numpy()
    return out


# --------------------------------------------------------------------------------------------------
# Judge metrics (pure)


def preference_accuracy(better: np.ndarray, worse: np.ndarray) -> float:
    """Share of pairs with ``better > worse`` (ties count 1/2); ``(N,)`` each."""
    better, worse = np.asarray(better, np.float64), np.asarray(worse, np.float64)
    if better.shape != worse.shape or better.size == 0:
        raise ValueError(f"preference_accuracy: shapes {better.shape} and {worse.shape}")
    return float(np.mean(better > worse) + 0.5 * np.mean(better == worse))


def rank_correlation(scores: np.ndarray, distances: np.ndarray) -> float:
    """Spearman rho between ``scores`` and ``-distances`` (1 = same order as the evaluator)."""
    rho = spearmanr(np.asarray(scores, np.float64), -np.asarray(distances, np.float64)).statistic
    return float(rho)


@dataclass
class JudgeCase:
    """One goal: its caption, its clip and the engine's imperfect variants."""

    goal: str
    caption: str
    tokens: list[str]
    motion: np.ndarray
    """Raw ``(T, D)`` features of the goal clip."""
    imperfect: list[tuple[str, int, np.ndarray]] = field(default_factory=list)
    """(id, rung, raw features) per imperfect variant."""


def engine_cases(root: str | Path, dataset: str = "humanml3d", *, split: str = "", max_goals: int = 64,
                 seed: int = 0, max_frames: int | None = None) -> list[JudgeCase]:  # fmt: skip
    """Goals with imperfect variants from ``<root>/engine_motions.json`` (at most ``max_goals``).

    Args:
        dataset: dataset registry name (feature size).
        split: keep only goals listed in this split (empty: every goal in the file).
        seed: which goals are kept (a seeded shuffle), when there are more.
        max_frames: cut motions to this many frames (the evaluator's ``max_motion_len``).

    Raises:
        FileNotFoundError: no engine index in ``root`` (run ``python -m data.engine`` first).
    """
    root = Path(root)
    path = root / ENGINE_MOTIONS
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the judge needs the annotation engine's imperfect motions "
                                "(python -m data.engine --config configs/tiny/engine.yaml)")  # fmt: skip
    motions = json.loads(path.read_text())["motions"]
    by_goal: dict[str, list[tuple[str, int]]] = {}
    for mid, rec in sorted(motions.items()):
        by_goal.setdefault(rec["goal"], []).append((mid, int(rec["rung"])))
    goals = sorted(by_goal)
    if split:
        allowed = set(read_split(root, split))
        goals = [g for g in goals if g in allowed]
    if not goals:
        raise ValueError(f"{path}: no goal with imperfect motions{f' in split {split!r}' if split else ''}")
    goals = [goals[i] for i in np.random.default_rng(seed).permutation(len(goals))[:max_goals]]
    paths = DatasetPaths(root)

    def feats(mid: str) -> np.ndarray:
        return load_features(paths.vec_file(mid), dataset)[:max_frames]

    cases = []
    for g in goals:
        lines = read_captions(paths.text_file(g))
        line = next((x for x in lines if x.whole_clip), lines[0])
        imperfect = [(mid, rung, feats(mid)) for mid, rung in sorted(by_goal[g], key=lambda x: x[1])]
        cases.append(JudgeCase(g, line.caption, list(line.tokens), feats(g), imperfect))
    return cases


def evaluate_judge(
    runner: MotionLLMRunner, scorer: MotionTextScorer, cases: Sequence[JudgeCase], *, chunk: int = 64
) -> dict[str, Any]:
    """Score every (caption, motion) pair with the model and the evaluator; the judge metrics.

    Pairs are scored in chunks shared by the ranks (a collective; every rank gets the result).
    """
    if len(cases) < 2:
        raise ValueError("the judge needs at least two goals (one's clip is another's mismatch)")
    pairs: list[tuple[int, str, int, np.ndarray]] = []  # (case, kind, rung, motion)
    n = len(cases)
    for i, c in enumerate(cases):
        pairs.append((i, "true", -1, c.motion))
        pairs.append((i, "mismatched", -1, cases[(i + 1) % n].motion))
        pairs.extend((i, "imperfect", rung, m) for _, rung, m in c.imperfect)
    rank, world = group_rank_world()
    raw = FeatureNorm.identity(scorer.spec.feat_dim)
    mine = {}
    for k in range(rank, (len(pairs) + chunk - 1) // chunk, world):
        part = pairs[k * chunk : (k + 1) * chunk]
        codes = runner.encode_motions([p[3] for p in part])
        caps = [cases[p[0]].caption for p in part]
        scores = alignment_scores(runner.model, runner.tokenizer, caps, codes, nb_code=runner.vocab.nb_code,
                                  batch_size=runner.options.batch_size)  # fmt: skip
        dist, _ = scorer.text_motion_distance([cases[p[0]].tokens for p in part], [p[3] for p in part], raw,
                                              label="judge")  # fmt: skip
        mine[k] = (scores, dist)
    got = gather_dicts(mine)
    scores = np.concatenate([got[k][0] for k in sorted(got)])
    dist = np.concatenate([got[k][1] for k in sorted(got)])
    out = judge_metrics(
        case=np.array([p[0] for p in pairs]), kind=np.array([p[1] for p in pairs]),
        rung=np.array([p[2] for p in pairs]), scores=scores, distances=dist,
    )  # fmt: skip
    out["pairs_detail"] = [
        {"goal": cases[p[0]].goal, "kind": p[1], "rung": p[2], "score": float(s), "distance": float(d)}
        for p, s, d in zip(pairs, scores, dist, strict=True)
    ]
    return out


def judge_metrics(
    *, case: np.ndarray, kind: np.ndarray, rung: np.ndarray, scores: np.ndarray, distances: np.ndarray
) -> dict[str, Any]:
    """The judge numbers from scored pairs (pure).

    Args:
        case: ``(P,)`` goal index of each pair.
        kind: ``(P,)`` ``"true"`` (one per goal), ``"mismatched"`` or ``"imperfect"``.
        rung: ``(P,)`` the imperfect motion's rung (-1 otherwise).
        scores: ``(P,)`` the model's alignment scores.
        distances: ``(P,)`` evaluator text-motion distances.

    Returns:
        accuracies (model and evaluator) against mismatched and imperfect motions, per rung, the
        Spearman correlation of score and -distance, and mean scores / probabilities per kind.
    """
    true = np.flatnonzero(kind == "true")
    if len(np.unique(case[true])) != len(true):
        raise ValueError("judge_metrics: every goal needs exactly one true pair")
    true_s = np.full(int(case.max()) + 1, np.nan)
    true_d = np.full_like(true_s, np.nan)
    true_s[case[true]], true_d[case[true]] = scores[true], distances[true]

    def versus(sel: np.ndarray) -> tuple[float, float]:
        ref = case[sel]
        return (
            preference_accuracy(true_s[ref], scores[sel]),
            preference_accuracy(-true_d[ref], -distances[sel]),
        )

    out: dict[str, Any] = {"goals": len(true), "pairs": len(kind)}
    out["accuracy_vs_mismatched"], out["evaluator_accuracy_vs_mismatched"] = versus(kind == "mismatched")
    imp = kind == "imperfect"
    if imp.any():
        out["accuracy_vs_imperfect"], out["evaluator_accuracy_vs_imperfect"] = versus(imp)
        out["per_rung"] = {}
        for r in sorted(set(rung[imp].tolist())):
            sel = imp & (rung == r)
            a, e = versus(sel)
            out["per_rung"][str(r)] = {"pairs": int(sel.sum()), "accuracy": a, "evaluator_accuracy": e}
    out["spearman_score_vs_evaluator"] = rank_correlation(scores, distances)
    kinds = [k for k in ("true", "mismatched", "imperfect") if (kind == k).any()]
    out["mean_score"] = {k: float(scores[kind == k].mean()) for k in kinds}
    out["mean_probability"] = {k: float(np.exp(scores[kind == k]).mean()) for k in kinds}
    return out


def judge_markdown(result: dict[str, Any]) -> str:
    """Judge table: accuracies (model / evaluator) and the rank correlation."""
    lines = ["| Judge | vs mismatched | vs imperfect | Spearman vs evaluator |", "|---|---|---|---|"]
    imp = result.get("accuracy_vs_imperfect")
    lines.append(f"| model (log P(\"{NO_REFINEMENT}\")) | {result['accuracy_vs_mismatched']:.3f} | "
                 f"{'-' if imp is None else f'{imp:.3f}'} | {result['spearman_score_vs_evaluator']:.3f} |")  # fmt: skip
    eimp = result.get("evaluator_accuracy_vs_imperfect")
    lines.append(f"| evaluator distance | {result['evaluator_accuracy_vs_mismatched']:.3f} | "
                 f"{'-' if eimp is None else f'{eimp:.3f}'} | 1.000 |")  # fmt: skip
    if result.get("per_rung"):
        lines += ["", "| Rung | Pairs | Model accuracy | Evaluator accuracy |", "|---|---|---|---|"]
        for r, v in result["per_rung"].items():
            lines.append(f"| {r} | {v['pairs']} | {v['accuracy']:.3f} | {v['evaluator_accuracy']:.3f} |")
    lines += ["", f"{result['goals']} goals, {result['pairs']} scored pairs; ties count 1/2."]
    return "\n".join(lines) + "\n"
