"""Motion-text datasets over the HumanML3D layout (spec sections 1.7, 1.8 and 10).

Three layers:

* ``build_clip_index``: loads every id of a split once (features + captions), applies the length
  filter and cuts caption sub-clips into their own entries. Every later stage (VQ windows, SFT,
  evaluation) starts from this index.
* ``MotionTextDataset``: generic training view (motion, one caption drawn per epoch, tokens).
* ``EvalMotionTextDataset``: the Guo et al. evaluation item (spec 1.8): caption drawn uniformly,
  22 GloVe positions, length crop with the {single, single, double} coin, evaluator normalisation,
  zero padding to ``spec.max_motion_len``.

Determinism: all randomness of item ``i`` in replication (or epoch) ``r`` comes from
``np.random.default_rng([seed, r, i])``, and batches from ``replication_batches`` (its own stream),
so results do not depend on process count, worker count or iteration order.
"""

from __future__ import annotations

import hashlib
import json
import logging
import string
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from data.layout import (
    CaptionLine,
    DatasetFileError,
    DatasetPaths,
    SkipTracker,
    load_features,
    read_captions,
    read_split,
)
from data.normalization import FeatureNorm
from data.progress import progress_bar
from data.runtime import is_main_process
from data.specs import DatasetSpec, get_dataset_spec
from data.word_vectorizer import WordVectorizer, pad_caption_tokens, vectorize_tokens

logger = logging.getLogger(__name__)

SUBCLIP_LETTERS = string.ascii_uppercase[:23]
"""``A``..``W``: the prefix letters the published loaders give sub-clip entries."""

_INDEX_CACHE_VERSION = 1
_BATCH_STREAM_TAG = 0xBA7C5EED
"""Extra seed word that keeps the batch permutation stream apart from the per-item streams."""


# ---------------------------------------------------------------------------------------------
# Clip index
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipEntry:
    """One motion with its captions: a whole clip or a caption's sub-clip."""

    name: str
    """Unique entry name: the id for whole clips, ``<letters>_<id>`` for sub-clips."""
    source_id: str
    """Id of the file the motion comes from."""
    start: int
    """First frame in the source clip."""
    end: int
    """End frame (exclusive) in the source clip."""
    captions: tuple[CaptionLine, ...]
    """All whole-clip captions, or the single caption of a sub-clip."""

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass
class ClipIndex:
    """Entries of one split plus the source motions they slice.

    ``motions[source_id]`` is the full ``(T, D)`` float32 feature array; ``motion(i)`` returns a
    view of entry ``i``'s frames (no copy).
    """

    spec: DatasetSpec
    split: str
    root: Path
    entries: list[ClipEntry]
    motions: dict[str, np.ndarray]
    stats: dict[str, int] = field(default_factory=dict)
    """Counts: ids, loaded, skipped_files, too_short, too_long, no_whole_caption, subclips, ..."""

    def __len__(self) -> int:
        return len(self.entries)

    def motion(self, i: int) -> np.ndarray:
        """Raw features of entry ``i``: ``(T_i, D)`` float32 view."""
        e = self.entries[i]
        return self.motions[e.source_id][e.start : e.end]

    @property
    def lengths(self) -> np.ndarray:
        """(N,) frame count per entry."""
        return np.array([e.length for e in self.entries], dtype=np.int64)

    def names(self) -> list[str]:
        return [e.name for e in self.entries]


def subclip_rng(source_id: str, seed: int = 0) -> np.random.Generator:
    """Letter generator for the sub-clips of ``source_id``: ``default_rng([seed, crc32(id)])``."""
    return np.random.default_rng([seed, zlib.crc32(source_id.encode())])


def subclip_name(source_id: str, taken: set[str], rng: np.random.Generator) -> str:
    """Unique name ``<letter>_<id>`` for the next sub-clip of ``source_id``.

    The published loaders draw a random letter from A..W with the global RNG and redraw on
    collision. Ours draws uniformly among the still-free names (the same distribution as
    redrawing) from ``rng`` (``subclip_rng``: seeded by the id), so names depend only on the id,
    the seed and the caption order, not on load order or skipped files. When all 23 one-letter
    names of an id are taken it moves on to two letters (the published loop would spin forever).
    """
    prefixes = list(SUBCLIP_LETTERS)
    while True:
        free = [p for p in prefixes if f"{p}_{source_id}" not in taken]
        if free:
            return f"{free[int(rng.integers(len(free)))]}_{source_id}"
        prefixes = [a + b for a in prefixes for b in SUBCLIP_LETTERS]


