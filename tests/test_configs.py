"""Every shipped YAML under configs/ loads into its stage's typed config; the shared base and its rules."""

import ast
import dataclasses
import inspect
import re
import textwrap
from pathlib import Path

import pytest
import yaml

from data.config import ConfigError, RunConfig, config_to_dict, load_config, parse_cli
from data.engine.run import EngineConfig
from data.specs import get_dataset_spec
from eval.harness import EvalConfig
from eval.llm_eval import LLMEvalConfig
from eval.vq_reconstruct import ReconstructConfig
from models.evaluator_training import EvaluatorModelConfig, EvaluatorTrainConfig, MovementAEConfig
from models.grpo import GenerationSection, GRPORunConfig, GRPOTrainingSection, RewardSection, VLLMSection
from models.sft import LoraSection, SFTConfig, TrainingSection
from models.tiny_llm import TinyLLMConfig
from models.vq_tokenize import TokenizeConfig
from models.vq_training import VQTrainConfig
from models.vqvae import VQVAEConfig
from prepare.build_word_vectors import WordVectorsConfig
from scripts.baseline_t2m import BaselineT2MConfig

CONFIGS = Path(__file__).resolve().parent.parent / "configs"

# One dataclass per stage; configs/<dataset>/<stage>.yaml.
STAGES = {
    "vq": VQTrainConfig,
    "tokenize": TokenizeConfig,
    "evaluator": EvaluatorTrainConfig,
    "eval": EvalConfig,
    "eval_llm": LLMEvalConfig,
    "word_vectors": WordVectorsConfig,
    "engine": EngineConfig,
    "sft_stage0": SFTConfig,
    "sft_stage1": SFTConfig,
    "sft_stage2": SFTConfig,
    "llm": TinyLLMConfig,
    "grpo": GRPORunConfig,
    "baseline_t2m": BaselineT2MConfig,
}
ALL_STAGE_CONFIGS = [*dict.fromkeys(STAGES.values()), ReconstructConfig]

ALL_YAML = sorted(CONFIGS.glob("*/*.yaml"))

BASE_FIELDS = ["dataset", "dataset_root", "output_dir", "seed", "device", "num_threads", "on_error",
               "max_skip_fraction", "progress"]  # fmt: skip


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
def test_config_loads_and_its_dump_loads_back(path: Path, tmp_path: Path):
    cls = STAGES[path.stem]
    cfg = load_config(cls, path)
    assert isinstance(cfg, cls)
    _assert_holds(cfg, yaml.safe_load(path.read_text()) or {}, path.name)
    if path.parent.name in ("humanml3d", "kit"):
        assert get_dataset_spec(cfg.dataset).name == path.parent.name
    # The run folder's config.yaml reads back into the same config.
    dump = tmp_path / "config.yaml"
    dump.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    assert load_config(cls, dump) == cfg


def test_every_stage_extends_the_shared_base_with_one_name_per_idea():
    for cls in ALL_STAGE_CONFIGS:
        assert issubclass(cls, RunConfig), cls.__name__
        names = [f.name for f in dataclasses.fields(cls)]
        assert names[: len(BASE_FIELDS)] == BASE_FIELDS, cls.__name__
        old = {"out_dir", "out", "checkpoint", "vq_ckpt", "vq_path", "threads"} & set(names)
        assert not old, f"{cls.__name__} still has {old}"
    vq_users = [c.__name__ for c in ALL_STAGE_CONFIGS if any("vq" in f.name and "checkpoint" in f.name
                                                               for f in dataclasses.fields(c))]  # fmt: skip
    assert sorted(vq_users) == [
        "BaselineT2MConfig",
        "EvalConfig",
        "GRPORunConfig",
        "LLMEvalConfig",
        "ReconstructConfig",
        "SFTConfig",
        "TokenizeConfig",
    ]
    for cls in vq_users:
        assert "vq_checkpoint" in {f.name for f in dataclasses.fields(globals()[cls])}


