"""Batched generation with a KV cache, and the stage-1 refinement loop on top of it.

Spec: ``sft-and-inference.md`` sections 3.3-3.4 (prompts), 8.4 (decoding, stop ids, length limits)
and 8.5 (the instructed-refinement loop).

``BatchedGenerator`` runs many prompts at once through a Hugging Face causal LM (the motion LLM is a
Gemma-2 ``Gemma2ForCausalLM``):

* prompts are left-padded; the 2-D attention mask hides the pads and explicit ``position_ids``
  give every row its own positions (Gemma-2 derives positions from the cache length otherwise,
  which is wrong for padded rows);
* the cache is a ``transformers.DynamicCache`` built from the model config, so Gemma-2's
  sliding-window layers get ``DynamicSlidingWindowLayer`` (they keep the last ``window - 1``
  positions). Masks are built by the model from the 2-D mask in *index* space; because every row's
  pads sit before all of its real tokens, index distances equal token distances and the window is
  exact for every row;
* each row stops on its own stop ids or length budget (``max_new_tokens`` and/or ``max_length``,
  the total length with the prompt, counted per row without pads); finished rows leave the batch
  (``Cache.batch_select_indices``), so the remaining rows run at a smaller batch;
* greedy (equal to ``model.generate`` on each prompt alone, tested in float32) or sampling with
  temperature, top-k and top-p applied in that order as ``transformers`` does;
* multi-round use: ``keep_state=True`` returns each row's ``RowState`` (its tokens and key/value
  tensors without pads). Passing the states back with the next prompts reuses the cached keys and
  values of the longest common token prefix, so a conversation that grows by a turn only encodes
  the new turn, and a fresh prompt that shares its start with the previous one (the refinement
  loop's prompts share the system prompt, the motion and the caption) only encodes the rest.

Sampling guarantee: every row draws from its own ``torch.Generator`` seeded with the row's seed,
one draw per generated token, so a row's random stream does not depend on the other rows, on the
batch size, on the order or on the cache reuse. What it samples can still change with the batch
composition through floating-point differences of the logits (different padding gives different
matmul shapes), i.e. only where two candidates' cumulative probabilities straddle the drawn
number to within rounding error. Greedy outputs are the argmax of the same logits and are equal to
one-prompt-at-a-time generation up to such near-ties (the tests compare exact ids).

Backends: ``hf`` runs the model's own forward as described above. ``gemma2`` (picked by ``auto``
for a plain ``Gemma2ForCausalLM`` in eval mode on CPU or CUDA) runs ``models.gemma2_decode``: the
same computation over preallocated key/value tensors with few operations per step, the leading
tokens shared by the chunk's fresh prompts encoded once, and finished rows dropped lazily (once a
quarter of the batch has finished). Same cache layout, same ``RowState`` (states pass between the
backends), same outputs up to floating-point near-ties; the decoder re-reads the weights when the
parameters were updated in place (``Gemma2Decoder.is_stale``).

``refinement_loop`` is the stage-1 protocol of section 8.5 (``direct_generation-
instructed_refinement``) on top of the generator.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

from data.motion_tokens import (
    MOTION_START,
    ParseStatsTable,
    codes_or_fallback,
    parse_task_completion,
    render_codes,
)
from data.prompts import GC, GEN, NO_REFINEMENT, RI, build_inference_prompt
from models.gemma2_decode import PREFILL_PIECE, Gemma2Decoder, KVCache, unsupported_reason

logger = logging.getLogger(__name__)

GEMMA_STOP_IDS: tuple[int, ...] = (1, 107)
"""``<eos>`` and ``<end_of_turn>`` of the gemma-2 tokenizer: the backbone's generation-config stop
ids (spec section 8.4)."""
GEMMA_PAD_ID = 0


# --------------------------------------------------------------------------------------------------
# Decoding settings and the per-task limits of section 8.4


@dataclass(frozen=True)
class DecodeConfig:
    """How one ``generate`` call decodes; every row gets its own budget from these limits."""

    max_new_tokens: int | None = None
    """Most tokens generated per row (stop token included)."""
    max_length: int | None = None
    """Most tokens per row *with* its prompt (the reference's ``max_length``, section 8.4). The
    reference counts the left-padded batch length, so its limit depended on the batch; ours is per
    row. At least one of the two limits must be set; with both, the smaller budget wins."""
    min_new_tokens: int = 0
    """Stop ids are masked out until a row has this many tokens (as ``transformers`` does)."""
    stop_ids: tuple[int, ...] = GEMMA_STOP_IDS
    """A row finishes after generating any of these ids (kept in its completion)."""
    pad_id: int = GEMMA_PAD_ID
    """Id written into padded positions (never attended to)."""
    do_sample: bool = False
    """Sample instead of taking the argmax."""
    temperature: float = 1.0
    """Sampling temperature (> 0)."""
    top_k: int | None = 50
    """Keep the k most likely tokens; 50 is the ``transformers`` default the reference runs with."""
    top_p: float = 1.0
    """Nucleus sampling mass in (0, 1]; 1 disables it."""

    def __post_init__(self) -> None:
        if self.max_new_tokens is None and self.max_length is None:
            raise ValueError("DecodeConfig: set max_new_tokens or max_length (or both)")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ValueError(f"DecodeConfig: max_new_tokens={self.max_new_tokens} must be >= 1")
        if self.min_new_tokens < 0:
            raise ValueError(f"DecodeConfig: min_new_tokens={self.min_new_tokens} must be >= 0")
        if not self.temperature > 0:
            raise ValueError(f"DecodeConfig: temperature={self.temperature} must be > 0")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"DecodeConfig: top_k={self.top_k} must be >= 1 or None")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"DecodeConfig: top_p={self.top_p} must be in (0, 1]")
        object.__setattr__(self, "stop_ids", tuple(int(t) for t in self.stop_ids))

    def budget(self, prompt_len: int) -> int:
        """New tokens a row with ``prompt_len`` prompt tokens may generate (may be <= 0)."""
        limits = [self.max_new_tokens] if self.max_new_tokens is not None else []
        if self.max_length is not None:
            limits.append(self.max_length - prompt_len)
        return min(limits)


@dataclass(frozen=True)
class TaskDecoding:
    """Decoding facts of one eval task (spec section 8.4)."""

    max_length: int
    """Total length limit per generate call, prompt included."""
    forced_greedy: bool = False
    """The reference decodes greedily whatever ``--do-sample`` says."""


TASK_DECODING: dict[str, TaskDecoding] = {
    "t2m": TaskDecoding(2048),
    "t2m_motionagent": TaskDecoding(2048),
    "unified_mogen_cot_v2": TaskDecoding(2048),
    "unified_mogen_cot_v3": TaskDecoding(1300),
    "unified_mogen_cot_v3_wo_assess_refine": TaskDecoding(1300),
    "unified_mogen_cot_v3_initial_gen": TaskDecoding(1300),
    "unified_mogen_cot_v3_w_max_rounds": TaskDecoding(1300),
    "unified_mogen_cot_v3_random_flip": TaskDecoding(1300),
    "direct_generation-instructed_refinement": TaskDecoding(1024, forced_greedy=True),
    "analysis_guided_t2m": TaskDecoding(1024, forced_greedy=True),
    "analysis_generation-instructed_refinement": TaskDecoding(1024, forced_greedy=True),
    "m2t": TaskDecoding(256),
}
"""Eval task -> length limit and greedy forcing (section 8.4)."""


def decode_config_for_task(
    task: str,
    *,
    do_sample: bool = False,
    honour_sampling: bool = False,
    stop_ids: Sequence[int] = GEMMA_STOP_IDS,
    pad_id: int = GEMMA_PAD_ID,
    temperature: float = 1.0,
    top_k: int | None = 50,
    top_p: float = 1.0,
) -> DecodeConfig:
    """The ``DecodeConfig`` the reference uses for ``task``.

    Args:
        do_sample: the ``--do-sample`` flag; ignored by forced-greedy tasks unless
            ``honour_sampling`` (the multimodality variant of section 8.8 samples in every step).

    Raises:
        KeyError: unknown task (the message lists the known ones).
    """
    if task not in TASK_DECODING:
        raise KeyError(f"unknown eval task {task!r}; known: {sorted(TASK_DECODING)}")
    facts = TASK_DECODING[task]
    sample = do_sample and (honour_sampling or not facts.forced_greedy)
    return DecodeConfig(
        max_length=facts.max_length,
        stop_ids=tuple(stop_ids),
        pad_id=pad_id,
        do_sample=sample,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
    )


# --------------------------------------------------------------------------------------------------
# Results and per-row state


@dataclass
class RowState:
    """One row's sequence and its cached keys/values, without pads, for reuse in a later call.

    ``keys[l]``/``values[l]`` are ``(H_kv, n_cached, D)`` for ``tokens[:n_cached]`` in every layer
    (sliding-window layers included, see ``BatchedGenerator._build_cache``). The last generated
    token is in ``tokens`` but was never fed, so ``n_cached = len(tokens) - 1``.
    """

    tokens: list[int]
    n_cached: int
    keys: list[torch.Tensor]
    values: list[torch.Tensor]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))


@dataclass
class Generation:
    """The result of one row."""

    tokens: list[int]
    """Completion ids (prompt excluded); ends with the stop id when one ended it."""
    finish: Literal["stop", "length"]
    """``stop``: a stop id was generated; ``length``: the row's budget ran out."""
    prompt_len: int
    reused: int = 0
    """Prompt tokens whose keys/values came from the row's previous state."""
    state: RowState | None = None
    """Set with ``keep_state=True``."""


class LogitsHook(Protocol):
    """Edits next-token logits before the choice, e.g. to constrain or script outputs in tests.

    Called once per step with the prompts and completions so far of the rows still running (batch
    order) and their ``(B, V)`` float32 logits; returns logits of the same shape.
    """

    def __call__(
        self, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], logits: torch.Tensor
    ) -> torch.Tensor: ...