def _entries_for_clip(
    motion_id: str,
    n_frames: int,
    captions: Sequence[CaptionLine],
    *,
    fps: float,
    min_len: int,
    max_len: int,
    taken: set[str],
    name_seed: int,
    stats: dict[str, int],
) -> list[ClipEntry]:
    """Whole-clip entry (if any whole caption) and sub-clip entries of one loaded clip."""
    if n_frames < min_len:
        stats["too_short"] += 1
        return []
    if n_frames >= max_len:
        # As in the published loaders, a clip failing the filter drops its sub-clips too.
        stats["too_long"] += 1
        return []
    out: list[ClipEntry] = []
    whole: list[CaptionLine] = []
    rng = subclip_rng(motion_id, name_seed)
    for cap in captions:
        if cap.whole_clip:
            whole.append(cap)
            continue
        a, b = cap.frame_range(fps)
        a, b = max(a, 0), min(b, n_frames)
        if not min_len <= b - a < max_len:
            stats["subclips_filtered"] += 1
            continue
        name = subclip_name(motion_id, taken, rng)
        taken.add(name)
        out.append(ClipEntry(name=name, source_id=motion_id, start=a, end=b, captions=(cap,)))
        stats["subclips"] += 1
    if whole:
        if motion_id in taken:
            raise DatasetFileError(f"duplicate entry name {motion_id!r} (id listed twice in the split?)")
        taken.add(motion_id)
        out.insert(
            0, ClipEntry(name=motion_id, source_id=motion_id, start=0, end=n_frames, captions=tuple(whole))
        )
        stats["whole_clips"] += 1
    else:
        stats["no_whole_caption"] += 1
    return out


def _index_fingerprint(paths: DatasetPaths, ids: Sequence[str], params: dict[str, Any]) -> str:
    """Hash of the split, the parameters and every file's size and mtime."""
    h = hashlib.sha256(json.dumps(params, sort_keys=True).encode())
    for motion_id in ids:
        h.update(motion_id.encode())
        for p in (paths.vec_file(motion_id), paths.text_file(motion_id)):
            try:
                st = p.stat()
                h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
            except OSError:
                h.update(b"missing")
    return h.hexdigest()


