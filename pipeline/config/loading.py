"""Config files in and out: YAML recipes plus `key=value` overrides, and commented YAML back."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from pipeline.config.algorithm import TYPED_KEYS
from pipeline.config.base import ConfigError
from pipeline.config.hints import explain
from pipeline.config.schema import Config


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turn `a.b=value` strings into a nested dict; values are parsed as YAML (flow style).

    Raises ConfigError naming the override that is malformed or whose value is not valid YAML.
    """
    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key or "" in key.split("."):
            raise ConfigError(f"override {item!r} must look like section.key=value")
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with another override of {part!r}")
        try:
            node[leaf] = _parse_scalar(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({yaml_problem(exc)}); "
                              "quote a text value that holds YAML syntax ([ ] { } : #)") from None
        _check_flow_keys(node[leaf], f"override {item!r}")
    return tree


def _check_flow_keys(value: Any, where: str) -> None:
    """ConfigError naming `where` when a mapping key holds `:` (`{name:accuracy}` is one key,
    `name:accuracy`, in YAML flow style, where `name: accuracy` is a key and its value)."""
    if isinstance(value, list):
        for item in value:
            _check_flow_keys(item, where)
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and ":" in key and item is None:
                raise ConfigError(f"{where}: {key!r} reads as one key without a value; write `name: value` with "
                                  f"a space after the colon (YAML flow style), e.g. "
                                  f"{{{key.replace(':', ': ', 1)}}}")
            _check_flow_keys(item, where)


def yaml_problem(error: yaml.YAMLError) -> str:
    """A YAML error in one line: what is wrong and where (`line 3, column 7: ...`)."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark is not None else problem


_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _parse_scalar(raw: str) -> Any:
    """YAML parsing, plus `2e-6` as a float (YAML 1.1 reads exponents without a dot as text)."""
    value = yaml.safe_load(raw) if raw else ""
    if isinstance(value, str) and _EXPONENT.fullmatch(value):
        return float(value)
    return value


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _typed_as_mapping(data: dict[str, Any]) -> dict[str, Any]:
    """`algorithm.policy_loss: dapo` as `{type: dapo}` (likewise `correction`), so
    `algorithm.policy_loss.eps_high=0.3` given elsewhere merges into it instead of replacing it."""
    algorithm = data.get("algorithm")
    if not isinstance(algorithm, dict):
        return data
    named = {key: {"type": algorithm[key]} for key in TYPED_KEYS if isinstance(algorithm.get(key), str)}
    return {**data, "algorithm": {**algorithm, **named}} if named else data


def _reward_files_from(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A recipe's `reward.terms` naming `path/file.py:function` with a relative path, made absolute from
    `folder` (the recipe's own), so a reward file next to the recipe is found from any working
    directory (overrides on the command line stay relative to it). docs/rewards.md."""
    reward = data.get("reward")
    terms = reward.get("terms") if isinstance(reward, dict) else None
    if not isinstance(terms, list):
        return data
    rebased = [{**term, "name": _rebased(term["name"], folder)}
               if isinstance(term, dict) and isinstance(term.get("name"), str) else term for term in terms]
    return {**data, "reward": {**reward, "terms": rebased}}


def _rebased(name: str, folder: Path) -> str:
    """`file.py:fn` (a file: ends in .py or holds a `/`; rewards/registry.py) relative to `folder`."""
    source, sep, function = name.rpartition(":")
    is_file = source.endswith(".py") or "/" in source
    if not sep or not is_file or Path(source).expanduser().is_absolute():
        return name
    return f"{(folder / source).resolve()}:{function}"


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                section: str | None = None) -> Config:
    """Load a YAML recipe (optional), apply `key=value` overrides, validate everything.

    `section` is the running stage's own section (`rl`, `dpo`, ...): an unknown key's hint
    points there (`learning_rate` -> `dpo.lr` under `rlvr dpo`). Raises ConfigError.
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {yaml_problem(exc)}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
        _check_flow_keys(data, str(path))
        data = _reward_files_from(data, path.parent)
    data = _merge(_typed_as_mapping(data), _typed_as_mapping(parse_overrides(overrides or [])))
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(explain(exc, section, lambda key: _source_of(key, path, overrides or []))) from None


def _source_of(key: str, path: Path | None, overrides: list[str]) -> str:
    """Where the dotted `key` (an error's) was set: the overrides that set it or a key inside it (or
    that it lies inside), else the file `path` ("" with neither)."""
    named = [item for item in overrides
             if (name := item.partition("=")[0]) == key or name.startswith(f"{key}.") or key.startswith(f"{name}.")]
    if named and key:
        return f"override {' '.join(named)}"
    return str(path) if path is not None else ""


def save_config(config: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config.model_dump(), sort_keys=False))


def commented_yaml(config: BaseModel, keys: Sequence[str] | None = None) -> str:
    """`config` as YAML that `load_config` reads back, each key under a comment (its docstring).

    `keys` selects and orders the top-level keys (default: all), e.g. the sections a stage reads.
    """
    lines: list[str] = []
    _emit_yaml(config, list(keys) if keys is not None else list(type(config).model_fields), "", lines)
    return "\n".join(lines) + "\n"


def _emit_yaml(model: BaseModel, names: list[str], indent: str, lines: list[str]) -> None:
    fields, plain = type(model).model_fields, model.model_dump()
    for name in names:
        description = fields[name].description or ""
        lines += [f"{indent}# {line.strip()}".rstrip() for line in description.splitlines()]
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            lines.append(f"{indent}{name}:")
            _emit_yaml(value, list(type(value).model_fields), indent + "  ", lines)
        else:
            lines.append(f"{indent}{name}: {yaml_value(plain[name])}")


def yaml_value(value: Any) -> str:
    """A plain value as one line of YAML flow style (`[1, 2]`, `null`, `runs/demo`)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=float("inf"), sort_keys=False)
    return text.removesuffix("\n").removesuffix("\n...")
