"""Help rendering: every key with its default and the docstring under its field, for
`dnaembed --help` and `dnaembed-serve --help`."""

from __future__ import annotations

import ast
import inspect
import itertools
from dataclasses import fields, is_dataclass
from typing import Any

from omegaconf import MISSING

from pipeline.config import Config

# ---- documentation: the docstring under each field ---------------------------------------


def field_docs(cls: type) -> dict[str, str]:
    """{field: docstring} of a config dataclass (and the dataclasses it extends), read from
    their source."""
    docs: dict[str, str] = {}
    for base in reversed(cls.__mro__):
        if base is not object and is_dataclass(base):
            docs.update(_own_field_docs(base))
    return docs


def _own_field_docs(cls: type) -> dict[str, str]:
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body
    docs = {}
    for node, after in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def describe(cls: type = Config, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, doc) for every leaf key under `cls`."""
    out = []
    docs = field_docs(cls)
    default = cls()
    for f in fields(cls):
        value = getattr(default, f.name)
        key = f"{prefix}{f.name}"
        if is_dataclass(value):
            out += describe(type(value), key + ".")
        else:
            out.append((key, _show(value), docs.get(f.name, "")))
    return out


def _show(value: Any) -> str:
    if value == MISSING:
        return "??? (required)"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return "{}" if not value else str(value)
    if isinstance(value, list):
        return "[" + ",".join(_show(v) for v in value) + "]"
    return str(value)


def keys_help(width: int = 100, cls: type = Config) -> str:
    """Every key with its default and documentation, for `dnaembed --help`."""
    import textwrap

    lines = []
    group = None
    for key, default, doc in describe(cls):
        if key.split(".")[0] != group:
            group = key.split(".")[0]
            lines.append("")
        lines.append(f"  {key}={default}")
        lines += textwrap.wrap(doc, width, initial_indent="      ", subsequent_indent="      ")
    return "\n".join(lines).strip("\n")