# --------------------------------------------------------------------------------------------------
# Sampling helpers


def warp_logits(logits: torch.Tensor, config: DecodeConfig) -> torch.Tensor:
    """Temperature, then top-k, then top-p on ``(B, V)`` logits (the ``transformers`` order)."""
    if config.temperature != 1.0:
        logits = logits / config.temperature
    if config.top_k is not None and config.top_k < logits.shape[-1]:
        kth = torch.topk(logits, config.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if config.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=False)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop = cum <= 1 - config.top_p
        drop[:, -1] = False  # always keep the most likely token
        logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    return logits


def row_seed(*parts: int | str) -> int:
    """A stable 63-bit seed from e.g. ``(base_seed, sample_index, call_index)``."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


# --------------------------------------------------------------------------------------------------
# The generator


@dataclass
class _Row:
    index: int
    prompt: list[int]
    budget: int
    state: RowState | None
    seed: int
    completion: list[int] = field(default_factory=list)
    reused: int = 0
    n_fed: int = 0  # real tokens whose keys/values are in the batch cache
    result: Generation | None = None
    shared: bool = False  # ``state`` is the chunk's shared prompt prefix, not the row's own


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _next_tokens(
    logits: torch.Tensor,
    config: DecodeConfig,
    step: int,
    stop: torch.Tensor,
    hook: LogitsHook | None,
    active: Sequence[_Row],
    generators: Sequence[torch.Generator] | None,
) -> torch.Tensor:
    """The ``(B,)`` next tokens of the running rows from their ``(B, V)`` float32 logits."""
    if step < config.min_new_tokens and len(config.stop_ids):
        logits[:, stop] = float("-inf")
    if hook is not None:
        logits = hook([r.prompt for r in active], [r.completion for r in active], logits)
    if config.do_sample:
        probs = warp_logits(logits, config).softmax(dim=-1)
        assert generators is not None
        return torch.cat([torch.multinomial(probs[b], 1, generator=g) for b, g in enumerate(generators)])
    return logits.argmax(dim=-1)


Backend = Literal["auto", "hf", "gemma2"]
BACKENDS: tuple[str, ...] = ("auto", "hf", "gemma2")
COMPACT_FRACTION = 0.25
"""The gemma2 backend drops finished rows from the batch once this fraction of its rows finished."""


class BatchedGenerator:
    """Batched KV-cache generation for a Hugging Face causal LM (see the module docstring).

    Args:
        model: a causal LM whose forward takes ``input_ids``, ``attention_mask``, ``position_ids``,
            a cache (``cache=`` or ``past_key_values=``) and returns ``.logits``; put it in eval mode.
        backend: ``hf`` runs the model's own forward with a ``DynamicCache``; ``gemma2`` runs
            ``models.gemma2_decode.Gemma2Decoder`` (a plain ``Gemma2ForCausalLM`` in eval mode on
            CPU or CUDA; several times faster for small models); ``auto`` (default) picks
            ``gemma2`` when the model qualifies at each ``generate`` call and ``hf`` otherwise
            (PEFT-wrapped or training-mode models, other architectures), logging the reason.
        prefill_piece: prompt tokens per forward of the ``gemma2`` backend.
        shared_prefix_min: the ``gemma2`` backend encodes the leading tokens that rows without a
            reusable state all share (the system prompt and template start) once for the chunk when
            they are at least this many.

    Raises:
        ValueError: unknown ``backend``, or ``backend="gemma2"`` for a model it cannot run.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        backend: Backend = "auto",
        *,
        prefill_piece: int = PREFILL_PIECE,
        shared_prefix_min: int = 4,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"BatchedGenerator: backend={backend!r}; use one of {BACKENDS}")
        self.model = model
        self.backend = backend
        self.prefill_piece = prefill_piece
        self.shared_prefix_min = shared_prefix_min
        self.last_backend: str | None = None
        """The backend the latest ``generate`` call ran ("hf" or "gemma2")."""
        self._decoder: Gemma2Decoder | None = None
        self._fallback_reason: str | None = None
        if backend == "gemma2":
            reason = unsupported_reason(model)
            if reason is not None:
                raise ValueError(f"BatchedGenerator: backend='gemma2' cannot run this model: {reason}")
        config = model.config
        self.config = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
        params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._keep_kw = "logits_to_keep" in params
        probe = DynamicCache(config=self.config)
        self.windows: list[int | None] = []
        for layer in probe.layers:
            if type(layer) not in (DynamicLayer, DynamicSlidingWindowLayer):
                raise ValueError(
                    f"BatchedGenerator: cache layer type {type(layer).__name__} of "
                    f"{type(model).__name__} is not supported (full or sliding-window attention only)"
                )
            self.windows.append(layer.sliding_window if layer.is_sliding else None)

    def _pick_backend(self) -> str:
        """``hf`` or ``gemma2`` for this call (re-reading the decoder's weights when they changed)."""
        if self.backend == "hf":
            return "hf"
        reason = unsupported_reason(self.model)
        if reason is None:
            if self._decoder is None:
                self._decoder = Gemma2Decoder(self.model, prefill_piece=self.prefill_piece)
            elif self._decoder.is_stale():
                logger.info("BatchedGenerator: the model's weights changed; the gemma2 decoder re-reads them")
                self._decoder.refresh()
            self._fallback_reason = None
            return "gemma2"
        if self.backend == "gemma2":
            raise ValueError(f"BatchedGenerator: backend='gemma2' cannot run this model: {reason}")
        if reason != self._fallback_reason:
            logger.info("BatchedGenerator: generating through transformers (backend hf): %s", reason)
            self._fallback_reason = reason
        return "hf"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ---- public API ------------------------------------------------------------------------------

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        config: DecodeConfig,
        *,
        seeds: Sequence[int] | None = None,
        states: Sequence[RowState | None] | None = None,
        keep_state: bool = False,
        logits_hook: LogitsHook | None = None,
        batch_size: int = 32,
    ) -> list[Generation]:
        """Generate a completion for every prompt.

        Args:
            prompts: token ids per row (``<bos>`` included, no padding).
            config: decoding settings and limits.
            seeds: one seed per row for sampling (default ``0, 1, ...``; pass ``row_seed(...)``
                values that name the sample to make draws independent of the call's composition).
            states: per row, a ``RowState`` from an earlier call (or ``None``): the cached prefix it
                shares with the new prompt is reused instead of encoded again.
            keep_state: return each row's ``RowState`` (holds its keys/values: memory grows with
                the number of rows kept).
            logits_hook: optional ``LogitsHook``.
            batch_size: rows per forward; prompts are sorted by length and cut into chunks.

        Returns:
            one ``Generation`` per prompt, in input order.
        """
        n = len(prompts)
        if seeds is not None and len(seeds) != n:
            raise ValueError(f"generate: {len(seeds)} seeds for {n} prompts")
        if states is not None and len(states) != n:
            raise ValueError(f"generate: {len(states)} states for {n} prompts")
        if batch_size < 1:
            raise ValueError(f"generate: batch_size={batch_size} must be >= 1")
        rows = []
        for i, p in enumerate(prompts):
            if len(p) == 0:
                raise ValueError(f"generate: prompt #{i} is empty (it needs at least <bos>)")
            rows.append(
                _Row(
                    index=i,
                    prompt=[int(t) for t in p],
                    budget=config.budget(len(p)),
                    state=states[i] if states is not None else None,
                    seed=int(seeds[i]) if seeds is not None else i,
                )
            )
        too_long = [r for r in rows if r.budget < 1]
        for r in too_long:
            r.result = Generation(tokens=[], finish="length", prompt_len=len(r.prompt))
        if too_long:
            logger.warning(
                "generate: %d prompt(s) already reach max_length=%s (first: #%d, %d tokens); they get "
                "empty completions",
                len(too_long),
                config.max_length,
                too_long[0].index,
                len(too_long[0].prompt),
            )
        todo = sorted((r for r in rows if r.result is None), key=lambda r: -len(r.prompt))
        backend = self._pick_backend() if todo else self.last_backend
        self.last_backend = backend
        run = self._run_chunk_gemma2 if backend == "gemma2" else self._run_chunk
        with torch.inference_mode():
            for start in range(0, len(todo), batch_size):
                run(todo[start : start + batch_size], config, keep_state, logits_hook)
        return [r.result for r in rows]  # type: ignore[misc]

    # ---- internals ------------------------------------------------------------------------------

    @staticmethod
    def _complete(state: RowState) -> bool:
        """Does ``state`` hold keys/values for all its cached tokens in every layer?"""
        return all(k.shape[1] == state.n_cached for k in state.keys)

    def _plan_reuse(self, rows: list[_Row]) -> int:
        """Choose each row's reused prefix so all rows' pads come first; return the chunk length.

        A row whose new tokens are fewer than the longest row's gives back its last cached tokens
        to the prefill chunk (they are re-encoded at no extra cost, the chunk is padded to that
        length anyway), so no row has pads between its cached and its new tokens: index distances
        stay token distances, which sliding-window masks rely on.
        """
        reuse = []
        for r in rows:
            c = 0
            if r.state is not None and self._complete(r.state):
                c = _common_prefix(r.prompt, r.state.tokens[: r.state.n_cached])
                c = min(c, len(r.prompt) - 1)  # at least one token is fed to get logits
            reuse.append(c)
        m = max(len(r.prompt) - c for r, c in zip(rows, reuse, strict=True))
        for r, c in zip(rows, reuse, strict=True):
            r.reused = max(0, c - (m - (len(r.prompt) - c)))
        return m

    def _build_cache(self, rows: list[_Row], width: int, record: bool) -> DynamicCache:
        """A cache of ``width`` positions per row: pads, then the reused tokens (right-aligned).

        With ``record`` (states are kept), sliding-window layers record their whole past
        (``activate_past_recording``): attention still sees only the window, but every row's state
        stays complete, so a later call can reuse any prefix of it. Where the window does not bind
        (gemma-2: 4096 tokens, more than any eval task's ``max_length``) this costs nothing.
        """
        cache = DynamicCache(config=self.config)
        if record:
            cache.activate_past_recording()
        if width == 0:
            return cache
        ref = next(r.state for r in rows if r.reused > 0)
        for layer, cache_layer in enumerate(cache.layers):
            h, _, d = ref.keys[layer].shape
            ks = ref.keys[layer].new_zeros((len(rows), h, width, d))
            vs = ref.values[layer].new_zeros((len(rows), h, width, d))
            for b, r in enumerate(rows):
                if r.reused > 0:
                    st = r.state
                    assert st is not None
                    ks[b, :, width - r.reused :] = st.keys[layer][:, : r.reused]
                    vs[b, :, width - r.reused :] = st.values[layer][:, : r.reused]
            cache_layer.update(ks, vs)
        return cache

    def _extract_state(self, cache: DynamicCache, mask: torch.Tensor, b: int, row: _Row) -> RowState:
        keys, values = [], []
        for layer in cache.layers:
            s = layer.keys.shape[2]
            real = mask[b, -s:].bool()
            keys.append(layer.keys[b][:, real].clone())
            values.append(layer.values[b][:, real].clone())
        tokens = row.prompt + row.completion
        assert row.n_fed == len(tokens) - 1
        return RowState(tokens=tokens, n_cached=row.n_fed, keys=keys, values=values)

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, cache: DynamicCache):
        kwargs = {self._cache_kw: cache, "use_cache": True}
        if self._keep_kw:
            kwargs["logits_to_keep"] = 1
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, **kwargs)
        return out.logits[:, -1, :].float()

    def _run_chunk(
        self, rows: list[_Row], config: DecodeConfig, keep_state: bool, hook: LogitsHook | None
    ) -> None:
        device = self.device
        m = self._plan_reuse(rows)
        width = max(r.reused for r in rows)
        cache = self._build_cache(rows, width, record=keep_state)
        ids = torch.full((len(rows), m), config.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width + m), dtype=torch.long)
        pos = torch.zeros((len(rows), m), dtype=torch.long)
        for b, r in enumerate(rows):
            feed = r.prompt[r.reused :]
            ids[b, m - len(feed) :] = torch.tensor(feed)
            mask[b, width - r.reused : width] = 1
            mask[b, width + m - len(feed) :] = 1
            pos[b, m - len(feed) :] = torch.arange(r.reused, len(r.prompt))
            r.n_fed = len(r.prompt)
        ids, mask, pos = ids.to(device), mask.to(device), pos.to(device)
        logits = self._forward(ids, mask, pos, cache)
        next_pos = pos[:, -1:] + 1

        generators = None
        if config.do_sample:
            generators = [torch.Generator(device=device).manual_seed(r.seed) for r in rows]
        stop = torch.tensor(config.stop_ids, dtype=torch.long, device=device)
        active = list(rows)
        step = 0
        while True:
            chosen = _next_tokens(logits, config, step, stop, hook, active, generators)
            is_stop = torch.isin(chosen, stop)
            chosen_list, stop_list = chosen.tolist(), is_stop.tolist()
            keep: list[int] = []
            for b, r in enumerate(active):
                r.completion.append(chosen_list[b])
                if stop_list[b] or len(r.completion) >= r.budget:
                    r.result = Generation(
                        tokens=r.completion,
                        finish="stop" if stop_list[b] else "length",
                        prompt_len=len(r.prompt),
                        reused=r.reused,
                        state=self._extract_state(cache, mask, b, r) if keep_state else None,
                    )
                else:
                    keep.append(b)
            step += 1
            if not keep:
                break
            if len(keep) < len(active):
                index = torch.tensor(keep, device=device)
                cache.batch_select_indices(index)
                mask, next_pos, chosen = mask[index], next_pos[index], chosen[index]
                active = [active[b] for b in keep]
                if generators is not None:
                    generators = [generators[b] for b in keep]
            mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)
            logits = self._forward(chosen[:, None], mask, next_pos, cache)
            next_pos = next_pos + 1
            for r in active:
                r.n_fed += 1

    # ---- the gemma2 backend ---------------------------------------------------------------------

    def _share_prefix(self, rows: list[_Row]) -> None:
        """Encode the leading tokens shared by the rows without a usable state once (batch 1).

        Those rows get the prefix as their ``state`` (flagged ``shared``), so the chunk's reuse
        planning copies its keys/values into every row instead of encoding them per row.
        """
        fresh = [r for r in rows if r.state is None or not self._complete(r.state)]
        if len(fresh) < 2:
            return
        first = fresh[0].prompt
        p = min(len(r.prompt) for r in fresh) - 1  # at least one token of each row is fed
        for r in fresh[1:]:
            p = _common_prefix(first[:p], r.prompt[:p])
        if p < max(1, self.shared_prefix_min):
            return
        decoder = self._decoder
        assert decoder is not None
        cache = decoder.new_cache(1, p)
        ids = torch.tensor([first[:p]], device=decoder.device)
        decoder.prefill(cache, ids, None, torch.arange(p, device=decoder.device)[None], logits=False)
        keys, values = cache.row(0)
        state = RowState(tokens=first[:p], n_cached=p, keys=keys, values=values)
        for r in fresh:
            r.state, r.shared = state, True

    def _gemma2_cache(self, rows: list[_Row], width: int, extra: int) -> KVCache:
        """The decoder's cache with ``width`` slots filled: pads, then each row's reused tokens."""
        decoder = self._decoder
        assert decoder is not None
        cache = decoder.new_cache(len(rows), width + extra)
        for layer in range(len(cache.keys)):
            cache.keys[layer][:, :, :width].zero_()  # pads must hold finite numbers
            cache.values[layer][:, :, :width].zero_()
            for b, r in enumerate(rows):
                if r.reused > 0:
                    st = r.state
                    assert st is not None
                    cache.keys[layer][b, :, width - r.reused : width] = st.keys[layer][:, : r.reused]
                    cache.values[layer][b, :, width - r.reused : width] = st.values[layer][:, : r.reused]
        for b, r in enumerate(rows):
            cache.valid[b, width - r.reused : width] = True
        cache.length = width
        cache.dense = all(r.reused == width for r in rows)
        return cache

    def _run_chunk_gemma2(
        self, rows: list[_Row], config: DecodeConfig, keep_state: bool, hook: LogitsHook | None
    ) -> None:
        """``_run_chunk`` on ``Gemma2Decoder``; finished rows leave the batch lazily.

        A finished row stays in the batch (fed a pad, its logits ignored) until at least
        ``COMPACT_FRACTION`` of the batch has finished; then the cache is compacted at once, which
        costs one copy of the cache instead of one per finishing step.
        """
        decoder = self._decoder
        assert decoder is not None
        device = decoder.device
        decoder.ensure_positions(max(len(r.prompt) + r.budget for r in rows))
        self._share_prefix(rows)
        m = self._plan_reuse(rows)
        width = max(r.reused for r in rows)
        cache = self._gemma2_cache(rows, width, m + min(max(r.budget for r in rows), 64))
        ids = torch.full((len(rows), m), config.pad_id, dtype=torch.long)
        valid = torch.zeros((len(rows), m), dtype=torch.bool)
        pos = torch.zeros((len(rows), m), dtype=torch.long)
        for b, r in enumerate(rows):
            feed = r.prompt[r.reused :]
            ids[b, m - len(feed) :] = torch.tensor(feed)
            valid[b, m - len(feed) :] = True
            pos[b, m - len(feed) :] = torch.arange(r.reused, len(r.prompt))
            r.n_fed = len(r.prompt)
        logits = decoder.prefill(cache, ids.to(device), valid.to(device), pos.to(device))
        assert logits is not None
        next_pos = pos[:, -1].to(device) + 1

        generators = None
        if config.do_sample:
            generators = {r.index: torch.Generator(device=device).manual_seed(r.seed) for r in rows}
        stop = torch.tensor(config.stop_ids, dtype=torch.long, device=device)
        batch: list[_Row | None] = list(rows)  # None: finished, awaiting compaction
        live = list(range(len(rows)))  # batch slots of the running rows
        live_index: torch.Tensor | None = None  # None: every slot runs
        step = 0
        while True:
            active = [batch[b] for b in live]
            view = logits if live_index is None else logits.index_select(0, live_index)
            gens = None if generators is None else [generators[r.index] for r in active]  # type: ignore[union-attr]
            chosen = _next_tokens(view, config, step, stop, hook, active, gens)  # type: ignore[arg-type]
            chosen_list = chosen.tolist()
            stop_list = torch.isin(chosen, stop).tolist()
            still = []
            for j, b in enumerate(live):
                r = batch[b]
                assert r is not None
                r.completion.append(chosen_list[j])
                if stop_list[j] or len(r.completion) >= r.budget:
                    state = None
                    if keep_state:
                        # pads come first: the row's tokens fill the last n_fed slots
                        keys, values = cache.tail(b, r.n_fed)
                        tokens = r.prompt + r.completion
                        assert r.n_fed == len(tokens) - 1 == keys[0].shape[1]
                        state = RowState(tokens=tokens, n_cached=r.n_fed, keys=keys, values=values)
                    r.result = Generation(
                        tokens=r.completion,
                        finish="stop" if stop_list[j] else "length",
                        prompt_len=len(r.prompt),
                        reused=0 if r.shared else r.reused,
                        state=state,
                    )
                    batch[b] = None
                else:
                    still.append(j)
            step += 1
            if not still:
                break
            if len(still) < len(live):
                chosen = chosen[torch.tensor(still, device=device)]
                live = [live[j] for j in still]
                if len(batch) - len(live) >= COMPACT_FRACTION * len(batch):
                    keep = torch.tensor(live, device=device)
                    cache.select(keep)
                    next_pos = next_pos.index_select(0, keep)
                    batch = [batch[b] for b in live]
                    live = list(range(len(batch)))
                    live_index = None
                else:
                    live_index = torch.tensor(live, device=device)
            if live_index is None:
                feed = chosen
            else:
                feed = torch.full((len(batch),), config.pad_id, dtype=torch.long, device=device)
                feed[live_index] = chosen
            logits = decoder.step(cache, feed, next_pos)
            next_pos = next_pos + 1
            for b in live:
                batch[b].n_fed += 1  # type: ignore[union-attr]


