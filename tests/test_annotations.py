"""Annotation readers, prompt pools, motion tokens, SFT example builders and inspect_annotations."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np
import pytest

from data.annotations import (
    TASK_STRINGS,
    TASKS,
    AnnotationError,
    MotionRef,
    MotionResolver,
    motion_file_id,
    read_annotation_file,
)
from data.motion_codes import MappingCodeSource, window_code_file
from data.motion_tokens import (
    MotionCodeError,
    MotionParseStats,
    codes_or_fallback,
    motion_ids,
    motion_token_strings,
    parse_motion_ids,
    parse_motion_text,
    render_codes,
)
from data.prompts import (
    BUILTIN_POOLS,
    COT_V3_TEMPLATE,
    PromptPoolError,
    PromptPools,
    build_inference_prompt,
    render_chat,
    substitute,
)
from data.sft_examples import IGNORE_INDEX, BuildOptions, build_example, tokenize_example

G = "You are an assistant who helps users understand or generate 3D human motion representations."
S = "<bos>" + G + "\n\nUser: "
T = "\n\n Response:"


def span(*codes: int) -> str:
    return "<Motion>" + "".join(f"<Motion_{c}>" for c in codes) + "</Motion>"


# ------------------------------------------------------------------------------------------------
# motion tokens


def test_render_and_parse_motion_tokens():
    assert render_codes([5, 0, 511]) == "<Motion><Motion_5><Motion_0><Motion_511></Motion>"
    assert render_codes([]) == "<Motion></Motion>"
    with pytest.raises(MotionCodeError, match="outside"):
        render_codes([512])
    toks = motion_token_strings()
    assert toks[:3] == ["<Motion>", "</Motion>", "<Motion_0>"] and len(toks) == 514
    assert motion_ids([0, 7], base_id=256000) == [256000, 256002, 256009, 256001]

    b = 100  # base id of <Motion>
    ids = [5, b, b + 2 + 1, b + 2 + 2, b + 1, 9, b, b + 2 + 3, 7, b + 2 + 4, b + 1, b, b + 2 + 9]
    p = parse_motion_ids(ids, base_id=b)
    # last complete span is [3, (text dropped), 4]; the trailing <Motion> is unclosed and ignored
    assert p.codes == [3, 4] and p.spans == [[1, 2], [3, 4]] and p.dropped_tokens == 1 and p.unclosed == 1
    assert parse_motion_ids(ids, base_id=b, select="first").codes == [1, 2]
    # B16: a restart inside a span keeps the innermost start
    p = parse_motion_ids([b, b + 3, b, b + 4, b + 1], base_id=b)
    assert p.codes == [2] and p.restarts == 1
    # stop ids cut the completion (a pad after <eos> is never parsed)
    assert not parse_motion_ids([1, b, b + 2, b + 1], base_id=b, stop_ids=[1]).found
    text = "[generate]<Motion><Motion_7><Motion_600>x<Motion_9></Motion>[/generate] </Motion>"
    p = parse_motion_text(text)
    assert p.codes == [7, 9] and p.dropped_tokens == 2 and p.stray_ends == 1
    stats = MotionParseStats()
    assert codes_or_fallback(parse_motion_text("no motion here"), stats) == [0]
    assert codes_or_fallback(parse_motion_text(span(1, 2)), stats) == [1, 2]
    assert stats.as_dict()["motion_parse/fallback"] == 1 and stats.no_span == 1


# ------------------------------------------------------------------------------------------------
# prompt pools


def test_builtin_pools_follow_the_rules_and_fixed_strings():
    pools = PromptPools.builtin()
    assert len(pools.pools) == 18
    assert pools.pools["<Text2Motion_Template>"][0] == "Generate a motion that depicts <Goal_Caption>."
    assert pools.pools["<Generate_Assess_Refien_Template_wo_Answer>"][1] == COT_V3_TEMPLATE
    assert COT_V3_TEMPLATE.startswith("Given a text outlining a human motion objective, employ")
    bad = dict(BUILTIN_POOLS)
    bad["<Text2Motion_Template>"] = ("Generate <Goal_Caption> and <Goal_Caption>.",)
    with pytest.raises(PromptPoolError, match="exactly once"):
        PromptPools(bad)


def test_original_prompt_file_is_sha_checked(tmp_path):
    f = tmp_path / "prompt_template-2.json"
    f.write_text(json.dumps({k: list(v) for k, v in BUILTIN_POOLS.items()}))
    with pytest.raises(PromptPoolError, match="sha256"):
        PromptPools.from_file(f)
    assert PromptPools.from_file(f, expected_sha256=None).pools == PromptPools.builtin().pools


def fixed_pools(**single: str) -> PromptPools:
    """Builtin pools with chosen keys reduced to one entry (so the rendered text is known)."""
    pools = dict(BUILTIN_POOLS)
    for key, entry in single.items():
        pools[f"<{key}>"] = (entry,)
    return PromptPools(pools)


# ------------------------------------------------------------------------------------------------
# hand-written files in the released layout


def conv(system: str, user: str, answer: str) -> list[dict]:
    return [
        {"from": "system", "value": system},
        {"from": "human", "value": user},
        {"from": "gpt", "value": answer},
    ]


def ref(name: str, f: float = 0.0, t: float = 0.0) -> dict:
    return {"motion_name": name, "f_tag": f, "to_tag": t}


CODES = {
    "000002": [88, 88, 301, 17],
    "M000003": [7, 7, 9],
    "T_000004": [12, 40, 5],
    "000005": [1],
    "000006": [2],
    "000007": [3],
    "000008": [4],
    "000009": [88, 301, 301, 17],
}
TM_TEXTS = {
    "<Goal_Caption>": ["a person hops forward on one leg."],
    "<Assessment_Analysis>": ["The motion is a two-footed jump in place; forward travel is missing."],
    "<Refinement_Instruction>": ["Lift one foot and hop forward repeatedly on the other leg."],
}


def write(tmp_path: Path, name: str, annotations: list[dict], info: dict | None = None) -> Path:
    p = tmp_path / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps({"info": info or {}, "annotations": annotations}))
    return p


STAGE1_CASES = [
    (
        "t2m_direct_generation",
        {"Text2Motion_Template": "Generate a motion that depicts <Goal_Caption>."},
        {"motions": {"<Goal_Motion>": ref("000002")}, "text": {"<Goal_Caption>": ["a person hops forward on one leg."]},
         "conversations": conv("<General_System_Prompt>", "<Text2Motion_Template>", "<Goal_Motion>")},
        S + "Generate a motion that depicts a person hops forward on one leg." + T,
        span(88, 88, 301, 17),
    ),
    (
        "m2t_motion_caption",
        {"Motion2X_Template": "<Goal_Motion>\nDescribe the motion in detail."},
        {"motions": {"<Goal_Motion>": ref("T_000004", 1.0, 3.0)}, "text": {"<Goal_Caption>": ["a person waves with the right hand."]},
         "conversations": conv("<General_System_Prompt>", "<Motion2X_Template>", "<Goal_Caption>")},
        S + span(12, 40, 5) + "\nDescribe the motion in detail." + T,
        "a person waves with the right hand.",
    ),
    (
        "t2t_prompt_analysis",
        {"Goal_Analysis_Template": "Identify the essential components for <Goal_Caption>."},
        {"motions": {}, "text": {"<Goal_Caption>": ["a person hops forward on one leg."], "<Goal_Analysis>": ["A single-leg hop with forward travel."]},
         "conversations": conv("<General_System_Prompt>", "<Goal_Analysis_Template>", "<Goal_Analysis>")},
        S + "Identify the essential components for a person hops forward on one leg." + T,
        "A single-leg hop with forward travel.",
    ),
    (
        "tm2t_refinement_instruction",
        {"Text_Motion2Refinement_Instruction_Template": "Motion: <Generated_Motion>. Goal text: <Goal_Caption>. Determine how to refine the generated motion for better alignment."},
        {"motions": {"<Generated_Motion>": ref("M000003")}, "text": TM_TEXTS,
         "conversations": conv("<General_System_Prompt>", "<Text_Motion2Refinement_Instruction_Template>", "<Refinement_Instruction>")},
        S + "Motion: " + span(7, 7, 9) + ". Goal text: a person hops forward on one leg. Determine how to refine the generated motion for better alignment." + T,
        "Lift one foot and hop forward repeatedly on the other leg.",
    ),
    (
        "tm2m_instructed_refinement",
        {"Instructed_Motion_Refinement_Template": "Motion: <Generated_Motion>. Goal text: <Goal_Caption>. Refine the motion according to the instruction: <Refinement_Instruction>."},
        {"task": "tm2m_direct_refinement", "motions": {"<Generated_Motion>": ref("M000003"), "<Goal_Motion>": ref("000002")}, "text": TM_TEXTS,
         "conversations": conv("<General_System_Prompt>", "<Instructed_Motion_Refinement_Template>", "<Goal_Motion>")},
        S + "Motion: " + span(7, 7, 9) + ". Goal text: a person hops forward on one leg. Refine the motion according to the instruction: Lift one foot and hop forward repeatedly on the other leg." + T,
        span(88, 88, 301, 17),
    ),
    (
        "stage0_t2m",
        {},
        {"task": "t2m_direct_generation", "motions": {"<Goal_Motion>": ref("000002")}, "text": {"<Goal_Caption>": ["A person waves."]},
         "conversations": conv("<MotionAgent_System_Prompt>", "<MotionAgent_Mogen_Template>", "<Goal_Motion>")},
        "<bos>Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\nUser: ### Instruction:\nGenerate a motion matching the following input human motion description\n\n### Input:\nA person waves.\n\n Response:",
        span(88, 88, 301, 17),
    ),
    # spec section 5, rendering 2: same pool as T2M direct, told apart by the task string
    (
        "t2m_detailed_prompt_generation",
        {"Text2Motion_Template": "Produce a movement that represents <Goal_Caption>."},
        {"motions": {"<Goal_Motion>": ref("000009")},
         "text": {"<Goal_Caption>": ["a single-leg hop forward with arms held out for balance and a soft landing."]},
         "conversations": conv("<General_System_Prompt>", "<Text2Motion_Template>", "<Goal_Motion>")},
        S + "Produce a movement that represents a single-leg hop forward with arms held out for balance and a soft landing." + T,
        span(88, 301, 301, 17),
    ),
    # rendering 5: the answer is the assessment paragraph (text), the prompt holds the attempt span
    (
        "tm2t_assessment_analysis",
        {"Text_Motion2Alignment_Analysis_Template": "Motion: <Generated_Motion>. Goal text: <Goal_Caption>. Assess the alignment between the motion and the goal."},
        {"motions": {"<Generated_Motion>": ref("M000003")}, "text": TM_TEXTS,
         "conversations": conv("<General_System_Prompt>", "<Text_Motion2Alignment_Analysis_Template>", "<Assessment_Analysis>")},
        S + "Motion: " + span(7, 7, 9) + ". Goal text: a person hops forward on one leg. Assess the alignment between the motion and the goal." + T,
        "The motion is a two-footed jump in place; forward travel is missing.",
    ),
    # rendering 7: caption then the template's "." merge ("leg.." -> "leg."), answer = goal motion
    (
        "tm2m_direct_refinement",
        {"Direct_Motion_Refinement_Template": "Motion: <Generated_Motion>. Target caption: <Goal_Caption>. Please adjust the motion to fit the caption."},
        {"motions": {"<Generated_Motion>": ref("M000003"), "<Goal_Motion>": ref("000002")}, "text": TM_TEXTS,
         "conversations": conv("<General_System_Prompt>", "<Direct_Motion_Refinement_Template>", "<Goal_Motion>")},
        S + "Motion: " + span(7, 7, 9) + ". Target caption: a person hops forward on one leg. Please adjust the motion to fit the caption." + T,
        span(88, 88, 301, 17),
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("task", "pool", "entry", "prompt", "answer"), STAGE1_CASES, ids=[c[0] for c in STAGE1_CASES]
)
def test_stage1_file_round_trip(tmp_path, task, pool, entry, prompt, answer):
    entry = {"id": 0, "task": entry.get("task", task), **entry}
    path = write(tmp_path, TASKS[task].file_name, [entry], {"num_instances": "", "time": "2025"})
    f = read_annotation_file(path)
    ex = build_example(f.annotations[0], MappingCodeSource(CODES), fixed_pools(**pool), random.Random(0))
    assert ex.task == task
    assert ex.text == prompt + answer + "<eos>"
    assert ex.spans() == [("<bos>", False), (prompt[len("<bos>") :], False), (answer, True), ("<eos>", True)]
    # writer round trip: the typed entry serialises back to the same JSON
    assert f.annotations[0].to_dict()["motions"] == entry["motions"]


def test_caption_merge_and_seeded_candidate_choice(tmp_path):
    cands = [
        {"motions": {"<Generated_Motion>": ref(n), "<Goal_Motion>": ref("000002")}, "text": TM_TEXTS}
        for n in ("000005", "000006", "000007", "000008")
    ]
    entry = {"id": 3, "task": "tm2m_direct_refinement", "motions": {}, "text": {},
             "conversations": conv("<General_System_Prompt>", "<Direct_Motion_Refinement_Template>", "<Goal_Motion>"),
             "candidate_motion_text": cands}  # fmt: skip
    ann = read_annotation_file(write(tmp_path, "x.json", [entry])).annotations[0]
    pools = fixed_pools(
        Direct_Motion_Refinement_Template="Motion: <Generated_Motion>. Target: <Goal_Caption>."
    )
    src = MappingCodeSource(CODES)
    users = [build_example(ann, src, pools, random.Random(s)).user for s in range(40)]
    assert users == [build_example(ann, src, pools, random.Random(s)).user for s in range(40)]  # seeded
    assert len(set(users)) == 4  # every candidate is drawn, the annotation is not mutated (B3)
    assert users[0].endswith("Target: a person hops forward on one leg.")  # ".." merged to "."


COT_ENTRY = {
    "id": 0,
    "task": "unified_mogen_cot_v2",
    "motions": {"<Goal_Motion>": ref("000002"), **{f"<Intermediate_Motion_{i}>": ref(f"00000{5 + i}") for i in range(4)}},
    "text": {
        "<Goal_Caption>": "a person hops forward on one leg.",
        "<Prompt_Analysis>": ["The motion is a repeated single-leg hop with forward travel."],
        "<Assess_Goal_Motion>": {"assessment": "The motion matches the goal.", "refinement": "No refinements needed."},
        "<Assess_Intermediate_Motion_0>": {"assessment": "An unrelated wave.", "refinement": "Hop forward on one leg instead of waving."},
        "<Assess_Intermediate_Motion_1>": {"assessment": "Looks right.", "refinement": "No refinements needed."},
        "<Assess_Intermediate_Motion_2>": {"assessment": "A two-footed jump in place.", "refinement": "Lift one foot and hop forward."},
        "<Assess_Intermediate_Motion_3>": {"assessment": "Hops backward.", "refinement": "Hop forward instead of backward."},
    },
    "conversations": conv("<General_System_Prompt>", "<Generate_Assess_Refien_Template_wo_Answer>", "<Unified_Mogen_COT_Trace>"),
}  # fmt: skip

PLAN_A = "[plan]I need to analyze the goal and identify the critical aspects to generate the motion.[/plan]\n"
PLAN_G = "[plan]I need to generate a motion according to the previous analysis.[/plan]\n"
PLAN_S = "[plan]I need to assess the alignment between the generated motion and the goal text, then provide specific refinement instructions for improvement.[/plan]\n"
PLAN_R = "[plan]I need to refine the motion according to the instruction.[/plan]\n"
PLAN_F = "[plan]I need to finish thinking as the satisfactory motion is generated.[/plan]\n"


class AllAttemptsRng(random.Random):
    """Draws n = 4 and keeps every intermediate key (so the trace is known)."""

    def randint(self, a, b):
        return b


def cot_expected(with_answer: bool) -> str:
    body = (
        "<think>" + PLAN_A + "[analyze]The motion is a repeated single-leg hop with forward travel.[/analyze]\n" + PLAN_G
        + "[generate]" + span(1) + "[/generate]\n" + PLAN_S
        + "[assess]Assessment: An unrelated wave.\nRefinement: Hop forward on one leg instead of waving.[/assess]\n" + PLAN_R
        + "[generate]" + span(3) + "[/generate]\n" + PLAN_S
        + "[assess]Assessment: A two-footed jump in place.\nRefinement: Lift one foot and hop forward.[/assess]\n" + PLAN_R
        + "[generate]" + span(4) + "[/generate]\n" + PLAN_S
        + "[assess]Assessment: Hops backward.\nRefinement: Hop forward instead of backward.[/assess]\n" + PLAN_R
        + "[generate]" + span(88, 88, 301, 17) + "[/generate]\n" + PLAN_S
        + "[assess]Assessment: The motion matches the goal.\nRefinement: No refinements needed.[/assess]\n" + PLAN_F
        + "</think>"
    )  # fmt: skip
    return body + ("<answer>" + span(88, 88, 301, 17) + "</answer>" if with_answer else "") + "<eos>"


@pytest.mark.parametrize("with_answer", [False, True])
def test_stage2_trace_text_and_mask(tmp_path, with_answer):
    path = write(
        tmp_path, TASKS["irmogen_cot"].file_name, [COT_ENTRY], {"datetime": "x", "num_annotations": ""}
    )
    ann = read_annotation_file(path).annotations[0]
    opts = BuildOptions(ignore_incorrect=True, answer_block=with_answer)
    ex = build_example(ann, MappingCodeSource(CODES), PromptPools.builtin(), AllAttemptsRng(1), opts)
    # intermediate 1 says "No refinements needed." and is dropped (6.1): 3 failed attempts remain
    assert ex.meta["attempt_keys"] == [
        "<Intermediate_Motion_0>",
        "<Intermediate_Motion_2>",
        "<Intermediate_Motion_3>",
    ]
    assert ex.response == cot_expected(with_answer)
    assert ex.user.endswith("\nGoal Text: a person hops forward on one leg.")
    masked = "".join(s.text for s in ex.segments if not s.trainable and s.kind not in ("bos", "prompt"))
    assert masked == "".join("[generate]" + span(c) + "[/generate]\n" for c in (1, 3, 4))
    unmasked = BuildOptions(ignore_incorrect=False, answer_block=with_answer)
    ex2 = build_example(ann, MappingCodeSource(CODES), PromptPools.builtin(), AllAttemptsRng(1), unmasked)
    assert all(s.trainable for s in ex2.segments[2:])


def test_stage2_attempt_distribution_is_uniform_0_to_4(tmp_path):
    entry = json.loads(json.dumps(COT_ENTRY))
    entry["text"]["<Assess_Intermediate_Motion_1>"]["refinement"] = "Hop on one leg, not two."
    ann = read_annotation_file(write(tmp_path, "c.json", [entry])).annotations[0]
    src, pools = MappingCodeSource(CODES), PromptPools.builtin()
    counts = np.bincount(
        [build_example(ann, src, pools, random.Random(s)).meta["num_attempts"] for s in range(500)],
        minlength=5,
    )
    assert counts.sum() == 500 and (counts > 70).all() and (counts < 130).all()


def char_tokenizer():
    """A tiny offline tokenizer: one id per ASCII character, plus the 514 motion tokens (added)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "[UNK]": 3}
    for c in sorted(set(chr(i) for i in range(32, 127)) | {"\n"}):
        vocab.setdefault(c, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="[UNK]"
    )
    hf.add_tokens(motion_token_strings())
    return hf


