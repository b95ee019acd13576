"""Dataset registry, typed config loader and layout readers."""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from data.config import ConfigError, load_config
from data.layout import DatasetFileError, SkipTracker, load_features, parse_caption_line, read_captions
from data.specs import get_dataset_spec


def test_dataset_specs_consistent():
    for name, j, d in (("humanml3d", 22, 263), ("kit", 21, 251)):
        spec = get_dataset_spec(name)
        assert (spec.joints_num, spec.feat_dim) == (j, d)
        assert spec.feature_slices["foot_contact"] == slice(d - 4, d)
        assert (spec.parents[1:] >= 0).all() and spec.parents[0] == -1
        assert spec.target_offsets.shape == (j, 3)
    assert get_dataset_spec("t2m") is get_dataset_spec("HumanML3D")
    with pytest.raises(KeyError, match="known names"):
        get_dataset_spec("nope")


@dataclass
class _Inner:
    lr: float = 1e-3
    """learning rate"""


@dataclass
class _Cfg:
    seed: int = 0
    name: str = "x"
    inner: _Inner = field(default_factory=_Inner)
    tags: tuple[str, ...] = ()

    def __post_init__(self):
        if self.seed < 0:
            raise ValueError(f"seed={self.seed} must be >= 0")


def test_load_config(tmp_path: Path):
    f = tmp_path / "c.yaml"
    f.write_text("seed: 3\ninner:\n  lr: 1\ntags: [a, b]\n")
    cfg = load_config(_Cfg, f, ["inner.lr=0.5", "name=y"])
    assert cfg.seed == 3 and cfg.inner.lr == 0.5 and cfg.name == "y" and cfg.tags == ("a", "b")
    # YAML 1.1 reads 2e-4 (no dot) as a string; float fields accept it, str fields keep it.
    f.write_text("inner:\n  lr: 2e-4\nname: 1e3\n")
    cfg = load_config(_Cfg, f, ["inner.lr=3e-5"])
    assert cfg.inner.lr == 3e-5 and cfg.name == "1e3"
    with pytest.raises(ConfigError, match="lr='fast'"):
        load_config(_Cfg, None, ["inner.lr=fast"])
    f.write_text("sed: 3\n")
    with pytest.raises(ConfigError, match=r"c.yaml.*unknown key.*sed"):
        load_config(_Cfg, f)
    with pytest.raises(ConfigError, match="seed='a'"):
        load_config(_Cfg, None, ["seed=a"])
    with pytest.raises(ConfigError, match="must be >= 0"):
        load_config(_Cfg, None, ["seed=-1"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(_Cfg, tmp_path / "missing.yaml")


def test_caption_parsing(tmp_path: Path):
    c = parse_caption_line("a man walks.#a/DET man/NOUN walk/VERB#0.0#nan")
    assert c.whole_clip and c.tokens == ("a/DET", "man/NOUN", "walk/VERB")
    c = parse_caption_line("x#x/NOUN#1.5#3.0")
    assert c.frame_range(20) == (30, 60) and c.frame_range(12.5) == (18, 37)
    f = tmp_path / "t.txt"
    f.write_text("ok#ok/ADJ#0#0\nbroken line without fields\n")
    with pytest.raises(DatasetFileError, match=r"t.txt:2"):
        read_captions(f)


def test_load_features_errors(tmp_path: Path):
    spec = get_dataset_spec("humanml3d")
    good = tmp_path / "a.npy"
    np.save(good, np.zeros((10, 263), np.float32))
    assert load_features(good, spec).shape == (10, 263)
    np.save(tmp_path / "b.npy", np.zeros((10, 251), np.float32))
    with pytest.raises(DatasetFileError, match=r"b.npy.*expected \(T, 263\)"):
        load_features(tmp_path / "b.npy", spec)
    bad = np.zeros((10, 263), np.float32)
    bad[3, 5] = np.nan
    np.save(tmp_path / "c.npy", bad)
    with pytest.raises(DatasetFileError, match="NaN"):
        load_features(tmp_path / "c.npy", spec)
    (tmp_path / "d.npy").write_bytes(b"garbage")
    with pytest.raises(DatasetFileError, match="cannot read"):
        load_features(tmp_path / "d.npy", spec)


def test_skip_tracker():
    t = SkipTracker("motions", on_error="skip", max_skip_fraction=0.5)
    t.seen = 4
    t.record("a", ValueError("x"))
    t.finish()
    t.record("b", ValueError("y"))
    t.record("c", ValueError("z"))
    with pytest.raises(DatasetFileError, match="3 of 4"):
        t.finish()
    with pytest.raises(ValueError, match="boom"):
        SkipTracker("m").record("a", ValueError("boom"))
