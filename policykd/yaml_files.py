"""Reading a user's YAML file (a recipe, a teacher recipe, a target): a mapping, or one line saying what is wrong."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from policykd.errors import PolicyKDError


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (plain YAML keeps the last one, silently)."""


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base`: its keys may be given again below, to override them
            continue
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, str | int | float | bool) and key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice", key_node.start_mark)
        seen.add(key) if isinstance(key, str | int | float | bool) else None
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)
# YAML 1.1 (PyYAML) reads `lr: 3e-4`, `labelled_steps: 1e5` and `1.5e6` as strings (its floats need a dot and a
# signed exponent); YAML 1.2 and every ML recipe mean numbers. Read them as floats: an integer key takes a
# whole-valued float (config.py, teacher_recipe.py).
_SCIENTIFIC = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")
_StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", _SCIENTIFIC, list("-+0123456789."))


def parse_yaml_value(text: str, *, where: str) -> Any:
    """One YAML value (a --grid value), read as a recipe file reads it; PolicyKDError naming `where` it came from."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except (yaml.YAMLError, ValueError, RecursionError) as e:
        raise PolicyKDError(f"{where}: {text!r} is not a YAML value ({' '.join(str(e).split())[:120]})") from e


def read_yaml_mapping(path: str | Path, *, what: str, examples: str) -> dict[str, Any]:
    """The mapping in the YAML file `path` (empty file: {}); PolicyKDError naming `what` it is and where `examples` are
    when it is missing, not YAML, not a mapping, or gives a key twice."""
    path = Path(path)
    if not path.is_file():
        found = "is a folder, not a YAML file" if path.is_dir() else "is not a file" if path.exists() else "does not exist"
        raise PolicyKDError(f"{what} {path} {found}; see {examples} for examples")
    try:
        values = yaml.load(path.read_text(), Loader=_StrictLoader) or {}  # noqa: S506 - a SafeLoader subclass
    except (yaml.YAMLError, ValueError, RecursionError) as e:  # ValueError: not UTF-8, an int of > 4300 digits
        detail = " ".join(str(e).split())[:200]
        raise PolicyKDError(f"{what} {path} is not valid YAML: {detail}") from e
    if not isinstance(values, dict):
        raise PolicyKDError(f"{what} {path} must be a mapping of option: value; see {examples} for examples")
    return values
