"""WordVectorizer: file format, POS/VIP rules, restricted unpickling, sentence encoding."""

from __future__ import annotations

import logging
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from data.word_vectorizer import (
    POS_ENUMERATOR,
    RestrictedUnpickler,
    WordVectorFileError,
    WordVectorizer,
    encode_caption,
    pad_caption_tokens,
    restricted_pickle_load,
    save_word_vectors,
    word_vector_files,
)
from tests.golden_data import GOLDEN_DIR


def _pos(onehot: np.ndarray) -> str:
    assert onehot.shape == (15,) and onehot.sum() == 1.0
    return {i: t for t, i in POS_ENUMERATOR.items()}[int(onehot.argmax())]


def test_enumerator_order():
    assert list(POS_ENUMERATOR) == ["VERB", "NOUN", "DET", "ADP", "NUM", "AUX", "PRON", "ADJ", "ADV",
                                    "Loc_VIP", "Body_VIP", "Obj_VIP", "Act_VIP", "Desc_VIP", "OTHER"]  # fmt: skip


def test_lookup_rules(tiny_glove: Path):
    wv = WordVectorizer(tiny_glove)
    row = {w: i for i, w in enumerate(wv.words)}
    cases = {
        "walk/VERB": "Act_VIP",  # VIP list beats the given tag
        "left/ADJ": "Loc_VIP",
        "hand/NOUN": "Body_VIP",
        "chair/NOUN": "Obj_VIP",
        "slowly/ADV": "Desc_VIP",
        "back/ADV": "Loc_VIP",  # Loc is checked before anything else
        "person/NOUN": "NOUN",  # plain tag kept
        "a/DET": "DET",
        "and/CCONJ": "OTHER",  # tag outside the 15 names
        "sos/OTHER": "OTHER",
        "eos/VERB": "OTHER",  # specials are always OTHER
        "unk/NOUN": "OTHER",
    }
    for token, expected in cases.items():
        vec, pos = wv[token]
        assert vec.shape == (300,) and vec.dtype == np.float32
        assert _pos(pos) == expected, token
        np.testing.assert_array_equal(vec, wv.vectors[row[token.split("/")[0]]])
    # Unknown word: unk vector, OTHER whatever the tag (even a VIP word missing from the vocab).
    for token in ("zzz/NOUN", "kneel/VERB"):
        vec, pos = wv[token]
        np.testing.assert_array_equal(vec, wv.vectors[row["unk"]])
        assert _pos(pos) == "OTHER"
    with pytest.raises(ValueError, match="word/POS"):
        wv["walk"]


def test_row_comes_from_idx_mapping_not_list_position(tmp_path: Path):
    words = ["sos", "eos", "unk", "walk", "run"]
    data = np.arange(5, dtype=np.float32)[:, None] * np.ones((5, 300), np.float32)
    save_word_vectors(tmp_path, words, data)
    _, _, idx_file = word_vector_files(tmp_path)
    # Swap walk <-> run in the index only: the list still says walk is at position 3.
    with open(idx_file, "wb") as f:
        pickle.dump({"sos": 0, "eos": 1, "unk": 2, "walk": 4, "run": 3}, f)
    wv = WordVectorizer(tmp_path)
    assert wv["walk/VERB"][0][0] == 4.0
    assert wv["run/VERB"][0][0] == 3.0


