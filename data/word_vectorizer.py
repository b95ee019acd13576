"""GloVe word vectors and POS one-hots for the Guo et al. text encoder (spec section 5).

Files in ``glove_dir`` (the ``our_vab`` format shipped with text-to-motion):

```
<prefix>_data.npy    float (N, 300)   one vector per vocabulary word
<prefix>_words.pkl   list[str]        the vocabulary (sos, eos, unk first in the released copy)
<prefix>_idx.pkl     dict[str, int]   word -> row of the data array
```

``vectorizer["walk/VERB"]`` returns ``(word_vec (300,), pos_onehot (15,))``. The row comes from
the ``_idx.pkl`` mapping, never from the word's list position. Pickles are read with a restricted
unpickler that builds only plain lists, dicts, strings and numbers, so a tampered file cannot run
code.

Sentence encoding for the evaluator (spec 1.8 step 4): ``pad_caption_tokens`` wraps the tokens as
``sos + tokens[:max_text_len] + eos`` and pads with ``unk`` to ``max_text_len + 2`` positions;
``encode_caption`` vectorises the result.
"""

from __future__ import annotations

import io
import logging
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from data.run_folder import OutputFolder
from data.specs import POS_TAGS

logger = logging.getLogger(__name__)

WORD_DIM = 300
"""GloVe dimension the released evaluator was trained with."""

POS_ENUMERATOR: dict[str, int] = {tag: i for i, tag in enumerate(POS_TAGS)}
"""POS tag -> one-hot position (VERB 0 ... Desc_VIP 13, OTHER 14)."""

# Checked in this order; the first list containing the word decides its category.
VIP_DICT: dict[str, tuple[str, ...]] = {
    "Loc_VIP": ("left", "right", "clockwise", "counterclockwise", "anticlockwise", "forward",
                "back", "backward", "up", "down", "straight", "curve"),
    "Body_VIP": ("arm", "chin", "foot", "feet", "face", "hand", "mouth", "leg", "waist", "eye",
                 "knee", "shoulder", "thigh"),
    "Obj_VIP": ("stair", "dumbbell", "chair", "window", "floor", "car", "ball", "handrail",
                "baseball", "basketball"),
    "Act_VIP": ("walk", "run", "swing", "pick", "bring", "kick", "put", "squat", "throw", "hop",
                "dance", "jump", "turn", "stumble", "dance", "stop", "sit", "lift", "lower",
                "raise", "wash", "stand", "kneel", "stroll", "rub", "bend", "balance", "flap",
                "jog", "shuffle", "lean", "rotate", "spin", "spread", "climb"),
    "Desc_VIP": ("slowly", "carefully", "fast", "careful", "slow", "quickly", "happy", "angry",
                 "sad", "happily", "angrily", "sadly"),
}  # fmt: skip

SOS, EOS, UNK = "sos", "eos", "unk"
SPECIAL_WORDS: tuple[str, str, str] = (SOS, EOS, UNK)
"""Real vocabulary entries, always looked up with tag OTHER; rows 0, 1, 2 in files we write."""

_MAKE_HINT = (
    "Build it with `python -m prepare.build_word_vectors` (from GloVe or a small vocabulary) or "
    "download the released copy with `bash prepare/download_glove.sh`."
)


class WordVectorFileError(ValueError):
    """A word-vector file is missing or malformed; the message names the file."""


def _vip_category(word: str) -> str | None:
    for category, words in VIP_DICT.items():
        if word in words:
            return category
    return None


def pos_onehot(tag: str) -> np.ndarray:
    """(15,) float32 one-hot of ``tag``; names outside the enumerator map to ``OTHER``."""
    out = np.zeros(len(POS_ENUMERATOR), dtype=np.float32)
    out[POS_ENUMERATOR.get(tag, POS_ENUMERATOR["OTHER"])] = 1.0
    return out


# ---------------------------------------------------------------------------------------------
# Restricted pickle reading
# ---------------------------------------------------------------------------------------------

_NUMERIC_KINDS = "biuf"


def _checked_dtype(*args: Any) -> np.dtype:
    dtype = np.dtype(*args)
    if dtype.kind not in _NUMERIC_KINDS or dtype.fields is not None:
        raise pickle.UnpicklingError(f"refusing non-numeric numpy dtype {dtype!r} in a pickle")
    return dtype


