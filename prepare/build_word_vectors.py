"""Build the ``our_vab`` word-vector files the Guo evaluator's text encoder reads (spec section 5).

Reads ``<dataset_root>/texts/`` for the ids of ``splits`` and, with ``source: glove``, a GloVe
text file. Writes ``<output_dir>/our_vab_data.npy`` ``(N, 300)``, ``our_vab_words.pkl``,
``our_vab_idx.pkl`` (``sos=0, eos=1, unk=2``), plus ``word_vectors.json`` (source, seed, counts).
Skips the build when the three files exist unless ``force=true``.

    python -m prepare.build_word_vectors --config configs/tiny/word_vectors.yaml
    python -m prepare.build_word_vectors --config configs/humanml3d/word_vectors.yaml glove_txt=/data/glove.6B.300d.txt

Deterministic for a seed in any process (``workers=1`` and a CRC32 ``hashfxn`` for gensim, so
``PYTHONHASHSEED`` does not matter).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from data.config import RunConfig, parse_cli
from data.runtime import set_seed, setup_logging
from data.word_vector_build import caption_sentences, glove_vocabulary, word2vec_vocabulary
from data.word_vectorizer import WordVectorizer, save_word_vectors, word_vector_files

logger = logging.getLogger("prepare.build_word_vectors")


@dataclass(kw_only=True)
class WordVectorsConfig(RunConfig):
    """Where the captions come from and how the vectors are made."""

    ignored_fields: ClassVar[dict[str, str]] = {
        "device": "Word2Vec (gensim) and the GloVe lookup run on the CPU",
        "num_threads": "one gensim worker keeps the vectors identical run to run",
        "progress": "no loop long enough for a bar",
    }

    output_dir: str = "runs/demo/glove"
    """Folder for ``<prefix>_data.npy``, ``<prefix>_words.pkl``, ``<prefix>_idx.pkl``, ``word_vectors.json``."""
    splits: tuple[str, ...] = ("all",)
    """Splits whose captions form the vocabulary/corpus (the released vocabulary covers every split)."""
    source: Literal["corpus", "glove"] = "corpus"
    """``corpus``: Word2Vec on the captions (SynthML); ``glove``: rows of ``glove_txt``."""
    glove_txt: str = ""
    """GloVe text file (``word v1 ... v300`` per line) for ``source: glove``."""
    prefix: str = "our_vab"
    """File name prefix (the evaluator reads ``our_vab``)."""
    dim: int = 300
    """Vector size; the evaluator's text encoder expects 300."""
    epochs: int = 20
    """Word2Vec passes over the corpus."""
    window: int = 5
    """Word2Vec context window (words on each side)."""
    min_count: int = 1
    """Word2Vec drops words seen fewer times (1 keeps every caption word)."""
    force: bool = False
    """Rebuild even when the output files exist."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.source == "glove" and not self.glove_txt:
            raise ValueError("source=glove needs glove_txt (a GloVe text file such as glove.6B.300d.txt)")
        for name in ("dim", "epochs", "window", "min_count"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")


def main(argv: list[str] | None = None) -> Path:
    cfg = parse_cli(WordVectorsConfig, argv, description=__doc__)
    setup_logging()
    # gensim logs every epoch at INFO; keep its warnings only.
    logging.getLogger("gensim").setLevel(logging.WARNING)
    set_seed(cfg.seed)
    out = Path(cfg.output_dir)
    if not cfg.force and all(p.is_file() for p in word_vector_files(out, cfg.prefix)):
        vec = WordVectorizer(out, cfg.prefix, word_dim=cfg.dim)
        logger.info("%s already holds %d words; pass force=true to rebuild", out, len(vec))
        return out
    sentences = caption_sentences(
        cfg.dataset_root, cfg.splits, on_error=cfg.on_error, max_skip_fraction=cfg.max_skip_fraction
    )
    if cfg.source == "glove":
        words, vectors = glove_vocabulary(sentences, cfg.glove_txt, dim=cfg.dim, seed=cfg.seed)
    else:
        words, vectors = word2vec_vocabulary(
            sentences,
            dim=cfg.dim,
            seed=cfg.seed,
            epochs=cfg.epochs,
            window=cfg.window,
            min_count=cfg.min_count,
        )
    save_word_vectors(out, words, vectors, prefix=cfg.prefix)
    vec = WordVectorizer(out, cfg.prefix, word_dim=cfg.dim)  # read back through the real loader
    info = {
        "source": cfg.source, "glove_txt": cfg.glove_txt, "dataset": cfg.dataset, "dataset_root": cfg.dataset_root,
        "splits": list(cfg.splits), "seed": cfg.seed, "words": len(vec), "dim": vec.dim,
        "captions": len(sentences),
    }  # fmt: skip
    (out / "word_vectors.json").write_text(json.dumps(info, indent=2))
    logger.info("wrote %d x %d word vectors from %d captions to %s", len(vec), vec.dim, len(sentences), out)
    return out


if __name__ == "__main__":
    main()
