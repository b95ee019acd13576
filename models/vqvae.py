"""The T2M-GPT motion tokenizer (VQ-VAE), compatible with the released checkpoints.

Architecture (``shared/spec/motion-vq-evaluation.md`` §3; defaults = the released model):

```
motion (B, T, D) normalised --transpose--> (B, D, T)
encoder.model: [0] Conv1d(D->W, 3)  [1] ReLU
               [2..] one per down_t: Sequential([0] Conv1d(W->W, 2s, stride s), [1] Resnet1D)
               [last] Conv1d(W->E, 3)                                   -> (B, E, T/4)
quantizer:     nearest of nb_code codebook rows (squared L2)           -> codes (B, T/4)
decoder.model: [0] Conv1d(E->W, 3)  [1] ReLU
               [2..] one per down_t: Sequential([0] Resnet1D, [1] Upsample(x s), [2] Conv1d(W->W, 3))
               Conv1d(W->W, 3), ReLU, Conv1d(W->D, 3)                    -> (B, D, 4N)
Resnet1D:      depth pre-activation blocks x + conv2(relu(conv1(relu(x)))), dilations
               growth^(depth-1), ..., growth^0 (9, 3, 1 for the release), conv2 has k=1
```

``MotionVQVAE`` wraps the network as attribute ``vqvae`` so that its ``state_dict`` has the
released names (``vqvae.encoder.model.0.weight`` ... ``vqvae.quantizer.codebook``; 67 tensors for
the released configuration). Checkpoints are ``{'net': state_dict}``.

Lengths. Each stride-2 conv maps L frames to floor(L/2), so T >= 4 frames give floor(T/4) codes and
N codes decode to exactly 4N frames. With T not a multiple of 4 the encoder behaves like the
reference: the 1-3 trailing frames are never reconstructed, yet they are convolved in, and through
the dilated residual blocks they change the latents of the last ~22 codes (not only the last one,
as the spec's §3.5 suggests; see the test). Callers therefore crop to ``(T // 4) * 4`` frames first
(:func:`crop_to_units`; the tokeniser and the published loaders do). T < 4 raises (the reference
crashes deep inside PyTorch).

Variable lengths in one batch. ``encode(..., lengths=)`` and ``decode(..., lengths=)`` zero every
padded time step after every convolution. Zero is exactly what a per-sample run sees beyond its
end (zero padding of the convolutions), and ReLU/nearest upsampling keep zeros at zero, so valid
outputs equal per-sample results (tested against per-sample decoding).

The EMA quantiser's training state (``init``, ``code_sum``, ``code_count``) is not part of the
released state dict (spec pitfall 11); :meth:`MotionVQVAE.quantizer_state` exposes it for our own
resume files. ``encode``/``decode`` never touch that state, so they are safe in either mode.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from data.run_folder import atomic_torch_save
from data.specs import DATASET_NAMES, get_dataset_spec

logger = logging.getLogger(__name__)

_RELEASED_NFEATS = get_dataset_spec("humanml3d").feat_dim
"""Default feature dim D: the released T2M-GPT / Motion-Agent VQ-VAE is a HumanML3D model."""

PAD_CODE = -1
"""Value ``encode(..., lengths=)`` writes after each sample's last valid code."""


class CheckpointError(ValueError):
    """A VQ-VAE checkpoint is missing, unreadable or does not match the architecture."""


@dataclass(frozen=True)
class VQVAEConfig:
    """Architecture of the VQ-VAE (defaults = the released T2M-GPT / Motion-Agent model)."""

    nb_code: int = 512
    """Codebook size (the LLM vocabulary has 512 motion tokens)."""
    code_dim: int = 512
    """Codebook vector size; must equal ``output_emb_width``."""
    output_emb_width: int = 512
    """Channels of the encoder output / decoder input."""
    down_t: int = 2
    """Number of stride-``stride_t`` down/up-sampling stages (frames per code = stride_t**down_t)."""
    stride_t: int = 2
    """Temporal stride of each stage (kernel 2*stride_t, padding stride_t//2)."""
    width: int = 512
    """Channels of every hidden convolution."""
    depth: int = 3
    """Residual blocks per Resnet1D."""
    dilation_growth_rate: int = 3
    """Dilation of block i is growth**i, applied in reverse order (9, 3, 1)."""
    mu: float = 0.99
    """EMA decay of the quantiser's code statistics (training only)."""

    def __post_init__(self) -> None:
        for name in ("nb_code", "code_dim", "output_emb_width", "down_t", "stride_t", "width", "depth"):
            if getattr(self, name) < 1:
                raise ValueError(f"VQVAEConfig.{name}={getattr(self, name)} must be >= 1")
        if self.code_dim != self.output_emb_width:
            raise ValueError(
                f"VQVAEConfig: code_dim={self.code_dim} must equal output_emb_width="
                f"{self.output_emb_width} (the quantiser compares encoder outputs with codes)"
            )
        if self.stride_t % 2:
            raise ValueError(f"VQVAEConfig.stride_t={self.stride_t} must be even (padding stride_t//2)")
        if not 0.0 <= self.mu < 1.0:
            raise ValueError(f"VQVAEConfig.mu={self.mu} must be in [0, 1)")

    @property
    def frames_per_code(self) -> int:
        """Frames covered by one code (4 for the release)."""
        return self.stride_t**self.down_t


