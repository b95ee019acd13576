"""One typed config loader for every stage, and the base every stage config extends.

A stage declares a dataclass extending :class:`RunConfig` (nested dataclasses allowed); its YAML
is read with a ``SafeLoader`` that refuses duplicate keys, checked against the dataclass fields
(unknown keys are errors naming the file and key), then ``key=value`` overrides from the command
line are applied (dotted keys reach nested sections). ``__post_init__`` checks the cross-field
rules, so a config that breaks one never exists.

Override values are parsed by the declared type of their field, never as YAML:

- ``str`` (and ``Path``): the exact text after ``=`` (``output_dir=runs/a #1`` is ``runs/a #1``);
- ``int``: ``[+-]digits`` (``_`` separators allowed); ``float``: anything ``float()`` reads
  (``1e-3``, ``2``); ``bool``: ``true`` or ``false`` (any case); anything else is an error that
  names the key and the type;
- ``X | None``: ``none``, ``null`` or ``~`` (any case) give ``None``, other text is parsed as ``X``;
- ``Literal[...]`` and enums: one of the allowed values, spelled as in the YAML;
- ``list[X]`` / ``tuple[X, ...]``: comma-separated items, optionally inside ``[...]``; each item
  is stripped, may be quoted with ``'`` or ``"`` (then it may contain commas), and is parsed as
  ``X`` (``splits=[all,engine_motions]``, ``betas=0.9,0.99``, ``"ids=['000001']"``; ``[]`` or an
  empty value is the empty list);
- ``dict`` and ``Any`` fields: a YAML flow value (``{a: 1}``); a whole section too
  (``model={width: 16, depth: 1}`` sets those keys of ``model``, the others stay as they were).

Example::

    cfg = load_config(VQTrainConfig, "configs/tiny/vq.yaml", ["model.nb_code=256", "seed=3"])
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import enum
import numbers
import re
import types
import typing
from pathlib import Path, PurePath
from typing import Any, ClassVar, Literal, TypeVar

import yaml

from data.specs import get_dataset_spec

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the file and key."""


# ----------------------------------------------------------------------------------------------
# The shared base
# ----------------------------------------------------------------------------------------------

_DEVICE_RE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


