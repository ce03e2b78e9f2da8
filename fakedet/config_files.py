"""Settings in and out of a `TrainingConfig`: raw values validated with one-line errors, YAML and
TOML config files, and the plain values stored in checkpoints and `config.yaml`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from fakedet.config import TrainingConfig
from fakedet.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib


def _describe(error: dict[str, Any]) -> str:
    location = ".".join(str(part) for part in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    message = message[:1].lower() + message[1:]
    if error["type"] == "extra_forbidden":
        known = ", ".join(TrainingConfig.model_fields)
        return f"unknown setting '{location}' (known settings: {known})"
    if error["type"] == "missing":
        return f"'{location}' is required"
    if not location:
        return message
    return f"{location} = {error['input']!r} is invalid: {message}"


def describe_validation_error(error: ValidationError) -> str:
    """Every bad field of a failed validation, its value and the allowed range, in one line."""
    return "; ".join(_describe(problem) for problem in error.errors())


def build_config(values: dict[str, Any]) -> TrainingConfig:
    """Validate raw settings into a TrainingConfig.

    Args:
        values: field name -> value, e.g. merged from a config file and command-line flags.

    Returns:
        The validated config.

    Raises:
        ConfigError: naming every bad field, its value and the allowed range.
    """
    try:
        return TrainingConfig(**values)
    except ValidationError as exc:
        raise ConfigError(f"Invalid configuration: {describe_validation_error(exc)}.") from None


def load_config_file(path: Path) -> dict[str, Any]:
    """Read a YAML or TOML config file into a dict of settings.

    Raises:
        ConfigError: the file is missing, unparsable, or not a mapping.
    """
    if path.is_dir():
        raise ConfigError(f"Config file {path} is a folder; pass a YAML or TOML file.")
    if not path.exists():
        raise ConfigError(f"Config file {path} does not exist; pass a YAML or TOML file.")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(
            f"Config file {path} could not be parsed: it is not UTF-8 text."
        ) from None
    except OSError as exc:
        raise ConfigError(f"Config file {path} could not be read: {exc.strerror}.") from None
    try:
        if path.suffix.lower() == ".toml":
            data = tomllib.loads(text)
        else:
            data = yaml.safe_load(text) or {}
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        first_line = str(exc).strip().splitlines()[0]
        raise ConfigError(f"Config file {path} could not be parsed: {first_line}.") from None
    if not isinstance(data, dict):
        raise ConfigError(f"Config file {path} must hold a mapping of setting: value.")
    return data


def config_to_dict(config: TrainingConfig) -> dict[str, Any]:
    """Plain JSON-safe values (paths as strings): what goes into checkpoints and config.yaml."""
    return config.model_dump(mode="json")


def dump_config_yaml(config: TrainingConfig) -> str:
    return yaml.safe_dump(config_to_dict(config), sort_keys=False)