# ----------------------------------------------------------------------------------------------
# Building blocks. Every forward takes optional ``lengths`` (B,) of valid time steps; when given,
# padded steps are zeroed after each convolution (see the module docstring for why this is exact).
# ----------------------------------------------------------------------------------------------


def _mask(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Zero time steps ``t >= lengths[b]`` of ``x`` (B, C, T); identity when lengths is None."""
    if lengths is None:
        return x
    pad = torch.arange(x.shape[-1], device=x.device)[None, :] >= lengths[:, None]
    return x.masked_fill(pad[:, None, :], 0.0)  # not a multiply: padding may hold NaN


class ResConv1DBlock(nn.Module):
    """Pre-activation residual block: ``x + conv2(relu(conv1(relu(x))))`` (B, W, L) -> (B, W, L)."""

    def __init__(self, width: int, dilation: int):
        super().__init__()
        self.dilation = dilation
        self.conv1 = nn.Conv1d(width, width, kernel_size=3, padding=dilation, dilation=dilation)
        self.conv2 = nn.Conv1d(width, width, kernel_size=1)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        # In-place ReLU/add on fresh conv outputs save two memory passes per block (CPU inference is
        # partly memory-bound); autograd allows it because a conv does not keep its output.
        h = _mask(self.conv1(F.relu(x)), lengths)
        out = self.conv2(F.relu_(h))
        return _mask(out.add_(x), lengths)


class Resnet1D(nn.Module):
    """``depth`` residual blocks with dilations growth**(depth-1) ... growth**0 (reversed order)."""

    def __init__(self, width: int, depth: int, growth: int):
        super().__init__()
        dilations = [growth**i for i in range(depth)][::-1]
        self.model = nn.Sequential(*[ResConv1DBlock(width, d) for d in dilations])

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        for block in self.model:
            x = block(x, lengths)
        return x


def _run(module: nn.Module, x: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Run one encoder/decoder layer, keeping padded steps at zero and tracking valid lengths."""
    if isinstance(module, nn.Sequential):
        for child in module:
            x, lengths = _run(child, x, lengths)
        return x, lengths
    if isinstance(module, Resnet1D):
        return module(x, lengths), lengths
    if isinstance(module, nn.Conv1d):
        x = module(x)
        if lengths is not None:
            (k,), (s,), (p,), (d,) = module.kernel_size, module.stride, module.padding, module.dilation
            lengths = torch.div(lengths + 2 * p - d * (k - 1) - 1, s, rounding_mode="floor") + 1
        return _mask(x, lengths), lengths
    if isinstance(module, nn.Upsample):
        x = module(x)
        if lengths is not None:
            lengths = lengths * int(module.scale_factor)
        return x, lengths
    if isinstance(module, nn.ReLU):
        return F.relu_(x), lengths  # always follows a conv here, whose output is not needed again
    return module(x), lengths


class Encoder(nn.Module):
    """(B, D, T) -> (B, E, T // frames_per_code) latent vectors."""

    def __init__(self, nfeats: int, cfg: VQVAEConfig):
        super().__init__()
        s = cfg.stride_t
        layers: list[nn.Module] = [nn.Conv1d(nfeats, cfg.width, 3, 1, 1), nn.ReLU()]
        for _ in range(cfg.down_t):
            layers.append(
                nn.Sequential(
                    nn.Conv1d(cfg.width, cfg.width, 2 * s, s, s // 2),
                    Resnet1D(cfg.width, cfg.depth, cfg.dilation_growth_rate),
                )
            )
        layers.append(nn.Conv1d(cfg.width, cfg.output_emb_width, 3, 1, 1))
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        return _run(self.model, _mask(x, lengths), lengths)


class Decoder(nn.Module):
    """(B, E, N) -> (B, D, N * frames_per_code) motion features."""

    def __init__(self, nfeats: int, cfg: VQVAEConfig):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv1d(cfg.output_emb_width, cfg.width, 3, 1, 1), nn.ReLU()]
        for _ in range(cfg.down_t):
            layers.append(
                nn.Sequential(
                    Resnet1D(cfg.width, cfg.depth, cfg.dilation_growth_rate),
                    nn.Upsample(scale_factor=cfg.stride_t, mode="nearest"),
                    nn.Conv1d(cfg.width, cfg.width, 3, 1, 1),
                )
            )
        layers += [nn.Conv1d(cfg.width, cfg.width, 3, 1, 1), nn.ReLU(), nn.Conv1d(cfg.width, nfeats, 3, 1, 1)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        return _run(self.model, _mask(x, lengths), lengths)


class QuantizeEMAReset(nn.Module):
    """Nearest-code quantiser with EMA codebook updates and dead-code reset (T2M-GPT ``ema_reset``).

    Only ``codebook`` (nb_code, code_dim) is in the state dict. ``code_sum``/``code_count`` are
    non-persistent buffers and ``init`` a plain flag; :meth:`MotionVQVAE.quantizer_state` saves them.
    """

    def __init__(self, nb_code: int, code_dim: int, mu: float):
        super().__init__()
        self.nb_code, self.code_dim, self.mu = nb_code, code_dim, mu
        self.register_buffer("codebook", torch.zeros(nb_code, code_dim))
        self.register_buffer("code_sum", torch.zeros(nb_code, code_dim), persistent=False)
        self.register_buffer("code_count", torch.zeros(nb_code), persistent=False)
        self.init = False

    def _tile(self, x: Tensor) -> Tensor:
        """(M, C) -> at least nb_code rows: repeat and add N(0, (0.01/sqrt(C))^2) noise if M < nb_code."""
        m, c = x.shape
        if m < self.nb_code:
            x = x.repeat(math.ceil(self.nb_code / m), 1)
            x = x + torch.randn_like(x) * (0.01 / math.sqrt(c))
        return x

    @torch.no_grad()
    def _init_codebook(self, x: Tensor) -> None:
        rows = self._tile(x)[: self.nb_code]
        self.codebook.copy_(rows)
        self.code_sum.copy_(rows)
        self.code_count.fill_(1.0)
        self.init = True

    @torch.no_grad()
    def mark_initialised(self) -> None:
        """Start EMA statistics from the current codebook (after loading weights) so that a
        train-mode forward does not re-initialise a loaded codebook (spec pitfall 11)."""
        self.code_sum.copy_(self.codebook)
        self.code_count.fill_(1.0)
        self.init = True

    def quantize(self, x: Tensor) -> Tensor:
        """(M, C) vectors -> (M,) nearest code ids (squared L2, first index on ties)."""
        cb = self.codebook
        dist = (x * x).sum(1, keepdim=True) - 2.0 * (x @ cb.t()) + (cb * cb).sum(1)[None, :]
        return dist.argmin(dim=1)

    def dequantize(self, codes: Tensor) -> Tensor:
        """(...,) code ids -> (..., C) codebook rows."""
        return F.embedding(codes, self.codebook)

    @torch.no_grad()
    def _update(self, x: Tensor, codes: Tensor) -> Tensor:
        """EMA update + reset of unused codes; returns the batch perplexity."""
        count = torch.bincount(codes, minlength=self.nb_code).to(x.dtype)
        code_sum = torch.zeros_like(self.codebook).index_add_(0, codes, x)
        self.code_sum.mul_(self.mu).add_(code_sum, alpha=1.0 - self.mu)
        self.code_count.mul_(self.mu).add_(count, alpha=1.0 - self.mu)
        usage = (self.code_count >= 1.0).to(x.dtype)[:, None]
        updated = self.code_sum / self.code_count[:, None]
        random_rows = self._tile(x)[: self.nb_code]
        self.codebook.copy_(usage * updated + (1.0 - usage) * random_rows)
        return perplexity_from_counts(count)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Training/eval pass on (B, C, L) latents.

        Returns (straight-through quantised (B, C, L), commitment loss MSE(x, sg[x_q]), perplexity).
        In train mode the first call initialises the codebook from the batch and every call updates
        it (EMA + dead-code reset) after the lookup.
        """
        b, c, length = x.shape
        flat = x.permute(0, 2, 1).reshape(b * length, c)  # sample-major, time inside each sample
        if self.training and not self.init:
            self._init_codebook(flat.detach())
        codes = self.quantize(flat.detach())
        x_q = self.dequantize(codes)
        if self.training:
            perplexity = self._update(flat.detach(), codes)
        else:
            perplexity = perplexity_from_counts(torch.bincount(codes, minlength=self.nb_code).to(x.dtype))
        commit = F.mse_loss(flat, x_q.detach())
        x_q = flat + (x_q - flat).detach()
        return x_q.view(b, length, c).permute(0, 2, 1).contiguous(), commit, perplexity


def perplexity_from_counts(counts: Tensor) -> Tensor:
    """Code-usage perplexity ``exp(-sum p log(p + 1e-7))`` with ``p = counts / counts.sum()``.

    Args:
        counts: (nb_code,) occurrences of each code.
    Returns:
        scalar tensor; ranges from ~1 (one code used) to nb_code (uniform usage).
    """
    p = counts / counts.sum().clamp_min(1e-12)
    return torch.exp(-(p * torch.log(p + 1e-7)).sum())


class _VQVAECore(nn.Module):
    """The network itself (what the released wrapper stores as ``vqvae``)."""

    def __init__(self, nfeats: int, cfg: VQVAEConfig):
        super().__init__()
        self.encoder = Encoder(nfeats, cfg)
        self.quantizer = QuantizeEMAReset(cfg.nb_code, cfg.code_dim, cfg.mu)
        self.decoder = Decoder(nfeats, cfg)


class MotionVQVAE(nn.Module):
    """T2M-GPT motion tokenizer: normalised motion (B, T, D) <-> code ids (B, T // 4).

    Args:
        nfeats: feature dim D (263 HumanML3D, 251 KIT-ML; use ``spec.feat_dim``).
        config: architecture; ``None`` = the released model.

    Example::

        vq = MotionVQVAE.from_checkpoint("ckpt/vqvae.pth", nfeats=263)
        codes = vq.encode(motion)          # (B, T) -> (B, T // 4) long in [0, 512)
        recon = vq.decode(codes)           # (B, 4N, 263), VQ-normalised space
    """

    def __init__(self, nfeats: int = _RELEASED_NFEATS, config: VQVAEConfig | None = None):
        super().__init__()
        self.nfeats = int(nfeats)
        self.config = config or VQVAEConfig()
        self.vqvae = _VQVAECore(self.nfeats, self.config)

    # ------------------------------------------------------------------ properties
    @property
    def frames_per_code(self) -> int:
        return self.config.frames_per_code

    @property
    def nb_code(self) -> int:
        return self.config.nb_code

    @property
    def quantizer(self) -> QuantizeEMAReset:
        return self.vqvae.quantizer

    @property
    def device(self) -> torch.device:
        """Device of the weights (inputs to ``encode``/``decode`` are moved there)."""
        return self.vqvae.quantizer.codebook.device

    # ------------------------------------------------------------------ input checks
    def _check_motion(self, motion: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor | None]:
        if not isinstance(motion, Tensor):
            raise TypeError(f"encode: motion must be a torch.Tensor (B, T, D), got {type(motion).__name__}")
        if motion.ndim != 3:
            raise ValueError(f"encode: motion must have shape (B, T, D), got {tuple(motion.shape)}")
        b, t, d = motion.shape
        if d != self.nfeats:
            raise ValueError(
                f"encode: motion has D={d} features but this VQ-VAE expects nfeats={self.nfeats} "
                "(wrong dataset, or features not from new_joint_vecs?)"
            )
        fpc = self.frames_per_code
        if t < fpc:
            raise ValueError(f"encode: motion has T={t} frames; at least {fpc} are needed for one code")
        motion = motion.to(device=self.device, dtype=torch.float32)
        if lengths is not None:
            lengths = torch.as_tensor(lengths, dtype=torch.long, device=self.device).reshape(-1)
            if lengths.shape[0] != b:
                raise ValueError(f"encode: lengths has {lengths.shape[0]} entries for a batch of {b}")
            bad = ((lengths < fpc) | (lengths > t)).nonzero().flatten().tolist()
            if bad:
                raise ValueError(
                    f"encode: lengths must be in [{fpc}, T={t}]; samples {bad[:5]} have "
                    f"{lengths[bad[:5]].tolist()}"
                )
            valid = torch.arange(t, device=motion.device)[None, :] < lengths[:, None]
            finite = torch.isfinite(motion).all(dim=2) | ~valid
        else:
            finite = torch.isfinite(motion).all(dim=2)
        if not bool(finite.all()):
            rows = (~finite).any(dim=1).nonzero().flatten().tolist()
            first = int((~finite[rows[0]]).nonzero()[0])
            raise ValueError(
                f"encode: motion contains NaN/inf in samples {rows[:5]} (first at sample {rows[0]}, "
                f"frame {first}); clean or drop these clips before tokenising"
            )
        return motion, lengths

    def _check_codes(self, codes: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor | None]:
        codes = torch.as_tensor(codes)
        if codes.ndim == 1:
            codes = codes[None]
        if codes.ndim != 2:
            raise ValueError(f"decode: codes must have shape (B, N), got {tuple(codes.shape)}")
        if codes.dtype.is_floating_point or codes.dtype == torch.bool:
            raise ValueError(f"decode: codes must be integer ids, got dtype {codes.dtype}")
        b, n = codes.shape
        if n == 0:
            raise ValueError(
                "decode: no codes to decode (N=0); a generation without codes must be handled by the "
                "caller (the references substitute a single code and count it)"
            )
        codes = codes.to(device=self.device, dtype=torch.long)
        if lengths is not None:
            lengths = torch.as_tensor(lengths, dtype=torch.long, device=self.device).reshape(-1)
            if lengths.shape[0] != b:
                raise ValueError(f"decode: lengths has {lengths.shape[0]} entries for a batch of {b}")
            bad = ((lengths < 1) | (lengths > n)).nonzero().flatten().tolist()
            if bad:
                raise ValueError(
                    f"decode: code lengths must be in [1, N={n}]; rows {bad[:5]} have {lengths[bad[:5]].tolist()}"
                )
            valid = torch.arange(n, device=codes.device)[None, :] < lengths[:, None]
        else:
            valid = torch.ones_like(codes, dtype=torch.bool)
        out_of_range = ((codes < 0) | (codes >= self.nb_code)) & valid
        if bool(out_of_range.any()):
            row, pos = (int(v) for v in out_of_range.nonzero()[0])
            count = int(out_of_range.sum())
            raise ValueError(
                f"decode: {count} code(s) outside 0..{self.nb_code - 1}; first at row {row}, position "
                f"{pos}: {int(codes[row, pos])}"
            )
        return torch.where(valid, codes, torch.zeros_like(codes)), lengths

    # ------------------------------------------------------------------ public API
    @torch.no_grad()
    def encode(self, motion: Tensor, lengths: Tensor | Sequence[int] | None = None) -> Tensor:
        """Normalised motion (B, T, D) -> code ids LongTensor (B, T // 4).

        Args:
            motion: features in the VQ's normalised space; cast to float32.
            lengths: optional (B,) valid frames per sample (>= 4). Crop each to a multiple of 4
                first: trailing frames change the codes near the end. Codes of sample b are then
                ``out[b, :lengths[b] // 4]`` (equal to encoding ``motion[b, :lengths[b]]`` alone);
                later positions hold ``PAD_CODE`` (-1).
        Raises:
            ValueError: wrong D, T < 4, NaN/inf in a valid frame (names the sample and frame).
        """
        motion, lengths = self._check_motion(motion, lengths)
        z, zlen = self.vqvae.encoder(motion.transpose(1, 2), lengths)  # (B, E, L)
        b, e, length = z.shape
        codes = self.quantizer.quantize(z.transpose(1, 2).reshape(b * length, e)).view(b, length)
        if zlen is not None:
            pad = torch.arange(length, device=codes.device)[None, :] >= zlen[:, None]
            codes = codes.masked_fill(pad, PAD_CODE)
        return codes

    @torch.no_grad()
    def decode(self, codes: Tensor, lengths: Tensor | Sequence[int] | None = None) -> Tensor:
        """Code ids (B, N) -> normalised motion (B, 4N, D).

        Args:
            codes: integer ids in [0, nb_code); a 1-D (N,) sequence is treated as one row.
            lengths: optional (B,) number of valid codes per row for a padded batch; row b's
                frames ``[:4 * lengths[b]]`` equal decoding ``codes[b, :lengths[b]]`` alone and
                later frames are zero. Padded positions may hold any value (e.g. ``PAD_CODE``).
        Raises:
            ValueError: N = 0, non-integer dtype, or a valid code outside [0, nb_code) (names the row
                and position).
        """
        codes, lengths = self._check_codes(codes, lengths)
        z = self.quantizer.dequantize(codes).transpose(1, 2)  # (B, E, N)
        out, _ = self.vqvae.decoder(z, lengths)
        return out.transpose(1, 2)

    def decode_list(self, sequences: Sequence[Tensor | Sequence[int]]) -> list[Tensor]:
        """Decode code sequences of different lengths in one batch: list of (N_i,) -> list of (4N_i, D)."""
        if len(sequences) == 0:
            return []
        seqs = [torch.as_tensor(s, dtype=torch.long).reshape(-1) for s in sequences]
        lengths = torch.tensor([len(s) for s in seqs])
        if int(lengths.min()) == 0:
            raise ValueError(f"decode_list: sequence {int(lengths.argmin())} is empty (no codes to decode)")
        padded = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=0)
        out = self.decode(padded, lengths if int(lengths.min()) != padded.shape[1] else None)
        fpc = self.frames_per_code
        return [out[i, : int(n) * fpc] for i, n in enumerate(lengths)]

    def forward(self, motion: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Training pass: motion (B, T, D) -> (reconstruction (B, T', D), commit loss, perplexity).

        T' = 4 * (T // 4); use windows that are a multiple of 4 frames.
        """
        z, _ = self.vqvae.encoder(motion.float().transpose(1, 2))
        zq, commit, perplexity = self.quantizer(z)
        out, _ = self.vqvae.decoder(zq)
        return out.transpose(1, 2), commit, perplexity

    # ------------------------------------------------------------------ EMA state (resume)
    def quantizer_state(self) -> dict[str, Tensor | bool]:
        """EMA training state not in the released state dict: ``init``, ``code_sum``, ``code_count``."""
        q = self.quantizer
        return {"init": bool(q.init), "code_sum": q.code_sum.clone(), "code_count": q.code_count.clone()}

    def load_quantizer_state(self, state: dict) -> None:
        """Restore :meth:`quantizer_state` output (for exact resume)."""
        q = self.quantizer
        q.code_sum.copy_(state["code_sum"])
        q.code_count.copy_(state["code_count"])
        q.init = bool(state["init"])

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, path: str | Path) -> None:
        """Write ``{'net': state_dict}`` (the released layout) atomically."""
        atomic_torch_save({"net": self.state_dict()}, path)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        nfeats: int = _RELEASED_NFEATS,
        config: VQVAEConfig | None = None,
        map_location: str | torch.device = "cpu",
    ) -> MotionVQVAE:
        """Load a released T2M-GPT / Motion-Agent (or our) ``{'net': state_dict}`` checkpoint, eval mode.

        Args:
            path: the ``.pth`` file.
            nfeats: expected feature dim D (263 HumanML3D, 251 KIT-ML).
            config: architecture to check against; ``None`` infers widths, codebook size, down_t
                and depth from the tensor shapes (dilation growth 3 and mu 0.99 as released).
            map_location: device of the returned model.
        Raises:
            CheckpointError: missing/truncated file, no ``net`` key, wrong feature size (names
                expected vs found), missing/unexpected keys or shape mismatches (all listed).
        """
        path = Path(path)
        net = load_net_state(path, map_location)
        first = net.get("vqvae.encoder.model.0.weight")
        if first is not None and first.ndim == 3 and first.shape[1] != nfeats:
            raise CheckpointError(
                f"{path}: checkpoint is for nfeats={first.shape[1]} (vqvae.encoder.model.0.weight has "
                f"shape {list(first.shape)}), but nfeats={nfeats} was expected; load it with the "
                "dataset it was trained on ("
                + ", ".join(f"{n} {get_dataset_spec(n).feat_dim}" for n in DATASET_NAMES)
                + ")"
            )
        if config is None:
            config = infer_config(net, path)
        model = cls(nfeats=nfeats, config=config)
        check_state_dict(model.state_dict(), net, path)
        model.load_state_dict(net, strict=True)
        model.to(map_location)
        model.quantizer.mark_initialised()
        model.eval()
        logger.info("loaded VQ-VAE %s (nfeats=%d, %s)", path, nfeats, asdict(config))
        return model


# ----------------------------------------------------------------------------------------------
# Checkpoint helpers
# ----------------------------------------------------------------------------------------------


def load_net_state(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Tensor]:
    """Read ``{'net': state_dict}`` with ``weights_only=True``; clear errors for bad files."""
    if not path.is_file():
        raise CheckpointError(f"VQ-VAE checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types (RuntimeError, UnpicklingError, EOFError)
        raise CheckpointError(
            f"{path}: cannot read the checkpoint ({type(err).__name__}: {str(err)[:200]}); the file is "
            "truncated, corrupt or not a torch checkpoint; re-download or re-save it"
        ) from err
    if not isinstance(ckpt, dict) or "net" not in ckpt:
        found = sorted(ckpt)[:10] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(
            f"{path}: expected a dict with key 'net' holding the VQ-VAE state dict (T2M-GPT layout), "
            f"found {found}"
        )
    net = ckpt["net"]
    if not isinstance(net, dict) or not all(isinstance(v, Tensor) for v in net.values()):
        raise CheckpointError(f"{path}: ckpt['net'] is not a state dict of tensors")
    return net


_DOWN_RE = re.compile(r"^vqvae\.encoder\.model\.(\d+)\.0\.weight$")
_BLOCK_RE = re.compile(r"^vqvae\.encoder\.model\.\d+\.1\.model\.(\d+)\.conv1\.weight$")


def infer_config(net: dict[str, Tensor], path: Path | str = "<state dict>") -> VQVAEConfig:
    """Architecture from tensor shapes (dilations are not stored: growth 3 is assumed)."""
    need = ("vqvae.encoder.model.0.weight", "vqvae.quantizer.codebook")
    missing = [k for k in need if k not in net]
    if missing:
        raise CheckpointError(
            f"{path}: not a T2M-GPT VQ-VAE state dict: missing {missing}; found keys like {sorted(net)[:5]}"
        )
    width = net["vqvae.encoder.model.0.weight"].shape[0]
    nb_code, code_dim = net["vqvae.quantizer.codebook"].shape
    down = [m for k in net if (m := _DOWN_RE.match(k))]
    down_t = len(down)
    stride_t = net[down[0].group(0)].shape[-1] // 2 if down else 2
    depth = 1 + max((int(m.group(1)) for k in net if (m := _BLOCK_RE.match(k))), default=-1)
    try:
        return VQVAEConfig(
            nb_code=nb_code,
            code_dim=code_dim,
            output_emb_width=code_dim,
            down_t=max(down_t, 1),
            stride_t=stride_t,
            width=width,
            depth=max(depth, 1),
        )
    except ValueError as err:
        raise CheckpointError(f"{path}: inconsistent VQ-VAE shapes: {err}") from err


def check_state_dict(expected: dict[str, Tensor], found: dict[str, Tensor], path: Path | str) -> None:
    """Raise ``CheckpointError`` listing missing keys, unexpected keys and shape mismatches."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = [
        f"{k}: expected {list(expected[k].shape)}, found {list(found[k].shape)}"
        for k in sorted(set(expected) & set(found))
        if tuple(expected[k].shape) != tuple(found[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {missing[:8]}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {unexpected[:8]}")
        if shapes:
            parts.append(f"shape mismatches ({len(shapes)}): {shapes[:8]}")
        raise CheckpointError(
            f"{path}: state dict does not match the VQ-VAE architecture; " + "; ".join(parts)
        )


def crop_to_units(motion: Tensor, frames_per_code: int = 4, offset: int = 0) -> Tensor:
    """Crop (..., T, D) to ``(T // u) * u`` frames starting at ``offset`` (0 <= offset <= T % u)."""
    t = motion.shape[-2]
    m = (t // frames_per_code) * frames_per_code
    if m == 0:
        raise ValueError(f"crop_to_units: T={t} frames is shorter than one code ({frames_per_code} frames)")
    if not 0 <= offset <= t - m:
        raise ValueError(f"crop_to_units: offset={offset} must be in [0, {t - m}] for T={t}")
    return motion[..., offset : offset + m, :]
