"""A fast incremental decoder for plain ``Gemma2ForCausalLM`` models (inference only).

``transformers`` runs every decoding step through its generic machinery (mask builders, cache
objects, per-layer dispatch), which costs far more than the arithmetic of a small model. This
module reads the weights of a Hugging Face Gemma-2 model and runs the same computation with few
tensor operations per step:

* one preallocated key/value tensor pair per layer, ``[batch, kv_heads, capacity, head_dim]``, grown
  by doubling when full; a ``[batch, capacity]`` validity mask marks the slots that hold real tokens
  (pads are never attended to);
* grouped-query attention without repeating keys/values: the queries of one key/value head are
  viewed as ``[batch, kv_heads, groups * q, head_dim]``;
* on CPU the q/k/v projections (and the MLP's gate/up projections while their copy is small) are
  stacked into one matmul each;
* Gemma-2's conventions, as in ``transformers.models.gemma2.modeling_gemma2``: embeddings scaled by
  ``sqrt(hidden_size)`` in the model dtype, RMSNorm with ``(1 + weight)``, pre/post attention and
  feed-forward norms, ``gelu_pytorch_tanh`` gated MLP, rotary embeddings from the model's own
  rotary module, queries scaled by ``query_pre_attn_scalar ** -0.5``, attention logit soft-capping
  when ``config.attn_logit_softcapping`` is set (otherwise torch's fused
  ``scaled_dot_product_attention``), final logit soft-capping when
  ``config.final_logit_softcapping`` is set, and a sliding window on the layers whose
  ``config.layer_types`` entry is ``sliding_attention``: a query at slot ``i`` sees slots
  ``j > i - sliding_window`` (``masking_utils.sliding_window_overlay``).

Slots are *indices* into the cache. As in ``models.generation``, every row's pads come before its
real tokens, so index distances equal token distances and the sliding window is exact; positions
(for the rotary embedding) are given per row and per token by the caller.

The decoder copies some weights (stacked projections, ``1 + weight`` norms). When the model's
weights change (a GRPO update), call :meth:`Gemma2Decoder.refresh`; :meth:`Gemma2Decoder.is_stale`
notices in-place updates through the parameters' version counters (not writes through ``.data``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

PREFILL_PIECE = 32
"""Prompt tokens encoded per forward (bounds the ``[B, heads, piece, length]`` score tensor)."""
STACK_LIMIT_BYTES = 1 << 30
"""The MLP's gate/up weights are stacked (copied) only while the copy stays below this size."""


class Gemma2DecodeError(ValueError):
    """The model cannot be run by :class:`Gemma2Decoder` (the message says why)."""