def _save_index_cache(index: ClipIndex, cache_file: Path, fingerprint: str) -> None:
    ids = list(index.motions)
    offsets = np.cumsum([0] + [len(index.motions[i]) for i in ids])
    meta = {
        "version": _INDEX_CACHE_VERSION,
        "fingerprint": fingerprint,
        "ids": ids,
        "offsets": offsets.tolist(),
        "stats": index.stats,
        "entries": [
            {
                "name": e.name,
                "source_id": e.source_id,
                "start": e.start,
                "end": e.end,
                "captions": [[c.caption, list(c.tokens), c.start, c.end] for c in e.captions],
            }
            for e in index.entries
        ],
    }
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_file.with_suffix(".tmp.npz")
    data = (
        np.concatenate([index.motions[i] for i in ids])
        if ids
        else np.zeros((0, index.spec.feat_dim), np.float32)
    )
    with open(tmp, "wb") as f:
        np.savez(f, motions=data, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
    tmp.replace(cache_file)


def _load_index_cache(
    cache_file: Path, fingerprint: str, spec: DatasetSpec, split: str, root: Path
) -> ClipIndex | None:
    if not cache_file.is_file():
        return None
    try:
        with np.load(cache_file, allow_pickle=False) as z:
            meta = json.loads(z["meta"].tobytes().decode())
            if meta.get("version") != _INDEX_CACHE_VERSION or meta.get("fingerprint") != fingerprint:
                logger.info("index cache %s is stale; rebuilding", cache_file)
                return None
            data = z["motions"]
    except (OSError, ValueError, KeyError) as err:
        logger.warning("ignoring unreadable index cache %s: %s", cache_file, err)
        return None
    off = meta["offsets"]
    motions = {i: data[off[k] : off[k + 1]] for k, i in enumerate(meta["ids"])}
    entries = [
        ClipEntry(
            name=e["name"],
            source_id=e["source_id"],
            start=e["start"],
            end=e["end"],
            captions=tuple(
                CaptionLine(caption=c[0], tokens=tuple(c[1]), start=c[2], end=c[3]) for c in e["captions"]
            ),
        )
        for e in meta["entries"]
    ]
    logger.info(
        "loaded clip index of %s/%s from cache %s (%d entries)", root, split, cache_file, len(entries)
    )
    return ClipIndex(spec=spec, split=split, root=root, entries=entries, motions=motions, stats=meta["stats"])


def build_clip_index(
    root: str | Path,
    split: str,
    spec: DatasetSpec | str = "humanml3d",
    *,
    min_len: int | None = None,
    max_len: int | None = None,
    on_error: str = "raise",
    max_skip_fraction: float = 0.05,
    name_seed: int = 0,
    ids: Sequence[str] | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> ClipIndex:
    """Load a split into a ``ClipIndex`` (spec 1.8 steps 1-2).

    For every id: load ``new_joint_vecs/<id>.npy`` and ``texts/<id>.txt``; drop the clip (and its
    sub-clips) unless ``min_len <= T < max_len``. Whole-clip captions (``from == to == 0``) join
    the clip's caption list; other captions cut ``[int(from*fps), int(to*fps))`` with the
    dataset's ``spec.fps`` (Guo's loader used 20 even for KIT; T2M-GPT/IRG and we use the dataset
    fps), pass the same length filter and become separate entries named by ``subclip_name``.
    The whole clip is kept only if it has at least one whole-clip caption. Entries keep split
    order (whole clip first, then its sub-clips in caption order); loaders shuffle anyway.

    Args:
        root: dataset folder in the HumanML3D layout.
        split: split name (``train``, ``val``, ``test``, ...), read from ``<root>/<split>.txt``.
        spec: dataset spec or registry name.
        min_len: minimum frames (default ``spec.min_motion_len``).
        max_len: exclusive maximum frames (default ``spec.max_clip_len``).
        on_error: ``"raise"`` (default): a missing, empty, NaN or wrongly shaped file raises
            ``DatasetFileError`` naming it. ``"skip"``: such ids are counted and logged, and the
            build fails if more than ``max_skip_fraction`` of the ids were skipped.
        name_seed: seed for the sub-clip name letters.
        ids: load these ids instead of the split file's list.
        cache_dir: if set, the index is saved there as ``index_<split>_<hash>.npz`` and reused
            while the split, parameters and every file's size/mtime are unchanged.
        progress: show a tqdm bar (rank 0 only).
    """
    spec = get_dataset_spec(spec)
    root = Path(root)
    paths = DatasetPaths(root)
    min_len = spec.min_motion_len if min_len is None else min_len
    max_len = spec.max_clip_len if max_len is None else max_len
    if not 0 < min_len < max_len:
        raise ValueError(f"need 0 < min_len < max_len, got min_len={min_len}, max_len={max_len}")
    id_list = list(read_split(root, split) if ids is None else ids)

    cache_file = fingerprint = None
    if cache_dir is not None:
        params = {"spec": spec.name, "fps": spec.fps, "min_len": min_len, "max_len": max_len,
                  "on_error": on_error, "name_seed": name_seed, "root": str(root.resolve())}  # fmt: skip
        fingerprint = _index_fingerprint(paths, id_list, params)
        cache_file = Path(cache_dir) / f"index_{split}_{fingerprint[:16]}.npz"
        cached = _load_index_cache(cache_file, fingerprint, spec, split, root)
        if cached is not None:
            return cached

    tracker = SkipTracker(what=f"{root}/{split}", on_error=on_error, max_skip_fraction=max_skip_fraction)
    stats = dict.fromkeys(("ids", "loaded", "skipped_files", "too_short", "too_long", "no_whole_caption",
                           "whole_clips", "subclips", "subclips_filtered"), 0)  # fmt: skip
    stats["ids"] = len(id_list)
    entries: list[ClipEntry] = []
    motions: dict[str, np.ndarray] = {}
    taken: set[str] = set()
    bar = progress_bar(
        id_list, desc=f"loading {split}", unit="clip", disable=not (progress and is_main_process())
    )
    for motion_id in bar:
        tracker.seen += 1
        try:
            motion = load_features(paths.vec_file(motion_id), spec)
            captions = read_captions(paths.text_file(motion_id))
        except DatasetFileError as err:
            tracker.record(motion_id, err)
            stats["skipped_files"] += 1
            continue
        stats["loaded"] += 1
        new = _entries_for_clip(
            motion_id,
            len(motion),
            captions,
            fps=spec.fps,
            min_len=min_len,
            max_len=max_len,
            taken=taken,
            name_seed=name_seed,
            stats=stats,
        )
        if new:
            motions[motion_id] = motion
            entries.extend(new)
    tracker.finish()
    if not entries:
        raise DatasetFileError(
            f"{root}/{split}: no entries left after filtering ({stats}); check the length limits "
            f"[{min_len}, {max_len}) and the caption files"
        )
    logger.info("%s/%s: %d entries (%d whole clips, %d sub-clips) from %d ids; %s",
                root, split, len(entries), stats["whole_clips"], stats["subclips"], len(id_list), stats)  # fmt: skip
    index = ClipIndex(spec=spec, split=split, root=root, entries=entries, motions=motions, stats=stats)
    if cache_file is not None and is_main_process():
        _save_index_cache(index, cache_file, fingerprint)
    return index


# ---------------------------------------------------------------------------------------------
# Training view
# ---------------------------------------------------------------------------------------------


class MotionTextDataset(Dataset):
    """Generic motion + caption dataset over a ``ClipIndex``.

    Item ``i`` (in epoch ``e``, set with ``set_epoch``) draws its caption from
    ``default_rng([seed, e, i])``. Returns a dict:
    ``motion`` ``(T, D)`` float32 (normalised when ``mean``/``std`` are given, raw otherwise),
    ``caption`` str, ``tokens`` tuple of ``word/POS``, ``length`` int, ``name`` str.
    Later stages (VQ windows, SFT) wrap or subclass this and reuse ``index``.
    """

    def __init__(
        self,
        index: ClipIndex,
        *,
        mean: np.ndarray | None = None,
        std: np.ndarray | None = None,
        seed: int = 0,
    ):
        self.index = index
        self.spec = index.spec
        if (mean is None) != (std is None):
            raise ValueError("pass both mean and std, or neither")
        self.norm = None if mean is None else FeatureNorm.from_arrays(mean, std, self.spec)
        self.mean, self.std = (None, None) if self.norm is None else (self.norm.mean, self.norm.std)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the caption draws of ``epoch``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.index)

    def normalise(self, motion: np.ndarray) -> np.ndarray:
        """``(x - mean) / std`` (identity without mean/std); returns a new float32 array."""
        if self.norm is None:
            return np.array(motion, dtype=np.float32)
        return self.norm.normalise(motion)

    def get_item(self, i: int, epoch: int | None = None) -> dict[str, Any]:
        epoch = self.epoch if epoch is None else epoch
        entry = self.index.entries[i]
        rng = np.random.default_rng([self.seed, epoch, i])
        cap = entry.captions[int(rng.integers(len(entry.captions)))]
        return {
            "motion": self.normalise(self.index.motion(i)),
            "caption": cap.caption,
            "tokens": cap.tokens,
            "length": entry.length,
            "name": entry.name,
        }

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.get_item(i)


# ---------------------------------------------------------------------------------------------
# Evaluation view (spec 1.8)
# ---------------------------------------------------------------------------------------------


class EvalItem(NamedTuple):
    """One evaluation item, in the published tuple order (spec 1.8 step 6)."""

    word_embs: np.ndarray
    """(max_text_len + 2, 300) float32."""
    pos_onehot: np.ndarray
    """(max_text_len + 2, 15) float32."""
    caption: str
    sent_len: int
    """Caption positions including sos and eos."""
    motion: np.ndarray
    """(spec.max_motion_len, D) float32, evaluator-normalised, zero after ``m_length``."""
    m_length: int
    """Frames of the crop (a multiple of ``unit_length``)."""
    tokens: str
    """The padded ``word/POS`` tokens joined with ``_``."""
    name: str


@dataclass(frozen=True)
class EvalDraw:
    """The random choices of one evaluation item."""

    caption_index: int
    double: bool
    """True when the coin chose the one-unit-shorter crop."""
    start: int
    m_length: int


def crop_length(n_frames: int, unit_length: int, double: bool) -> int:
    """Crop length of the published coin: single ``(T // u) * u``, double ``(T // u - 1) * u``.

    Falls back to single when double would leave no frames.
    """
    units = n_frames // unit_length
    if double and units > 1:
        units -= 1
    return units * unit_length


class EvalMotionTextDataset(Dataset):
    """Guo et al. evaluation dataset (spec 1.8), deterministic per (seed, replication, item).

    Item ``i`` of replication ``r`` draws, from ``default_rng([seed, r, i])`` in this order: the
    caption (uniform), the crop coin (``{single, single, double}`` uniform, drawn whenever
    ``unit_length < 10``, which is always the case for the released datasets; the published
    condition is on ``unit_length``, not on the clip's number of units), and the crop start in
    ``[0, T - m]``. The crop is normalised with the EVALUATOR's mean/std and zero-padded to
    ``spec.max_motion_len`` frames.

    Index with ``dataset[i]`` (uses ``replication``, set by ``set_replication``) or with a pair
    ``dataset[(i, r)]`` as ``make_eval_loader`` does, so DataLoader workers never depend on state
    set after they were forked.

    Args:
        index: clip index of the evaluation split.
        vectorizer: GloVe word vectorizer.
        mean, std: ``(D,)`` evaluator normalisation (``meta/mean.npy``, ``meta/std.npy``).
        seed: base seed of all draws.
    """

    def __init__(
        self,
        index: ClipIndex,
        vectorizer: WordVectorizer,
        mean: np.ndarray,
        std: np.ndarray,
        *,
        seed: int = 0,
    ):
        self.index = index
        self.spec = index.spec
        self.vectorizer = vectorizer
        self.norm = FeatureNorm.from_arrays(mean, std, self.spec)
        self.mean, self.std = self.norm.mean, self.norm.std
        self.seed = int(seed)
        self.replication = 0

    def __len__(self) -> int:
        return len(self.index)

    def set_replication(self, replication: int) -> None:
        self.replication = int(replication)

    def draw(self, i: int, replication: int | None = None) -> EvalDraw:
        """The caption / coin / start choices of item ``i`` in ``replication``."""
        r = self.replication if replication is None else int(replication)
        entry = self.index.entries[i]
        rng = np.random.default_rng([self.seed, r, i])
        cap = int(rng.integers(len(entry.captions)))
        unit = self.spec.unit_length
        double = bool(unit < 10 and rng.integers(3) == 2)
        n = min(entry.length, self.spec.max_motion_len)
        m_length = crop_length(n, unit, double)
        start = int(rng.integers(entry.length - m_length + 1))
        return EvalDraw(caption_index=cap, double=double, start=start, m_length=m_length)

    def raw_motion(self, i: int, replication: int | None = None) -> np.ndarray:
        """Un-normalised crop of item ``i``: ``(m_length, D)`` float32 (same frames as ``get_item``).

        Use it to run a VQ-VAE round trip or a generator on the ground-truth crop.
        """
        d = self.draw(i, replication)
        return np.array(self.index.motion(i)[d.start : d.start + d.m_length], dtype=np.float32)

    def normalise_padded(self, motion: np.ndarray) -> np.ndarray:
        """Raw ``(m, D)`` features -> ``(spec.max_motion_len, D)`` evaluator-normalised, zero-padded.

        Frames beyond ``max_motion_len`` are dropped (spec pitfall 12).
        """
        motion = np.asarray(motion, dtype=np.float32)[: self.spec.max_motion_len]
        out = np.zeros((self.spec.max_motion_len, self.spec.feat_dim), dtype=np.float32)
        out[: len(motion)] = self.norm.normalise(motion)
        return out

    def get_item(self, i: int, replication: int | None = None) -> EvalItem:
        r = self.replication if replication is None else int(replication)
        entry = self.index.entries[i]
        d = self.draw(i, r)
        cap = entry.captions[d.caption_index]
        padded, sent_len = pad_caption_tokens(cap.tokens, self.spec.max_text_len)
        word_embs, pos = vectorize_tokens(self.vectorizer, padded)
        crop = self.index.motion(i)[d.start : d.start + d.m_length]
        return EvalItem(
            word_embs=word_embs,
            pos_onehot=pos,
            caption=cap.caption,
            sent_len=sent_len,
            motion=self.normalise_padded(crop),
            m_length=d.m_length,
            tokens="_".join(padded),
            name=entry.name,
        )

    def __getitem__(self, key: int | tuple[int, int]) -> EvalItem:
        if isinstance(key, tuple):
            return self.get_item(int(key[0]), int(key[1]))
        return self.get_item(int(key))


def replication_batches(
    n_items: int, batch_size: int = 32, seed: int = 0, replication: int = 0
) -> list[np.ndarray]:
    """Shuffled, ``drop_last`` batches of item indices for one replication.

    The permutation comes from ``default_rng([seed, replication, n_items, TAG])``, a stream
    separate from the per-item draws. Every process can compute the same list and take its share
    (e.g. ``batches[rank::world_size]``), so the batch composition of a replication does not
    depend on the process count (unlike a ``DistributedSampler`` without ``set_epoch``, spec
    pitfall 15).

    Returns:
        ``n_items // batch_size`` int64 arrays of length ``batch_size``.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    perm = np.random.default_rng([seed, replication, n_items, _BATCH_STREAM_TAG]).permutation(n_items)
    n_batches = n_items // batch_size
    return [perm[k * batch_size : (k + 1) * batch_size] for k in range(n_batches)]


class EvalBatch(NamedTuple):
    """A stacked batch of ``EvalItem`` rows, in input order."""

    word_embs: torch.Tensor
    """(B, L, 300) float32."""
    pos_onehot: torch.Tensor
    """(B, L, 15) float32."""
    captions: list[str]
    sent_lens: torch.Tensor
    """(B,) long."""
    motions: torch.Tensor
    """(B, max_motion_len, D) float32."""
    m_lengths: torch.Tensor
    """(B,) long."""
    tokens: list[str]
    names: list[str]


def eval_collate(items: Sequence[EvalItem]) -> EvalBatch:
    """Stack items into an ``EvalBatch`` WITHOUT reordering.

    The published collate sorts by ``sent_len`` descending because its GRU packing requires it;
    our evaluator (``models/evaluator.py``) accepts lengths in any order and returns rows in input
    order, so sorting is unnecessary and rows stay aligned with the batch's index list.
    """
    return EvalBatch(
        word_embs=torch.from_numpy(np.stack([it.word_embs for it in items])),
        pos_onehot=torch.from_numpy(np.stack([it.pos_onehot for it in items])),
        captions=[it.caption for it in items],
        sent_lens=torch.tensor([it.sent_len for it in items], dtype=torch.long),
        motions=torch.from_numpy(np.stack([it.motion for it in items])),
        m_lengths=torch.tensor([it.m_length for it in items], dtype=torch.long),
        tokens=[it.tokens for it in items],
        names=[it.name for it in items],
    )


def make_eval_loader(
    dataset: EvalMotionTextDataset,
    replication: int,
    *,
    batch_size: int = 32,
    num_workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
    collate_fn: Callable[[Sequence[EvalItem]], Any] = eval_collate,
) -> DataLoader:
    """DataLoader over this rank's share of ``replication_batches`` for ``replication``.

    Rank ``k`` gets batches ``k, k + world_size, ...``; together the ranks cover exactly the
    single-process batches, and every item carries its replication, so the values do not depend
    on ``world_size`` or ``num_workers``.
    """
    batches = replication_batches(
        len(dataset), batch_size=batch_size, seed=dataset.seed, replication=replication
    )
    keyed = [[(int(i), replication) for i in b] for b in batches[rank::world_size]]
    return DataLoader(dataset, batch_sampler=keyed, num_workers=num_workers, collate_fn=collate_fn)
