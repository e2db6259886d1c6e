from __future__ import annotations

from typing import Any

from pipeline.embed.engine import EngineSpec


def cpu_spec(model: str, **overrides: Any) -> EngineSpec:
    """An fp32 CPU engine of `model` (the tiny one in these tests), MEAN unless overridden."""
    fields: dict[str, Any] = dict(
        model=model,
        tokenizer=model,
        revision=None,
        dtype="float32",
        max_model_len=16384,
        pooling="MEAN",
        device="cpu",
    )
    return EngineSpec(**{**fields, **overrides})