NEW_STAGE1 = [c for c in STAGE1_CASES if c[0] in ("t2m_detailed_prompt_generation", "tm2t_assessment_analysis", "tm2m_direct_refinement")]  # fmt: skip


@pytest.mark.parametrize(
    ("task", "pool", "entry", "prompt", "answer"), NEW_STAGE1, ids=[c[0] for c in NEW_STAGE1]
)
def test_stage1_loss_mask_covers_exactly_the_answer_and_eos(tmp_path, task, pool, entry, prompt, answer):
    hf = char_tokenizer()
    path = write(tmp_path, TASKS[task].file_name, [{"id": 0, "task": task, **entry}])
    ann = read_annotation_file(path).annotations[0]
    ex = build_example(ann, MappingCodeSource(CODES), fixed_pools(**pool), random.Random(0))
    out = tokenize_example(ex, hf)
    n_prompt = 1 + len(hf(prompt[len("<bos>") :], add_special_tokens=False)["input_ids"])  # bos + prompt
    assert out.labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert out.labels[n_prompt:] == out.input_ids[n_prompt:]  # every answer token and <eos> trains
    pieces = hf.convert_ids_to_tokens(out.input_ids)
    assert "".join(pieces[n_prompt:]) == answer + "<eos>" and "".join(pieces[:n_prompt]) == prompt


