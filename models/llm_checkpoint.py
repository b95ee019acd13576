"""The released ``.pth`` layouts of the motion LLM, read into and written from a Hugging Face model.

Spec ``sft-and-inference.md`` section 2.4 and ``api-contract.md`` ("prepare/convert_checkpoint.py").

Layouts read by :func:`import_reference_state`:

* **IRG-MotionLLM SFT writer**: ``{"epoch", ["step"], "state_dict": {...}}`` holding every
  ``named_parameters()`` entry of the LLM (``model.embed_tokens.weight``, ``model.layers.*``,
  ``model.norm.weight``; ``lm_head.weight`` absent since it is tied) plus ``embeddings`` and
  ``lm_head``; with LoRA only the ``lora`` tensors under PEFT names plus the two matrices.
* **Flat dicts** (no ``state_dict`` key), e.g. the GRPO trainer's whole-wrapper dict whose names
  carry an ``llm.`` prefix.
* **Motion-Agent** ``motionllm.pth``: LoRA tensors of adapters ``t2m`` and ``m2t`` under PEFT
  names (``base_model.model.model.layers.{i}.<module>.lora_{A,B}.t2m.weight``) and ``embeddings`` /
  ``lm_head`` of ``K + 2`` rows. The ``t2m`` adapter is loaded as ``shared`` and merged with scaling
  ``alpha / r`` (1 unless told otherwise); ``m2t`` is ignored, as the reference does.

Each model parameter ``n`` is looked up as ``n``, ``"llm." + n``, then under the names with
``base_model.model.`` / ``base_layer.`` removed. ``embeddings`` / ``lm_head`` with ``K + 2`` rows go
to rows ``n_text:``; a full matrix replaces the whole one. Unlike the reference (B20), every
name is accounted for: the report lists loaded, missing, unexpected and ignored keys, and a shape
mismatch raises naming the tensor.

:func:`export_reference_state` writes the SFT writer's layout back (no LoRA; bf16 by default), so
a model trained here loads into the original scripts.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from models.motion_llm import ADAPTER_NAME, MotionVocab, apply_lora, lora_config, merge_lora

logger = logging.getLogger(__name__)

EMBED_KEYS = ("embeddings", "lm_head")
"""Extra matrices of the reference's state dict (the tied embedding, twice)."""
_LORA_RE = re.compile(r"^(?P<module>.+)\.lora_(?P<ab>[AB])\.(?P<adapter>[^.]+)\.weight$")
_PEFT_PREFIX = "base_model.model."


class CheckpointLayoutError(ValueError):
    """A ``.pth`` does not fit the model; the message names the tensor and both shapes."""


@dataclass
class ImportReport:
    """What an import did with every key of the checkpoint."""

    layout: str
    """``motion_agent_lora``, ``irg_lora``, ``full`` or ``embeddings_only``."""
    loaded: list[str] = field(default_factory=list)
    """Model parameters (or LoRA tensors) set from the checkpoint."""
    missing: list[str] = field(default_factory=list)
    """Model parameters the checkpoint does not hold (they keep the base weights)."""
    unexpected: list[str] = field(default_factory=list)
    """Checkpoint keys no parameter took."""
    ignored: list[str] = field(default_factory=list)
    """Keys skipped on purpose (the Motion-Agent ``m2t`` adapter)."""
    rows: str = ""
    """How the embedding was set: ``new rows``, ``full``, or empty."""
    info: dict[str, Any] = field(default_factory=dict)
    """Top-level entries besides the state dict (``epoch``, ``step``)."""

    def lines(self) -> list[str]:
        def show(names: list[str]) -> str:
            return ", ".join(names[:6]) + (f" ... (+{len(names) - 6})" if len(names) > 6 else "")

        out = [
            f"layout: {self.layout}; loaded {len(self.loaded)} tensors; embedding: {self.rows or 'untouched'}"
        ]
        for name in ("missing", "unexpected", "ignored"):
            keys = getattr(self, name)
            if keys:
                out.append(f"{name} ({len(keys)}): {show(keys)}")
        return out


