"""prepare/build_word_vectors: our_vab files from captions (Word2Vec) or GloVe, deterministic."""

import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from data.word_vector_build import caption_sentences, stable_hash, vocabulary
from data.word_vectorizer import WordVectorizer, word_vector_files
from prepare.build_word_vectors import main

REPO = Path(__file__).resolve().parent.parent


def test_vocabulary_order(tiny_dataset: Path):
    sents = caption_sentences(tiny_dataset, ["train", "test"])  # ids overlap: each read once
    assert len(sents) == 14 and sents[0] == ["a", "person", "walk", "forward"]
    vocab = vocabulary(sents)
    assert vocab[:5] == ["sos", "eos", "unk", "a", "person"] and len(vocab) == len(set(vocab))
    assert stable_hash("walk") == zlib.crc32(b"walk")  # not Python's salted hash()


def test_corpus_build_reads_back_and_skips_existing(tiny_dataset: Path, tmp_path: Path):
    args = [f"dataset_root={tiny_dataset}", "epochs=2", "splits=[all]", f"output_dir={tmp_path / 'a'}"]
    main(args)
    vec = WordVectorizer(tmp_path / "a")
    assert vec.words[:3] == ["sos", "eos", "unk"] and vec.vectors.shape == (len(vec), 300)
    assert "zzzunknown" in vec and "dance" in vec
    w, pos = vec["walk/VERB"]
    assert w.shape == (300,) and pos.argmax() == 12  # Act_VIP
    assert not np.allclose(vec["walk/VERB"][0], vec["run/VERB"][0])
    mtime = (tmp_path / "a" / "our_vab_data.npy").stat().st_mtime_ns
    main(args)  # skipped: outputs exist
    assert (tmp_path / "a" / "our_vab_data.npy").stat().st_mtime_ns == mtime


def _build_in_subprocess(root: Path, out: Path, hash_seed: str) -> None:
    argv = [f"dataset_root={root}", "epochs=2", "splits=[all]", f"output_dir={out}"]
    code = f"from prepare.build_word_vectors import main; main({argv!r})"
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, check=True, capture_output=True)


def test_corpus_build_identical_across_hash_seeds(tiny_dataset: Path, tmp_path: Path):
    """Two processes with different string hashing write byte-identical vocabulary files."""
    _build_in_subprocess(tiny_dataset, tmp_path / "a", "1")
    _build_in_subprocess(tiny_dataset, tmp_path / "b", "2")
    for file_a, file_b in zip(
        word_vector_files(tmp_path / "a"), word_vector_files(tmp_path / "b"), strict=True
    ):
        assert file_a.read_bytes() == file_b.read_bytes(), file_a.name
    vectors = np.load(word_vector_files(tmp_path / "a")[0])
    assert vectors.shape[0] == len(WordVectorizer(tmp_path / "a")) > 30


def test_glove_build(tiny_dataset: Path, tmp_path: Path):
    rng = np.random.default_rng(0)
    rows = {w: rng.standard_normal(4) for w in ("unk", "the", "a", "walk", "zebra", "person")}
    glove = tmp_path / "glove.txt"
    glove.write_text("".join(f"{w} {' '.join(f'{x:.5f}' for x in v)}\n" for w, v in rows.items()))
    out = main([f"dataset_root={tiny_dataset}", "source=glove", f"glove_txt={glove}", "dim=4",
                f"output_dir={tmp_path / 'g'}"])  # fmt: skip
    vec = WordVectorizer(out, word_dim=4)
    assert vec.words == ["sos", "eos", "unk", "a", "person", "walk", "the"]  # caption words in GloVe only
    np.testing.assert_allclose(vec["walk/VERB"][0], rows["walk"], atol=1e-5)
    np.testing.assert_allclose(vec["unk/OTHER"][0], rows["unk"], atol=1e-5)
    np.testing.assert_array_equal(vec["dance/VERB"][0], vec["unk/OTHER"][0])  # not in GloVe -> unk
    with pytest.raises(Exception, match="needs glove_txt"):
        main([f"dataset_root={tiny_dataset}", "source=glove"])
