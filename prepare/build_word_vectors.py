"""Build the ``our_vab`` word-vector files the Guo evaluator's text encoder reads (spec section 5).

Reads ``<dataset_root>/texts/`` for the ids of ``splits`` and, with ``source: glove``, a GloVe
text file. Writes, atomically, into the run folder ``output_dir``: ``our_vab_data.npy`` ``(N, 300)``,
``our_vab_words.pkl``, ``our_vab_idx.pkl`` (``sos=0, eos=1, unk=2``), ``word_vectors.json``
(source, seed, ``counts`` of skipped caption files, dropped tokens and caption words that map to
``unk``, and ``provenance``: the content hashes of the split lists, the caption folder and the GloVe
file it was built from, and ``word_vectors``, the fingerprint an evaluator trained on these files
records), ``config.yaml``, ``run_info.json`` and the manifest ``run.json`` (:mod:`data.run_folder`).

A finished build with the same config and inputs is kept (``force=true`` rebuilds). A folder holding
this command's build from other captions or settings is refused naming the differences (fix:
``force=true`` or another ``output_dir``); so is one holding other files, e.g. a released copy
(fix: ``overwrite=true``), or one locked by a running process.

    python -m prepare.build_word_vectors --config configs/tiny/word_vectors.yaml
    python -m prepare.build_word_vectors --config configs/humanml3d/word_vectors.yaml glove_txt=/data/glove.6B.300d.txt

Deterministic for a seed in any process (``workers=1`` and a CRC32 ``hashfxn`` for gensim, so
``PYTHONHASHSEED`` does not matter).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from data.config import RunConfig, config_to_dict, parse_cli
from data.layout import DatasetPaths, read_split
from data.run_folder import files_digest
from data.runtime import open_run, set_seed, setup_logging
from data.word_vector_build import (
    caption_corpus,
    glove_vocabulary,
    vocabulary,
    word2vec_vocabulary,
    word_vectors_digest,
)
from data.word_vectorizer import SPECIAL_WORDS, WordVectorizer, save_word_vectors, word_vector_files

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
    """Rebuild even when the folder holds a finished build (also one with another config or inputs)."""
    overwrite: bool = False
    """Accept an output_dir holding another command's run or files of other origin (they are kept;
    only the files this command writes are replaced)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.source == "glove" and not self.glove_txt:
            raise ValueError("source=glove needs glove_txt (a GloVe text file such as glove.6B.300d.txt)")
        for name in ("dim", "epochs", "window", "min_count"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")


COMMAND = "prepare.build_word_vectors"
INFO = "word_vectors.json"
VOLATILE = ("output_dir", "force", "overwrite")
CLI_FIXES = {
    "overwrite": "pass overwrite=true",
    "restart": "pass force=true",
    "out": "choose another output_dir",
}


def _inputs(cfg: WordVectorsConfig) -> dict[str, Any]:
    """What the vectors are built from: the split lists, the caption files of their ids (not the
    whole ``texts/`` folder, which the data engine extends with its own motions) and the GloVe file."""
    paths = DatasetPaths(cfg.dataset_root)
    files: dict[str, Any] = {f"{split}_split": paths.split_file(split) for split in cfg.splits}
    if cfg.source == "glove":
        files["glove_txt"] = Path(cfg.glove_txt)
    files = {name: p for name, p in files.items() if p.exists()}  # a missing one fails when read
    ids = sorted(
        {
            i
            for split in cfg.splits
            if paths.split_file(split).is_file()
            for i in read_split(cfg.dataset_root, split)
        }
    )
    files["texts"] = {
        "path": str(paths.texts_dir),
        "digest": files_digest((i, paths.text_file(i)) for i in ids),
    }
    return files


def main(argv: list[str] | None = None) -> Path:
    cfg = parse_cli(WordVectorsConfig, argv, description=__doc__)
    setup_logging()
    # gensim logs every epoch at INFO; keep its warnings only.
    logging.getLogger("gensim").setLevel(logging.WARNING)
    seed = set_seed(cfg.seed)
    files = word_vector_files(cfg.output_dir, cfg.prefix)
    with open_run(
        cfg.output_dir, command=COMMAND, config=config_to_dict(cfg), seed=seed, inputs=_inputs(cfg),
        volatile=VOLATILE, overwrite=cfg.overwrite, resume=not cfg.force, fixes=CLI_FIXES,
    ) as run:  # fmt: skip
        out = run.root
        if run.finished and run.has(INFO) and all(run.has(f.name) for f in files):
            vec = WordVectorizer(out, cfg.prefix, word_dim=cfg.dim)
            logger.info("%s already holds %d words; pass force=true to rebuild", out, len(vec))
            return out
        corpus = caption_corpus(
            cfg.dataset_root, cfg.splits, on_error=cfg.on_error, max_skip_fraction=cfg.max_skip_fraction
        )
        sentences = corpus.sentences
        if cfg.source == "glove":
            words, vectors = glove_vocabulary(sentences, cfg.glove_txt, dim=cfg.dim, seed=cfg.seed)
        else:
            words, vectors = word2vec_vocabulary(
                sentences, dim=cfg.dim, seed=cfg.seed, epochs=cfg.epochs, window=cfg.window,
                min_count=cfg.min_count,
            )  # fmt: skip
        save_word_vectors(run, words, vectors, prefix=cfg.prefix)
        vec = WordVectorizer(out, cfg.prefix, word_dim=cfg.dim)  # read back through the real loader
        kept = set(words)
        caption_words = vocabulary(sentences)[len(SPECIAL_WORDS) :]
        unk_words = [w for w in caption_words if w not in kept]  # not in GloVe, or below min_count
        counts = {**corpus.counts(), "caption_words": len(caption_words),
                  "caption_words_mapped_to_unk": len(unk_words), "unk_examples": unk_words[:10]}  # fmt: skip
        info = {
            "source": cfg.source, "glove_txt": cfg.glove_txt, "dataset": cfg.dataset,
            "dataset_root": cfg.dataset_root, "splits": list(cfg.splits), "seed": cfg.seed, "words": len(vec),
            "dim": vec.dim, "captions": len(sentences), "counts": counts,
            "provenance": {**{k: v["digest"] for k, v in run.manifest["inputs"].items()},
                           "word_vectors": word_vectors_digest(out, cfg.prefix)},
        }  # fmt: skip
        run.write_json(INFO, info)
        run.done()
    logger.info("wrote %d x %d word vectors from %d captions to %s (%s)", len(vec), vec.dim, len(sentences), out,
                counts)  # fmt: skip
    return out


if __name__ == "__main__":
    main()
