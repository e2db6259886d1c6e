"""Resolve `model.*` config to something vLLM and transformers can load."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.config import ModelConfig
from pipeline.errors import ConfigError


def resolve_model_path(model: ModelConfig) -> str:
    """Local directory or hub id of the weights; generates the tiny model on first use."""
    if model.path:
        return str(model.path)
    if model.name == "tiny":
        from pipeline.models.tiny import tiny_model_path

        return str(tiny_model_path())
    raise ConfigError(f"model.path is required for model {model.name!r}")


def resolve_tokenizer_path(model: ModelConfig) -> str:
    return str(model.tokenizer) if model.tokenizer else resolve_model_path(model)


def model_layout(model: ModelConfig, path: str) -> tuple[list[str], int | None, int | None]:
    """(architectures, number of layers, hidden size) from the model's config.json."""
    local = Path(path) / "config.json"
    if local.is_file() and not model.revision:
        # A local config is plain JSON: reading it spares the driver transformers' imports.
        try:
            c = json.loads(local.read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"model {model.name!r}: cannot read its config {local}: {e}") from e
        return (
            list(c.get("architectures") or []),
            c.get("num_hidden_layers"),
            c.get("hidden_size"),
        )
    from transformers import AutoConfig

    try:
        c = AutoConfig.from_pretrained(
            path, revision=model.revision, trust_remote_code=model.trust_remote_code
        )
    except (OSError, ValueError) as e:
        raise ConfigError(f"model {model.name!r}: cannot read its config at {path}: {e}") from e
    return (
        list(getattr(c, "architectures", None) or []),
        getattr(c, "num_hidden_layers", None),
        getattr(c, "hidden_size", None),
    )
