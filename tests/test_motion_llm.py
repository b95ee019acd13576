"""The motion vocabulary, loading/saving checks, LoRA merging and the .pth converter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import Gemma2Config, Gemma2ForCausalLM

from data.motion_tokens import render_codes
from models.llm_checkpoint import CheckpointLayoutError, export_reference_state, import_reference_state
from models.motion_llm import (
    FUSED_ATTENTION,
    MotionLLMError,
    MotionLLMMeta,
    MotionVocab,
    VQIdentity,
    add_motion_tokens,
    apply_lora,
    load_motion_llm,
    lora_config,
    merge_lora,
    pick_attention,
    pick_dtype,
    resize_tied,
    save_motion_llm,
)
from prepare import convert_checkpoint
from tests.llm_fixtures import NB_CODE, random_codes, small_model, small_tokenizer, write_fake_vq


@pytest.fixture()
def tok():
    return small_tokenizer()


def test_motion_tokens_get_the_spec_ids_in_order(tok):
    n_text = len(tok)
    assert [tok.convert_ids_to_tokens(i) for i in range(3)] == ["<pad>", "<eos>", "<bos>"]
    vocab = add_motion_tokens(tok, NB_CODE)
    assert (vocab.n_text, vocab.size, len(tok)) == (n_text, n_text + 514, n_text + 514)
    assert tok.convert_tokens_to_ids("<Motion>") == n_text
    assert tok.convert_tokens_to_ids("</Motion>") == n_text + 1
    assert tok.convert_tokens_to_ids("<Motion_0>") == n_text + 2
    assert tok.convert_tokens_to_ids("<Motion_511>") == n_text + 513
    assert tok.padding_side == "left"
    assert "<Motion_7>" not in tok.all_special_tokens


def test_codes_ids_round_trip_and_match_the_tokenizer(tok):
    vocab = add_motion_tokens(tok, NB_CODE)
    codes = random_codes(49, seed=3)
    ids = vocab.codes_to_ids(codes)
    assert ids == [vocab.n_text + 2 + c for c in codes]
    assert vocab.ids_to_codes(ids) == codes
    assert vocab.ids_to_codes(vocab.span_ids(codes)) == codes
    # The spec's rendering tokenises to exactly the same ids (added tokens split out, no separators).
    assert tok(render_codes(codes), add_special_tokens=False)["input_ids"] == vocab.span_ids(codes)
    with pytest.raises(MotionLLMError, match="not motion code tokens"):
        vocab.ids_to_codes([5, *ids])


def test_decode_skipping_special_tokens_keeps_motion_tokens(tok):
    vocab = add_motion_tokens(tok, NB_CODE)
    text = "<bos>a person walks.\n\n Response:" + render_codes([5, 0, 511]) + "<eos>"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert ids[0] == 2 and ids[-1] == 1
    assert vocab.span_ids([5, 0, 511]) == ids[-6:-1]
    assert tok.decode(ids, skip_special_tokens=True) == "a person walks.\n\n Response:" + render_codes(
        [5, 0, 511]
    )


def test_bos_is_prepended_and_left_padding(tok):
    add_motion_tokens(tok, NB_CODE)
    batch = tok(["a person walks.", "a person walks forward then sits down."], padding=True)
    first = batch["input_ids"][0]
    assert first[0] == 0 and batch["attention_mask"][0][0] == 0  # left pad
    assert first[first.index(2) - 1] == 0 and batch["input_ids"][1][0] == 2  # <bos> after the pads


def test_tokenizer_size_checks(tok):
    with pytest.raises(MotionLLMError, match=r"expected n_text=256000"):
        tok.name_or_path = "checkpoints/gemma-2-2b-it"
        add_motion_tokens(tok, NB_CODE)
    tok.name_or_path = "tiny"
    with pytest.raises(MotionLLMError, match=r"expected n_text=123"):
        add_motion_tokens(tok, NB_CODE, expected_n_text=123)
    add_motion_tokens(tok, NB_CODE)
    with pytest.raises(MotionLLMError, match="already holds <Motion>"):
        add_motion_tokens(tok, NB_CODE)


def test_device_choices():
    assert pick_attention("cpu") == "eager"
    assert pick_attention("cpu", "sdpa") == "sdpa"
    assert pick_attention("cpu", config=Gemma2Config(attn_logit_softcapping=50.0)) == "eager"
    assert pick_attention("cpu", config=Gemma2Config(attn_logit_softcapping=None)) == FUSED_ATTENTION
    assert pick_dtype("cpu") == torch.float32
    assert pick_dtype("cuda", training=True) == torch.float32  # fp32 master weights under bf16 autocast
    assert pick_dtype("cuda") == torch.bfloat16


def _motion_llm(tmp_path: Path, nb_code: int = NB_CODE, vq: bytes = b"vq-a", seed: int = 0):
    tok = small_tokenizer()
    vocab = add_motion_tokens(tok, nb_code)
    model = small_model(len(tok) - nb_code - 2, seed=seed)
    resize_tied(model, vocab.size)
    vq_file = write_fake_vq(tmp_path / f"vq_{vq.decode()}.pth", vq)
    ident = VQIdentity.of(vq_file)
    meta = MotionLLMMeta(vocab.n_text, nb_code, ident.path, ident.sha256, base_model="test")
    return model, tok, meta, vq_file


def test_saved_folder_loads_with_plain_transformers_and_checks(tmp_path):
    model, tok, meta, vq_file = _motion_llm(tmp_path)
    out = tmp_path / "m"
    files = save_motion_llm(model, tok, meta, out)
    assert {"config.json", "model.safetensors", "motion_llm.json", "tokenizer.json"} <= set(files)
    loaded = load_motion_llm(out, nb_code=NB_CODE, vq=VQIdentity.of(vq_file))
    assert loaded.model.config.vocab_size == len(loaded.tokenizer) == meta.vocab.size
    assert loaded.model.get_output_embeddings().weight is loaded.model.get_input_embeddings().weight
    ids = torch.tensor([[2, 40, meta.n_text, meta.n_text + 9, meta.n_text + 1, 1]])
    torch.testing.assert_close(loaded.model(ids).logits, model(ids).logits)
    assert json.loads((out / "motion_llm.json").read_text())["vq_sha256"] == VQIdentity.of(vq_file).sha256


def test_missing_checkpoint_vocab_and_vq_mismatch_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no model at .*nowhere.*config.json"):
        load_motion_llm(tmp_path / "nowhere")
    model, tok, meta, _ = _motion_llm(tmp_path)
    save_motion_llm(model, tok, meta, tmp_path / "m")
    with pytest.raises(MotionLLMError, match=r"speaks nb_code=512 codes, the config says nb_code=256"):
        load_motion_llm(tmp_path / "m", nb_code=256)
    other = VQIdentity.of(write_fake_vq(tmp_path / "other_vq.pth", b"vq-b"))
    with pytest.raises(MotionLLMError, match=r"VQ-VAE .*vq_vq-a\.pth .*the config names .*other_vq\.pth"):
        load_motion_llm(tmp_path / "m", nb_code=NB_CODE, vq=other)
    # A folder whose tokenizer disagrees with motion_llm.json (e.g. hand-edited) is refused too.
    meta_json = json.loads((tmp_path / "m" / "motion_llm.json").read_text())
    meta_json["n_text"] += 1
    (tmp_path / "m" / "motion_llm.json").write_text(json.dumps(meta_json))
    with pytest.raises(
        MotionLLMError, match=r"tokenizer: \d+ tokens, expected n_text \+ 2 \+ nb_code = \d+ \+ 2 \+ 512"
    ):
        load_motion_llm(tmp_path / "m", nb_code=NB_CODE)


def test_merged_lora_gives_the_adapter_logits(tmp_path):
    model, *_ = _motion_llm(tmp_path)
    ids = torch.tensor([[2, 40, 41, 42, 43]])
    base_logits = model(ids).logits.detach()
    peft_model = apply_lora(model, lora_config(r=4, alpha=8, dropout=0.0))
    assert list(peft_model.peft_config) == ["shared"]
    torch.manual_seed(1)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.2)  # B starts at 0; make the adapter do something
    adapter_logits = peft_model(ids).logits.detach()
    assert (adapter_logits - base_logits).abs().max() > 1e-2
    merged = merge_lora(peft_model)
    assert not hasattr(merged, "peft_config")
    torch.testing.assert_close(merged(ids).logits, adapter_logits, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------------------
# .pth layouts


def _base_folder(tmp_path: Path, seed: int = 0) -> Path:
    tok = small_tokenizer()
    model = small_model(len(tok), seed=seed)
    out = tmp_path / "base"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _convert(*args: str) -> int:
    return convert_checkpoint.main([str(a) for a in args])


def test_pth_to_folder_to_pth_round_trip(tmp_path):
    base = _base_folder(tmp_path)
    # A "trained" motion LLM: the base with motion tokens and changed weights, written as the SFT writer does.
    trained, tok, meta, vq_file = _motion_llm(tmp_path, seed=7)
    sd = export_reference_state(trained, epoch=5, dtype=None)
    assert "lm_head.weight" not in sd["state_dict"] and "model.embed_tokens.weight" in sd["state_dict"]
    assert sd["state_dict"]["embeddings"].shape == (meta.vocab.size, 32)
    torch.save(sd, tmp_path / "sft.pth")

    assert _convert("--base", base, "--checkpoint", tmp_path / "sft.pth", "--out", tmp_path / "imported",
                    "--vq-checkpoint", vq_file, "--dtype", "float32") == 0  # fmt: skip
    report = json.loads((tmp_path / "imported" / "convert_report.json").read_text())
    assert report["layout"] == "full" and report["rows"] == "full" and not report["missing"]
    assert not report["unexpected"] and report["info"] == {"epoch": 5}
    loaded = load_motion_llm(tmp_path / "imported", nb_code=NB_CODE, vq=VQIdentity.of(vq_file))
    ids = torch.tensor([[2, 40, meta.n_text, meta.n_text + 9, 1]])
    torch.testing.assert_close(loaded.model(ids).logits, trained(ids).logits)

    assert _convert("--to-pth", "--checkpoint", tmp_path / "imported", "--out", tmp_path / "exported",
                    "--epoch", "5", "--dtype", "float32") == 0  # fmt: skip
    back = torch.load(tmp_path / "exported" / "motionllm_unified_sft_latest.pth", weights_only=True)
    assert back["epoch"] == 5 and set(back["state_dict"]) == set(sd["state_dict"])
    for k, v in sd["state_dict"].items():
        torch.testing.assert_close(back["state_dict"][k], v, msg=k)

    # The GRPO trainer's flat, llm.-prefixed layout imports to the same weights.
    flat = {f"llm.{k}": v for k, v in sd["state_dict"].items() if k not in ("embeddings", "lm_head")}
    flat["llm.vqvae.encoder.weight"] = torch.zeros(3)
    state = dict(flat)
    model2 = load_motion_llm(base, nb_code=NB_CODE).model
    model2, rep = import_reference_state(model2, state, meta.vocab)
    assert rep.unexpected == ["llm.vqvae.encoder.weight"] and not rep.missing
    torch.testing.assert_close(model2(ids).logits, trained(ids).logits)


def test_motion_agent_lora_is_merged_and_rows_copied(tmp_path):
    base = _base_folder(tmp_path)
    plain = load_motion_llm(base, nb_code=NB_CODE).model
    vocab = MotionVocab(plain.config.vocab_size - NB_CODE - 2, NB_CODE)
    g = torch.Generator().manual_seed(0)
    state: dict[str, torch.Tensor] = {}
    for i in range(2):
        for mod, (out_f, in_f) in {"self_attn.q_proj": (32, 32), "mlp.down_proj": (32, 64)}.items():
            for adapter, r in (("t2m", 4), ("m2t", 2)):
                pre = f"base_model.model.model.layers.{i}.{mod}"
                state[f"{pre}.lora_A.{adapter}.weight"] = torch.randn(r, in_f, generator=g)
                state[f"{pre}.lora_B.{adapter}.weight"] = torch.randn(out_f, r, generator=g)
    rows = torch.randn(NB_CODE + 2, 32, generator=g)
    state["embeddings"], state["lm_head"] = rows, rows.clone()
    torch.save(state, tmp_path / "motionllm.pth")

    assert _convert("--base", base, "--checkpoint", tmp_path / "motionllm.pth", "--out", tmp_path / "ma",
                    "--lora-alpha", "8", "--dtype", "float32") == 0  # fmt: skip
    report = json.loads((tmp_path / "ma" / "convert_report.json").read_text())
    assert report["layout"] == "motion_agent_lora" and len(report["loaded"]) == 8
    assert len(report["ignored"]) == 8 and all(".m2t." in k for k in report["ignored"])
    assert report["info"]["lora"] == {"r": 4, "alpha": 8.0, "targets": ["down_proj", "q_proj"]}
    got = load_motion_llm(tmp_path / "ma", nb_code=NB_CODE).model
    pre = "base_model.model.model.layers.1.mlp.down_proj"
    want = plain.model.layers[1].mlp.down_proj.weight + 2.0 * (
        state[f"{pre}.lora_B.t2m.weight"] @ state[f"{pre}.lora_A.t2m.weight"]
    )  # scaling alpha / r = 8 / 4
    torch.testing.assert_close(got.model.layers[1].mlp.down_proj.weight, want)
    emb = got.get_input_embeddings().weight
    torch.testing.assert_close(emb[vocab.n_text :], rows)
    torch.testing.assert_close(emb[: vocab.n_text], plain.get_input_embeddings().weight[: vocab.n_text])


def test_shape_mismatch_names_the_tensor(tmp_path, capsys):
    base = _base_folder(tmp_path)
    torch.save({"state_dict": {"model.norm.weight": torch.ones(7)}, "epoch": 0}, tmp_path / "bad.pth")
    assert _convert("--base", base, "--checkpoint", tmp_path / "bad.pth", "--out", tmp_path / "x") == 1
    assert "tensor model.norm.weight: checkpoint shape (7,), model shape (32,)" in capsys.readouterr().err
    assert _convert("--base", base, "--checkpoint", tmp_path / "none.pth", "--out", tmp_path / "y") == 1
    assert "checkpoint not found" in capsys.readouterr().err
    with pytest.raises(CheckpointLayoutError, match="merged model"):
        export_reference_state(apply_lora(small_model(600), lora_config(r=2, alpha=2, dropout=0.0)))


def test_fused_attention_equals_eager():
    """Left padding, a sliding window shorter than the input and an unpadded row: same logits as eager."""
    cfg = Gemma2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=8, sliding_window=5,
                       attn_logit_softcapping=None, pad_token_id=0)  # fmt: skip
    torch.manual_seed(0)
    eager = Gemma2ForCausalLM(cfg).eval()
    cfg_fused = Gemma2Config(**{**cfg.to_dict(), "attn_implementation": FUSED_ATTENTION})
    fused = Gemma2ForCausalLM(cfg_fused).eval()
    fused.load_state_dict(eager.state_dict())
    eager.config._attn_implementation = "eager"
    ids = torch.randint(3, 64, (2, 12))
    mask = torch.ones_like(ids)
    mask[0, :4] = 0
    ids[0, :4] = 0
    with torch.no_grad():
        a = eager(input_ids=ids, attention_mask=mask).logits
        b = fused(input_ids=ids, attention_mask=mask).logits
    assert fused.config._attn_implementation == FUSED_ATTENTION
    torch.testing.assert_close(b[0, 4:], a[0, 4:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b[1], a[1], atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # a soft-capped config is refused with the fix named
        fused.config.attn_logit_softcapping = 50.0
        for layer in fused.model.layers:
            layer.self_attn.attn_logit_softcapping = 50.0
        with pytest.raises(MotionLLMError, match="attn_logit_softcapping"):
            fused(input_ids=ids)