def test_tokenize_with_tiny_offline_tokenizer(tmp_path):
    hf = char_tokenizer()
    base = len(hf) - len(motion_token_strings())
    path = write(tmp_path, "c.json", [COT_ENTRY])
    ann = read_annotation_file(path).annotations[0]
    ex = build_example(ann, MappingCodeSource(CODES), PromptPools.builtin(), AllAttemptsRng(1))
    out = tokenize_example(ex, hf, max_length=100_000)  # char-level: no truncation here
    assert out.input_ids[0] == 2 and out.input_ids[-1] == 1 and out.labels[-1] == 1
    prompt_len = 1 + len(ex.segments[1].text)  # char-level prompt
    assert out.labels[:prompt_len] == [IGNORE_INDEX] * prompt_len and out.labels[prompt_len] != IGNORE_INDEX
    goal = motion_ids([88, 88, 301, 17], base_id=base)
    # the intermediate motions are masked, the goal motion is trained
    i = next(k for k in range(len(out.input_ids)) if out.input_ids[k : k + len(goal)] == goal)
    assert out.labels[i : i + len(goal)] == goal
    first = motion_ids([1], base_id=base)
    j = next(k for k in range(len(out.input_ids)) if out.input_ids[k : k + 3] == first)
    assert out.labels[j : j + 3] == [IGNORE_INDEX] * 3
    assert len(out.input_ids) == len(out.labels)
    assert tokenize_example(ex, hf, max_length=10).truncated


