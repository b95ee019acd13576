"""prepare/build_word_vectors: our_vab files from captions (Word2Vec) or GloVe, deterministic."""

import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from data.layout import DatasetFileError
from data.run_folder import RunFolderError, file_sha256, files_digest
from data.word_vector_build import caption_sentences, stable_hash, vocabulary, word_vectors_digest
from data.word_vectorizer import WordVectorizer, word_vector_files
from prepare.build_word_vectors import main
from tests.conftest import write_tiny_glove

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
    # Counted, not silent: the captions hold the 35 words of TINY_VOCAB plus zzzunknown, extra and
    # words; 4 of them are in this GloVe, the other 34 map to unk.
    info = json.loads((out / "word_vectors.json").read_text())
    assert info["counts"]["caption_words"] == 38 and info["counts"]["caption_words_mapped_to_unk"] == 34
    assert info["provenance"]["glove_txt"] == "sha256:" + file_sha256(glove)


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_build_records_provenance_counts_skips_and_refuses(make_tiny_dataset, tmp_path: Path):
    root = make_tiny_dataset()
    (root / "texts" / "000007.txt").write_text("")  # unreadable: no captions
    out = tmp_path / "wv"
    args = [f"dataset_root={root}", "epochs=1", "splits=[all]", f"output_dir={out}"]
    with pytest.raises(DatasetFileError, match="000007.txt"):
        main(args)
    assert not out.exists()  # failed before the first write: the folder it created is gone
    args += ["on_error=skip", "max_skip_fraction=0.2"]
    main(args)
    info = json.loads((out / "word_vectors.json").read_text())
    # 8 ids, one caption file skipped: the other 7 hold 2+3+1+2+1+1+1 = 11 caption lines and all
    # 38 caption words but the 4 only 000007 has (dance, happily, spin, around)
    assert info["counts"] == {
        "ids": 8, "caption_files_skipped": 1, "captions": 11, "tokens_without_word": 0, "caption_words": 34,
        "caption_words_mapped_to_unk": 0, "unk_examples": [],
    }  # fmt: skip
    prov = info["provenance"]
    assert prov["word_vectors"] == word_vectors_digest(out)
    assert prov["all_split"] == "sha256:" + file_sha256(root / "all.txt")
    ids = (root / "all.txt").read_text().split()
    assert prov["texts"] == files_digest((i, root / "texts" / f"{i}.txt") for i in sorted(ids))

    # a rebuild with other settings or from other captions is refused before any write
    before = _tree(out)
    # captions of motions outside the splits (the data engine adds its own) change nothing
    (root / "texts" / "900000.txt").write_text("a person walks.#a/DET person/NOUN walk/VERB#0.0#0.0\n")
    main(args)
    assert _tree(out) == before
    with pytest.raises(RunFolderError, match=r"epochs was 1 and is 2 now.*pass force=true"):
        main([*args, "epochs=2"])
    (root / "texts" / "000007.txt").write_text("a person dances.#a/DET person/NOUN dance/VERB#0.0#0.0\n")
    with pytest.raises(
        RunFolderError, match=r"input texts \(.*texts\) was files-sha256:\w+ and is files-sha256:"
    ):
        main(args)
    assert _tree(out) == before
    main([*args, "force=true"])
    assert json.loads((out / "word_vectors.json").read_text())["counts"]["caption_files_skipped"] == 0

    # a folder of other origin (e.g. a released copy of the vectors) is not written into
    released = tmp_path / "released"
    write_tiny_glove(released)
    before = _tree(released)
    with pytest.raises(RunFolderError, match=r"did not write .*our_vab_data.npy.*pass overwrite=true"):
        main([f"dataset_root={root}", "epochs=1", f"output_dir={released}"])
    assert _tree(released) == before
