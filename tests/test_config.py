from __future__ import annotations

from dataclasses import asdict, is_dataclass

import pytest
from omegaconf import OmegaConf

from pipeline.cli import compose, conf_dir, group_options, main, rewrite_overrides, to_config
from pipeline.config import Config, actor_range, validate
from pipeline.errors import ConfigError

BASE = ["input=x.fa", "output=out", "model=tiny"]
GROUPS = ["input", "window", "model", "embed", "output", "storage", "ray"]


def test_every_group_has_options():
    for group in GROUPS:
        assert group_options(group), group
    assert set(group_options("model")) == {"tiny", "genos_1_2b", "genos_10b"}


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in group_options(g)])
def test_every_group_option_composes_and_instantiates(group, option):
    overrides = ["input.path=x.fa", "output.path=out", "model=tiny", f"{group}={option}"]
    cfg = to_config(compose(overrides))
    assert isinstance(cfg, Config)
    # The option's own values arrived, typed.
    raw = OmegaConf.to_container(OmegaConf.load(conf_dir() / group / f"{option}.yaml"))
    node = getattr(cfg, group)
    for key, value in raw.items():
        if value != "???":
            got = getattr(node, key)
            assert (asdict(got) if is_dataclass(got) else got) == value, (group, option, key)
    validate(cfg)


def test_path_shorthand():
    assert rewrite_overrides(["input=a.fa", "output=s3://b/run", "input=default", "x=1"]) == [
        "input.path=a.fa",
        "output.path=s3://b/run",
        "input=default",
        "x=1",
    ]
    cfg = to_config(compose(["input=data/*.fa.gz", "output=s3://bucket/run/", "model=genos_10b"]))
    assert cfg.input.path == "data/*.fa.gz"
    assert cfg.output.path == "s3://bucket/run/"
    assert cfg.model.dtype == "bfloat16" and cfg.model.max_model_len == 131072


def test_list_of_inputs_and_overrides_reach_every_group():
    cfg = to_config(
        compose(
            [
                "input=[a.fa,b.fq.gz]",
                "output=o",
                "model=genos_10b",
                "window.size=4096",
                "window.stride=2048",
                "embed.tensor_parallel_size=2",
                "embed.num_actors=[1,4]",
                "output.rows_per_shard=5",
                "ray=cluster",
                "+embed.engine_kwargs.enforce_eager=true",
            ]
        )
    )
    assert cfg.input.path == ["a.fa", "b.fq.gz"]
    assert (cfg.window.size, cfg.window.step) == (4096, 2048)
    assert cfg.embed.tensor_parallel_size == 2
    assert actor_range(cfg.embed.num_actors) == (1, 4)
    assert cfg.embed.engine_kwargs == {"enforce_eager": True}
    assert cfg.ray.address == "auto"
    validate(cfg)


def test_stride_defaults_to_size():
    cfg = to_config(compose([*BASE, "window.size=100"]))
    assert cfg.window.step == 100


@pytest.mark.parametrize(
    "override,message",
    [
        ("window.stride=20000", "window.stride must be between 1 and window.size"),
        ("window.last=pad", "window.last='pad' is not one of keep, shift, drop"),
        ("window.max_n_fraction=2", r"window.max_n_fraction must be in \[0, 1\]"),
        ("model.pooling=MAX", "model.pooling='MAX' is not one of"),
        ("embed.num_actors=[3,1]", "1 <= min <= max"),
        ("embed.gpu_memory_utilization=1.5", "gpu_memory_utilization must be in"),
        ("input.invalid_chars=drop", "input.invalid_chars='drop' is not one of error, to_n"),
        ("output.mode=append", "output.mode='append' is not one of"),
    ],
)
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        validate(to_config(compose([*BASE, override])))


def test_wrong_types_and_unknown_keys_are_refused():
    with pytest.raises(ConfigError, match="window.size"):
        compose([*BASE, "window.size=big"])
    with pytest.raises(ConfigError, match="windw"):
        compose([*BASE, "windw.size=5"])


def test_required_values():
    with pytest.raises(ConfigError, match="You must specify 'model'"):
        compose(["input=x.fa", "output=o"])
    with pytest.raises(ConfigError, match="missing required value input.path: pass input=PATH"):
        to_config(compose(["output=o", "model=tiny"]))
    with pytest.raises(ConfigError, match="output.path: pass output=DIR"):
        to_config(compose(["input=x.fa", "model=tiny"]))


def test_cli_errors_are_one_line(capsys, tmp_path):
    assert (
        main(["input=" + str(tmp_path / "missing.fa"), f"output={tmp_path}/o", "model=tiny"]) == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("dnaembed: error: input not found:") and "Traceback" not in err
    assert main(["input=x.fa", "output=o", "model=tiny", "+embed.engine_kwargs.dtype=half"]) == 2
    assert "embed.engine_kwargs.dtype is set by dnaembed" in capsys.readouterr().err


def test_cli_prints_config_and_help(capsys):
    assert main(["--cfg", *BASE]) == 0
    out = capsys.readouterr().out
    assert "path: x.fa" in out and "pooling: MEAN" in out
    assert main(["--help"]) == 0
    assert "genos_10b" in capsys.readouterr().out