def test_inference_prompts_and_chat_layout():
    assert (
        render_chat("SYS", "hi", "<Motion></Motion>")
        == "<bos>SYS\n\nUser: hi\n\n Response:<Motion></Motion><eos>"
    )
    p = build_inference_prompt("t2m", {"<Goal_Caption>": "a man walks."})
    assert p == G + "\n\nUser: Generate a motion that depicts a man walks.\n\n Response:<Motion>"
    p = build_inference_prompt("t2m_motionagent", {"<Goal_Caption>": "a man walks."})
    assert p.endswith("### Input:\na man walks.\n\nResponse: <Motion>") and "User:" not in p
    p = build_inference_prompt("unified_mogen_cot_v3", {"<Goal_Caption>": "a man walks."})
    assert p.endswith("tags, and formulate a plan before each step.\nGoal Text: a man walks.\n\n Response:")


# ------------------------------------------------------------------------------------------------
# malformed entries


BAD_CASES = [
    (lambda e: e.pop("task"), "field 'task'"),
    (lambda e: e.update(id="7"), "field 'id'"),
    (lambda e: e["motions"].update({"<Goal_Motion>": {"motion_name": 5}}), "field 'motions.<Goal_Motion>.motion_name'"),
    (lambda e: e["motions"]["<Goal_Motion>"].update(f_tag=-1.0), "field 'motions.<Goal_Motion>.f_tag'"),
    (lambda e: e["text"].update({"<Goal_Caption>": []}), r"field 'text.<Goal_Caption>'"),
    (lambda e: e["text"].pop("<Goal_Caption>"), r"field 'text.<Goal_Caption>': missing"),
    (lambda e: e["motions"].pop("<Goal_Motion>"), r"field 'motions.<Goal_Motion>': missing"),
    (lambda e: e["conversations"].pop(), "field 'conversations'"),
    (lambda e: e["conversations"][1].update({"from": "gpt"}), r"field 'conversations\[1\].from'"),
]  # fmt: skip


