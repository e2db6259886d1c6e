from __future__ import annotations

from typing import Any

from pipeline.embed.engine import EngineSpec


def engine_spec(**overrides: Any) -> EngineSpec:
    """An engine spec for these tests: a bf16 GPU engine of /m unless overridden."""
    fields: dict[str, Any] = dict(
        model="/m",
        tokenizer="/m",
        revision=None,
        dtype="bfloat16",
        max_model_len=8192,
        pooling="MEAN",
        device="cuda",
    )
    return EngineSpec(**{**fields, **overrides})


def cpu_spec(model: str, **overrides: Any) -> EngineSpec:
    """An fp32 CPU engine of `model` (the tiny one in these tests)."""
    cpu = dict(model=model, tokenizer=model, dtype="float32", max_model_len=16384, device="cpu")
    return engine_spec(**{**cpu, **overrides})