# --------------------------------------------------------------------------------------------------
# The stage-1 refinement loop (section 8.5)


class PromptTokenizer(Protocol):
    """What the refinement loop needs from a Hugging Face tokenizer."""

    def __call__(self, text: list[str]) -> dict: ...

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = ...) -> str: ...

    def convert_tokens_to_ids(self, token: str) -> int: ...


@dataclass
class RefinementStep:
    """One generate call of the loop for one sample."""

    round: int
    """0 for the first generation, r >= 1 for refinement round r."""
    kind: Literal["t2m", "refine_instruction", "instructed_motion_refinement"]
    prompt: str
    completion: str
    """Decoded completion, special tokens skipped (motion tokens are not special and stay)."""
    completion_ids: list[int]
    codes: list[int] | None = None
    """Parsed motion (after the empty -> ``[0]`` fallback) for the motion calls."""


@dataclass
class RefinementResult:
    """One sample's trace through the loop."""

    caption: str
    motions: list[list[int]]
    """Accepted motion codes per round: ``motions[0]`` from round 0, ``motions[r]`` from round r."""
    steps: list[RefinementStep]
    stopped_at: int | None = None
    """Round whose instruction was exactly ``"No refinements needed."`` (None: never)."""

    @property
    def final(self) -> list[int]:
        """The motion that is scored: the last accepted one."""
        return self.motions[-1]

    @property
    def rounds_used(self) -> int:
        """Refinements that were applied (0 .. max_rounds)."""
        return len(self.motions) - 1


