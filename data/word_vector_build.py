"""Build an ``our_vab`` vocabulary (spec section 5) from GloVe or from a dataset's own captions.

Two sources, one output format (written with ``data.word_vectorizer.save_word_vectors``: rows
``sos=0, eos=1, unk=2``, then the caption words by descending frequency, ties in first-seen order):

* ``glove``: the released recipe. The vocabulary is every word of the dataset's caption tokens that
  the GloVe text file (``word v1 ... vD`` per line) contains; other caption words map to ``unk`` at
  lookup time. ``sos``/``eos``/``unk`` take their GloVe rows when present.
* ``corpus``: for datasets without a GloVe match (SynthML): a skip-gram Word2Vec (gensim) trained
  on the caption word tokens, each sentence wrapped as ``sos ... eos``.

Special rows missing from the source get a seeded Gaussian vector scaled to the mean row norm.

Determinism: gensim seeds each word's initial vector with ``seed + hashfxn(word)``; its default
``hashfxn`` is Python's ``hash``, which changes with ``PYTHONHASHSEED`` for strings. We pass
``stable_hash`` (CRC32) and train with ``workers=1`` (multi-threaded training interleaves updates
non-deterministically), so the vectors are identical across processes for a given seed.
"""

from __future__ import annotations

import hashlib
import logging
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data.layout import DatasetPaths, SkipTracker, read_captions, read_split
from data.run_folder import file_sha256
from data.word_vectorizer import EOS, SOS, SPECIAL_WORDS, word_vector_files

logger = logging.getLogger(__name__)


def stable_hash(word: str) -> int:
    """Process-independent string hash for gensim's ``hashfxn`` (CRC32 of the UTF-8 bytes)."""
    return zlib.crc32(word.encode("utf-8"))


def token_word(token: str) -> str:
    """``"walk/VERB" -> "walk"`` (split on the last ``/`` like ``WordVectorizer``)."""
    return token.rpartition("/")[0]


@dataclass
class CaptionCorpus:
    """The caption word lists of some splits, with what was left out of them."""

    sentences: list[list[str]]
    """One word list per caption line (``word/POS`` tokens without the tag)."""
    ids: int
    """Distinct ids listed by the splits."""
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """``(id, reason)`` of unreadable caption files (``on_error="skip"``)."""
    tokens_without_word: int = 0
    """Tokens dropped because nothing precedes their ``/POS`` tag."""

    def counts(self) -> dict[str, int]:
        """JSON-able counts for a run's output."""
        return {"ids": self.ids, "caption_files_skipped": len(self.skipped), "captions": len(self.sentences),
                "tokens_without_word": self.tokens_without_word}  # fmt: skip


def caption_corpus(
    root: str | Path, splits: Sequence[str], on_error: str = "raise", max_skip_fraction: float = 0.05
) -> CaptionCorpus:
    """Word lists of every caption line of ``splits``, and the counts of what was left out.

    Ids listed in several splits are read once, in first-listed order. Unreadable caption files
    raise, or with ``on_error="skip"`` are counted (failing above ``max_skip_fraction``).
    """
    paths = DatasetPaths(root)
    seen: set[str] = set()
    ids: list[str] = []
    for split in splits:
        for motion_id in read_split(root, split):
            if motion_id not in seen:
                seen.add(motion_id)
                ids.append(motion_id)
    tracker = SkipTracker("caption corpus", on_error=on_error, max_skip_fraction=max_skip_fraction)
    sentences = []
    no_word = 0
    for motion_id in ids:
        tracker.seen += 1
        try:
            lines = read_captions(paths.text_file(motion_id))
        except ValueError as err:
            tracker.record(motion_id, err)
            continue
        for line in lines:
            words = [token_word(t) for t in line.tokens]
            no_word += sum(not w for w in words)
            sentences.append([w for w in words if w])
    tracker.finish()
    if not sentences:
        raise ValueError(f"{root}: no captions found in splits {list(splits)}")
    return CaptionCorpus(sentences, len(ids), list(tracker.skipped), no_word)


def caption_sentences(
    root: str | Path, splits: Sequence[str], on_error: str = "raise", max_skip_fraction: float = 0.05
) -> list[list[str]]:
    """``caption_corpus(...).sentences``."""
    return caption_corpus(root, splits, on_error, max_skip_fraction).sentences