@pytest.mark.parametrize(("mutate", "message"), BAD_CASES)
def test_malformed_entries_name_file_id_and_field(tmp_path, mutate, message):
    entry = {"id": 4, "task": "t2m_direct_generation", **STAGE1_CASES[0][2]}
    entry = json.loads(json.dumps(entry))
    mutate(entry)
    path = write(
        tmp_path, "bad.json", [STAGE1_CASES[0][2] | {"id": 0, "task": "t2m_direct_generation"}, entry]
    )
    with pytest.raises(AnnotationError, match=message) as info:
        read_annotation_file(path)
    assert str(path) in str(info.value) and "(#1)" in str(info.value)


def test_unknown_task_name_is_an_error_listing_the_known_ones(tmp_path):
    # A typo the reference loader would accept silently: it only looks for "unified_mogen_cot".
    entry = {"id": 0, **STAGE1_CASES[0][2], "task": "t2m_direct_generaton"}
    path = write(tmp_path, "typo.json", [entry])
    with pytest.raises(AnnotationError) as info:
        read_annotation_file(path)
    msg = str(info.value)
    assert f"{path}: annotation id=0 (#0): field 'task': unknown task 't2m_direct_generaton'" in msg
    assert msg.endswith("known task names: " + ", ".join(sorted({t.task_string for t in TASKS.values()})))
    assert len(TASK_STRINGS) == 8 and "unified_mogen_cot_v2" in TASK_STRINGS  # 10 files, 2 strings shared