def _undocumented_fields(cls: type) -> list[str]:
    """Fields written in ``cls``'s own body that are not followed by a docstring line."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    missing = []
    for i, node in enumerate(body):
        if isinstance(node, ast.AnnAssign) and "ClassVar" not in ast.unparse(node.annotation):
            nxt = body[i + 1] if i + 1 < len(body) else None
            documented = (
                isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            )
            if not documented:
                missing.append(node.target.id)
    return missing


@pytest.mark.parametrize(
    "cls", [RunConfig, *ALL_STAGE_CONFIGS, EvaluatorModelConfig, MovementAEConfig, VQVAEConfig, LoraSection,
            TrainingSection, RewardSection, GenerationSection, VLLMSection, GRPOTrainingSection],
    ids=lambda c: c.__name__,
)  # fmt: skip
def test_every_config_field_has_a_docstring(cls: type):
    assert not _undocumented_fields(cls)


def test_the_docstring_check_sees_a_missing_docstring():
    @dataclasses.dataclass
    class Half:
        a: int = 0
        """documented"""
        b: int = 1

    assert _undocumented_fields(Half) == ["b"]


def test_ignored_base_fields_are_refused_with_the_reason():
    for cls in ALL_STAGE_CONFIGS:
        assert set(cls.ignored_fields) <= set(BASE_FIELDS), cls.__name__
        cls()  # defaults are fine
    cases = [
        (TokenizeConfig, {"seed": 3}, "seed=3 would be ignored.*draws nothing"),
        (EngineConfig, {"device": "cuda"}, "device='cuda' would be ignored.*numpy"),
        (EngineConfig, {"on_error": "skip"}, "on_error='skip' would be ignored"),
        (WordVectorsConfig, {"num_threads": 4}, "num_threads=4 would be ignored.*gensim"),
        (EvaluatorTrainConfig, {"device": "auto"}, "device='auto' would be ignored.*CPU"),
        (ReconstructConfig, {"progress": False}, "progress=False would be ignored"),
    ]
    for cls, kwargs, message in cases:
        with pytest.raises(ValueError, match=f"{cls.__name__}: {message}"):
            cls(**kwargs)
    # Honoured fields are accepted (the same names that another stage ignores).
    assert TokenizeConfig(device="cpu", num_threads=2, on_error="skip").on_error == "skip"
    assert WordVectorsConfig(seed=5, on_error="skip", max_skip_fraction=0.5).max_skip_fraction == 0.5
    assert EvalConfig(progress=False, device="cuda:1").device == "cuda:1"


def test_base_fields_are_checked():
    with pytest.raises(ValueError, match=r"EvalConfig: dataset='nope'.*known names"):
        EvalConfig(dataset="nope")
    with pytest.raises(ValueError, match=r"device='gpu' must be auto, cpu, cuda, cuda:N or mps"):
        VQTrainConfig(device="gpu")
    with pytest.raises(ValueError, match=r"max_skip_fraction=1.5 must be in \[0, 1\]"):
        TokenizeConfig(max_skip_fraction=1.5)
    with pytest.raises(ValueError, match=r"num_threads=-1 must be >= 0"):
        EvalConfig(num_threads=-1)


@pytest.mark.parametrize(
    ("cls", "stage", "overrides", "message"),
    [
        (EvalConfig, "eval", ["batch_size=2"], r"batch_size=2 must be >= 3: R-precision top-3"),
        (EvalConfig, "eval", ["replications=0"], r"replications=0 and diversity_times=300 must be >= 1"),
        (EvalConfig, "eval", ["vq_meta_dir="], r"vq_checkpoint='runs/demo/vq_tiny/net_last.pth' and vq_meta_dir=''"),
        (EvalConfig, "eval", ["mm_texts=5", "mm_times=30"], r"mm_times=30 must be >= 1 and below mm_repeats=30"),
        (EvaluatorTrainConfig, "evaluator", ["batch_size=2"], r"batch_size=2 must be >= 3"),
        (EvaluatorTrainConfig, "evaluator", ["movement.window=22"], r"movement.window=22 .* unit_length=4"),
        (VQTrainConfig, "vq", ["window_size=62"], r"window_size=62 must be a positive multiple of model.frames_per_code=4"),
        (VQTrainConfig, "vq", ["model.stride_t=6"], r"window_size=64 must be .* model.frames_per_code=36 \(model.stride_t=6"),
        (VQTrainConfig, "vq", ["window_size=200"], r"window_size=200 exceeds the longest humanml3d motion \(196"),
        (VQTrainConfig, "vq", ["lr_milestones=[2,1]"], r"lr_milestones=\[2, 1\] must be increasing"),
        (TokenizeConfig, "tokenize", ["splits=[]"], r"splits must name at least one split"),
        (WordVectorsConfig, "word_vectors", ["window=0"], r"window=0 must be >= 1"),
        (EngineConfig, "engine", ["variants_per_goal=5"], r"variants_per_goal=5 must be in 0..4"),
    ],
)  # fmt: skip
def test_cross_field_rules_name_the_file_and_fields(cls, stage, overrides, message):
    path = CONFIGS / "tiny" / f"{stage}.yaml"
    with pytest.raises(ConfigError, match=re.escape(str(path)) + r" \+ overrides: .*" + message):
        load_config(cls, path, overrides)


def test_reconstruct_config_rules_and_cli_names():
    with pytest.raises(ConfigError, match=r"num=0 must be >= 1 when ids is empty"):
        parse_cli(ReconstructConfig, ["num=0"])
    cfg = parse_cli(ReconstructConfig, ["vq_checkpoint=a #1.pth", "output_dir=runs/a #1", "ids=['000001']"])
    assert (cfg.vq_checkpoint, cfg.output_dir, cfg.ids) == ("a #1.pth", "runs/a #1", ("000001",))
    with pytest.raises(ConfigError, match=r"'checkpoint' is now 'vq_checkpoint'"):
        parse_cli(ReconstructConfig, ["checkpoint=x"])
    with pytest.raises(ConfigError, match=r"'out_dir' is now 'output_dir'"):
        parse_cli(ReconstructConfig, ["out_dir=y"])