def read_pth(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state_dict, info)`` of a reference ``.pth`` (the dict form or a flat state dict).

    Raises:
        FileNotFoundError: naming the path.
        CheckpointLayoutError: the file holds no tensor mapping.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    obj = torch.load(p, map_location="cpu", weights_only=True)
    if not isinstance(obj, Mapping):
        raise CheckpointLayoutError(f"{p}: expected a dict, got {type(obj).__name__}")
    if "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        state, info = dict(obj["state_dict"]), {k: v for k, v in obj.items() if k != "state_dict"}
    else:
        state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        info = {k: v for k, v in obj.items() if not isinstance(v, torch.Tensor)}
    if not state:
        raise CheckpointLayoutError(f"{p}: no tensors found (keys: {list(obj)[:8]})")
    return state, info


def _strip_peft(name: str) -> str:
    if name.startswith(_PEFT_PREFIX):
        name = name[len(_PEFT_PREFIX) :]
    return name.replace(".base_layer.", ".")


def _lora_groups(state: Mapping[str, torch.Tensor]) -> dict[str, dict[str, dict[str, torch.Tensor]]]:
    """adapter -> module (plain name, no PEFT prefix) -> {"A": tensor, "B": tensor}."""
    groups: dict[str, dict[str, dict[str, torch.Tensor]]] = {}
    for key, t in state.items():
        m = _LORA_RE.match(key[4:] if key.startswith("llm.") else key)
        if m:
            module = _strip_peft(m["module"])
            groups.setdefault(m["adapter"], {}).setdefault(module, {})[m["ab"]] = t
    return groups


def _check_shape(name: str, got: torch.Tensor, want: torch.Tensor) -> None:
    if tuple(got.shape) != tuple(want.shape):
        raise CheckpointLayoutError(
            f"tensor {name}: checkpoint shape {tuple(got.shape)}, model shape {tuple(want.shape)} "
            "(another base model, or a checkpoint of another size?)"
        )


def _load_lora(
    model: Any, modules: dict[str, dict[str, torch.Tensor]], alpha: float | None, report: ImportReport
):
    """Create the ``shared`` adapter from the tensors' shapes, load them and merge; returns the plain model."""
    ranks = {t["A"].shape[0] for t in modules.values() if "A" in t}
    incomplete = sorted(m for m, t in modules.items() if set(t) != {"A", "B"})
    if incomplete or len(ranks) != 1:
        raise CheckpointLayoutError(
            f"LoRA tensors must come in A/B pairs of one rank; incomplete modules {incomplete[:3]}, ranks {sorted(ranks)}"
        )
    r = ranks.pop()
    targets = sorted({m.rsplit(".", 1)[-1] for m in modules})
    scale_alpha = alpha if alpha is not None else r
    peft_model = apply_lora(model, lora_config(r=r, alpha=scale_alpha, dropout=0.0, targets=targets))
    params = dict(peft_model.named_parameters())
    for module, ab in sorted(modules.items()):
        for which in ("A", "B"):
            name = f"{_PEFT_PREFIX}{module}.lora_{which}.{ADAPTER_NAME}.weight"
            if name not in params:
                report.unexpected.append(f"{module}.lora_{which}")
                continue
            _check_shape(name, ab[which], params[name])
            with torch.no_grad():
                params[name].copy_(ab[which].to(params[name].dtype))
            report.loaded.append(name)
    expected = {n for n in params if ".lora_" in n}
    report.missing += sorted(expected - set(report.loaded))
    report.info["lora"] = {"r": r, "alpha": scale_alpha, "targets": targets}
    return merge_lora(peft_model)


