"""Motion-LLM evaluation: every eval task through the harness, scripted outputs, captioning and judge
metrics, the run folder's files, eval.generate, and 2-process torchrun == 1 process.

The model is the tiny random base of ``prepare.build_tiny_llm`` with 16 motion codes (outputs are
garbage; the plumbing must hold). Tests that need particular outputs force them through the
generator's logits hook (``Forced``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from data.bvh_export import read_bvh
from data.datasets import EvalMotionTextDataset, build_clip_index
from data.motion_tokens import ParseStatsTable, render_codes
from data.normalization import FeatureNorm
from data.prompts import NO_REFINEMENT
from data.specs import get_dataset_spec
from data.word_vectorizer import WordVectorizer
from eval.captioning import CaptionTagger, caption_scores, simple_tokenize
from eval.compare import comparison_table
from eval.compare import main as compare_main
from eval.evaluate_llm import expand_flags
from eval.evaluate_llm import main as evaluate_llm_main
from eval.generate import main as generate_main
from eval.harness import REAL_MOTION, EvaluationHarness
from eval.judge import alignment_scores, judge_metrics, preference_accuracy, rank_correlation
from eval.llm_runner import TaskOptions, load_runner
from eval.tasks import (
    TASKS,
    TaskCall,
    TaskMethod,
    TraceRecorder,
    chain_rows,
    round_summary,
    run_task,
    stage0_prompt,
    task_rounds,
)
from models.evaluator import load_guo_evaluator
from models.motion_llm import VQIdentity, load_motion_llm, save_motion_llm
from tests.conftest import write_tiny_dataset, write_tiny_glove
from tests.llm_fixtures import build_base, write_eval_assets
from tests.test_harness import _clips

REPO = Path(__file__).resolve().parent.parent
SPEC = get_dataset_spec("humanml3d")
NB_CODE = 16
OPTIONS = TaskOptions(max_new_tokens=8, max_refine_round=2, chain_rounds=3, batch_size=8)
MOTION_TASKS = sorted(n for n, t in TASKS.items() if t.run is not None)


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    """30-clip dataset with an engine index, glove, random evaluator, 16-code VQ, tiny motion LLM, config."""
    root = tmp_path_factory.mktemp("eval_llm")
    ds = write_tiny_dataset(root / "ds", clips=_clips())
    glove = write_tiny_glove(root / "glove")
    write_eval_assets(root, ds, nb_code=NB_CODE)
    base = build_base(ds, root / "base")
    loaded = load_motion_llm(base, nb_code=NB_CODE, vq=VQIdentity.of(root / "vq" / "net_last.pth"))
    save_motion_llm(loaded.model, loaded.tokenizer, loaded.meta, root / "llm")
    # goals 000000..000003, each with three "imperfect" variants (other clips of the fixture)
    motions = {f"{10 + 3 * g + r:06d}": {"goal": f"{g:06d}", "rung": r} for g in range(4) for r in range(3)}
    (ds / "engine_motions.json").write_text(json.dumps({"format": "engine-motions/1", "motions": motions}))
    cfg = {
        "dataset": "humanml3d", "dataset_root": str(ds), "glove_dir": str(glove),
        "evaluator_checkpoint": str(root / "ev" / "finest.tar"), "evaluator_meta_dir": str(root / "ev" / "meta"),
        "model": str(root / "llm"), "split": "test", "batch_size": 4, "replications": 1, "diversity_times": 10,
        "seed": 5, "progress": False, "num_threads": 1, "device": "cpu", "max_new_tokens": 8,
        "max_refine_round": 2, "chain_rounds": 3, "gen_batch_size": 8, "render_samples": 1, "judge_max_goals": 4,
    }  # fmt: skip
    (root / "eval_llm.yaml").write_text(yaml.safe_dump(cfg))
    return {"root": root, "ds": ds, "glove": glove, "config": root / "eval_llm.yaml", "model": root / "llm"}


@pytest.fixture(scope="module")
def runner(setup):
    return load_runner(setup["model"], "humanml3d", options=OPTIONS)


@pytest.fixture(scope="module")
def harness(setup):
    ev = load_guo_evaluator(setup["root"] / "ev" / "finest.tar")
    norm = FeatureNorm.load_meta(setup["root"] / "ev" / "meta", SPEC)
    index = build_clip_index(setup["ds"], "test", SPEC, progress=False)
    ds = EvalMotionTextDataset(index, WordVectorizer(setup["glove"]), norm.mean, norm.std, seed=3)
    return EvaluationHarness(ev, ds, norm, batch_size=4, replications=1, diversity_times=10, progress=False)


class Forced:
    """Logits hook forcing ``reply(prompt_text)`` (text with motion tokens) and then ``<eos>``."""

    def __init__(self, tok, reply):
        self.tok, self.reply, self.seen = tok, reply, {}
        self.eos = tok.eos_token_id

    def __call__(self, prompts, completions, logits):
        forced = torch.full_like(logits, float("-inf"))
        for b, (p, c) in enumerate(zip(prompts, completions, strict=True)):
            key = tuple(p)
            if key not in self.seen:
                text = self.reply(self.tok.decode(list(p)))
                self.seen[key] = list(self.tok(text, add_special_tokens=False)["input_ids"]) + [self.eos]
            target = self.seen[key]
            forced[b, target[len(c)] if len(c) < len(target) else self.eos] = 0.0
        return forced


@contextmanager
def scripted(runner, reply):
    """Force ``reply`` outputs, without the test runner's token cap (forced outputs end with <eos>)."""
    old = runner.options
    runner.logits_hook, runner.options = Forced(runner.tokenizer, reply), replace(old, max_new_tokens=0)
    try:
        yield runner
    finally:
        runner.logits_hook, runner.options = None, old