def _checked_scalar(dtype: Any, data: bytes = b"") -> Any:
    # Only reachable with a dtype built by _checked_dtype, so ``data`` is raw numeric bytes.
    if not isinstance(dtype, np.dtype) or dtype.kind not in _NUMERIC_KINDS:
        raise pickle.UnpicklingError(f"refusing numpy scalar of dtype {dtype!r} in a pickle")
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise pickle.UnpicklingError("malformed numpy scalar in a pickle")
    return np.frombuffer(data, dtype=dtype)[0].item()


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("builtins", "list"): list,
    ("builtins", "dict"): dict,
    ("builtins", "str"): str,
    ("builtins", "int"): int,
    ("builtins", "float"): float,
    # A vocabulary index written from numpy code may hold numpy integers; rebuild them as Python
    # numbers through checked constructors (numeric dtypes only, never object arrays).
    ("numpy", "dtype"): _checked_dtype,
    ("numpy.core.multiarray", "scalar"): _checked_scalar,
    ("numpy._core.multiarray", "scalar"): _checked_scalar,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only plain container/number types; any other global raises.

    Lists, dicts, strings and numbers are native pickle opcodes; the allow-list above covers the
    few globals that equivalent data can still reference. Everything else (``os.system``,
    ``builtins.eval``, classes with ``__reduce__``) raises ``pickle.UnpicklingError``.
    """

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: only lists, dicts, strings and numbers "
                "are allowed in word-vector pickles"
            )
        return allowed


def restricted_pickle_load(path: str | Path) -> Any:
    """Load a pickle file with ``RestrictedUnpickler``; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise WordVectorFileError(f"word-vector file not found: {path}. {_MAKE_HINT}")
    try:
        return RestrictedUnpickler(io.BytesIO(path.read_bytes())).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as err:
        raise WordVectorFileError(f"cannot read {path} as a plain-data pickle: {err}") from err


# ---------------------------------------------------------------------------------------------
# Vectorizer
# ---------------------------------------------------------------------------------------------


