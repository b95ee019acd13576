"""data.prompts: the template-file digest check through the configs that build examples, prompt errors."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from data.annotations import TASKS
from data.inspect_annotations import InspectConfig
from data.prompts import (
    BUILTIN_POOLS,
    ORIGINAL_TEMPLATE_SHA256,
    PromptError,
    PromptPoolError,
    PromptPools,
    build_cot_prompt,
    build_inference_prompt,
    unfilled_placeholders,
)

WRONG = "0123456789abcdef" * 4


@pytest.fixture
def template_file(tmp_path):
    """A prompt_template-2.json-shaped file (our pools, one extra T2M entry) and its sha256."""
    pools = {k: list(v) for k, v in BUILTIN_POOLS.items()}
    pools["<Text2Motion_Template>"].append("Animate this text: <Goal_Caption>.")
    path = tmp_path / "prompt_template-2.json"
    path.write_text(json.dumps(pools, indent=1))
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def config(path, sha: str | None) -> InspectConfig:
    return InspectConfig(
        dataset_root="root", codes_dir="codes", prompt_template=str(path), prompt_template_sha256=sha
    )


def test_matching_digest_is_accepted(template_file):
    path, digest = template_file
    pools = config(path, digest).prompt_pools()
    assert pools.source == str(path)
    assert pools.pools["<Text2Motion_Template>"][-1] == "Animate this text: <Goal_Caption>."
    assert len(pools.pools["<Text2Motion_Template>"]) == len(BUILTIN_POOLS["<Text2Motion_Template>"]) + 1
    # null skips the check; no file means the built-in pools
    assert config(path, None).prompt_pools().pools == pools.pools
    assert config("", digest).prompt_pools().pools == PromptPools.builtin().pools


def test_wrong_digest_is_refused_naming_both_digests(template_file):
    path, digest = template_file
    with pytest.raises(PromptPoolError) as info:
        config(path, WRONG).prompt_pools()
    msg = str(info.value)
    assert msg.startswith(
        f"{path}: sha256 {digest} differs from the expected prompt_template_sha256 {WRONG};"
    )
    assert "released" not in msg
    # the default expects the released file, and says so
    with pytest.raises(PromptPoolError, match=f"expected prompt_template_sha256 {ORIGINAL_TEMPLATE_SHA256} "):
        InspectConfig(dataset_root="root", codes_dir="codes", prompt_template=str(path)).prompt_pools()


def test_inspect_config_rejects_a_malformed_digest_and_sources():
    with pytest.raises(ValueError, match="prompt_template_sha256='abc' is not 64 lowercase hex digits"):
        InspectConfig(dataset_root="root", codes_dir="codes", prompt_template_sha256="abc")
    with pytest.raises(ValueError, match="exactly one of vq_checkpoint"):
        InspectConfig(dataset_root="root", codes_dir="codes", vq_checkpoint="vq.pth")


def test_inspect_cli_digest_flag(tmp_path, template_file, capsys):
    from data.vq_data import index_code_files
    from prepare.inspect_annotations import main

    path, digest = template_file
    root, codes = tmp_path / "root", tmp_path / "codes"
    (root / "new_joint_vecs").mkdir(parents=True)
    codes.mkdir()
    np.save(codes / "000002.npy", np.asarray([[5, 6]], np.int64))
    index_code_files(codes, root)  # hand-made code files (no motion file: counted as unchecked)
    entry = {"id": 0, "task": "t2m_direct_generation", "motions": {"<Goal_Motion>": {"motion_name": "000002", "f_tag": 0.0, "to_tag": 0.0}},
             "text": {"<Goal_Caption>": ["a man walks."]},
             "conversations": [{"from": "system", "value": "<General_System_Prompt>"}, {"from": "human", "value": "<Text2Motion_Template>"},
                               {"from": "gpt", "value": "<Goal_Motion>"}]}  # fmt: skip
    ann = tmp_path / TASKS["t2m_direct_generation"].file_name
    ann.parent.mkdir(parents=True)
    ann.write_text(json.dumps({"info": {}, "annotations": [entry]}))
    base = ["--dataset-root", str(root), "--codes-dir", str(codes), "--prompt-template", str(path), str(ann)]
    assert main([*base, "--prompt-template-sha256", digest]) == 0
    out = capsys.readouterr().out
    assert "task t2m_direct_generation: 1 examples" in out
    assert "1 code files not checked against their motion" in out
    assert main([*base, "--prompt-template-sha256", WRONG]) == 1
    err = capsys.readouterr().err
    assert f"sha256 {digest} differs from the expected prompt_template_sha256 {WRONG}" in err
    assert main([*base, "--prompt-template-sha256", "none"]) == 0


def test_inference_prompt_errors_and_cot_prompt():
    with pytest.raises(
        PromptError, match=r"unknown test task 't2x'; known: \['instructed_motion_refinement'"
    ):
        build_inference_prompt("t2x", {})
    with pytest.raises(PromptError, match=r"unsubstituted placeholder\(s\) \['<Goal_Caption>'\]"):
        build_inference_prompt("refine_instruction", {"<Generated_Motion>": "<Motion></Motion>"})
    assert unfilled_placeholders("<Motion><Motion_3></Motion> <Goal_Caption> <Goal_Caption>") == [
        "<Goal_Caption>"
    ]
    assert build_cot_prompt("a man walks.", template="Goal: <Goal_Caption>.") == (
        "You are an assistant who helps users understand or generate 3D human motion representations."
        "\n\nUser: Goal: a man walks.\n\n Response:"
    )