def _caption_index(prompt: str) -> int:
    return int(re.search(r"\bw(\d+)\b", prompt).group(1))


# --------------------------------------------------------------------------------------------------
# Every task through the harness


@pytest.mark.parametrize("task", MOTION_TASKS)
def test_every_task_gives_its_rows_and_counts_every_parse(task, runner, harness):
    recorder = TraceRecorder()
    tm = TaskMethod(runner, task, recorder, scorer=harness.scorer)
    report = harness.run([tm.method()])
    rounds = task_rounds(task, OPTIONS)
    assert rounds == {"refinement": 3, "chain": 3, "single": 1}[TASKS[task].kind]
    names = [r.name for r in report.results]
    assert names == [REAL_MOTION, *([task] if rounds == 1 else [f"{task} round {k}" for k in range(rounds)])]
    # 28 samples per row, every one scored (a parse fallback is a 4-frame motion, not a failure)
    assert all(r.generated == 28 and r.failed == 0 for r in report.results[1:])
    records, stats, mm = recorder.gather()
    assert mm == {} and len(records) == 7
    samples = [t for k in sorted(records) for t in records[k].traces]
    assert len(samples) == 28 and all(len(s["motions"]) == rounds for s in samples)
    assert all(0 <= c < NB_CODE for s in samples for m in s["motions"] for c in m)
    if task != "pure_random_flip":  # every generated motion is parsed and counted per row
        for k in range(rounds):
            total = stats[f"motion_parse/{task}/round{k}/total"]
            assert total == 28 and 0 <= stats[f"motion_parse/{task}/round{k}/fallback"] <= total
    summary = round_summary(records, rounds)
    assert summary["samples"] == 28 and sum(summary["rounds_used"].values()) == 28
    assert ("last_better_than_first" in summary) == (rounds > 1)


# --------------------------------------------------------------------------------------------------
# Scripted outputs


