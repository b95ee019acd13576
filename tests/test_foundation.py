"""Dataset registry, typed config loader and layout readers."""

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
import yaml

from data.config import ConfigError, config_to_dict, load_config
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


@dataclass
class _Typed:
    output_dir: str = "runs/x"
    name: str = "x"
    seed: int = 0
    lr: float = 1e-3
    flag: bool = False
    limit: int | None = 0
    mode: Literal["raise", "skip"] = "raise"
    tags: tuple[str, ...] = ()
    nums: list[int] = field(default_factory=list)
    pair: tuple[float, float] = (0.9, 0.99)
    inner: _Inner = field(default_factory=_Inner)


def _one(override: str) -> _Typed:
    return load_config(_Typed, None, [override])


def test_overrides_are_parsed_by_field_type():
    # str fields keep the exact text: YAML would cut ' #1' (a comment), read 'null' as None, '1e3' as text.
    assert _one("output_dir=runs/a #1").output_dir == "runs/a #1"
    assert _one("name=null").name == "null"
    assert _one("name=1e3").name == "1e3"
    assert _one("name=").name == ""
    assert _one("name= a: b ").name == " a: b "
    assert _one("seed=1_000").seed == 1000
    assert _one("seed=-3").seed == -3
    assert _one("lr=2").lr == 2.0 and isinstance(_one("lr=2").lr, float)
    assert _one("lr=1e-3").lr == 0.001
    assert _one("inner.lr=2.5e-4").inner.lr == 2.5e-4
    assert _one("flag=TRUE").flag is True and _one("flag=false").flag is False
    assert _one("limit=none").limit is None and _one("limit=NULL").limit is None
    assert _one("limit=7").limit == 7
    assert _one("mode=skip").mode == "skip"
    for text in ("seed=3.0", "seed=0x10", "seed=true", "seed=", "limit=x"):
        with pytest.raises(ConfigError, match=rf"override {text.split('=')[0]}=.*expected an integer.*int"):
            _one(text)
    with pytest.raises(ConfigError, match=r"override lr='fast': expected a number \(field type float\)"):
        _one("lr=fast")
    with pytest.raises(ConfigError, match=r"override flag='yes': expected true or false"):
        _one("flag=yes")
    with pytest.raises(ConfigError, match=r"override mode='other': expected one of \['raise', 'skip'\]"):
        _one("mode=other")


def test_list_overrides_are_comma_lists():
    assert _one("tags=[a, b]").tags == ("a", "b")
    assert _one("tags=a,b").tags == ("a", "b")
    assert _one("tags=[]").tags == () and _one("tags=").tags == ()
    assert _one("tags=['000001']").tags == ("000001",)  # quotes keep leading zeros and commas
    assert _one("""tags="x, y",z""").tags == ("x, y", "z")
    assert _one("nums=[1, 2,3]").nums == [1, 2, 3]
    assert _one("pair=0.8,0.9").pair == (0.8, 0.9)
    with pytest.raises(ConfigError, match=r"override nums\[1\]='x': expected an integer"):
        _one("nums=1,x")
    with pytest.raises(ConfigError, match=r"override pair='1': expected 2 comma-separated items"):
        _one("pair=1")
    with pytest.raises(ConfigError, match="unclosed quote"):
        _one("tags='a,b")


def test_override_sections_and_unknown_keys(tmp_path: Path):
    f = tmp_path / "c.yaml"
    f.write_text("seed: 3\ninner:\n  lr: 1\n")
    cfg = load_config(_Cfg, f, ["inner={lr: 0.25}"])
    assert (cfg.seed, cfg.inner.lr) == (3, 0.25)
    with pytest.raises(ConfigError, match=r"inner is a section"):
        load_config(_Cfg, f, ["inner=3"])
    with pytest.raises(
        ConfigError, match=r"unknown key\(s\) \['sed'\] for _Cfg \('sed': did you mean 'seed'\?\)"
    ):
        load_config(_Cfg, f, ["sed=1"])
    with pytest.raises(ConfigError, match=r"'out_dir' is now 'output_dir'"):
        load_config(_Typed, None, ["out_dir=x"])
    with pytest.raises(ConfigError, match=r"unknown key.*'lrr'.*did you mean 'lr'"):
        load_config(_Cfg, None, ["inner.lrr=1"])
    with pytest.raises(ConfigError, match=r"seed is not a section"):
        load_config(_Cfg, None, ["seed.x=1"])


