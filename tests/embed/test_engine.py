from __future__ import annotations

import json
import re

import pytest

from pipeline.embed.engine import (
    MOE_CONFIGS,
    MOE_ENV,
    OWNED_KEYS,
    SERVICE_ENGINE_ENV,
    engine_env,
    engine_kwargs,
    use_moe_configs,
)
from pipeline.errors import ConfigError
from tests.embed.conftest import engine_spec as spec


def test_kwargs_own_correctness_and_pass_tuning_through():
    kw = engine_kwargs(spec(engine_kwargs={"max_num_batched_tokens": 65536, "enforce_eager": True}))
    assert kw["runner"] == "pooling" and kw["convert"] == "embed"
    assert kw["dtype"] == "bfloat16" and kw["max_model_len"] == 8192
    assert kw["max_num_batched_tokens"] == 65536 and kw["enforce_eager"] is True
    assert kw["gpu_memory_utilization"] == 0.9
    assert "distributed_executor_backend" not in kw
    assert engine_kwargs(spec(device="cpu"))["gpu_memory_utilization"] == 0.2
    # Eager by default (no compile or graph capture at start); the user may compile.
    assert engine_kwargs(spec())["enforce_eager"] is True
    assert engine_kwargs(spec(engine_kwargs={"enforce_eager": False}))["enforce_eager"] is False


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
    """The engine core in the actor's process, on every device and TP; the user may say no."""
    in_process = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    assert engine_env() == in_process  # whatever the device or TP: it takes neither
    assert engine_env({"VLLM_ATTENTION_BACKEND": "FLASH_ATTN"}) == {
        **in_process,
        "VLLM_ATTENTION_BACKEND": "FLASH_ATTN",
    }
    assert engine_env({"VLLM_ENABLE_V1_MULTIPROCESSING": "1"}) == {
        "VLLM_ENABLE_V1_MULTIPROCESSING": "1"
    }
    # The service's engine runs in a process of its own; the user may say otherwise there too.
    assert engine_env({}, SERVICE_ENGINE_ENV) == {"VLLM_ENABLE_V1_MULTIPROCESSING": "1"}
    assert engine_env({"VLLM_ENABLE_V1_MULTIPROCESSING": 0}, SERVICE_ENGINE_ENV) == {
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0"
    }
    # The spec carries the whole environment: one place decides each value.
    assert spec().env == in_process


def test_moe_tiles_are_ours_on_gpu_unless_the_user_chose():
    env: dict[str, str] = {}
    assert use_moe_configs(spec(), env) == str(MOE_CONFIGS) == env[MOE_ENV]
    assert use_moe_configs(spec(device="cpu"), {}) is None
    mine = {MOE_ENV: "/my/tiles"}
    assert use_moe_configs(spec(), mine) == "/my/tiles"


def test_shipped_moe_tiles_load_through_vllms_own_lookup(tmp_path, monkeypatch):
    """Each file is named as vLLM names it, and vLLM's loader reads it back whole (here under
    this machine's device name: the lookup is by name, the content is what is checked)."""
    from vllm.model_executor.layers.fused_moe import fused_moe

    files = sorted(MOE_CONFIGS.glob("*.json"))
    assert files, "no MoE tiles shipped"
    for f in files:
        e, n = (
            int(x) for x in re.fullmatch(r"E=(\d+),N=(\d+),device_name=\w+\.json", f.name).groups()
        )
        device = f.name.split("device_name=")[1].removesuffix(".json")
        assert (
            fused_moe.get_config_file_name(e, n, None).replace(
                fused_moe.get_device_name_as_file_name(), device
            )
            == f.name
        )
        table = json.loads(f.read_text())
        (tmp_path / fused_moe.get_config_file_name(e, n, None)).write_text(f.read_text())
        monkeypatch.setenv(MOE_ENV, str(tmp_path))
        fused_moe.get_moe_configs.cache_clear()
        got = fused_moe.get_moe_configs(e, n, None)
        fused_moe.get_moe_configs.cache_clear()
        assert got == {int(k): v for k, v in table.items()}
        assert 131072 in got and got[131072]["BLOCK_SIZE_M"] >= 64  # prefill-sized steps tuned