def test_malformed_envelope_and_stage2_objects(tmp_path):
    p = tmp_path / "x.json"
    p.write_text("{not json")
    with pytest.raises(AnnotationError, match="invalid JSON"):
        read_annotation_file(p)
    p.write_text(json.dumps({"info": {}, "annots": []}))
    with pytest.raises(AnnotationError, match="'annotations' list"):
        read_annotation_file(p)
    entry = json.loads(json.dumps(COT_ENTRY))
    entry["text"]["<Assess_Intermediate_Motion_2>"] = "just a string"
    with pytest.raises(AnnotationError, match=r"id=0 \(#0\): field 'text.<Assess_Intermediate_Motion_2>'"):
        read_annotation_file(write(tmp_path, "s2.json", [entry]))


def test_motion_names_and_windows(tmp_path):
    assert motion_file_id("T_007471", "humanml3d") == "007471"
    assert motion_file_id("M002664", "humanml3d") == "M002664"
    assert motion_file_id("000002_0", "humanml3d") == "000002"
    assert motion_file_id("02471", "kit") == "02471"
    with pytest.raises(AnnotationError, match="no '_'-separated part"):
        motion_file_id("02471", "humanml3d")  # B4: a KIT id in a HumanML3D file is an error, not IndexError
    (tmp_path / "a" / "new_joint_vecs").mkdir(parents=True)
    (tmp_path / "b" / "new_joint_vecs").mkdir(parents=True)
    np.save(tmp_path / "b" / "new_joint_vecs" / "000009.npy", np.zeros((100, 263), np.float32))
    res = MotionResolver([tmp_path / "a", tmp_path / "b"])
    assert res.load(MotionRef("000009", 1.0, 2.5)).shape == (30, 263)  # [20, 50)
    assert res.load(MotionRef("000009", 8.0, 8.0)).shape == (100, 263)  # f >= t keeps the whole clip