def test_duplicate_yaml_keys_are_errors(tmp_path: Path):
    f = tmp_path / "dup.yaml"
    f.write_text("seed: 1\nname: a\nseed: 2\n")
    assert yaml.safe_load(f.read_text())["seed"] == 2  # plain PyYAML keeps the last one silently
    with pytest.raises(ConfigError, match=r"dup.yaml:3: duplicate key 'seed' \(first at line 1\)"):
        load_config(_Cfg, f)
    f.write_text("inner:\n  lr: 1.0\n  lr: 2.0\n")
    with pytest.raises(ConfigError, match=r"dup.yaml:3: duplicate key 'lr'"):
        load_config(_Cfg, f)
    f.write_text("seed: 1\ninner:\n  lr: 1.0\nname: seed\n")  # same word as key and value: fine
    assert load_config(_Cfg, f).name == "seed"


class _Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


def test_config_to_dict_round_trips_through_yaml(tmp_path: Path):
    @dataclass
    class Dump:
        path: Path = Path("runs/a")
        color: _Color = _Color.BLUE
        pair: tuple[int, int] = (1, 2)
        tags: frozenset = frozenset({"b", "a"})
        inner: _Inner = field(default_factory=_Inner)
        extra: dict = field(default_factory=lambda: {"k": (np.int64(3), np.float32(0.5))})

    d = config_to_dict(Dump())
    assert d == {"path": "runs/a", "color": "blue", "pair": [1, 2], "tags": ["a", "b"], "inner": {"lr": 1e-3},
                 "extra": {"k": [3, 0.5]}}  # fmt: skip
    assert type(d["extra"]["k"][0]) is int and type(d["extra"]["k"][1]) is float
    assert yaml.safe_load(yaml.safe_dump(d)) == d
    f = tmp_path / "dump.yaml"
    f.write_text(yaml.safe_dump({k: v for k, v in d.items() if k != "tags"}))
    back = load_config(Dump, f)
    assert (back.path, back.color, back.pair, back.inner.lr) == (Path("runs/a"), _Color.BLUE, (1, 2), 1e-3)

    @dataclass
    class Bad:
        thing: Any = field(default_factory=object)

    with pytest.raises(TypeError, match=r"thing=<object.*cannot be written to YAML"):
        config_to_dict(Bad())
    with pytest.raises(TypeError, match="dataclass instance"):
        config_to_dict({"a": 1})


def test_config_to_dict_accepts_hugging_face_training_arguments(tmp_path: Path):
    transformers = pytest.importorskip("transformers")
    from transformers.trainer_utils import IntervalStrategy, SchedulerType

    @dataclass
    class Recipe:
        seed: int = 0
        training: transformers.TrainingArguments | None = None

    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "sft"), eval_strategy="steps", lr_scheduler_type="cosine", report_to=[],
        learning_rate=2e-5, warmup_steps=10,
    )  # fmt: skip
    assert args.eval_strategy is IntervalStrategy.STEPS and args.lr_scheduler_type is SchedulerType.COSINE
    d = config_to_dict(Recipe(seed=4, training=args))
    t = d["training"]
    assert (t["output_dir"], t["eval_strategy"], t["lr_scheduler_type"]) == (
        str(tmp_path / "sft"),
        "steps",
        "cosine",
    )
    assert t["report_to"] == [] and t["learning_rate"] == 2e-5 and t["optim"] == args.optim.value
    assert t["accelerator_config"]["split_batches"] is False  # a nested dataclass became a mapping
    text = yaml.safe_dump(d, sort_keys=False)  # the run folder's config.yaml
    assert yaml.safe_load(text) == d
    f = tmp_path / "config.yaml"
    f.write_text(text)
    back = load_config(Recipe, f)
    assert isinstance(back.training, transformers.TrainingArguments)
    assert back.training.eval_strategy is IntervalStrategy.STEPS
    assert back.training.lr_scheduler_type is SchedulerType.COSINE
    assert config_to_dict(back) == d
    tuned = load_config(Recipe, f, ["training.eval_strategy=epoch", "training.learning_rate=1e-4"])
    assert tuned.training.eval_strategy is IntervalStrategy.EPOCH and tuned.training.learning_rate == 1e-4
    assert tuned.training.lr_scheduler_type is SchedulerType.COSINE  # the rest of the section is kept


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
