"""Configuration checks with messages that name the key and what it may be."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import yaml


class ConfigError(Exception):
    pass


def load_schema(path: Path) -> dict:
    return yaml.safe_load(Path(path).read_text())


def _where(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


def _subschema_keys(error: jsonschema.ValidationError) -> list[str]:
    return sorted(error.schema.get("properties", {}))


def describe(error: jsonschema.ValidationError) -> str:
    where = _where(error)
    if error.validator == "additionalProperties" and error.schema.get("additionalProperties") is False:
        allowed = set(_subschema_keys(error))
        unknown = sorted(set(error.instance) - allowed)
        return f"{'.'.join([where, *unknown]) if where != '(top level)' else ', '.join(unknown)}: unknown key; allowed keys here: {', '.join(sorted(allowed))}"
    if error.validator == "enum":
        return f"{where}: {error.instance!r} is not allowed; allowed values: {', '.join(map(str, error.validator_value))}"
    if error.validator == "required":
        return f"{where}: {error.message}"
    if error.validator == "pattern":
        return f"{where}: {error.instance!r} does not match the pattern {error.validator_value!r}"
    description = error.schema.get("description")
    hint = f" ({description})" if description else ""
    return f"{where}: {error.message}{hint}"


def check(config: dict, schema_path: Path) -> None:
    """Raise ConfigError listing every problem, each naming its key."""
    schema = load_schema(schema_path)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = "\n".join(f"  - {describe(e)}" for e in errors)
        raise ConfigError(f"invalid configuration ({len(errors)} problem{'s' if len(errors) > 1 else ''}):\n{lines}")


def check_variants(config: dict, layers_root: Path) -> None:
    """Every layer a variant names must exist; every smoke variant must be a variant."""
    problems = []
    known = sorted(p.name for p in Path(layers_root).iterdir() if p.is_dir())
    for variant, layers in config["variants"].items():
        for layer in layers:
            if layer not in known:
                problems.append(f"variants.{variant}: layer {layer!r} does not exist; known layers: {', '.join(known)}")
    for section in ("smoke", "disk", "exits"):
        for variant in config.get(section, {}).get("variants", []):
            if variant not in config["variants"]:
                problems.append(f"{section}.variants: {variant!r} is not a variant; variants: {', '.join(config['variants'])}")
    if problems:
        raise ConfigError("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))
