"""The Guo et al. (CVPR 2022) text/motion feature extractors used by every published metric.

Three networks, with the released ``finest.tar`` state-dict layout (spec section 4):

- ``MovementConvEncoder``: ``(B, T, D-4)`` features without foot contacts -> ``(B, T//4, 512)``.
- ``MotionEncoderBiGRUCo``: movement steps -> ``(B, 512)`` motion embedding.
- ``TextEncoderBiGRUCo``: GloVe word vectors + POS one-hots -> ``(B, 512)`` text embedding.

``load_guo_evaluator(checkpoint, dataset)`` loads them strictly and returns a ``GuoEvaluator``
whose ``embed_text`` / ``embed_motion`` follow ``spec/api-contract.md``: any length order in,
rows in input order out, no grad. Hidden sizes are read from the checkpoint, so our own smaller
evaluators (tiny configs) load through the same function; the released sizes are the defaults.

Inputs must be normalised with the evaluator's ``meta/{mean,std}.npy``: ``data.normalization``
loads that pair (``FeatureNorm.load_meta``), maps a generator's space into it (``EvalSpaceMap``)
and catches batches that are obviously not in it (``check_eval_space``).

Provenance: an evaluator is only meaningful with the word vectors and the mean/std it was trained
with; others give a normal-looking table with wrong numbers. ``prepare.train_evaluator`` writes
``provenance.json`` (:data:`PROVENANCE_FILE`) beside ``finest.tar`` with the content hashes of its
``our_vab_*`` files and of its ``meta/{mean,std}.npy``; every user (the evaluation harness,
``eval.scoring.MotionTextScorer.from_files``, ``scripts/synthml_difficulty.py``) calls
:func:`check_evaluator_provenance`, which raises ``ProvenanceError`` naming both hashes on a
mismatch. A checkpoint without that file (a released ``finest.tar``) cannot be checked: one
warning per checkpoint, then it is used as given.
"""

from __future__ import annotations

import json
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from data.normalization import meta_files
from data.run_folder import Provenance, ProvenanceError, atomic_torch_save, path_digest
from data.specs import DATASET_NAMES, DatasetSpec, get_dataset_spec
from data.word_vector_build import word_vectors_digest

logger = logging.getLogger(__name__)

CHECKPOINT_KEYS = ("text_encoder", "motion_encoder", "movement_encoder")
"""Top-level keys of ``finest.tar`` holding the three state dicts (loaded strictly)."""

CONTACT_DIMS = 4
"""Trailing foot-contact dims dropped before the movement encoder."""

PROVENANCE_FILE = "provenance.json"
"""Beside ``finest.tar``: ``{"provenance": {"word_vectors", "mean", "std"}, "paths": {...}}``."""

_unchecked_warned: set[str] = set()
"""Checkpoints already warned about (no provenance record): warn once per checkpoint per process."""

_RELEASED_FEAT_DIM = get_dataset_spec("humanml3d").feat_dim
"""Feature dim D of the default (released HumanML3D) sizes; KIT-ML and others pass their own."""


class EvaluatorLoadError(RuntimeError):
    """A checkpoint or meta file cannot be used as a Guo evaluator; the message names file and fix."""


# ----------------------------------------------------------------------------------------------
# Networks (attribute names and layer indices are the released state-dict keys)
# ----------------------------------------------------------------------------------------------


