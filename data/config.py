"""One typed config loader for every stage.

A stage declares a dataclass (nested dataclasses allowed); its YAML is read with ``safe_load``,
checked against the dataclass fields (unknown keys are errors naming the file and key), then
``key=value`` overrides from the command line are applied (dotted keys reach nested sections;
values are parsed as YAML scalars and type-checked against the field).

Example::

    cfg = load_config(VQTrainConfig, "configs/tiny/vq.yaml", ["train.lr=1e-3", "seed=3"])
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the file and key."""


def _type_ok(value: Any, tp: Any) -> bool:
    """Loose runtime check of a YAML value against a field annotation."""
    if tp is Any:
        return True
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return all(_type_ok(v, args[0]) for v in value) if args else True
    if origin is dict:
        return isinstance(value, dict)
    if origin is typing.Literal:
        return value in typing.get_args(tp)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


def _accepts_float(tp: Any) -> bool:
    """True when a field annotation admits a float (``float``, ``float | None``)."""
    return tp is float or float in typing.get_args(tp)


def _as_float(value: Any) -> Any:
    """Coerce ints and YAML 1.1 exponent strings such as ``2e-4`` (read as ``str``) to float."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _build(cls: type[T], data: dict[str, Any], where: str) -> T:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping for {cls.__name__}, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {unknown} for {cls.__name__}; valid keys: {sorted(fields)}"
        )
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        key = f"{where}.{name}" if ":" in where else f"{where}:{name}"
        if dataclasses.is_dataclass(tp) and isinstance(value, dict):
            kwargs[name] = _build(tp, value, key)
            continue
        if _accepts_float(tp) and not _type_ok(value, tp):
            value = _as_float(value)
        if isinstance(value, list) and typing.get_origin(tp) is tuple:
            value = tuple(value)
        if not _type_ok(value, tp):
            raise ConfigError(f"{key}={value!r} does not match the field type {tp}")
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {err}") from err


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {part!r} is not a section")
    node[parts[-1]] = value


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-dict view of a config dataclass (tuples become lists), for YAML/JSON dumps."""

    def conv(v: Any) -> Any:
        if isinstance(v, tuple):
            return [conv(x) for x in v]
        if isinstance(v, list):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v

    return conv(dataclasses.asdict(cfg))


def load_config(
    cls: type[T], path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> T:
    """Build ``cls`` from a YAML file plus ``key=value`` overrides.

    Args:
        cls: the config dataclass.
        path: YAML file; ``None`` starts from the dataclass defaults.
        overrides: ``dotted.key=value`` strings; values are parsed with ``yaml.safe_load``.

    Raises:
        ConfigError: missing file, invalid YAML, unknown key, wrong type, or a rule in
            ``__post_init__`` broken; the message names the file and the key.
    """
    where = str(path) if path is not None else f"<{cls.__name__} defaults>"
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as err:
            raise ConfigError(f"{p}: invalid YAML: {err}") from err
        data = loaded or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: top level must be a mapping of keys to values")
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: cannot parse value: {err}") from err
        _set_dotted(data, key.strip(), value)
    return _build(cls, data, where)


def parse_cli(cls: type[T], argv: list[str] | None = None, description: str | None = None) -> T:
    """Standard entry-point parser: ``--config FILE`` then any number of ``key=value`` overrides."""
    import argparse

    parser = argparse.ArgumentParser(description=description or cls.__doc__)
    parser.add_argument("--config", default=None, help="YAML config file")
    parser.add_argument("overrides", nargs="*", help="key=value overrides (dotted keys for sections)")
    args = parser.parse_args(argv)
    return load_config(cls, args.config, args.overrides)