def import_reference_state(
    model: Any,
    state: Mapping[str, torch.Tensor],
    vocab: MotionVocab,
    *,
    lora_alpha: float | None = None,
    info: Mapping[str, Any] | None = None,
) -> tuple[Any, ImportReport]:
    """Load a reference state dict into a plain motion LLM (already holding the motion tokens).

    Args:
        model: a Gemma2 model whose vocabulary is ``vocab.size``.
        state: from :func:`read_pth`.
        vocab: where the motion rows go.
        lora_alpha: LoRA alpha of the checkpoint's adapter (default: its rank, so scaling 1).
        info: top-level entries of the file, kept in the report.

    Returns:
        ``(model, report)``; the model is a new object when a LoRA adapter was merged.

    Raises:
        CheckpointLayoutError: a shape mismatch (the tensor named) or unreadable LoRA tensors.
    """
    groups = _lora_groups(state)
    layout = "motion_agent_lora" if "t2m" in groups else ("irg_lora" if groups else "full")
    report = ImportReport(layout=layout, info=dict(info or {}))
    lora_keys = {k for k in state if ".lora_" in k}
    if groups:
        adapter = (
            "t2m" if "t2m" in groups else (ADAPTER_NAME if ADAPTER_NAME in groups else sorted(groups)[0])
        )
        report.ignored += sorted(k for k in lora_keys if f".{adapter}." not in k)
        model = _load_lora(model, groups[adapter], lora_alpha, report)

    plain = {k: v for k, v in state.items() if k not in lora_keys and k not in EMBED_KEYS}
    params = dict(model.named_parameters())
    taken: set[str] = set()
    by_alias: dict[str, str] = {}
    for key in plain:
        by_alias.setdefault(key, key)
    for key in plain:  # lower priority: the llm.-prefixed and PEFT-prefixed spellings
        if key.startswith("llm."):
            by_alias.setdefault(key[4:], key)
    for key in plain:
        by_alias.setdefault(_strip_peft(key), key)
    for name, p in params.items():
        src = by_alias.get(name)
        if src is None:
            if not groups:
                report.missing.append(name)
            continue
        _check_shape(src, plain[src], p)
        with torch.no_grad():
            p.copy_(plain[src].to(p.dtype))
        taken.add(src)
        report.loaded.append(name)
    report.unexpected += sorted(set(plain) - taken)

    emb = model.get_input_embeddings().weight
    source = state.get("embeddings", state.get("lm_head"))
    if source is not None:
        n_new = vocab.size - vocab.n_text
        with torch.no_grad():
            if source.shape[0] == n_new and source.shape[1:] == emb.shape[1:]:
                emb[vocab.n_text :].copy_(source.to(emb.dtype))
                report.rows = f"new rows {vocab.n_text}:{vocab.size}"
            else:
                _check_shape("embeddings", source, emb)
                emb.copy_(source.to(emb.dtype))
                report.rows = "full"
        if (
            "embeddings" in state
            and "lm_head" in state
            and not torch.equal(state["embeddings"], state["lm_head"])
        ):
            logger.warning("checkpoint embeddings and lm_head differ; the tied model keeps 'embeddings'")
        report.missing = [m for m in report.missing if m != "model.embed_tokens.weight"]
    if layout == "full" and not report.loaded and source is not None:
        report.layout = "embeddings_only"
    model.tie_weights()
    return model, report


def export_reference_state(
    model: Any, epoch: int = 0, step: int | None = None, dtype: torch.dtype | None = torch.bfloat16
) -> dict[str, Any]:
    """The IRG-MotionLLM SFT writer's dict for a plain (merged) model (spec section 2.4).

    ``{"epoch", ["step"], "state_dict": {every named parameter, "embeddings", "lm_head"}}``;
    tensors are cast to ``dtype`` (bf16 as the reference trains; ``None`` keeps them).
    """
    if hasattr(model, "peft_config"):
        raise CheckpointLayoutError("export a merged model (merge_lora) so every weight is a plain parameter")

    def cast(t: torch.Tensor) -> torch.Tensor:
        t = t.detach().cpu()
        return t.to(dtype) if dtype is not None else t.clone()

    sd = {n: cast(p) for n, p in model.named_parameters()}
    emb = cast(model.get_input_embeddings().weight)
    sd["embeddings"] = emb
    sd["lm_head"] = emb
    out: dict[str, Any] = {"epoch": int(epoch)}
    if step is not None:
        out["step"] = int(step)
    out["state_dict"] = sd
    return out