def word_vectors_digest(glove_dir: str | Path, prefix: str = "our_vab") -> str:
    """``vab-sha256:<hex>``: sha256 over the lines ``name, sha256`` of the three ``<prefix>_*`` files.

    The fingerprint of a vocabulary: ``prepare.build_word_vectors`` writes it with the files, an
    evaluator records the one it was trained with (``models.evaluator``).

    Raises:
        FileNotFoundError: one of the three files is missing (names it).
    """
    h = hashlib.sha256()
    for f in word_vector_files(glove_dir, prefix):
        if not f.is_file():
            raise FileNotFoundError(f"word vector file not found: {f}")
        h.update(f"{f.name}\0{file_sha256(f)}\n".encode())
    return "vab-sha256:" + h.hexdigest()


def vocabulary(sentences: Iterable[Sequence[str]]) -> list[str]:
    """``sos, eos, unk`` then every other word by descending count (ties: first seen first)."""
    counts = Counter(w for s in sentences for w in s if w not in SPECIAL_WORDS)
    # Counter.most_common keeps insertion order among equal counts (stable sort).
    return [*SPECIAL_WORDS, *(w for w, _ in counts.most_common())]


def _special_vector(word: str, dim: int, scale: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, stable_hash(word)])
    v = rng.standard_normal(dim)
    return (v / np.linalg.norm(v) * scale).astype(np.float32)


def _fill_specials(table: dict[str, np.ndarray], dim: int, seed: int) -> dict[str, np.ndarray]:
    scale = float(np.mean([np.linalg.norm(v) for v in table.values()])) if table else 1.0
    for word in SPECIAL_WORDS:
        if word not in table:
            table[word] = _special_vector(word, dim, scale, seed)
    return table


def read_glove_text(path: str | Path, wanted: set[str], dim: int = 300) -> dict[str, np.ndarray]:
    """Rows of a GloVe text file (``word v1 ... vD``) for the words in ``wanted``.

    Lines whose word is not wanted are skipped without parsing the numbers; a wanted line with the
    wrong number of values raises naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"GloVe text file not found: {path} (e.g. glove.6B.300d.txt); set glove_txt or use source=corpus"
        )
    out: dict[str, np.ndarray] = {}
    with path.open(encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            word, _, rest = line.rstrip("\n").partition(" ")
            if word not in wanted or word in out:
                continue
            values = rest.split(" ")
            if len(values) != dim:
                raise ValueError(f"{path}:{lineno}: {len(values)} values for {word!r}, expected {dim}")
            out[word] = np.asarray(values, dtype=np.float32)
    return out


def glove_vocabulary(
    sentences: Sequence[Sequence[str]], glove_txt: str | Path, dim: int = 300, seed: int = 0
) -> tuple[list[str], np.ndarray]:
    """Caption words found in GloVe (released recipe). Returns ``(words, vectors (N, dim))``."""
    words = vocabulary(sentences)
    table = read_glove_text(glove_txt, set(words), dim)
    kept = [w for w in words if w in table or w in SPECIAL_WORDS]
    dropped = len(words) - len(kept)
    logger.info("glove: %d of %d caption words found (%d map to unk)", len(kept) - 3, len(words) - 3, dropped)
    table = _fill_specials(table, dim, seed)
    return kept, np.stack([table[w] for w in kept])


def word2vec_vocabulary(
    sentences: Sequence[Sequence[str]],
    dim: int = 300,
    seed: int = 0,
    epochs: int = 20,
    window: int = 5,
    min_count: int = 1,
) -> tuple[list[str], np.ndarray]:
    """Skip-gram Word2Vec on the captions (deterministic, see the module docstring).

    Returns:
        ``(words, vectors (N, dim))`` with words ordered like ``vocabulary``; words below
        ``min_count`` are left out (they map to ``unk``).
    """
    from gensim.models import Word2Vec

    corpus = [[SOS, *s, EOS] for s in sentences]
    model = Word2Vec(
        sentences=corpus, vector_size=dim, window=window, min_count=min_count, sg=1, workers=1,
        seed=seed, epochs=epochs, hashfxn=stable_hash,
    )  # fmt: skip
    table = {w: model.wv[w].astype(np.float32) for w in model.wv.index_to_key}
    table.pop("unk", None)  # unk must not carry a real word's meaning
    table = _fill_specials(table, dim, seed)
    words = [w for w in vocabulary(sentences) if w in table]
    return words, np.stack([table[w] for w in words])
