"""Shared pytest fixtures: tiny on-disk datasets and word vectors built in code.

Keep fixtures small (a handful of clips, a few dozen words) so every test runs in well under a
second. Session-scoped fixtures are read-only; tests that corrupt files use the factory fixtures.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from data.layout import DatasetPaths
from data.specs import get_dataset_spec
from data.word_vectorizer import save_word_vectors

# ---------------------------------------------------------------------------------------------
# Tiny HumanML3D-layout dataset
# ---------------------------------------------------------------------------------------------

_WHOLE = "0.0#0.0"

TINY_CLIPS: dict[str, tuple[int, list[str]]] = {
    # id: (frames, caption lines)
    "000000": (60, [f"a person walks forward.#a/DET person/NOUN walk/VERB forward/ADV#{_WHOLE}",
                    f"someone walks ahead slowly.#someone/PRON walk/VERB ahead/ADV slowly/ADV#{_WHOLE}"]),
    "000001": (120, [f"a man waves his left hand.#a/DET man/NOUN wave/VERB his/DET left/ADJ hand/NOUN#{_WHOLE}",
                     # sub-clip [10, 60): kept as its own entry
                     "a man jumps.#a/DET man/NOUN jump/VERB#0.5#3.0",
                     # sub-clip [0, 20): 20 frames, below min length 40
                     "a man stands.#a/DET man/NOUN stand/VERB#0.0#1.0"]),
    "000002": (30, [f"a short clip.#a/DET short/ADJ clip/NOUN#{_WHOLE}"]),  # too short
    "000003": (200, [f"a long walk.#a/DET long/ADJ walk/NOUN#{_WHOLE}",  # too long (>= 200)
                     "a person runs.#a/DET person/NOUN run/VERB#1.0#4.0"]),  # dropped with it
    "000004": (199, [f"a person kicks a ball.#a/DET person/NOUN kick/VERB a/DET ball/NOUN#{_WHOLE}"]),
    "000005": (80, ["a person sits down.#a/DET person/NOUN sit/VERB down/ADP#0.0#3.0"]),  # sub-clip only
    "000006": (41, ["the person slowly walks forward then turns left and walks back to the chair near "
                    "the window and sits.#the/DET person/NOUN slowly/ADV walk/VERB forward/ADV then/ADV "
                    "turn/VERB left/ADV and/CCONJ walk/VERB back/ADV to/ADP the/DET chair/NOUN "
                    "near/ADP the/DET window/NOUN and/CCONJ sit/VERB zzzunknown/NOUN extra/ADJ "
                    f"words/NOUN#{_WHOLE}"]),  # 22 tokens
    "000007": (100, [f"a person dances.#a/DET person/NOUN dance/VERB#{_WHOLE}",
                     f"someone dances happily.#someone/PRON dance/VERB happily/ADV#{_WHOLE}",
                     f"a person spins around.#a/DET person/NOUN spin/VERB around/ADV#{_WHOLE}"]),
}  # fmt: skip
"""Eight clips covering the loader's cases (humanml3d: fps 20, kept lengths [40, 200))."""

TINY_VOCAB: tuple[str, ...] = (
    "sos", "eos", "unk", "a", "person", "walk", "forward", "someone", "ahead", "slowly", "man",
    "wave", "his", "left", "hand", "jump", "stand", "kick", "ball", "sit", "down", "the", "then",
    "turn", "and", "back", "to", "chair", "near", "window", "dance", "happily", "spin", "around",
    "short", "clip", "long", "run",
)  # fmt: skip


def write_tiny_dataset(
    root: Path,
    clips: dict[str, tuple[int, list[str]]] | None = None,
    dataset: str = "humanml3d",
    seed: int = 0,
) -> Path:
    """Write a HumanML3D-layout folder with random features/joints and the given captions.

    Splits: ``test`` and ``all`` hold every id, ``train`` the first six, ``val`` the rest.
    """
    spec = get_dataset_spec(dataset)
    clips = TINY_CLIPS if clips is None else clips
    rng = np.random.default_rng(seed)
    paths = DatasetPaths(root)
    for folder in (paths.vecs_dir, paths.joints_dir, paths.texts_dir):
        folder.mkdir(parents=True, exist_ok=True)
    feats = []
    for motion_id, (n_frames, lines) in clips.items():
        x = rng.standard_normal((n_frames, spec.feat_dim)).astype(np.float32)
        feats.append(x)
        np.save(paths.vec_file(motion_id), x)
        joints = rng.uniform(-0.5, 0.5, (n_frames, spec.joints_num, 3)).astype(np.float32)
        joints[..., 1] += 1.0
        np.save(paths.joint_file(motion_id), joints)
        paths.text_file(motion_id).write_text("\n".join(lines) + "\n")
    ids = list(clips)
    for split, members in (("test", ids), ("all", ids), ("train", ids[:6]), ("val", ids[6:]),
                           ("train_val", ids)):  # fmt: skip
        paths.split_file(split).write_text("\n".join(members) + "\n")
    cat = np.concatenate(feats)
    np.save(paths.mean_file, cat.mean(0).astype(np.float32))
    np.save(paths.std_file, cat.std(0).astype(np.float32))
    return root


def write_tiny_glove(
    glove_dir: Path, words: tuple[str, ...] = TINY_VOCAB, dim: int = 300, seed: int = 0
) -> Path:
    """Write random unit-scale word vectors for ``words`` with ``save_word_vectors``."""
    vecs = np.random.default_rng(seed).standard_normal((len(words), dim)).astype(np.float32)
    save_word_vectors(glove_dir, list(words), vecs)
    return glove_dir


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Read-only 8-clip HumanML3D-layout dataset (see ``TINY_CLIPS``)."""
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny_hml"))


@pytest.fixture
def make_tiny_dataset(tmp_path: Path) -> Callable[..., Path]:
    """Factory writing a fresh tiny dataset under ``tmp_path`` (for tests that modify files)."""

    def make(name: str = "ds", **kwargs) -> Path:
        return write_tiny_dataset(tmp_path / name, **kwargs)

    return make


@pytest.fixture(scope="session")
def tiny_glove(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Read-only ``our_vab`` glove folder over ``TINY_VOCAB`` (300-d random vectors)."""
    return write_tiny_glove(tmp_path_factory.mktemp("tiny_glove"))