class MovementConvEncoder(nn.Module):
    """Two stride-2 convolutions: ``(B, T, input_size) -> (B, T//4, output_size)``."""

    def __init__(self, input_size: int, hidden_size: int = 512, output_size: int = 512):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv1d(input_size, hidden_size, 4, 2, 1),
            nn.Dropout(0.2, inplace=True),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv1d(hidden_size, output_size, 4, 2, 1),
            nn.Dropout(0.2, inplace=True),
            nn.LeakyReLU(0.2, inplace=True),
        )
        self.out_net = nn.Linear(output_size, output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (B, T, input_size)`` -> ``(B, T//4, output_size)``."""
        h = self.main(x.permute(0, 2, 1)).permute(0, 2, 1)
        return self.out_net(h)


class MovementConvDecoder(nn.Module):
    """Inverse of ``MovementConvEncoder`` used only to pre-train it (Guo's decomposition AE).

    ``(B, N, input_size) -> (B, 4N, output_size)``; not part of ``finest.tar``.
    """

    def __init__(self, input_size: int = 512, hidden_size: int = 512, output_size: int = _RELEASED_FEAT_DIM):
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose1d(input_size, hidden_size, 4, 2, 1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.ConvTranspose1d(hidden_size, output_size, 4, 2, 1),
            nn.LeakyReLU(0.2, inplace=True),
        )
        self.out_net = nn.Linear(output_size, output_size)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``z (B, N, input_size)`` -> ``(B, 4N, output_size)``."""
        h = self.main(z.permute(0, 2, 1)).permute(0, 2, 1)
        return self.out_net(h)


def _gru_final_state(gru: nn.GRU, packed: Any, hidden: torch.Tensor) -> torch.Tensor:
    """Concatenated final forward/backward states ``(B, 2H)`` in the packed batch's input order."""
    _, last = gru(packed, hidden)
    return torch.cat([last[0], last[1]], dim=-1)


class MotionEncoderBiGRUCo(nn.Module):
    """Bidirectional GRU over movement steps -> co-embedding ``(B, output_size)``."""

    def __init__(self, input_size: int = 512, hidden_size: int = 1024, output_size: int = 512):
        super().__init__()
        self.input_emb = nn.Linear(input_size, hidden_size)
        self.gru = nn.GRU(hidden_size, hidden_size, batch_first=True, bidirectional=True)
        self.output_net = nn.Sequential(
            nn.Linear(hidden_size * 2, hidden_size),
            nn.LayerNorm(hidden_size),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(hidden_size, output_size),
        )
        self.hidden = nn.Parameter(torch.randn((2, 1, hidden_size), requires_grad=True))

    def forward(self, movements: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        """``movements (B, N, input_size)``, ``steps (B,)`` valid steps (any order, >= 1)."""
        emb = self.input_emb(movements)
        hidden = self.hidden.repeat(1, movements.shape[0], 1)
        packed = pack_padded_sequence(emb, steps.cpu(), batch_first=True, enforce_sorted=False)
        return self.output_net(_gru_final_state(self.gru, packed, hidden))


class TextEncoderBiGRUCo(nn.Module):
    """Bidirectional GRU over word vectors + POS embeddings -> co-embedding ``(B, output_size)``."""

    def __init__(
        self, word_size: int = 300, pos_size: int = 15, hidden_size: int = 512, output_size: int = 512
    ):
        super().__init__()
        self.pos_emb = nn.Linear(pos_size, word_size)
        self.input_emb = nn.Linear(word_size, hidden_size)
        self.gru = nn.GRU(hidden_size, hidden_size, batch_first=True, bidirectional=True)
        self.output_net = nn.Sequential(
            nn.Linear(hidden_size * 2, hidden_size),
            nn.LayerNorm(hidden_size),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(hidden_size, output_size),
        )
        self.hidden = nn.Parameter(torch.randn((2, 1, hidden_size), requires_grad=True))

    def forward(
        self, word_embs: torch.Tensor, pos_onehot: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        """``word_embs (B, L, word)``, ``pos_onehot (B, L, pos)``, ``lengths (B,)`` (any order)."""
        emb = self.input_emb(word_embs + self.pos_emb(pos_onehot))
        hidden = self.hidden.repeat(1, word_embs.shape[0], 1)
        packed = pack_padded_sequence(emb, lengths.cpu(), batch_first=True, enforce_sorted=False)
        return self.output_net(_gru_final_state(self.gru, packed, hidden))


@dataclass(frozen=True)
class EvaluatorDims:
    """Layer sizes of the three networks; defaults are the released ones (spec section 4.1)."""

    dim_pose: int = _RELEASED_FEAT_DIM
    """Feature dim D (the movement encoder sees D-4)."""
    dim_word: int = 300
    dim_pos_ohot: int = 15
    dim_text_hidden: int = 512
    dim_motion_hidden: int = 1024
    dim_coemb: int = 512
    """Output size of both co-embedding encoders."""
    dim_movement_enc_hidden: int = 512
    dim_movement_latent: int = 512

    @classmethod
    def from_state_dicts(cls, states: dict[str, dict[str, torch.Tensor]]) -> EvaluatorDims:
        """Read every size off the weights (so reduced-size evaluators load through one path)."""
        mov, mot, txt = states["movement_encoder"], states["motion_encoder"], states["text_encoder"]
        return cls(
            dim_pose=int(mov["main.0.weight"].shape[1]) + CONTACT_DIMS,
            dim_word=int(txt["pos_emb.weight"].shape[0]),
            dim_pos_ohot=int(txt["pos_emb.weight"].shape[1]),
            dim_text_hidden=int(txt["input_emb.weight"].shape[0]),
            dim_motion_hidden=int(mot["input_emb.weight"].shape[0]),
            dim_coemb=int(mot["output_net.3.weight"].shape[0]),
            dim_movement_enc_hidden=int(mov["main.0.weight"].shape[0]),
            dim_movement_latent=int(mov["out_net.weight"].shape[0]),
        )


def build_networks(
    dims: EvaluatorDims,
) -> tuple[TextEncoderBiGRUCo, MotionEncoderBiGRUCo, MovementConvEncoder]:
    """Fresh (text, motion, movement) encoders with the given sizes."""
    text = TextEncoderBiGRUCo(
        word_size=dims.dim_word, pos_size=dims.dim_pos_ohot, hidden_size=dims.dim_text_hidden,
        output_size=dims.dim_coemb,
    )  # fmt: skip
    motion = MotionEncoderBiGRUCo(
        input_size=dims.dim_movement_latent, hidden_size=dims.dim_motion_hidden, output_size=dims.dim_coemb
    )
    movement = MovementConvEncoder(
        dims.dim_pose - CONTACT_DIMS, dims.dim_movement_enc_hidden, dims.dim_movement_latent
    )
    return text, motion, movement


# ----------------------------------------------------------------------------------------------
# Evaluator
# ----------------------------------------------------------------------------------------------


class GuoEvaluator(nn.Module):
    """The three extractors in eval mode with the contract's ``embed_text`` / ``embed_motion``."""

    def __init__(
        self,
        text_encoder: TextEncoderBiGRUCo,
        motion_encoder: MotionEncoderBiGRUCo,
        movement_encoder: MovementConvEncoder,
        spec: DatasetSpec,
        epoch: int | None = None,
    ):
        super().__init__()
        self.text_encoder = text_encoder
        self.motion_encoder = motion_encoder
        self.movement_encoder = movement_encoder
        self.spec = spec
        self.unit_length = spec.unit_length
        self.epoch = epoch
        self.eval()
        self.requires_grad_(False)

    @property
    def device(self) -> torch.device:
        return self.motion_encoder.hidden.device

    @property
    def dim(self) -> int:
        """Size of the co-embedding (512 for the released evaluators)."""
        return int(self.motion_encoder.output_net[3].out_features)

    def train(self, mode: bool = True) -> GuoEvaluator:
        """Always stays in eval mode: dropout must be off for every published number."""
        return super().train(False)

    @torch.no_grad()
    def embed_text(
        self, word_embs: torch.Tensor, pos_onehot: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        """Text embeddings ``(B, dim)`` in input order.

        Args:
            word_embs: ``(B, L, 300)`` float GloVe vectors (sos, tokens, eos, unk padding).
            pos_onehot: ``(B, L, 15)`` POS one-hots.
            lengths: ``(B,)`` long, tokens per caption counting sos/eos, ``1 <= len <= L``, any order;
                positions past a caption's length are ignored.
        """
        b, l_max = _check_batch("word_embs", word_embs, 3)
        if pos_onehot.shape[:2] != (b, l_max):
            raise ValueError(
                f"pos_onehot shape {tuple(pos_onehot.shape)} does not match word_embs {(b, l_max)}"
            )
        lengths = _check_lengths(lengths, b, l_max, what="caption", min_len=1)
        dev = self.device
        out = self.text_encoder(word_embs.to(dev, torch.float32), pos_onehot.to(dev, torch.float32), lengths)
        return _check_finite(out, "text")

    @torch.no_grad()
    def embed_motion(self, motions: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Motion embeddings ``(B, dim)`` in input order.

        Args:
            motions: ``(B, T, D)`` float features, normalised with the evaluator's mean/std and
                zero-padded after each length. The movement encoder runs on the padded batch (as the
                published evaluation does), then the GRU reads ``length // unit_length`` steps.
            lengths: ``(B,)`` long frame counts, any order, ``unit_length <= len <= T``.
        """
        b, t = _check_batch("motions", motions, 3)
        if motions.shape[-1] != self.spec.feat_dim:
            raise ValueError(
                f"motions have {motions.shape[-1]} features, the {self.spec.name} evaluator expects "
                f"{self.spec.feat_dim}"
            )
        lengths = _check_lengths(lengths, b, t, what="motion", min_len=self.unit_length)
        movements = self.movement_encoder(motions.to(self.device, torch.float32)[..., :-CONTACT_DIMS])
        steps = torch.div(lengths, self.unit_length, rounding_mode="floor")
        return _check_finite(self.motion_encoder(movements, steps), "motion")


def _check_batch(name: str, x: torch.Tensor, ndim: int) -> tuple[int, int]:
    if not isinstance(x, torch.Tensor) or x.ndim != ndim:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a {ndim}-d tensor, got {shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch")
    return int(x.shape[0]), int(x.shape[1])


def _check_lengths(lengths: Any, batch: int, max_len: int, what: str, min_len: int) -> torch.Tensor:
    lengths = torch.as_tensor(lengths).reshape(-1).long().cpu()
    if lengths.numel() != batch:
        raise ValueError(f"{what} lengths has {lengths.numel()} entries for a batch of {batch}")
    short = (lengths < min_len).nonzero().flatten().tolist()
    if short:
        raise ValueError(
            f"{what} length(s) {lengths[short].tolist()} at row(s) {short[:5]} are below {min_len}: the "
            f"evaluator needs at least {min_len} frame(s)/token(s) (for motions one movement step of "
            f"unit_length frames; substitute a one-code motion for failed generations and count it)"
        )
    long = (lengths > max_len).nonzero().flatten().tolist()
    if long:
        raise ValueError(f"{what} length(s) {lengths[long].tolist()} exceed the padded size {max_len}")
    return lengths


def _check_finite(emb: torch.Tensor, what: str) -> torch.Tensor:
    if not torch.isfinite(emb).all():
        rows = (~torch.isfinite(emb)).any(dim=1).nonzero().flatten().tolist()
        raise FloatingPointError(
            f"NaN/inf {what} embedding in row(s) {rows[:10]}: check the inputs for NaN/inf (a diverged "
            "generator or a zero std in the normalisation files)"
        )
    return emb


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


def load_checkpoint_file(path: str | Path) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` of ``finest.tar`` with errors that name the file.

    The released format (three state dicts, two Adam ``state_dict()``s, ``epoch``/``iter`` ints) holds
    only tensors and plain containers, so the restricted unpickler accepts it.
    """
    path = Path(path)
    if not path.is_file():
        raise EvaluatorLoadError(
            f"evaluator checkpoint not found: {path}. Run prepare/download_extractor.sh (released "
            "HumanML3D/KIT-ML evaluators) or train one with `python -m prepare.train_evaluator`, and set "
            "evaluator_checkpoint in the config"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise EvaluatorLoadError(
            f"{path}: holds objects other than tensors/containers and cannot be loaded with "
            f"weights_only=True ({err}); re-save it as a dict of state dicts"
        ) from err
    except (RuntimeError, OSError, EOFError) as err:
        raise EvaluatorLoadError(f"{path}: not a readable torch checkpoint ({err})") from err
    if not isinstance(ckpt, dict):
        raise EvaluatorLoadError(
            f"{path}: expected a dict with keys {CHECKPOINT_KEYS}, got {type(ckpt).__name__}"
        )
    return ckpt


def _dataset_hint(dim_pose: int, spec: DatasetSpec) -> str:
    for name in DATASET_NAMES:
        other = get_dataset_spec(name)
        if other.feat_dim == dim_pose and other.name != spec.name:
            return f"; this looks like a {other.name.upper()} checkpoint (pass dataset={other.name!r})"
    return ""


def load_guo_evaluator(
    checkpoint: str | Path, dataset: str | DatasetSpec = "humanml3d", device: str | torch.device = "cpu"
) -> GuoEvaluator:
    """Load ``finest.tar`` (keys ``text_encoder``, ``motion_encoder``, ``movement_encoder``) strictly.

    Layer sizes are read from the weights (released: text hidden 512, motion hidden 1024, movement
    512/512, co-embedding 512); the movement encoder input must be the dataset's ``D - 4``
    (259 HumanML3D, 247 KIT-ML). Optimizer states and ``iter`` are ignored; ``epoch`` is logged.

    Raises:
        EvaluatorLoadError: missing file, missing keys, wrong dataset, or a strict-loading mismatch.
    """
    spec = get_dataset_spec(dataset)
    path = Path(checkpoint)
    ckpt = load_checkpoint_file(path)
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(ckpt.get(k), dict)]
    if missing:
        raise EvaluatorLoadError(
            f"{path}: missing state dict(s) {missing}; present keys: {sorted(ckpt)}. Expected a Guo "
            "text_mot_match finest.tar"
        )
    states = {k: ckpt[k] for k in CHECKPOINT_KEYS}
    try:
        dims = EvaluatorDims.from_state_dicts(states)
    except (KeyError, IndexError, AttributeError) as err:
        raise EvaluatorLoadError(f"{path}: state dict lacks the expected layer {err}") from err
    if dims.dim_pose != spec.feat_dim:
        raise EvaluatorLoadError(
            f"{path}: movement_encoder main.0.weight takes {dims.dim_pose - CONTACT_DIMS} inputs, the "
            f"{spec.name} evaluator takes {spec.feat_dim - CONTACT_DIMS}{_dataset_hint(dims.dim_pose, spec)}"
        )
    text, motion, movement = build_networks(dims)
    for key, module in zip(CHECKPOINT_KEYS, (text, motion, movement), strict=True):
        try:
            module.load_state_dict(states[key], strict=True)
        except RuntimeError as err:
            raise EvaluatorLoadError(f"{path}: {key} does not match the Guo layout: {err}") from err
    epoch = ckpt.get("epoch")
    epoch = int(epoch) if isinstance(epoch, int) else None
    ev = GuoEvaluator(text, motion, movement, spec=spec, epoch=epoch).to(device)
    logger.info("loaded %s evaluator %s (epoch %s, dims %s)", spec.name, path, epoch, dims)
    return ev


def guo_checkpoint_state(
    text_encoder: nn.Module,
    motion_encoder: nn.Module,
    movement_encoder: nn.Module,
    epoch: int = 0,
    it: int = 0,
    optimizers: dict[str, torch.optim.Optimizer] | None = None,
) -> dict[str, Any]:
    """The ``finest.tar`` dict in the released layout (``opt_*`` Adam states only when given)."""
    state: dict[str, Any] = {
        "text_encoder": text_encoder.state_dict(),
        "motion_encoder": motion_encoder.state_dict(),
        "movement_encoder": movement_encoder.state_dict(),
    }
    for name, opt in (optimizers or {}).items():
        state[name] = opt.state_dict()
    state["epoch"] = int(epoch)
    state["iter"] = int(it)
    return state


def save_guo_checkpoint(
    path: str | Path,
    text_encoder: nn.Module,
    motion_encoder: nn.Module,
    movement_encoder: nn.Module,
    epoch: int = 0,
    it: int = 0,
    optimizers: dict[str, torch.optim.Optimizer] | None = None,
) -> None:
    """Write ``finest.tar`` (``guo_checkpoint_state``) atomically."""
    state = guo_checkpoint_state(
        text_encoder, motion_encoder, movement_encoder, epoch=epoch, it=it, optimizers=optimizers
    )
    atomic_torch_save(state, path)


# ----------------------------------------------------------------------------------------------
# Provenance: the word vectors and mean/std an evaluator was trained with
# ----------------------------------------------------------------------------------------------


def evaluator_provenance(glove_dir: str | Path, meta_dir: str | Path) -> dict[str, str]:
    """``{"word_vectors", "mean", "std"}`` digests of an evaluator's inputs (what the record holds)."""
    mean_file, std_file = meta_files(meta_dir)
    return {"word_vectors": word_vectors_digest(glove_dir), "mean": path_digest(mean_file),
            "std": path_digest(std_file)}  # fmt: skip


def provenance_record(glove_dir: str | Path, meta_dir: str | Path) -> dict[str, Any]:
    """The JSON ``prepare.train_evaluator`` writes as :data:`PROVENANCE_FILE` beside ``finest.tar``."""
    mean_file, std_file = meta_files(meta_dir)
    return {
        "provenance": evaluator_provenance(glove_dir, meta_dir),
        "paths": {"word_vectors": str(glove_dir), "mean": str(mean_file), "std": str(std_file)},
    }


_FIELDS = {"word_vectors": "glove_dir", "mean": "evaluator_meta_dir", "std": "evaluator_meta_dir"}


def check_evaluator_provenance(
    checkpoint: str | Path,
    *,
    glove_dir: str | Path | None = None,
    meta_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Check that ``glove_dir`` / ``meta_dir`` hold what the evaluator ``checkpoint`` was trained with.

    Reads ``<checkpoint dir>/provenance.json``. Without it (a released evaluator) one warning is
    logged per checkpoint and nothing is checked.

    Returns:
        ``{"checked": bool, "record": path or None, "digests": {name: digest used now}}`` for the
        run's JSON output.

    Raises:
        ProvenanceError: a digest differs; the message names each file, the digest the evaluator
            was trained with (and where from) and the digest of the one given.
    """
    record_path = Path(checkpoint).parent / PROVENANCE_FILE
    actual: dict[str, str] = {}
    given: dict[str, str] = {}
    if glove_dir is not None:
        actual["word_vectors"] = word_vectors_digest(glove_dir)
        given["word_vectors"] = f"glove_dir={glove_dir}"
    if meta_dir is not None:
        mean_file, std_file = meta_files(meta_dir)
        actual.update(mean=path_digest(mean_file), std=path_digest(std_file))
        given.update(mean=str(mean_file), std=str(std_file))
    if not record_path.is_file():
        key = str(Path(checkpoint).resolve())
        if key not in _unchecked_warned:
            _unchecked_warned.add(key)
            logger.warning(
                "%s has no %s (a released evaluator?): cannot check that the word vectors and mean/std "
                "given are the ones it was trained with; using them as given", checkpoint, PROVENANCE_FILE,
            )  # fmt: skip
        return {"checked": False, "record": None, "digests": actual}
    recorded = Provenance.load(record_path).hashes
    paths = json.loads(record_path.read_text()).get("paths", {})
    problems = []
    for name in sorted(actual):
        if recorded.get(name) != actual[name]:
            where = f" ({paths[name]})" if name in paths else ""
            problems.append(
                f"{name}: trained with {recorded.get(name, '<not recorded>')}{where}, "
                f"{given[name]} has {actual[name]}"
            )
    if problems:
        fields = sorted({_FIELDS[p.split(":")[0]] for p in problems})
        raise ProvenanceError(
            f"evaluator {checkpoint} (record {record_path}) was trained with other inputs than the ones "
            "given: " + "; ".join(problems) + ". Its R-precision, MM-Dist and FID would be computed in "
            f"another embedding space without any other error. Set {' and '.join(fields)} to the files "
            "it was trained with, or retrain the evaluator with these"
        )
    return {"checked": True, "record": str(record_path), "digests": actual}
