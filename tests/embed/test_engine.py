from __future__ import annotations

import pytest

from pipeline.embed.engine import OWNED_KEYS, EngineSpec, engine_env, engine_kwargs
from pipeline.errors import ConfigError


def spec(**kw):
    base = dict(
        model="/m",
        tokenizer="/m",
        revision=None,
        dtype="bfloat16",
        max_model_len=8192,
        pooling="MEAN",
        device="cuda",
    )
    return EngineSpec(**{**base, **kw})


def test_kwargs_own_correctness_and_pass_tuning_through():
    kw = engine_kwargs(spec(engine_kwargs={"max_num_batched_tokens": 65536, "enforce_eager": True}))
    assert kw["runner"] == "pooling" and kw["convert"] == "embed"
    assert kw["dtype"] == "bfloat16" and kw["max_model_len"] == 8192
    assert kw["max_num_batched_tokens"] == 65536 and kw["enforce_eager"] is True
    assert kw["gpu_memory_utilization"] == 0.9
    assert "distributed_executor_backend" not in kw
    assert engine_kwargs(spec(device="cpu"))["gpu_memory_utilization"] == 0.2


@pytest.mark.parametrize("key", sorted(OWNED_KEYS))
def test_owned_keys_are_refused_naming_the_config_key(key):
    with pytest.raises(ConfigError, match=f"embed.engine_kwargs.{key} is set by dnaembed"):
        engine_kwargs(spec(engine_kwargs={key: "x"}))


def test_gpus_per_actor_is_tp_times_pp():
    assert spec(tensor_parallel_size=2, pipeline_parallel_size=2).gpus == 4
    assert spec(device="cpu", tensor_parallel_size=2).gpus == 0
    kw = engine_kwargs(spec(tensor_parallel_size=2))
    assert kw["tensor_parallel_size"] == 2 and kw["distributed_executor_backend"] == "mp"


def test_engine_env():
    assert engine_env(spec(device="cpu")) == {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    assert engine_env(spec(), {"VLLM_ATTENTION_BACKEND": "FLASH_ATTN"}) == {
        "VLLM_ATTENTION_BACKEND": "FLASH_ATTN"
    }