def test_numpy_int_index_values_load(tmp_path: Path):
    words = ["sos", "eos", "unk", "walk"]
    save_word_vectors(tmp_path, words, np.eye(4, 300, dtype=np.float32))
    with open(word_vector_files(tmp_path)[2], "wb") as f:
        pickle.dump({w: np.int64(i) for i, w in enumerate(words)}, f)
    wv = WordVectorizer(tmp_path)
    assert wv["walk/VERB"][0][3] == 1.0 and isinstance(wv.word2idx["walk"], int)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_restricted_unpickler_rejects_code(tmp_path: Path):
    bad = tmp_path / "evil.pkl"
    bad.write_bytes(pickle.dumps({"walk": _Evil()}))
    with pytest.raises(WordVectorFileError, match=r"evil.pkl.*refusing to load global"):
        restricted_pickle_load(bad)
    # An object array smuggled through numpy is refused too.
    bad.write_bytes(pickle.dumps([np.array([1, "x"], dtype=object)]))
    with pytest.raises(WordVectorFileError, match="refusing"):
        restricted_pickle_load(bad)
    good = pickle.dumps([{"a": 1, "b": [2.5, "c"]}])
    assert RestrictedUnpickler(__import__("io").BytesIO(good)).load() == [{"a": 1, "b": [2.5, "c"]}]


def test_file_errors(tmp_path: Path):
    with pytest.raises(WordVectorFileError, match=r"our_vab_data.npy.*prepare/download_glove.sh"):
        WordVectorizer(tmp_path)
    words = ["sos", "eos", "unk", "walk"]
    save_word_vectors(tmp_path, words, np.zeros((4, 50), np.float32))
    with pytest.raises(WordVectorFileError, match="dim 50, expected 300"):
        WordVectorizer(tmp_path)
    assert WordVectorizer(tmp_path, word_dim=None).dim == 50
    save_word_vectors(tmp_path, words, np.zeros((4, 300), np.float32))
    with open(word_vector_files(tmp_path)[2], "wb") as f:
        pickle.dump({"sos": 0, "eos": 1, "unk": 2, "walk": 7}, f)
    with pytest.raises(
        WordVectorFileError, match=r"our_vab_idx.pkl: row 7 \(word 'walk'\) is outside the 4 rows"
    ):
        WordVectorizer(tmp_path)
    word_vector_files(tmp_path)[1].unlink()
    with pytest.raises(WordVectorFileError, match="our_vab_words.pkl"):
        WordVectorizer(tmp_path)


def test_golden_glove_with_more_rows_than_words_loads_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    """The published reader accepts 20 words over 23 rows (rows picked by the index, not the list)."""
    glove = tmp_path / "glove"
    shutil.copytree(GOLDEN_DIR / "glove", glove)
    data = np.load(glove / "our_vab_data.npy")
    assert data.shape == (23, 300)
    with caplog.at_level(logging.WARNING, logger="data.word_vectorizer"):
        wv = WordVectorizer(glove)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "20 words but our_vab_data.npy has 23 rows" in warnings[0]
    assert len(wv) == 20
    # sos sits in row 14 and walk in row 2 of the data (list positions 0 and 5).
    np.testing.assert_array_equal(wv["sos/OTHER"][0], data[14])
    np.testing.assert_array_equal(wv["walk/VERB"][0], data[2])
    np.testing.assert_array_equal(wv["zebra/NOUN"][0], data[wv.word2idx["unk"]])


def test_bad_index_row_is_an_error_naming_file_and_row(tmp_path: Path):
    words = ["sos", "eos", "unk", "walk"]
    save_word_vectors(tmp_path, words, np.zeros((4, 300), np.float32))
    # Extra data rows are fine; an index row past the data array is not.
    np.save(word_vector_files(tmp_path)[0], np.zeros((6, 300), np.float32))
    with open(word_vector_files(tmp_path)[2], "wb") as f:
        pickle.dump({"sos": 0, "eos": 1, "unk": 5, "walk": 6}, f)
    with pytest.raises(
        WordVectorFileError, match=r"our_vab_idx.pkl: row 6 \(word 'walk'\) is outside the 6 rows"
    ):
        WordVectorizer(tmp_path)
    with open(word_vector_files(tmp_path)[2], "wb") as f:
        pickle.dump({"sos": 0, "eos": 1, "unk": 5, "walk": -1}, f)
    with pytest.raises(WordVectorFileError, match=r"row -1 \(word 'walk'\)"):
        WordVectorizer(tmp_path)