def _motion_value(codes: Sequence[int], nb_code: int) -> str:
    # The spec inserts the previous completion's text up to its first </Motion>; for a well-formed
    # forced generation that is exactly these codes. For malformed output we insert the motion we
    # keep and score (the parsed codes), not the raw text.
    return render_codes(codes, nb_code)


def refinement_loop(
    generator: BatchedGenerator,
    tokenizer: PromptTokenizer,
    captions: Sequence[str],
    *,
    max_rounds: int = 5,
    decode: DecodeConfig | None = None,
    task: str = "direct_generation-instructed_refinement",
    first_captions: Sequence[str] | None = None,
    seed: int = 0,
    stats: ParseStatsTable | None = None,
    nb_code: int = 512,
    batch_size: int = 32,
    reuse_cache: bool = True,
    logits_hook: LogitsHook | None = None,
    stop_sentence: str = NO_REFINEMENT,
    on_round: Callable[[int, list[RefinementResult]], None] | None = None,
) -> list[RefinementResult]:
    """The instructed-refinement loop of stage-1 models (spec section 8.5), batched.

    Round 0 generates with the ``t2m`` prompt (forced ``<Motion>``). Each round ``r = 1 ..
    max_rounds`` asks every still-refining sample for an instruction with the ``refine_instruction``
    prompt (its previous motion wrapped in ``<Motion>...</Motion>``); a sample whose decoded
    instruction is exactly ``stop_sentence`` stops for good and keeps its motion; the others are
    regenerated with the ``instructed_motion_refinement`` prompt (forced ``<Motion>``) and take the
    new motion. Only samples still refining are generated (the reference generates the whole batch
    and discards the rest, which gives the same motions).

    Args:
        generator: the batched generator of the motion LLM.
        tokenizer: its tokenizer (adds ``<bos>``; the motion tokens are added tokens).
        captions: goal caption per sample.
        max_rounds: most refinement rounds (``--max-refine-round``, 5).
        decode: decoding settings (default: the task's, greedy, max_length 1024 per call).
        task: eval task name used for the parse statistics keys.
        first_captions: caption of the round-0 prompt when it differs (the analysis-guided variant).
        seed: base seed; each (sample, call) gets ``row_seed(seed, sample, call)``.
        stats: parse counters, filled per (task, round).
        reuse_cache: reuse each sample's cached prompt prefix from its previous call.
        logits_hook: passed to every generate call (tests script outputs with it).
        on_round: called after each round with the round index and the results so far.

    Returns:
        one ``RefinementResult`` per caption.
    """
    if max_rounds < 0:
        raise ValueError(f"refinement_loop: max_rounds={max_rounds} must be >= 0")
    if first_captions is not None and len(first_captions) != len(captions):
        raise ValueError(
            f"refinement_loop: {len(first_captions)} first_captions for {len(captions)} captions"
        )
    decode = decode or decode_config_for_task(task)
    base_id = tokenizer.convert_tokens_to_ids(MOTION_START)
    stats = stats if stats is not None else ParseStatsTable()
    results = [RefinementResult(caption=c, motions=[], steps=[]) for c in captions]
    states: list[RowState | None] = [None] * len(captions)
    call = 0

    def run(
        kind: Literal["t2m", "refine_instruction", "instructed_motion_refinement"],
        rnd: int,
        samples: list[int],
        values: list[dict[str, str]],
    ) -> list[RefinementStep]:
        nonlocal call
        prompts = [build_inference_prompt(kind, v) for v in values]
        ids = tokenizer(prompts)["input_ids"]
        gens = generator.generate(
            ids,
            decode,
            seeds=[row_seed(seed, s, call) for s in samples],
            states=[states[s] for s in samples] if reuse_cache else None,
            keep_state=reuse_cache,
            logits_hook=logits_hook,
            batch_size=batch_size,
        )
        call += 1
        steps = []
        for s, prompt, g in zip(samples, prompts, gens, strict=True):
            states[s] = g.state
            codes = None
            if kind != "refine_instruction":
                parse = parse_task_completion(
                    kind, g.tokens, base_id=base_id, stop_ids=decode.stop_ids, nb_code=nb_code
                )
                codes = codes_or_fallback(parse, stats.get(task, rnd))
            text = tokenizer.decode(
                [t for t in g.tokens if t not in decode.stop_ids], skip_special_tokens=True
            )
            step = RefinementStep(rnd, kind, prompt, text, list(g.tokens), codes)
            results[s].steps.append(step)
            steps.append(step)
        return steps

    everyone = list(range(len(captions)))
    first = first_captions if first_captions is not None else captions
    for s, step in zip(everyone, run("t2m", 0, everyone, [{GC: c} for c in first]), strict=True):
        assert step.codes is not None
        results[s].motions.append(step.codes)
    if on_round is not None:
        on_round(0, results)
    active = everyone
    for rnd in range(1, max_rounds + 1):
        values = [{GEN: _motion_value(results[s].final, nb_code), GC: captions[s]} for s in active]
        instructions = run("refine_instruction", rnd, active, values)
        still = []
        for s, v, step in zip(active, values, instructions, strict=True):
            if step.completion == stop_sentence:
                results[s].stopped_at = rnd
                states[s] = None  # never generated again
            else:
                still.append((s, {**v, RI: step.completion}))
        active = [s for s, _ in still]
        if not active:
            break
        refined = run("instructed_motion_refinement", rnd, active, [v for _, v in still])
        for s, step in zip(active, refined, strict=True):
            assert step.codes is not None
            results[s].motions.append(step.codes)
        if on_round is not None:
            on_round(rnd, results)
    return results