def test_refinement_task_stops_on_the_stop_sentence_and_keeps_the_motion(runner):
    def reply(prompt: str) -> str:
        i = _caption_index(prompt)
        codes = re.findall(r"<Motion_(\d+)>", prompt)  # the previous motion is [i, its round]
        if prompt.endswith("Response:<Motion>"):  # a motion call: the next round's motion
            return f"<Motion_{i}><Motion_{int(codes[-1]) + 1 if codes else 0}></Motion>"
        # sample 0 is satisfied at once, sample 1 after one refinement; sample 2 never
        # ("No refinements needed" without the period is not the stop sentence)
        done = {0: 1, 1: 2}.get(i)
        if done is not None and int(codes[-1]) + 1 >= done:
            return NO_REFINEMENT
        return "No refinements needed" if i == 2 else "move faster."

    stats = ParseStatsTable()
    call = TaskCall(
        [f"w{i} walks." for i in range(3)], seed=0, sample=False, honour_sampling=False, stats=stats
    )
    with scripted(runner, reply):
        traces = run_task(runner, "direct_generation-instructed_refinement", call)
    assert [t.stopped_at for t in traces] == [1, 2, None]
    assert [t.rounds_used for t in traces] == [0, 1, 2]
    assert traces[0].motions == [[0, 0]] * 3  # stopped at round 1: keeps its round-0 motion in every row
    assert traces[1].motions == [[1, 0], [1, 1], [1, 1]]
    assert traces[2].motions == [[2, 0], [2, 1], [2, 2]]
    table = stats.as_dict()
    key = "motion_parse/direct_generation-instructed_refinement"
    assert [table[f"{key}/round{r}/total"] for r in range(3)] == [3, 2, 1]
    assert all(table[f"{key}/round{r}/fallback"] == 0 for r in range(3))


def test_malformed_outputs_are_counted_and_scored_with_their_fallback(runner):
    def reply(prompt: str) -> str:
        i = _caption_index(prompt)
        if "Generate a motion" in prompt:  # t2m (forced <Motion>)
            return ["<Motion_3><Motion_4></Motion>", "no motion here", "<Motion_5><Motion_6>"][i]
        # reasoning chain: two complete spans, then an unclosed one (ignored); sample 1 has none
        if i == 1:
            return "<think>[plan]I cannot.[/plan]</think>"
        return ("<think>[generate]<Motion><Motion_1></Motion>[/generate]\n[generate]<Motion><Motion_2><Motion_3>"
                "</Motion>[/generate]\n[generate]<Motion><Motion_9>")  # fmt: skip

    stats = ParseStatsTable()
    caps = [f"w{i} jumps." for i in range(3)]
    with scripted(runner, reply):
        t2m = run_task(runner, "t2m", TaskCall(caps, 0, False, False, stats))
        cot = run_task(runner, "unified_mogen_cot_v3", TaskCall(caps, 0, False, False, stats))
        first = run_task(runner, "unified_mogen_cot_v3_initial_gen", TaskCall(caps, 0, False, False, stats))
    # forced span: closed by </Motion>; text only -> the fallback [0]; unclosed -> closed by <eos>
    assert [t.motions[0] for t in t2m] == [[3, 4], [0], [5, 6]]
    table = stats.as_dict()
    assert table["motion_parse/t2m/round0/fallback"] == 1  # counted, and scored as [0]
    assert table["motion_parse/t2m/round0/implicit_end"] == 2  # samples 1 and 2 never closed the span
    assert table["motion_parse/t2m/round0/dropped_tokens"] > 0
    # chain rows: span 0, span 1, then the answer (the last complete span); no span -> [0] everywhere
    assert cot[0].motions == [[1], [2, 3], [2, 3]] and cot[0].rounds_used == 1
    assert cot[1].motions == [[0]] * 3
    assert [table[f"motion_parse/unified_mogen_cot_v3/round{k}/fallback"] for k in range(3)] == [1, 1, 1]
    assert table["motion_parse/unified_mogen_cot_v3/round0/unclosed"] == 2
    assert first[0].motions == [[1]] and first[1].motions == [[0]]
    # the fallback decodes to one code's frames and is scored like any motion
    motions = runner.motions(t2m[1].motions)
    assert motions[0].shape == (4, SPEC.feat_dim) and np.isfinite(motions[0]).all()
    assert chain_rows([], [], 2) == [[0], [0]] and chain_rows([[1], [2], [3]], [3], 2) == [[1], [3]]