def unsupported_reason(model: nn.Module) -> str | None:
    """Why ``model`` cannot be decoded by :class:`Gemma2Decoder`, or ``None`` when it can.

    Supported: an exact ``Gemma2ForCausalLM`` in eval mode on CPU or CUDA, floating-point weights,
    plain ``nn.Linear`` projections without bias (no PEFT adapters, no quantized layers), the
    ``gelu_pytorch_tanh`` activation and the default rotary embedding.
    """
    from transformers import Gemma2ForCausalLM
    from transformers.models.gemma2.modeling_gemma2 import Gemma2RMSNorm

    if type(model) is not Gemma2ForCausalLM:
        return f"{type(model).__name__} is not a plain Gemma2ForCausalLM"
    if model.training:
        return "the model is in training mode"
    config = model.config
    if getattr(config, "hidden_activation", None) != "gelu_pytorch_tanh":
        return f"hidden_activation={getattr(config, 'hidden_activation', None)!r} (only gelu_pytorch_tanh)"
    rope = getattr(config, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        return f"rope_type={rope.get('rope_type')!r} (only the default rotary embedding)"
    params = list(model.parameters())
    if not params:
        return "the model has no parameters"
    device = params[0].device
    if device.type not in ("cpu", "cuda"):
        return f"weights on {device} (only cpu or cuda)"
    for p in params:
        if p.device != device:
            return f"weights on several devices ({device}, {p.device})"
        if not p.dtype.is_floating_point:
            return f"non-floating-point weights ({p.dtype}; quantized?)"
    for name, module in model.named_modules():
        if hasattr(module, "_hf_hook"):
            return f"module {name or 'model'} has an accelerate hook (offloading)"
        if name.endswith(("_proj", "lm_head")) and type(module) is not nn.Linear:
            return f"module {name} is a {type(module).__name__}, not a plain nn.Linear (adapters?)"
        if isinstance(module, nn.Linear) and module.bias is not None:
            return f"module {name} has a bias"
        if name.endswith("norm") and type(module) is not Gemma2RMSNorm:
            return f"module {name} is a {type(module).__name__}, not Gemma2RMSNorm"
    return None


@dataclass
class KVCache:
    """Keys/values of a batch in preallocated tensors (see the module docstring).

    ``keys[l]``/``values[l]`` are ``[B, H_kv, capacity, D]``; slots ``[0, length)`` are in use and
    ``valid[b, j]`` says whether slot ``j`` of row ``b`` holds a real token.
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    valid: torch.Tensor
    length: int = 0
    dense: bool = True
    """No pads among the used slots of any row (no attention mask needed when decoding)."""

    @property
    def batch(self) -> int:
        return self.valid.shape[0]

    @property
    def capacity(self) -> int:
        return self.valid.shape[1]

    def reserve(self, extra: int) -> None:
        """Make room for ``extra`` more slots (capacity doubles until it fits)."""
        need = self.length + extra
        if need <= self.capacity:
            return
        cap = max(self.capacity, 1)
        while cap < need:
            cap *= 2
        n = self.length
        for store in (self.keys, self.values):
            for i, t in enumerate(store):
                grown = t.new_empty((t.shape[0], t.shape[1], cap, t.shape[3]))
                grown[:, :, :n] = t[:, :, :n]
                store[i] = grown
        valid = self.valid.new_zeros((self.batch, cap))
        valid[:, :n] = self.valid[:, :n]
        self.valid = valid

    def select(self, index: torch.Tensor) -> None:
        """Keep the rows ``index`` (in that order)."""
        self.keys = [k.index_select(0, index) for k in self.keys]
        self.values = [v.index_select(0, index) for v in self.values]
        self.valid = self.valid.index_select(0, index)
        if not self.dense:
            self.dense = bool(self.valid[:, : self.length].all())

    def tail(self, b: int, n: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Copies of row ``b``'s keys and values in the last ``n`` used slots: ``[H_kv, n, D]``."""
        lo, hi = self.length - n, self.length
        return [k[b, :, lo:hi].clone() for k in self.keys], [v[b, :, lo:hi].clone() for v in self.values]

    def row(self, b: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Row ``b``'s keys and values without pads: per layer ``[H_kv, n_real, D]`` copies."""
        real = self.valid[b, : self.length]
        keys = [k[b, :, : self.length][:, real] for k in self.keys]
        values = [v[b, :, : self.length][:, real] for v in self.values]
        return keys, values


@dataclass
class _Layer:
    w_in: torch.Tensor  # 1 + input_layernorm.weight
    w_post_attn: torch.Tensor
    w_pre_ff: torch.Tensor
    w_post_ff: torch.Tensor
    qkv: torch.Tensor | None  # stacked [q; k; v] weight, or None: separate
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    o: torch.Tensor
    gate_up: torch.Tensor | None
    gate: torch.Tensor
    up: torch.Tensor
    down: torch.Tensor
    window: int | None


class Gemma2Decoder:
    """Incremental Gemma-2 forward over a :class:`KVCache` (see the module docstring).

    Args:
        model: a plain ``Gemma2ForCausalLM`` in eval mode (see :func:`unsupported_reason`).
        prefill_piece: prompt tokens per forward when encoding prompts.

    Raises:
        Gemma2DecodeError: the model is not supported (the message says why).
    """

    def __init__(self, model: nn.Module, prefill_piece: int = PREFILL_PIECE) -> None:
        reason = unsupported_reason(model)
        if reason is not None:
            raise Gemma2DecodeError(f"Gemma2Decoder: {reason}")
        if prefill_piece < 1:
            raise Gemma2DecodeError(f"Gemma2Decoder: prefill_piece={prefill_piece} must be >= 1")
        self.model = model
        self.prefill_piece = prefill_piece
        config = model.config
        self.config = config
        self.hidden = config.hidden_size
        self.n_heads = config.num_attention_heads
        self.n_kv = config.num_key_value_heads
        self.groups = self.n_heads // self.n_kv
        self.head_dim = getattr(config, "head_dim", None) or self.hidden // self.n_heads
        self.eps = config.rms_norm_eps
        self.scaling = config.query_pre_attn_scalar**-0.5
        self.attn_cap = config.attn_logit_softcapping
        self.final_cap = config.final_logit_softcapping
        layer_types = getattr(config, "layer_types", None) or ["full_attention"] * config.num_hidden_layers
        self.windows = [config.sliding_window if t == "sliding_attention" else None for t in layer_types]
        distinct = {w for w in self.windows if w is not None}
        if len(distinct) > 1:
            raise Gemma2DecodeError(f"Gemma2Decoder: several sliding windows {sorted(distinct)}")
        self.window = distinct.pop() if distinct else None
        self._cos = self._sin = None
        self._fingerprint: tuple = ()
        self.refresh()

    # ---- weights ----------------------------------------------------------------------------------

    def _sources(self) -> list[torch.Tensor]:
        return list(self.model.parameters())

    def _current_fingerprint(self) -> tuple:
        prints = []
        for p in self._sources():
            try:
                version = p._version
            except RuntimeError:  # inference tensors have no version counter
                version = -1
            prints.append((p.data_ptr(), version))
        return tuple(prints)

    def is_stale(self) -> bool:
        """Have the model's parameters been replaced or updated in place since the last read?"""
        return self._current_fingerprint() != self._fingerprint

    @property
    def device(self) -> torch.device:
        return self.embed.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.dtype

    def refresh(self) -> None:
        """(Re-)read the model's weights: call after they change (e.g. a GRPO update)."""
        model = self.model
        with torch.no_grad():
            base = model.model
            self.embed = base.embed_tokens.weight
            self.embed_scale = torch.tensor(
                self.hidden**0.5, dtype=self.embed.dtype, device=self.embed.device
            )
            self.w_final = 1.0 + base.norm.weight.float()
            self.lm_head = model.lm_head.weight
            on_cpu = self.embed.device.type == "cpu"
            mlp_bytes = sum(
                2 * layer.mlp.gate_proj.weight.numel() * layer.mlp.gate_proj.weight.element_size()
                for layer in base.layers
            )
            stack_mlp = on_cpu and mlp_bytes <= STACK_LIMIT_BYTES
            self.layers = []
            for i, layer in enumerate(base.layers):
                att, mlp = layer.self_attn, layer.mlp
                q, k, v = att.q_proj.weight, att.k_proj.weight, att.v_proj.weight
                self.layers.append(
                    _Layer(
                        w_in=1.0 + layer.input_layernorm.weight.float(),
                        w_post_attn=1.0 + layer.post_attention_layernorm.weight.float(),
                        w_pre_ff=1.0 + layer.pre_feedforward_layernorm.weight.float(),
                        w_post_ff=1.0 + layer.post_feedforward_layernorm.weight.float(),
                        qkv=torch.cat([q, k, v], dim=0) if on_cpu else None,
                        q=q,
                        k=k,
                        v=v,
                        o=att.o_proj.weight,
                        gate_up=torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight], 0)
                        if stack_mlp
                        else None,
                        gate=mlp.gate_proj.weight,
                        up=mlp.up_proj.weight,
                        down=mlp.down_proj.weight,
                        window=self.windows[i],
                    )
                )
            self._rope(max(getattr(self.config, "max_position_embeddings", 2048), 64), force=True)
        self._fingerprint = self._current_fingerprint()

    def _rope(self, n: int, force: bool = False) -> None:
        """Cos/sin tables for positions ``0 .. n-1`` from the model's own rotary module."""
        if not force and self._cos is not None and self._cos.shape[0] >= n:
            return
        rotary = self.model.model.rotary_emb
        pos = torch.arange(n, device=self.device)[None]
        probe = torch.empty(0, dtype=self.dtype, device=self.device)
        with torch.no_grad():
            cos, sin = rotary(probe, pos)
        half = self.head_dim // 2
        sign = torch.ones(self.head_dim, dtype=cos.dtype, device=cos.device)
        sign[:half] = -1
        self._cos = cos[0].contiguous()
        # rotate_half(x) * sin == flip_halves(x) * (sin * [-1.., +1..]) exactly
        self._sin = (sin[0] * sign).contiguous()

    # ---- cache ------------------------------------------------------------------------------------

    def new_cache(self, batch: int, capacity: int) -> KVCache:
        """An empty cache for ``batch`` rows and ``capacity`` slots (grows when needed).

        The key/value tensors are not initialised: every slot is written before it is read
        (:meth:`forward` writes the keys/values of pads too); callers that place keys/values
        themselves must fill or zero every slot below ``length``.
        """
        capacity = max(capacity, 1)
        shape = (batch, self.n_kv, capacity, self.head_dim)
        kw = {"dtype": self.dtype, "device": self.device}
        return KVCache(
            keys=[torch.empty(shape, **kw) for _ in self.layers],
            values=[torch.empty(shape, **kw) for _ in self.layers],
            valid=torch.zeros((batch, capacity), dtype=torch.bool, device=self.device),
        )

    # ---- forward ----------------------------------------------------------------------------------

    def prefill(
        self,
        cache: KVCache,
        ids: torch.Tensor,
        valid: torch.Tensor | None,
        positions: torch.Tensor,
        logits: bool = True,
    ) -> torch.Tensor | None:
        """Append ``ids`` ``[B, q]`` to the cache in pieces; logits ``[B, V]`` (float32) of the last column.

        ``valid[b, t]`` is False for pads (``None``: no pads); ``positions[b, t]`` is each token's
        position. ``logits=False`` returns ``None`` (the lm head is skipped).
        """
        q = ids.shape[1]
        if q == 0:
            raise Gemma2DecodeError("prefill: no tokens")
        cache.reserve(q)
        out = None
        for s in range(0, q, self.prefill_piece):
            e = min(q, s + self.prefill_piece)
            piece_valid = None if valid is None else valid[:, s:e]
            out = self.forward(cache, ids[:, s:e], piece_valid, positions[:, s:e], logits=logits and e == q)
        return out

    def step(self, cache: KVCache, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Append one real token per row (``ids``, ``positions``: ``[B]``); logits ``[B, V]`` float32."""
        return self.forward(cache, ids[:, None], None, positions[:, None], logits=True)

    def ensure_positions(self, n: int) -> None:
        """Make the rotary tables cover positions ``0 .. n-1`` (call before feeding such positions)."""
        if n > self._cos.shape[0]:
            self._rope(1 << math.ceil(math.log2(n)))

    def forward(
        self,
        cache: KVCache,
        ids: torch.Tensor,
        valid: torch.Tensor | None,
        positions: torch.Tensor,
        logits: bool = True,
    ) -> torch.Tensor | None:
        """Append ``ids`` ``[B, q]`` at slots ``[length, length + q)``; logits of the last column.

        ``valid=None`` means every new token is real; the last column should be real in every row
        (its logits are garbage otherwise). Positions must be covered by :meth:`ensure_positions`
        (the default tables cover ``max_position_embeddings``). The last layer only runs the last
        column's attention and MLP (the other columns only need that layer's keys/values).
        """
        b, q = ids.shape
        cache.reserve(q)
        start = cache.length
        end = start + q
        if valid is None:
            cache.valid[:, start:end] = True
        else:
            cache.valid[:, start:end] = valid
            if cache.dense and not bool(valid.all()):
                cache.dense = False
        cache.length = end
        cos = self._cos[positions][:, :, None]  # [B, q, 1, D]
        sin = self._sin[positions][:, :, None]
        x = F.embedding(ids, self.embed) * self.embed_scale  # [B, q, H]
        nq, nkv, d, g = self.n_heads, self.n_kv, self.head_dim, self.groups
        half = d // 2
        masks = self._masks(cache, start, q) if q > 1 else None
        bias = None if cache.dense else self._decode_bias(cache, end)
        last_layer = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            h = self._norm(x, layer.w_in)
            if layer.qkv is not None:
                qkv = F.linear(h, layer.qkv)
            else:
                qkv = torch.cat([F.linear(h, layer.q), F.linear(h, layer.k), F.linear(h, layer.v)], -1)
            n = qkv.shape[1]
            qk = qkv[..., : (nq + nkv) * d].view(b, n, nq + nkv, d)
            flipped = qk.view(b, n, nq + nkv, 2, half).flip(3).view(b, n, nq + nkv, d)
            qk = torch.addcmul(qk * cos, flipped, sin)
            lk, lv = cache.keys[i], cache.values[i]
            lk[:, :, start:end] = qk[:, :, nq:].transpose(1, 2)
            lv[:, :, start:end] = qkv[..., (nq + nkv) * d :].view(b, n, nkv, d).transpose(1, 2)
            if i == last_layer and n > 1:
                if not logits:
                    return None
                # only the last column's output is used: it attends like a decoding step
                qk, x, n = qk[:, -1:], x[:, -1:], 1
                cos, sin = cos[:, -1:], sin[:, -1:]
            if n == 1:
                lo = 0 if layer.window is None else max(0, end - layer.window)
                query = qk[:, 0, :nq].reshape(b * nkv, g, d)
                att = self._attend_one(query, lk, lv, lo, end, bias)
                att = att.view(b, 1, nq * d)
            else:
                # a query at slot ``start`` sees slots > start - window: the rest are left out
                lo = 0 if layer.window is None else max(0, start + 1 - layer.window)
                mask = masks[layer.window is not None][..., lo:end]
                query = (
                    qk[:, :, :nq].reshape(b, n, nkv, g, d).permute(0, 2, 3, 1, 4).reshape(b, nkv, g * n, d)
                )
                att = self._attend(query, lk[:, :, lo:end], lv[:, :, lo:end], mask)
                att = att.view(b, nkv, g, n, d).permute(0, 3, 1, 2, 4).reshape(b, n, nq * d)
            x = x + self._norm(F.linear(att, layer.o), layer.w_post_attn)
            h = self._norm(x, layer.w_pre_ff)
            if layer.gate_up is not None:
                gate, up = F.linear(h, layer.gate_up).chunk(2, dim=-1)
            else:
                gate, up = F.linear(h, layer.gate), F.linear(h, layer.up)
            h = F.linear(F.gelu(gate, approximate="tanh").mul_(up), layer.down)
            x = x + self._norm(h, layer.w_post_ff)
        if not logits:
            return None
        out = F.linear(self._norm(x[:, -1], self.w_final), self.lm_head)
        if self.final_cap is not None:
            out = out.div_(self.final_cap).tanh_().mul_(self.final_cap)
        return out.float()

    def _decode_bias(self, cache: KVCache, end: int) -> torch.Tensor:
        """``[B * H_kv, 1, end]`` additive mask (0 / -inf) of the valid slots, for single queries."""
        bias = torch.zeros((cache.batch, end), dtype=self.dtype, device=self.device)
        bias.masked_fill_(~cache.valid[:, :end], float("-inf"))
        return bias[:, None, :].expand(-1, self.n_kv, -1).reshape(cache.batch * self.n_kv, 1, end)

    def _attend_one(
        self,
        query: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        lo: int,
        end: int,
        bias: torch.Tensor | None,
    ) -> torch.Tensor:
        """One query per row: ``[B * H_kv, G, D]`` queries over cache slots ``[lo, end)``.

        ``bias`` is ``None`` when every slot is valid (then no mask is applied at all).
        """
        bh = query.shape[0]
        k = keys.view(bh, keys.shape[2], -1)[:, lo:end]
        v = values.view(bh, values.shape[2], -1)[:, lo:end]
        if self.attn_cap is None and bias is not None:
            scores = torch.baddbmm(bias[:, :, lo:end], query, k.transpose(1, 2), alpha=self.scaling)
        else:
            scores = torch.bmm(query, k.transpose(1, 2)).mul_(self.scaling)
            if self.attn_cap is not None:
                scores = scores.div_(self.attn_cap).tanh_().mul_(self.attn_cap)
            if bias is not None:
                scores = scores.add_(bias[:, :, lo:end])
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
        return torch.bmm(probs, v)

    def _norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Gemma's RMSNorm: computed in float32, times ``1 + weight``, cast back."""
        if x.dtype == torch.float32:
            return F.rms_norm(x, (x.shape[-1],), weight, self.eps)
        return F.rms_norm(x.float(), (x.shape[-1],), weight, self.eps).to(x.dtype)

    def _masks(self, cache: KVCache, start: int, q: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Boolean masks (True = attend) for the full and the sliding layers, ``[B, 1, G*q, end]``.

        A query sees the valid slots up to its own; pad queries see themselves (no empty rows).
        """
        end = start + q
        valid = cache.valid[:, :end]
        if q == 1:
            # one query at the last slot: the sliding window is applied by slicing the keys
            full = valid[:, None, None, :]
            return full, full
        qi = torch.arange(start, end, device=valid.device)[:, None]
        kj = torch.arange(end, device=valid.device)[None, :]
        causal = kj <= qi  # [q, end]
        own = kj == qi
        full = (valid[:, None, :] & causal) | own  # [B, q, end]
        sliding = full
        if self.window is not None:
            sliding = full & ((kj > qi - self.window) | own)
        g = self.groups

        def expand(m: torch.Tensor) -> torch.Tensor:
            return m[:, None, None].expand(-1, 1, g, -1, -1).reshape(m.shape[0], 1, g * q, end)

        return expand(full), expand(sliding)

    def _attend(
        self, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Attention of ``[B, Hkv, Gq, D]`` queries over ``[B, Hkv, L, D]`` keys/values."""
        if self.attn_cap is None:
            return F.scaled_dot_product_attention(query, keys, values, attn_mask=mask, scale=self.scaling)
        scores = torch.matmul(query, keys.transpose(-1, -2)) * self.scaling
        scores = torch.tanh(scores / self.attn_cap) * self.attn_cap
        scores = scores.masked_fill(~mask, float("-inf"))
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
        return torch.matmul(probs, values)
