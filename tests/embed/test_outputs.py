"""Which columns a run computes, and the errors before any engine starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.embed.engine import engine_kwargs
from pipeline.embed.outputs import (
    ARCHITECTURE,
    CONFIG_KEY,
    DeviceHead,
    embedding_columns,
    is_native,
    resolve_layers,
)
from pipeline.embed.plan import embedding_head
from pipeline.embed.plugin import GROUP, TARGET, make_discoverable
from pipeline.errors import ConfigError
from pipeline.rows import column_name, parse_column
from tests.conftest import compose_config
from tests.embed.conftest import cpu_spec


def test_layers_resolve_against_the_model():
    assert resolve_layers([6, 9, -1], 12) == (6, 9, 12)
    assert resolve_layers([-13], 12) == (0,)
    with pytest.raises(ConfigError, match=r"embed.layers: 13 is out of range .* 12 layers"):
        resolve_layers([13], 12)
    with pytest.raises(ConfigError, match="out of range"):
        resolve_layers([-14], 12)
    with pytest.raises(ConfigError, match=r"layer 12 is listed twice \(\[12, -1\]\)"):
        resolve_layers([12, -1], 12)


def test_column_names():
    assert column_name(12, "mean", 12) == "embedding"  # today's column
    assert column_name(12, "max", 12) == "emb_l12_max"
    assert column_name(6, "mean", 12) == "emb_l6_mean"
    assert parse_column("emb_l6_last") == (6, "last")
    assert parse_column("embedding") == (None, "mean")
    with pytest.raises(ValueError, match="not a dnaembed embedding column"):
        parse_column("emb_lx_mean")
    cols = embedding_columns([9, 6], ["max", "mean"], 12)
    assert [c.column for c in cols] == ["emb_l9_max", "emb_l9_mean", "emb_l6_max", "emb_l6_mean"]


def test_native_path_and_device_head():
    assert is_native([12], ["mean"], 12) and is_native([12], ["last"], 12)
    assert not is_native([12], ["max"], 12) and not is_native([6], ["mean"], 12)
    assert not is_native([12], ["mean", "last"], 12)
    head = DeviceHead.of([9, 6], ["mean", "max"], 12)
    assert head.layers == (6, 9) and head.depth == 9
    assert head.index(6, "mean") == 0 and head.index(9, "max") == 3
    assert DeviceHead.from_dict(json.loads(json.dumps(head.to_dict()))) == head
    assert DeviceHead.of([0], ["mean"], 12).depth == 1  # an engine needs one block


def test_engine_runs_our_model_only_for_a_head(tiny_model):
    assert "hf_overrides" not in engine_kwargs(cpu_spec(tiny_model))
    head = DeviceHead.of([1], ["max"], 2)
    kw = engine_kwargs(
        cpu_spec(tiny_model, head=head.to_dict(), engine_kwargs={"hf_overrides": {"rope_theta": 1}})
    )
    assert kw["hf_overrides"] == {
        "rope_theta": 1,
        "architectures": [ARCHITECTURE],
        "num_hidden_layers": 1,  # deeper blocks are not built
        CONFIG_KEY: {"layers": [1], "poolings": ["max"], "num_layers": 2},
    }
    assert "compilation_config" not in kw
    # Sharded: the all-reduce + norm fusion stays off (it overwrote what our model reads).
    tp = engine_kwargs(cpu_spec(tiny_model, tensor_parallel_size=2, head=head.to_dict()))
    assert tp["compilation_config"] == {"pass_config": {"fuse_allreduce_rms": False}}
    assert "compilation_config" not in engine_kwargs(cpu_spec(tiny_model, tensor_parallel_size=2))


def plan_head(tiny_model, *overrides):
    cfg = compose_config("model=tiny", "input=x.fa", "output=o", *overrides)
    return embedding_head(cfg, tiny_model, {**cfg.model.engine_kwargs, **cfg.embed.engine_kwargs})


def test_plan_checks_layers_and_architecture_before_any_engine(tiny_model, tmp_path):
    columns, head = plan_head(tiny_model)
    assert [c.column for c in columns] == ["embedding"] and head is None
    columns, head = plan_head(tiny_model, "embed.layers=[0,-1]", "embed.poolings=[last]")
    assert [c.column for c in columns] == ["emb_l0_last", "emb_l2_last"]
    assert head == DeviceHead((0, 2), ("last",), 2)
    with pytest.raises(ConfigError, match=r"embed.layers: 3 is out of range for a model with 2"):
        plan_head(tiny_model, "embed.layers=[3]")
    with pytest.raises(ConfigError, match="pipeline_parallel_size=1 only"):
        plan_head(tiny_model, "embed.layers=[1]", "embed.pipeline_parallel_size=2")
    with pytest.raises(ConfigError, match=r"hf_overrides sets \['num_hidden_layers'\]"):
        plan_head(
            tiny_model, "embed.layers=[1]", "+embed.engine_kwargs.hf_overrides.num_hidden_layers=1"
        )

    llama = tmp_path / "llama"
    llama.mkdir()
    config = json.loads((Path(tiny_model) / "config.json").read_text())
    config.update(architectures=["LlamaForCausalLM"], model_type="llama")
    (llama / "config.json").write_text(json.dumps(config))
    _, head = plan_head(str(llama), "embed.poolings=[last]")  # vLLM's own pooler: any model
    assert head is None
    with pytest.raises(ConfigError, match=r"supports MixtralForCausalLM .* is LlamaForCausalLM"):
        plan_head(str(llama), "embed.poolings=[max]")


def test_the_entry_point_is_found_without_an_installed_package(tmp_path, monkeypatch):
    """A Ray job's working_dir has no package metadata: make_discoverable writes one that
    processes started from here find (what vLLM's engine processes do)."""
    monkeypatch.setenv("DNAEMBED_CACHE", str(tmp_path))
    monkeypatch.setattr("pipeline.embed.plugin.declared", lambda: False)
    env = {"PYTHONPATH": "/elsewhere"}
    make_discoverable(env)
    assert env["PYTHONPATH"].endswith(os.pathsep + "/elsewhere")
    probe = (
        "from importlib.metadata import entry_points; "
        f"print([e.value for e in entry_points(group={GROUP!r})])"
    )
    # -I: isolated from this environment's own metadata; only PYTHONPATH's (-I ignores it,
    # so it goes in by sys.path).
    paths = env["PYTHONPATH"].split(os.pathsep)
    code = f"import sys; sys.path[:0] = {paths!r}; {probe}"
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert TARGET in out
