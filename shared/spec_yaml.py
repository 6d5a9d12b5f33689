"""YAML as spec files are read: YAML 1.2 booleans, so `on:` is a key and `yes` is text.

PyYAML follows YAML 1.1, where `on`, `off`, `yes` and `no` are booleans as well: a notification
rule written `{on: [failure], ...}` would arrive with the key `True` and be refused for lacking
`on`, and a password `no` would become `False`. Spec files, connection configs and secrets files
are read with this loader instead; only `true` and `false` (any case style) are booleans.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import yaml

_BOOL = "tag:yaml.org,2002:bool"


class SpecLoader(yaml.SafeLoader):
    """SafeLoader (no object construction) with YAML 1.2 booleans."""


SpecLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
SpecLoader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)

YAMLError = yaml.YAMLError


def load(text: str) -> Any:
    """One YAML (or JSON) document."""
    return yaml.load(text, Loader=SpecLoader)


def load_all(text: str) -> Iterator[Any]:
    """Every document of a YAML stream."""
    return yaml.load_all(text, Loader=SpecLoader)