@dataclasses.dataclass(kw_only=True)
class RunConfig:
    """Fields every run has; each stage's config extends it with ``@dataclass(kw_only=True)``.

    A stage may redefine a field to change its default (with its own docstring). A base field
    that a stage cannot honour is listed in the stage's ``ignored_fields`` with the reason; setting
    it to anything but its default is then an error naming the field and that reason.
    """

    ignored_fields: ClassVar[dict[str, str]] = {}
    """Base fields this stage does not use -> why; they must keep their default."""

    dataset: str = "humanml3d"
    """Dataset registry name (``humanml3d``, ``kit``): feature size, joints, fps, length limits."""
    dataset_root: str = "runs/demo/SynthML"
    """Dataset folder in the HumanML3D layout."""
    output_dir: str = ""
    """Folder this run writes (each stage lists the files it puts there)."""
    seed: int = 0
    """Seed of every random draw of the run (``data.runtime.set_seed`` and the per-item streams)."""
    device: str = "auto"
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``."""
    num_threads: int = 0
    """torch CPU threads per process (0 = torch's default)."""
    on_error: Literal["raise", "skip"] = "raise"
    """Unreadable or broken dataset files: raise at the first, or skip and count them."""
    max_skip_fraction: float = 0.05
    """With ``on_error=skip``, fail when more than this fraction of the files is skipped."""
    progress: bool = True
    """Show tqdm progress bars."""

    def __post_init__(self) -> None:
        name = type(self).__name__
        try:
            get_dataset_spec(self.dataset)
        except KeyError as err:
            raise ValueError(f"{name}: dataset={self.dataset!r}: {err.args[0]}") from err
        if not _DEVICE_RE.fullmatch(self.device):
            raise ValueError(f"{name}: device={self.device!r} must be auto, cpu, cuda, cuda:N or mps")
        if self.num_threads < 0:
            raise ValueError(f"{name}: num_threads={self.num_threads} must be >= 0 (0 = torch's default)")
        if self.on_error not in ("raise", "skip"):
            raise ValueError(f"{name}: on_error={self.on_error!r} must be 'raise' or 'skip'")
        if not 0.0 <= self.max_skip_fraction <= 1.0:
            raise ValueError(f"{name}: max_skip_fraction={self.max_skip_fraction} must be in [0, 1]")
        defaults = {f.name: _field_default(f) for f in dataclasses.fields(self)}
        for field_name, why in self.ignored_fields.items():
            value = getattr(self, field_name)
            if value != defaults[field_name]:
                raise ValueError(
                    f"{name}: {field_name}={value!r} would be ignored ({why}); leave it at its default "
                    f"{defaults[field_name]!r}"
                )


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


# ----------------------------------------------------------------------------------------------
# YAML files: duplicate keys are errors
# ----------------------------------------------------------------------------------------------


class _DuplicateKeyError(yaml.YAMLError):
    def __init__(self, key: Any, line: int, first_line: int):
        super().__init__(f"duplicate key {key!r} at line {line} (first at line {first_line})")
        self.key, self.line, self.first_line = key, line, first_line


class UniqueKeySafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that raises on a key written twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise _DuplicateKeyError(key, line, seen[key])
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> Any:
    """``safe_load`` of a file with duplicate keys refused.

    Raises:
        ConfigError: missing file, invalid YAML or a duplicate key (the message names file, key, line).
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        return yaml.load(p.read_text(), Loader=UniqueKeySafeLoader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKeyError as err:
        raise ConfigError(
            f"{p}:{err.line}: duplicate key {err.key!r} (first at line {err.first_line}); keep one"
        ) from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{p}: invalid YAML: {err}") from err


# ----------------------------------------------------------------------------------------------
# Types
# ----------------------------------------------------------------------------------------------


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _is_enum(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, enum.Enum)


def _enum_member(tp: type[enum.Enum], value: Any) -> enum.Enum | None:
    for member in tp:
        if value == member.value or value == member.name:
            return member
    return None


def _type_ok(value: Any, tp: Any) -> bool:
    """Loose runtime check of a YAML value against a field annotation."""
    if tp is Any:
        return True
    origin = typing.get_origin(tp)
    if _is_union(tp):
        return any(_type_ok(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        if origin is tuple and args and Ellipsis not in typing.get_args(tp) and len(args) != len(value):
            return False
        if origin is tuple and len(args) > 1:
            return all(_type_ok(v, a) for v, a in zip(value, args, strict=True))
        return all(_type_ok(v, args[0]) for v in value) if args else True
    if origin is dict:
        return isinstance(value, dict)
    if origin is typing.Literal:
        return value in typing.get_args(tp)
    if _is_enum(tp):
        return isinstance(value, tp) or _enum_member(tp, value) is not None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp in (Path, PurePath):
        return isinstance(value, (str, PurePath))
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


def _type_name(tp: Any) -> str:
    return tp.__name__ if isinstance(tp, type) else str(tp).replace("typing.", "")


# ----------------------------------------------------------------------------------------------
# key=value overrides
# ----------------------------------------------------------------------------------------------

_NONE_WORDS = ("none", "null", "~")
_INT_RE = re.compile(r"[+-]?\d+(_\d+)*")


def _split_items(text: str, key: str) -> list[str]:
    """Comma-separated items of ``text`` (optionally in ``[...]``); quoted items keep commas."""
    s = text.strip()
    if s.startswith("[") and s.endswith("]"):
        s = s[1:-1].strip()
    if not s:
        return []
    items, cur, quote, quoted = [], [], "", False
    for ch in s:
        if quote:
            if ch == quote:
                quote = ""
            else:
                cur.append(ch)
        elif ch in "'\"" and not "".join(cur).strip():
            quote, quoted, cur = ch, True, []
        elif ch == ",":
            items.append(("".join(cur) if quoted else "".join(cur).strip(), quoted))
            cur, quoted = [], False
        else:
            if quoted and not ch.isspace():
                raise ConfigError(f"override {key}: text after a closing quote in {text!r}")
            if not quoted:
                cur.append(ch)
    if quote:
        raise ConfigError(f"override {key}: unclosed quote in {text!r}")
    items.append(("".join(cur) if quoted else "".join(cur).strip(), quoted))
    return [item for item, _ in items]


def parse_value(raw: str, tp: Any, key: str) -> Any:
    """Parse the text of an override ``key=raw`` as the field type ``tp`` (rules: module docstring).

    Raises:
        ConfigError: the text is not a value of ``tp``; the message names the key and the type.
    """

    def bad(expected: str) -> ConfigError:
        return ConfigError(f"override {key}={raw!r}: expected {expected} (field type {_type_name(tp)})")

    if tp is Any or typing.get_origin(tp) is dict or tp is dict or dataclasses.is_dataclass(tp):
        try:
            return yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"override {key}={raw!r}: cannot parse as YAML: {err}") from err
    if _is_union(tp):
        args = typing.get_args(tp)
        if type(None) in args and raw.strip().lower() in _NONE_WORDS:
            return None
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return parse_value(raw, rest[0], key)
        # Several types: the first that reads the text, strings last (a str reads anything).
        for a in sorted(rest, key=lambda a: a is str):
            try:
                return parse_value(raw, a, key)
            except ConfigError:
                continue
        raise bad(" or ".join(_type_name(a) for a in args))
    if tp is str:
        return raw
    if tp in (Path, PurePath):
        return Path(raw)
    if tp is bool:
        if raw.strip().lower() in ("true", "false"):
            return raw.strip().lower() == "true"
        raise bad("true or false")
    if tp is int:
        if _INT_RE.fullmatch(raw.strip()):
            return int(raw.strip())
        raise bad("an integer")
    if tp is float:
        try:
            return float(raw.strip())
        except ValueError:
            raise bad("a number") from None
    if typing.get_origin(tp) is Literal:
        choices = typing.get_args(tp)
        for c in choices:
            if raw.strip() == (str(c).lower() if isinstance(c, bool) else str(c)):
                return c
        raise bad(f"one of {list(choices)}")
    if _is_enum(tp):
        member = _enum_member(tp, raw.strip())
        if member is None:
            raise bad(f"one of {[m.value for m in tp]}")
        return member
    origin = typing.get_origin(tp)
    if origin in (list, tuple) or tp in (list, tuple):
        args = typing.get_args(tp)
        items = _split_items(raw, key)
        if origin is tuple and args and Ellipsis not in args:
            if len(items) != len(args):
                raise bad(f"{len(args)} comma-separated items")
            values = [
                parse_value(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(items, args, strict=True))
            ]
        else:
            elem = args[0] if args else str
            values = [parse_value(v, elem, f"{key}[{i}]") for i, v in enumerate(items)]
        return tuple(values) if origin is tuple or tp is tuple else values
    if isinstance(tp, type):
        raise ConfigError(f"override {key}={raw!r}: fields of type {_type_name(tp)} cannot be set from text")
    return raw


_RENAMED = {
    "out_dir": "output_dir",
    "out": "output_dir",
    "checkpoint": "vq_checkpoint",
    "vq_ckpt": "vq_checkpoint",
    "vq_path": "vq_checkpoint",
    "threads": "num_threads",
}
"""Old or common spellings -> the one name used everywhere (for the unknown-key hint)."""


def _unknown_keys_message(where: str, cls: type, unknown: list[str], valid: list[str]) -> str:
    hints = []
    for k in unknown:
        if _RENAMED.get(k) in valid:
            hints.append(f"{k!r} is now {_RENAMED[k]!r}")
        else:
            close = difflib.get_close_matches(k, valid, n=1)
            if close:
                hints.append(f"{k!r}: did you mean {close[0]!r}?")
    hint = f" ({'; '.join(hints)})" if hints else ""
    return f"{where}: unknown key(s) {unknown} for {cls.__name__}{hint}; valid keys: {valid}"


def _field_type(cls: type, dotted: str, item: str) -> Any:
    """Declared type of the (possibly dotted) field ``dotted`` of dataclass ``cls``."""
    node: Any = cls
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        node = _section_type(node)
        if node is None:
            raise ConfigError(f"override {item!r}: {'.'.join(parts[:i])} is not a section")
        hints = typing.get_type_hints(node)
        valid = sorted(f.name for f in dataclasses.fields(node) if f.init)
        if part not in valid:
            raise ConfigError(_unknown_keys_message(f"override {item!r}", node, [part], valid))
        node = hints[part]
    return node


def _set_dotted(data: dict[str, Any], dotted: str, value: Any, merge: bool = False) -> None:
    """Set ``data[a][b]... = value`` for ``a.b...``; ``merge`` updates an existing section instead."""
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        if not isinstance(node.get(part, {}), dict):
            node[part] = {}
        node = node.setdefault(part, {})
    if merge and isinstance(node.get(parts[-1]), dict):
        node[parts[-1]].update(value)
    else:
        node[parts[-1]] = value


# ----------------------------------------------------------------------------------------------
# Building and dumping
# ----------------------------------------------------------------------------------------------


def _section_type(tp: Any) -> type | None:
    """The dataclass of a section field (``Section`` or ``Section | None``), else ``None``."""
    if dataclasses.is_dataclass(tp):
        return tp
    if _is_union(tp):
        sections = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
        return sections[0] if len(sections) == 1 else None
    return None


def _build(cls: type[T], data: dict[str, Any], where: str) -> T:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping for {cls.__name__}, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(_unknown_keys_message(where, cls, unknown, sorted(fields)))
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        key = f"{where}.{name}" if ":" in where else f"{where}:{name}"
        section = _section_type(tp)
        if section is not None and isinstance(value, dict):
            kwargs[name] = _build(section, value, key)
            continue
        if _accepts_float(tp) and not _type_ok(value, tp):
            value = _as_float(value)
        if isinstance(value, list) and typing.get_origin(tp) is tuple:
            value = tuple(value)
        if _is_enum(tp) and not isinstance(value, tp):
            value = _enum_member(tp, value) or value
        if tp in (Path, PurePath) and isinstance(value, str):
            value = Path(value)
        if not _type_ok(value, tp):
            raise ConfigError(f"{key}={value!r} does not match the field type {_type_name(tp)}")
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {err}") from err


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """YAML-safe plain view of a config dataclass, for the run folder's ``config.yaml`` and JSON.

    Nested dataclasses (a stage's sections, a Hugging Face ``TrainingArguments``) become dicts of
    their ``__init__`` fields, enums their value (``IntervalStrategy.STEPS`` -> ``"steps"``), paths
    strings, tuples and sets lists; ``yaml.safe_load(yaml.safe_dump(d)) == d``, and
    :func:`load_config` reads the dump back into the same config.

    Raises:
        TypeError: ``cfg`` is not a dataclass instance, or a value cannot be written to YAML
            (the message names its dotted key).
    """
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"config_to_dict expects a dataclass instance, got {type(cfg).__name__}")

    def conv(v: Any, key: str) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: conv(getattr(v, f.name), f"{key}.{f.name}" if key else f.name)
                    for f in dataclasses.fields(v) if f.init}  # fmt: skip
        if isinstance(v, enum.Enum):
            return conv(v.value, key)
        if v is None or isinstance(v, str):
            return v if v is None else str(v)
        if isinstance(v, bool):
            return bool(v)
        if isinstance(v, numbers.Integral):  # also numpy integers
            return int(v)
        if isinstance(v, numbers.Real):
            return float(v)
        if isinstance(v, PurePath):
            return str(v)
        if isinstance(v, (list, tuple)):
            return [conv(x, f"{key}[{i}]") for i, x in enumerate(v)]
        if isinstance(v, (set, frozenset)):
            return sorted(conv(x, f"{key}[]") for x in v)
        if isinstance(v, dict):
            out = {}
            for k, x in v.items():
                k = conv(k, f"{key}.<key>")
                if not isinstance(k, (str, int, float, bool)) and k is not None:
                    raise TypeError(f"config_to_dict: {key} has a key {k!r} that YAML cannot write")
                out[k] = conv(x, f"{key}.{k}")
            return out
        raise TypeError(
            f"config_to_dict: {key}={v!r} ({type(v).__name__}) cannot be written to YAML; "
            "store it as a string, number, list or mapping"
        )

    return conv(cfg, "")


def load_config(
    cls: type[T], path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> T:
    """Build ``cls`` from a YAML file plus ``key=value`` overrides.

    Args:
        cls: the config dataclass.
        path: YAML file; ``None`` starts from the dataclass defaults.
        overrides: ``dotted.key=value`` strings, parsed by the field's declared type (module docstring).

    Raises:
        ConfigError: missing file, invalid YAML, duplicate or unknown key, wrong type, or a rule
            in ``__post_init__`` broken; the message names the file and the key.
    """
    where = str(path) if path is not None else f"<{cls.__name__} defaults>"
    data: dict[str, Any] = {}
    if path is not None:
        data = read_yaml(path) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: top level must be a mapping of keys to values")
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        tp = _field_type(cls, key, item)
        value = parse_value(raw, tp, key)
        if dataclasses.is_dataclass(tp) and not isinstance(value, dict):
            raise ConfigError(
                f"override {item!r}: {key} is a section; give {key}.<name>=... or {key}={{...}}"
            )
        _set_dotted(data, key, value, merge=_section_type(tp) is not None)
    if overrides:
        where = f"{where} + overrides"
    return _build(cls, data, where)


def parse_cli(cls: type[T], argv: list[str] | None = None, description: str | None = None) -> T:
    """Standard entry-point parser: ``--config FILE`` then any number of ``key=value`` overrides."""
    parser = argparse.ArgumentParser(
        description=description or cls.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=None, help="YAML config file")
    parser.add_argument(
        "overrides", nargs="*", help="key=value overrides (dotted keys for sections; parsed by field type)"
    )
    args = parser.parse_args(argv)
    return load_config(cls, args.config, args.overrides)