def test_random_flip_injects_the_negative_and_falls_back_without_a_first_motion(runner):
    def reply(prompt: str) -> str:
        i = _caption_index(prompt)
        if prompt.endswith("</Motion>"):  # pass 2: continues after the injected motion
            return "[/generate]\n[assess]bad[/assess]\n[generate]<Motion><Motion_7></Motion>[/generate]\n</think>"
        if i == 1:  # B8: pass 1 emits </Motion> before any <Motion>
            return "<think></Motion>"
        return "<think>[plan]go[/plan]\n[generate]<Motion><Motion_1><Motion_2></Motion>"

    stats = ParseStatsTable()
    call = TaskCall(["w0 waves.", "w1 waves."], 0, False, False, stats, negatives=[[9, 9], [8]])
    with scripted(runner, reply):
        traces = run_task(runner, "unified_mogen_cot_v3_random_flip", call)
    assert traces[0].motions == [[9, 9], [7], [7]] and traces[1].motions == [[8], [7], [7]]
    pass2 = [s for s in traces[0].steps if s.kind == "cot_pass2"][0]
    assert pass2.prompt.endswith("[generate]" + render_codes([9, 9], NB_CODE))  # cut before pass 1's motion
    assert "<Motion_1>" not in pass2.prompt
    table = stats.as_dict()
    flip = "motion_parse/unified_mogen_cot_v3_random_flip/flip/round0"
    assert table[f"{flip}/total"] == 2 and table[f"{flip}/fallback"] == 1


# --------------------------------------------------------------------------------------------------
# Captioning and judge metrics


def test_caption_scores_against_hand_computed_values():
    assert simple_tokenize("A person's arm waves, then stops.") == "a person 's arm waves then stops"
    # one item: 3/3 unigrams match, brevity penalty exp(1 - 4/3)
    s = caption_scores([["a person walks forward"]], ["A person walks."])
    assert s["bleu1"] == pytest.approx(np.exp(1 - 4 / 3), abs=1e-6)
    # ROUGE-L: LCS 3, P = 1, R = 3/4, beta 1.2 -> (1 + b^2) P R / (R + b^2 P)
    b2 = 1.2**2
    assert s["rouge_l"] == pytest.approx((1 + b2) * 0.75 / (0.75 + b2), abs=1e-6)
    # hypotheses equal to their references, no n-gram shared across items: CIDEr-D = 10, BLEU = 1
    same = caption_scores([["a man jumps high up"], ["someone waves the left hand"]],
                          ["a man jumps high up", "someone waves the left hand"])  # fmt: skip
    assert same["cider"] == pytest.approx(10.0, abs=1e-6) and same["bleu4"] == pytest.approx(1.0, abs=1e-6)
    assert caption_scores([["a b c"]], [""])["bleu1"] < 1e-9  # an empty caption scores (~0), not crashes


def test_caption_tagger_learns_lemmas_and_tags_from_the_dataset():
    lines = [
        ("A man walks forward.", ["a/DET", "man/NOUN", "walk/VERB", "forward/ADV"]),
        ("the man walks", ["the/DET", "man/NOUN", "walk/VERB"]),
        ("a person's walk", ["a/DET", "person/NOUN", "walk/NOUN"]),
    ]  # fmt: skip  (misaligned: skipped)
    tagger, counts = CaptionTagger.from_captions(lines)
    assert counts == {"captions_aligned": 2, "captions_skipped": 1, "words": 5}
    assert tagger.tokens("The man walks quickly, jumping.") == [
        "the/DET", "man/NOUN", "walk/VERB", "quickly/ADV", "jumping/VERB"
    ]  # fmt: skip
    assert dict(tagger.unknown) == {"quickly": 1, "jumping": 1} and tagger.tokens("!!") == ["unk/OTHER"]


def test_judge_metrics_on_a_scripted_case():
    # goals 0 and 1: true, mismatched and two imperfect (rungs 0, 1) each
    case = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    kind = np.array(["true", "mismatched", "imperfect", "imperfect"] * 2)
    rung = np.array([-1, -1, 0, 1] * 2)
    scores = np.array([-1.0, -5.0, -3.0, -0.5, -2.0, -2.0, -4.0, -3.0])
    dist = np.array([1.0, 5.0, 3.0, 2.0, 1.0, 4.0, 3.0, 2.0])
    out = judge_metrics(case=case, kind=kind, rung=rung, scores=scores, distances=dist)
    assert out["accuracy_vs_mismatched"] == 0.75  # goal 0 wins, goal 1 ties (1/2)
    assert out["accuracy_vs_imperfect"] == 0.75  # goal 0 loses to its rung-1 motion
    assert out["per_rung"] == {"0": {"pairs": 2, "accuracy": 1.0, "evaluator_accuracy": 1.0},
                               "1": {"pairs": 2, "accuracy": 0.5, "evaluator_accuracy": 1.0}}  # fmt: skip
    assert out["evaluator_accuracy_vs_mismatched"] == 1.0
    assert out["mean_score"]["true"] == -1.5 and out["goals"] == 2 and out["pairs"] == 8
    assert preference_accuracy(np.array([1.0, 2.0]), np.array([0.0, 2.0])) == 0.75
    assert rank_correlation(np.array([3.0, 2.0, 1.0]), np.array([0.1, 0.5, 0.9])) == pytest.approx(1.0)