def test_word_list_and_index_disagreements(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    words = ["sos", "eos", "unk", "walk", "run"]
    data = np.arange(5, dtype=np.float32)[:, None] * np.ones((5, 300), np.float32)
    save_word_vectors(tmp_path, words, data)
    idx_file = word_vector_files(tmp_path)[2]
    # A listed word without an index row: the published reader fails on it (KeyError); so do we.
    with open(idx_file, "wb") as f:
        pickle.dump({"sos": 0, "eos": 1, "unk": 2, "walk": 3}, f)
    with pytest.raises(
        WordVectorFileError, match=r"our_vab_words.pkl: 1 word\(s\) have no row in our_vab_idx.pkl.*'run'"
    ):
        WordVectorizer(tmp_path)
    # An indexed word that is not listed is no vocabulary word (the published reader only builds
    # vectors for listed words): it looks up as unk, with a warning.
    with open(idx_file, "wb") as f:
        pickle.dump({"sos": 0, "eos": 1, "unk": 2, "walk": 3, "run": 4, "jog": 4}, f)
    with caplog.at_level(logging.WARNING, logger="data.word_vectorizer"):
        wv = WordVectorizer(tmp_path)
    assert any("'jog'" in r.getMessage() and "unknown" in r.getMessage() for r in caplog.records)
    assert "jog" not in wv and wv["jog/VERB"][0][0] == 2.0 and wv["run/VERB"][0][0] == 4.0
    # Special words must be listed.
    save_word_vectors(tmp_path, words, data)
    with open(word_vector_files(tmp_path)[1], "wb") as f:
        pickle.dump(["sos", "eos", "walk", "run"], f)
    with pytest.raises(WordVectorFileError, match=r"our_vab_words.pkl: special word\(s\) \['unk'\] missing"):
        WordVectorizer(tmp_path)


def test_save_word_vectors_validates(tmp_path: Path):
    with pytest.raises(ValueError, match="must start with"):
        save_word_vectors(tmp_path, ["walk", "sos", "eos", "unk"], np.zeros((4, 3)))
    with pytest.raises(ValueError, match="duplicate"):
        save_word_vectors(tmp_path, ["sos", "eos", "unk", "a", "a"], np.zeros((5, 3)))
    with pytest.raises(ValueError, match="does not match"):
        save_word_vectors(tmp_path, ["sos", "eos", "unk"], np.zeros((4, 3)))


def test_pad_and_encode(tiny_glove: Path):
    wv = WordVectorizer(tiny_glove)
    toks = ["a/DET", "person/NOUN", "walk/VERB"]
    padded, n = pad_caption_tokens(toks, 20)
    assert n == 5 and len(padded) == 22
    assert padded[:5] == ["sos/OTHER", *toks, "eos/OTHER"] and set(padded[5:]) == {"unk/OTHER"}
    embs, pos, n2 = encode_caption(wv, toks, 20)
    assert embs.shape == (22, 300) and pos.shape == (22, 15) and n2 == 5
    np.testing.assert_array_equal(embs[0], wv.vectors[wv.word2idx["sos"]])
    np.testing.assert_array_equal(embs[4], wv.vectors[wv.word2idx["eos"]])
    np.testing.assert_array_equal(embs[21], wv.vectors[wv.word2idx["unk"]])
    assert [_pos(p) for p in pos[:5]] == ["OTHER", "DET", "NOUN", "Act_VIP", "OTHER"]
    long = ["a/DET"] * 19 + ["walk/VERB", "person/NOUN", "hand/NOUN"]
    padded, n = pad_caption_tokens(long, 20)
    assert n == 22 and padded[20] == "walk/VERB" and padded[21] == "eos/OTHER"
    assert pad_caption_tokens(["a/DET"] * 20, 20)[1] == 22
    assert pad_caption_tokens([], 20)[1] == 2
