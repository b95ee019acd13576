"""Every shipped YAML under configs/ loads into its stage's typed config."""

from pathlib import Path

import pytest
import yaml

from data.config import load_config
from data.engine.run import EngineConfig
from eval.harness import EvalConfig
from models.evaluator_training import EvaluatorTrainConfig
from models.vq_tokenize import TokenizeConfig
from models.vq_training import VQTrainConfig
from prepare.build_word_vectors import WordVectorsConfig

CONFIGS = Path(__file__).resolve().parent.parent / "configs"

# One dataclass per stage; configs/<dataset>/<stage>.yaml.
STAGES = {
    "vq": VQTrainConfig,
    "tokenize": TokenizeConfig,
    "evaluator": EvaluatorTrainConfig,
    "eval": EvalConfig,
    "word_vectors": WordVectorsConfig,
    "engine": EngineConfig,
}

ALL_YAML = sorted(CONFIGS.glob("*/*.yaml"))


def test_configs_exist_for_every_dataset():
    assert ALL_YAML, "no configs found"
    for folder in ("humanml3d", "kit", "tiny"):
        assert (CONFIGS / folder).is_dir()
    unknown = sorted(p.relative_to(CONFIGS).as_posix() for p in ALL_YAML if p.stem not in STAGES)
    assert not unknown, f"configs without a registered stage dataclass: {unknown}"


def _assert_holds(cfg: object, data: dict, where: str) -> None:
    """Every key of the YAML mapping ``data`` arrived in ``cfg`` with its value (nested sections too)."""
    for key, value in data.items():
        got = getattr(cfg, key)
        if isinstance(value, dict) and not isinstance(got, dict):
            _assert_holds(got, value, f"{where}.{key}")
        else:
            got = list(got) if isinstance(got, tuple) else got
            assert got == value, f"{where}.{key}: YAML {value!r}, config holds {got!r}"


@pytest.mark.parametrize("path", ALL_YAML, ids=lambda p: p.relative_to(CONFIGS).as_posix())
def test_config_loads(path: Path):
    cfg = load_config(STAGES[path.stem], path)
    assert isinstance(cfg, STAGES[path.stem])
    _assert_holds(cfg, yaml.safe_load(path.read_text()) or {}, path.name)
    dataset = getattr(cfg, "dataset", None)
    if dataset is not None and path.parent.name in ("humanml3d", "kit"):
        from data.specs import get_dataset_spec

        assert get_dataset_spec(dataset).name == path.parent.name
