"""A tiny Gemma-2 causal LM with a motion-token tokenizer, built in code for generation tests.

Stand-in for the project's motion LLM (``models/motion_llm.py``) at test scale: a word-level
``tokenizers`` vocabulary holding every word of the fixed prompt templates, Gemma's special ids
(``<pad>`` 0, ``<eos>`` 1, ``<bos>`` 2), ``<end_of_turn>``, and then ``<Motion>``, ``</Motion>``,
``<Motion_0>`` ... as ordinary added tokens, exactly as spec section 1.2 adds them. The model is a
random-weight ``Gemma2ForCausalLM`` (eager attention, float32) whose alternating sliding-window
layers are kept, so a small ``sliding_window`` makes the window bind in short tests.

``scripts/bench_generation.py`` builds the same thing on its own (entry points do not import tests).
"""

from __future__ import annotations

import re

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import Gemma2Config, Gemma2ForCausalLM, PreTrainedTokenizerFast

from data.motion_tokens import motion_token_strings
from data.prompts import NO_REFINEMENT, PLAN_SENTENCES, TEST_TEMPLATES

SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>", "<end_of_turn>")
CAPTION_WORDS = (
    "a person walks forward then turns left and waves his right hand slowly the man jumps up "
    "down runs in circle sits on chair kicks with foot raises arms arm leg steps back quickly "
    "move more faster higher lower lift bend knees"
).split()


def tiny_tokenizer(nb_code: int = 512, n_text: int = 680) -> PreTrainedTokenizerFast:
    """Word-level tokenizer: ``n_text`` text entries, then the ``nb_code + 2`` motion tokens.

    Text splits into words, single spaces/newlines and single punctuation marks; decoding
    concatenates, so template text round-trips exactly. ``<bos>`` is prepended on encode and the
    tokenizer pads on the left, as the reference's inference batches do.
    """
    words: list[str] = list(SPECIALS)
    texts = [s for pair in TEST_TEMPLATES.values() for s in pair]
    texts += [*PLAN_SENTENCES.values(), NO_REFINEMENT, "Response", "User", " ".join(CAPTION_WORDS)]
    for text in texts:
        for w in re.findall(r"\w+|[^\w]", text):
            if w not in words:
                words.append(w)
    filler = 0
    while len(words) < n_text:
        words.append(f"w{filler}")
        filler += 1
    if len(words) > n_text:
        raise ValueError(f"tiny tokenizer: the templates need {len(words)} words > n_text={n_text}")
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"\w+|[^\w]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
        padding_side="left",
    )
    fast.add_special_tokens({"additional_special_tokens": ["<end_of_turn>"]})
    fast.add_tokens(motion_token_strings(nb_code))
    return fast


def tiny_model(
    vocab_size: int,
    seed: int = 0,
    hidden: int = 64,
    layers: int = 2,
    sliding_window: int = 4096,
    attn_softcap: float | None = 50.0,
) -> Gemma2ForCausalLM:
    """Random-weight Gemma-2 (eager, float32, eval mode); layer 0 is a sliding-window layer.

    ``attn_softcap`` is the attention logit soft-cap (gemma-2's 50.0; the tiny demo models: None).
    """
    config = Gemma2Config(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=hidden // 4,
        query_pre_attn_scalar=hidden // 4,
        sliding_window=sliding_window,
        attn_logit_softcapping=attn_softcap,
        max_position_embeddings=4096,
        pad_token_id=0,
        eos_token_id=[1, 4],
        bos_token_id=2,
        attn_implementation="eager",
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Gemma2ForCausalLM(config)
    # Gemma's default init (std 0.02, zero norms) gives nearly flat logits, whose near-ties make
    # greedy comparisons fragile; larger weights give clear argmaxes.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.5 / p.shape[-1] ** 0.5)
    return model.eval()