class WordVectorizer:
    """GloVe lookup for ``word/POS`` tokens (spec section 5).

    Args:
        glove_dir: folder holding ``<prefix>_data.npy``, ``<prefix>_words.pkl``, ``<prefix>_idx.pkl``.
        prefix: file prefix (``our_vab`` for the released vocabulary).
        word_dim: expected vector size (300 for the released evaluator); ``None`` accepts any.

    Raises:
        WordVectorFileError: a file is missing or unreadable, the data array is not ``(N, word_dim)``
            finite floats, an index row is outside ``[0, N)``, a listed word has no index row, or
            ``sos``/``eos``/``unk`` are missing from the word list.

    As in the published reader, the data array may hold more rows than there are words (a warning
    is logged), and index entries for words that are not in the list are ignored (they look up as
    unknown words).
    """

    def __init__(self, glove_dir: str | Path, prefix: str = "our_vab", word_dim: int | None = WORD_DIM):
        self.glove_dir = Path(glove_dir)
        self.prefix = prefix
        data_file, words_file, idx_file = word_vector_files(self.glove_dir, prefix)
        if not data_file.is_file():
            raise WordVectorFileError(f"word-vector file not found: {data_file}. {_MAKE_HINT}")
        try:
            data = np.load(data_file, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise WordVectorFileError(f"cannot read {data_file}: {err}") from err
        if data.ndim != 2 or data.dtype.kind != "f" or data.shape[0] == 0:
            raise WordVectorFileError(
                f"{data_file}: expected a float (N, D) array, got {data.dtype} {data.shape}"
            )
        if word_dim is not None and data.shape[1] != word_dim:
            raise WordVectorFileError(
                f"{data_file}: vectors have dim {data.shape[1]}, expected {word_dim} (the evaluator's "
                "text encoder input size); wrong file or pass word_dim"
            )
        if not np.isfinite(data).all():
            raise WordVectorFileError(f"{data_file}: contains NaN or inf")
        words = restricted_pickle_load(words_file)
        word2idx = restricted_pickle_load(idx_file)
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise WordVectorFileError(f"{words_file}: expected a list of strings, got {type(words).__name__}")
        if not isinstance(word2idx, dict):
            raise WordVectorFileError(
                f"{idx_file}: expected a dict word -> row, got {type(word2idx).__name__}"
            )
        n = data.shape[0]
        bad = [
            (w, i)
            for w, i in word2idx.items()
            if not isinstance(w, str) or not isinstance(i, int) or isinstance(i, bool)
        ]
        if bad:
            raise WordVectorFileError(f"{idx_file}: entries must map str -> int, got e.g. {bad[:3]}")
        # The published reader builds {w: data[word2idx[w]] for w in words}: it needs every index
        # row to exist in the data array and every listed word to have a row, nothing more.
        out_of_range = [(w, i) for w, i in word2idx.items() if not 0 <= i < n]
        if out_of_range:
            w0, i0 = out_of_range[0]
            raise WordVectorFileError(
                f"{idx_file}: row {i0} (word {w0!r}) is outside the {n} rows of {data_file.name}; "
                f"{len(out_of_range)} such row(s), e.g. {out_of_range[:3]}; the files come from "
                "different vocabularies"
            )
        unindexed = [w for w in words if w not in word2idx]
        if unindexed:
            raise WordVectorFileError(
                f"{words_file}: {len(unindexed)} word(s) have no row in {idx_file.name} (e.g. "
                f"{unindexed[:5]}); the files come from different vocabularies"
            )
        missing = [w for w in SPECIAL_WORDS if w not in words]
        if missing:
            raise WordVectorFileError(f"{words_file}: special word(s) {missing} missing from the vocabulary")
        if len(words) != n:
            logger.warning(
                "%s: %d words but %s has %d rows; accepted because every row named in %s exists "
                "(as the published reader does)",
                words_file, len(words), data_file.name, n, idx_file.name,
            )  # fmt: skip
        listed = set(words)
        unlisted = sorted(set(word2idx) - listed)
        if unlisted:
            # Like the published reader, only listed words are vocabulary; the others map to unk.
            logger.warning(
                "%s: %d word(s) are not in %s and are treated as unknown (e.g. %s)",
                idx_file, len(unlisted), words_file.name, unlisted[:5],
            )  # fmt: skip
            word2idx = {w: i for w, i in word2idx.items() if w in listed}
        self.vectors: np.ndarray = data.astype(np.float32, copy=False)
        """(N, word_dim) float32 word vectors."""
        self.words: list[str] = words
        self.word2idx: dict[str, int] = word2idx
        logger.info("word vectors: %d words x %d dims from %s", n, data.shape[1], data_file)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return len(self.word2idx)

    def __contains__(self, word: str) -> bool:
        return word in self.word2idx

    def lookup(self, word: str, tag: str) -> tuple[np.ndarray, np.ndarray]:
        """Vector and POS one-hot of ``word`` tagged ``tag`` (rules of spec section 5).

        Known word: its row; POS = its VIP category if any (Loc, Body, Obj, Act, Desc; first hit
        wins), else ``tag`` if it is one of the 15 names, else OTHER. Unknown word: the ``unk``
        row with OTHER. ``sos``/``eos``/``unk`` always get OTHER.

        Returns:
            ``(word_vec (word_dim,), pos_onehot (15,))`` float32 copies.
        """
        row = self.word2idx.get(word)
        if row is None or word in SPECIAL_WORDS:
            category = "OTHER"
            row = self.word2idx[UNK] if row is None else row
        else:
            category = _vip_category(word) or tag
        return self.vectors[row].copy(), pos_onehot(category)

    def __getitem__(self, token: str) -> tuple[np.ndarray, np.ndarray]:
        """``vectorizer["word/POS"] -> (word_vec, pos_onehot)``.

        The tag is what follows the LAST ``/`` so a word containing ``/`` does not break the split.
        """
        word, sep, tag = token.rpartition("/")
        if not sep or not word:
            raise ValueError(f"token {token!r} is not 'word/POS' (e.g. 'walk/VERB')")
        return self.lookup(word, tag)


def word_vector_files(glove_dir: str | Path, prefix: str = "our_vab") -> tuple[Path, Path, Path]:
    """``(<prefix>_data.npy, <prefix>_words.pkl, <prefix>_idx.pkl)`` inside ``glove_dir``."""
    glove_dir = Path(glove_dir)
    return (
        glove_dir / f"{prefix}_data.npy",
        glove_dir / f"{prefix}_words.pkl",
        glove_dir / f"{prefix}_idx.pkl",
    )


def save_word_vectors(
    glove_dir: str | Path | OutputFolder,
    words: Sequence[str],
    vectors: np.ndarray,
    prefix: str = "our_vab",
) -> tuple[Path, Path, Path]:
    """Write a vocabulary in the ``our_vab`` format that ``WordVectorizer`` reads.

    Args:
        glove_dir: output folder (created), or the writing command's run folder.
        words: vocabulary; must start with ``sos, eos, unk`` (rows 0, 1, 2 as in the released copy)
            and hold no duplicates or words containing ``/``.
        vectors: ``(len(words), D)`` finite floats, stored as float32.

    Returns:
        The three paths written (data, words, idx).
    """
    words = list(words)
    vectors = np.asarray(vectors)
    if tuple(words[:3]) != SPECIAL_WORDS:
        raise ValueError(f"words must start with {list(SPECIAL_WORDS)}, got {words[:3]}")
    if len(set(words)) != len(words):
        dups = sorted({w for w in words if words.count(w) > 1})
        raise ValueError(f"duplicate words in the vocabulary: {dups[:5]}")
    bad = [w for w in words if not isinstance(w, str) or not w or "/" in w]
    if bad:
        raise ValueError(f"words must be non-empty strings without '/', got {bad[:5]}")
    if vectors.ndim != 2 or vectors.shape[0] != len(words):
        raise ValueError(f"vectors shape {vectors.shape} does not match {len(words)} words")
    if not np.isfinite(vectors).all():
        raise ValueError("vectors contain NaN or inf")
    # Written atomically; through the caller's run folder (recorded in its manifest) when given one.
    folder = glove_dir if isinstance(glove_dir, OutputFolder) else OutputFolder(Path(glove_dir))
    data_file, words_file, idx_file = word_vector_files(folder.root, prefix)
    folder.save_npy(data_file.name, vectors.astype(np.float32))
    folder.write_bytes(words_file.name, pickle.dumps(words, protocol=4))
    folder.write_bytes(idx_file.name, pickle.dumps({w: i for i, w in enumerate(words)}, protocol=4))
    return data_file, words_file, idx_file


# ---------------------------------------------------------------------------------------------
# Sentence encoding (spec 1.8 step 4)
# ---------------------------------------------------------------------------------------------


def pad_caption_tokens(tokens: Sequence[str], max_text_len: int) -> tuple[list[str], int]:
    """Wrap and pad caption tokens to ``max_text_len + 2`` positions.

    Fewer than ``max_text_len`` tokens: ``sos/OTHER + tokens + eos/OTHER``, then ``unk/OTHER``
    padding; otherwise the first ``max_text_len`` tokens wrapped with sos/eos.

    Returns:
        ``(padded_tokens, sent_len)`` where ``sent_len`` counts sos and eos (``<= max_text_len + 2``).
    """
    body = list(tokens)[:max_text_len]
    padded = [f"{SOS}/OTHER", *body, f"{EOS}/OTHER"]
    sent_len = len(padded)
    padded += [f"{UNK}/OTHER"] * (max_text_len + 2 - sent_len)
    return padded, sent_len


def encode_caption(
    vectorizer: WordVectorizer, tokens: Sequence[str], max_text_len: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Evaluator text input for one caption.

    Returns:
        ``word_embs (max_text_len + 2, word_dim)``, ``pos_onehot (max_text_len + 2, 15)`` float32
        and ``sent_len`` (see ``pad_caption_tokens``).
    """
    padded, sent_len = pad_caption_tokens(tokens, max_text_len)
    return (*vectorize_tokens(vectorizer, padded), sent_len)


def vectorize_tokens(vectorizer: WordVectorizer, tokens: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``word_embs (L, word_dim)`` and ``pos_onehot (L, 15)`` float32 of ``L`` ``word/POS`` tokens."""
    vecs, pos = zip(*(vectorizer[t] for t in tokens), strict=True)
    return np.stack(vecs), np.stack(pos)