def test_alignment_scores_batched_equal_one_by_one(runner):
    caps = ["w1 walks", "a person jumps up and down twice.", "w3 kicks."]
    codes = [[1, 2, 3], [4], [5, 6, 7, 8, 9, 10]]
    kw = {"nb_code": NB_CODE}
    batched = alignment_scores(runner.model, runner.tokenizer, caps, codes, batch_size=3, **kw)
    single = [
        alignment_scores(runner.model, runner.tokenizer, [c], [m], **kw)[0]
        for c, m in zip(caps, codes, strict=True)
    ]
    np.testing.assert_allclose(batched, single, rtol=1e-5)
    # the definition: the sum of the answer tokens' log-probabilities after the prompt
    tok = runner.tokenizer
    prompt = tok([f"You are an assistant who helps users understand or generate 3D human motion representations."
                  f"\n\nUser: Motion: {render_codes(codes[0], NB_CODE)}. Goal text: {caps[0]}. Determine how to "
                  f"refine the generated motion for better alignment.\n\n Response:"])["input_ids"][0]  # fmt: skip
    answer = tok(NO_REFINEMENT, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    with torch.no_grad():
        logp = runner.model(torch.tensor([prompt + answer])).logits[0].float().log_softmax(-1)
    expected = sum(float(logp[len(prompt) - 1 + t, a]) for t, a in enumerate(answer))
    assert batched[0] == pytest.approx(expected, rel=1e-5) and batched[0] < 0


# --------------------------------------------------------------------------------------------------
# Entry points and their files


def test_outputs_folder_m2t_and_judge(setup):
    out = setup["root"] / "run_refine"
    res = evaluate_llm_main(["--config", str(setup["config"]), "task=direct_generation-instructed_refinement",
                             f"output_dir={out}"])  # fmt: skip
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == ["config.yaml", "eval_test.json", "eval_test.md", "index.html", "renders/sample_0.gif",
                     "run.json", "run_info.json", "samples.jsonl"]  # fmt: skip
    js = json.loads((out / "eval_test.json").read_text())
    assert js == json.loads(json.dumps(res)) and js["task"] == "direct_generation-instructed_refinement"
    assert list(js["methods"])[1:] == [f"direct_generation-instructed_refinement round {k}" for k in range(3)]
    assert js["parse"]["motion_parse/direct_generation-instructed_refinement/round0/total"] == 28
    assert js["rounds"]["samples"] == 28 and js["seconds"] > 0 and js["decoding"]["max_refine_round"] == 2
    lines = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert len(lines) == 28
    step = lines[0]["steps"][0]
    assert lines[0]["caption"] and step["kind"] == "t2m" and step["prompt"].endswith("Response:<Motion>")
    assert set(step) == {"round", "kind", "prompt", "completion", "codes"}
    html = (out / "index.html").read_text()
    assert '<img src="renders/sample_0.gif"' in html and "<table>" in html and "round 2" in html
    md = (out / "eval_test.md").read_text()
    assert "| direct_generation-instructed_refinement round 2 |" in md and "Rounds used:" in md
    # eval.compare: one table, the data row once, then a row per run and round
    table = compare_main([str(out), str(out / "eval_test.json"), "--labels", "stage 1", "again"]).splitlines()
    assert (
        table[2].startswith("| data | Real motion |")
        and len([x for x in table if x.startswith("| ")]) == 1 + 1 + 6
    )
    assert table[3].startswith("| stage 1 | direct_generation-instructed_refinement round 0 |")
    with pytest.raises(ValueError, match="replications=2 but stage 1 has 1"):
        comparison_table([js, {**js, "replications": 2}], ["stage 1", "other"])

    m2t = evaluate_llm_main(
        ["--config", str(setup["config"]), "task=m2t", f"output_dir={setup['root'] / 'm2t'}"]
    )
    assert set(m2t["rows"]) == {"m2t", "Real text"}
    assert set(m2t["rows"]["m2t"]["summary"]) == {"bleu1", "bleu2", "bleu3", "bleu4", "rouge_l", "cider",
                                                  "top1", "top2", "top3", "mm_dist"}  # fmt: skip
    assert (setup["root"] / "m2t" / "samples.jsonl").read_text().count("\n") == 28

    judge = evaluate_llm_main(["--config", str(setup["config"]), "task=judge",
                               f"output_dir={setup['root'] / 'judge'}"])  # fmt: skip
    assert judge["goals"] == 4 and judge["pairs"] == 4 * 5 and set(judge["per_rung"]) == {"0", "1", "2"}
    assert -1 <= judge["spearman_score_vs_evaluator"] <= 1 and 0 <= judge["accuracy_vs_imperfect"] <= 1
    assert (setup["root"] / "judge" / "judge.md").is_file()


def test_stage0_prompt_is_the_stage0_training_layout():
    assert stage0_prompt("a man walks.") == (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\nUser: ### Instruction:\nGenerate a "
        "motion matching the following input human motion description\n\n### Input:\na man walks.\n\n "
        "Response:<Motion>"
    )


def test_expand_flags():
    assert expand_flags(["--multimodality", "task=t2m"]) == ["task=t2m", "mm_texts=100"]
    assert expand_flags(["--multimodality", "mm_texts=8", "--do-sample"]) == ["mm_texts=8", "do_sample=true"]


def test_generate_cli_writes_every_round(setup):
    out = setup["root"] / "gen"
    recs = generate_main(["--model", str(setup["model"]), "--task", "direct_generation-instructed_refinement",
                          "--max-refine-round", "2", "--max-new-tokens", "6", "--out", str(out),
                          "a person walks forward, then waves", "someone jumps"])  # fmt: skip
    assert len(recs) == 2 and all(r["written_rounds"] == r["rounds_used"] + 1 for r in recs)
    folder = out / "000_a_person_walks_forward_then_waves"
    n = recs[0]["written_rounds"]
    for r in range(n):
        feats, joints = np.load(folder / f"round{r}_features.npy"), np.load(folder / f"round{r}_joints.npy")
        assert feats.shape[1] == SPEC.feat_dim and joints.shape == (len(feats), SPEC.joints_num, 3)
        bvh = read_bvh(folder / f"round{r}.bvh")  # the root is placed exactly, whatever the bones do
        np.testing.assert_allclose(bvh.reorder(SPEC.joint_names)[:, 0], joints[:, 0], atol=1e-5)
    assert (folder / "rounds.gif").is_file() and json.loads((folder / "trace.json").read_text())["caption"]


def test_two_process_torchrun_equals_one_process(setup):
    args = ["--config", str(setup["config"]), "task=unified_mogen_cot_v3", "replications=2", "render_samples=0",
            "mm_texts=4", "mm_repeats=3", "mm_times=2"]  # fmt: skip
    one = evaluate_llm_main([*args, f"output_dir={setup['root'] / 'one'}"])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "eval.evaluate_llm", *args, f"output_dir={setup['root'] / 'two'}"]  # fmt: skip
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    two = json.loads((setup["root"] / "two" / "eval_test.json").read_text())
    assert two["world_size"] == 2 and one["world_size"] == 1
    for name, m in one["methods"].items():
        for k, vals in m["per_replication"].items():
            np.testing.assert_allclose(two["methods"][name]["per_replication"][k], vals, rtol=1e-6, atol=1e-7)
        assert two["methods"][name]["generations"] == m["generations"]
    assert two["parse"] == one["parse"] and two["parse_multimodality"] == one["parse_multimodality"]
    assert two["rounds"].pop("rounds_used") == one["rounds"].pop("rounds_used")
    assert two["rounds"] == pytest.approx(one["rounds"])
    assert "mmodality" in one["methods"]["unified_mogen_cot_v3 round 2"]["summary"]
    samples = [(setup["root"] / d / "samples.jsonl").read_text().splitlines() for d in ("one", "two")]
    assert sorted(samples[0]) == sorted(samples[1]) and len(samples[0]) == 28