# ------------------------------------------------------------------------------------------------
# inspect_annotations CLI


def test_inspect_annotations_cli(tmp_path, capsys):
    from data.vq_data import index_code_files
    from prepare.inspect_annotations import main

    root = tmp_path / "root"
    (root / "new_joint_vecs").mkdir(parents=True)
    codes_dir = tmp_path / "codes"
    codes_dir.mkdir()
    for mid, codes in CODES.items():
        fid = motion_file_id(mid, "humanml3d")
        np.save(root / "new_joint_vecs" / f"{fid}.npy", np.zeros((4 * len(codes), 263), np.float32))
        np.save(codes_dir / f"{fid}.npy", np.asarray([codes], np.int64))
    # T_000004 is referenced with the window 1.0-3.0 s = frames [20, 60), which has its own codes
    window_file = window_code_file(codes_dir, "000004", (20, 60))
    window_file.parent.mkdir()
    np.save(window_file, np.asarray([CODES["T_000004"]], np.int64))
    index_code_files(codes_dir, root)  # hand-made code files: record their and their motions' hashes
    ann_dir = tmp_path / "ann"
    for task, _, entry, _, _ in STAGE1_CASES:
        write(ann_dir, TASKS[task].file_name, [{"id": 0, "task": entry.get("task", task), **entry}])
    write(ann_dir, TASKS["irmogen_cot"].file_name, [COT_ENTRY])
    rc = main(["--dataset-root", str(root), "--codes-dir", str(codes_dir), "--annotations-dir", str(ann_dir)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "task tm2m_instructed_refinement: 1 examples" in out and "task irmogen_cot: 1 examples" in out
    assert "MISSING" not in out

    (codes_dir / "000002.npy").unlink()
    (codes_dir / "M000003.npy").unlink()
    rc = main(["--dataset-root", str(root), "--codes-dir", str(codes_dir), "--annotations-dir", str(ann_dir)])
    out = capsys.readouterr().out
    assert rc == 0 and "MISSING motion files: 2 distinct ids" in out and "M000003" in out

    bad = write(tmp_path, "bad.json", [{"id": 9, "task": "t2m_direct_generation", "conversations": []}])
    rc = main(["--dataset-root", str(root), "--codes-dir", str(codes_dir), str(bad)])
    err = capsys.readouterr().err
    assert rc == 1 and "bad.json: annotation id=9 (#0): field 'conversations'" in err


class CropCodes:
    """A code source in the ``(ref, rng)`` form: ``CODES`` behind a marker code ``500 + offset``,
    the 0-3 frame crop offset drawn from ``rng`` (0 without one), so each crop draw shows in the text."""

    def __call__(self, ref: MotionRef, rng: random.Random | None = None) -> list[int]:
        return [500 + (rng.randint(0, 3) if rng is not None else 0), *CODES[ref.motion_name]]


def example_set_files(tmp_path: Path) -> str:
    a = write(tmp_path, "a.json", [{"id": 0, "task": "t2m_direct_generation", **STAGE1_CASES[0][2]}])
    b = write(tmp_path, "b.json", [COT_ENTRY])
    tm = {"id": 1, "task": "tm2m_direct_refinement", "motions": {}, "text": {},
          "conversations": conv("<General_System_Prompt>", "<Direct_Motion_Refinement_Template>", "<Goal_Motion>"),
          "candidate_motion_text": [{"motions": {"<Generated_Motion>": ref(n), "<Goal_Motion>": ref("000002")},
                                     "text": TM_TEXTS} for n in ("000005", "000006", "000007")]}  # fmt: skip
    c = write(tmp_path, "c.json", [tm])
    return f"{a}:{b}:{c}"


def test_example_set_over_several_files_is_seeded(tmp_path):
    from data.sft_examples import AnnotationExampleSet

    ds = AnnotationExampleSet(example_set_files(tmp_path), CropCodes(), PromptPools.builtin(), seed=1)
    assert len(ds) == 3 and [ds.example(i).task for i in range(3)] == [
        "t2m_direct_generation",
        "irmogen_cot",
        "tm2m_direct_refinement",
    ]
    assert len({ds.example(1, epoch=e).meta["num_attempts"] for e in range(30)}) > 1
    with pytest.raises(IndexError, match="out of range 0..2"):
        ds.example(3)


def test_example_set_items_do_not_depend_on_access_order_or_object(tmp_path):
    from data.sft_examples import AnnotationExampleSet, item_rng

    files, pools = example_set_files(tmp_path), PromptPools.builtin()
    keys = [(e, i) for e in range(4) for i in range(3)]
    first = AnnotationExampleSet(files, CropCodes(), pools, seed=5)
    forward = {(e, i): first.example(i, e).spans() for e, i in keys}

    shuffled = list(keys)
    random.Random(0).shuffle(shuffled)
    fresh = AnnotationExampleSet(files, CropCodes(), pools, seed=5)
    for e, i in shuffled[:5]:  # other items drawn first: no shared state moves on
        fresh.example(i, e)
    assert {(e, i): fresh.example(i, e).spans() for e, i in shuffled} == forward
    # a "worker" that only ever sees item 2 builds the same examples
    worker = AnnotationExampleSet(files, CropCodes(), pools, seed=5)
    assert [worker.example(2, e).spans() for e in range(4)] == [forward[(e, 2)] for e in range(4)]

    # epochs differ: templates/candidates and the crop offsets (marker codes 500..503) change
    for i in range(3):
        texts = [first.example(i, e).text for e in range(12)]
        assert len(set(texts)) > 1
    answers = {first.example(0, e).response for e in range(24)}
    assert answers == {span(500 + k, 88, 88, 301, 17) + "<eos>" for k in range(4)}
    # another seed gives another sequence
    other = AnnotationExampleSet(files, CropCodes(), pools, seed=6)
    assert [other.example(1, e).text for e in range(4)] != [first.example(1, e).text for e in range(4)]

    # text draws come from item_rng(seed, epoch, index) alone: a source that draws no crops gives
    # the same example up to the crop markers
    for e, i in keys:
        plain = build_example(first.annotations[i], MappingCodeSource(CODES), pools, item_rng(5, e, i))
        assert plain.text == re.sub(r"<Motion_50[0-3]>", "", first.example(i, e).text)


def test_stage2_without_assess_refine_and_without_plan(tmp_path):
    ann = read_annotation_file(write(tmp_path, "c.json", [COT_ENTRY])).annotations[0]
    src, pools = MappingCodeSource(CODES), PromptPools.builtin()
    ex = build_example(ann, src, pools, AllAttemptsRng(0), BuildOptions(assess_refine=False))
    analysis = "[analyze]The motion is a repeated single-leg hop with forward travel.[/analyze]\n"
    assert (
        ex.response
        == "<think>"
        + PLAN_A
        + analysis
        + PLAN_G
        + "[generate]"
        + span(88, 88, 301, 17)
        + "[/generate]\n</think><eos>"
    )
    ex = build_example(ann, src, pools, AllAttemptsRng(0), BuildOptions(plan=False))
    assert "[plan]" not in ex.response and ex.response.startswith("<think>" + analysis + "[generate]")
    with pytest.raises(ValueError, match="only defined without the answer block"):
        build_example(
            ann, src, pools, AllAttemptsRng(0), BuildOptions(assess_refine=False, answer_block=True)
        )


def test_substitute_order_and_period_merge():
    # One str.replace("..", ".") pass per text substitution, as the reference: "..." -> "..".
    assert substitute("Do <C>.", {"<C>": "a walk."}, ["<C>"]) == "Do a walk."
    assert substitute("Do <C>.", {"<C>": "a walk.."}, ["<C>"]) == "Do a walk.."
    # A caption that happens to contain a motion placeholder: training replaces motion keys first
    # (the caption's copy survives), evaluation replaces text first (then both copies are filled).
    values = {"<M>": "<Motion><Motion_3></Motion>", "<C>": "see <M>"}
    assert substitute("<M> <C>", values, ["<C>"]) == "<Motion><Motion_3></Motion> see <M>"
    assert substitute("<M> <C>", values, ["<C>"], text_first=True) == (
        "<Motion><Motion_3></Motion> see <Motion><Motion_3></Motion>"
    )
