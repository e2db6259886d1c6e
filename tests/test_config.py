from __future__ import annotations

import re
from dataclasses import asdict, is_dataclass

import pytest
from omegaconf import OmegaConf

from pipeline.cli import main, prepare_args
from pipeline.compose import (
    compose,
    conf_dir,
    group_options,
    rewrite_overrides,
    schema_keys,
    to_config,
)
from pipeline.config import (
    GROUPS,
    Config,
    InputFormat,
    LastWindow,
    ProxyLocation,
    Score,
    SequenceRules,
    ServiceConfig,
    Strands,
    actor_range,
    validate,
)
from pipeline.errors import ConfigError, InputError
from pipeline.identity import fingerprint_fields, model_fingerprint
from pipeline.keys_help import describe, keys_help
from pipeline.kinds import kind_of
from pipeline.util import stable_hash

BASE = ["input=x.fa", "output=out", "model=tiny"]
SHIPPED = {"model": {"tiny", "genos_1_2b", "genos_10b"}, "ray": {"local", "cluster"}}


def test_the_groups_mirror_the_config():
    assert GROUPS == (
        "input",
        "window",
        "model",
        "embed",
        "output",
        "regions",
        "variants",
        "mutagenesis",
        "scores",
        "tracks",
        "storage",
        "ray",
        "log",
    )
    for group, options in SHIPPED.items():
        assert set(group_options(group)) == options


@pytest.mark.parametrize("group,option", [(g, o) for g, opts in SHIPPED.items() for o in opts])
def test_every_shipped_option_composes_and_instantiates(group, option):
    overrides = ["input.path=x.fa", "output.path=out", "model=tiny", f"{group}={option}"]
    cfg = to_config(compose(overrides))
    assert isinstance(cfg, Config)
    # The option's own values arrived, typed.
    raw = OmegaConf.to_container(OmegaConf.load(conf_dir() / group / f"{option}.yaml"))
    node = getattr(cfg, group)
    for key, value in raw.items():
        got = getattr(node, key)
        assert (asdict(got) if is_dataclass(got) else got) == value, (group, option, key)
    validate(cfg)


# A preset of the user's own for every group, as `-cd DIR` adds them beside ours.
PRESETS = {
    "input": ("mine", "format: fastq\non_error: skip\n", ("format", InputFormat.fastq)),
    "window": ("promoter", "size: 1024\nstride: 512\nlast: shift\n", ("last", LastWindow.shift)),
    "model": ("mine", "name: mine\ndtype: float32\nmax_model_len: 4096\n", ("name", "mine")),
    "embed": ("big", "num_actors: [1, 8]\nmax_batch_tokens: 4096\n", ("num_actors", [1, 8])),
    "output": ("fast", "compression: lz4\nrows_per_shard: 50\n", ("rows_per_shard", 50)),
    "regions": ("tss", "stranded: true\n", ("stranded", True)),
    "variants": ("keep", "keep_embeddings: true\n", ("keep_embeddings", True)),
    "mutagenesis": ("short", "max_bases: 100\n", ("max_bases", 100)),
    "scores": ("ll", "compute: [loglik]\n", ("compute", [Score.loglik])),
    "tracks": ("fast", "context: 512\nvalues: [logp]\n", ("context", 512)),
    "storage": ("minio", "s3:\n  endpoint_url: http://minio:9000\n", ("s3", None)),
    "ray": ("mine", "address: auto\ncpus_per_task: 2\n", ("cpus_per_task", 2.0)),
    "log": ("loud", "verbose: true\nprogress: lines\n", ("verbose", True)),
}


@pytest.mark.parametrize("group", GROUPS)
def test_every_group_takes_a_user_preset(group, tmp_path):
    name, text, (key, want) = PRESETS[group]
    (tmp_path / group).mkdir()
    (tmp_path / group / f"{name}.yaml").write_text(text)
    overrides = [*BASE, f"{group}={name}"]
    if group in ("input", "output"):  # `input=X` would be a path, unless X is an option
        assert rewrite_overrides([f"{group}={name}"], (str(tmp_path),)) == [f"{group}={name}"]
        overrides.append(f"{group}.path=p")
    cfg = validate(to_config(compose(overrides, config_dirs=(str(tmp_path),))))
    got = getattr(getattr(cfg, group), key)
    if group == "storage":
        assert got.endpoint_url == "http://minio:9000"
    else:
        assert got == want and type(got) is type(want)


def test_path_shorthand():
    assert rewrite_overrides(["input=a.fa", "output=s3://b/run", "x=1", "input.path=y"]) == [
        "input.path=a.fa",
        "output.path=s3://b/run",
        "x=1",
        "input.path=y",
    ]
    cfg = to_config(compose(["input=data/*.fa.gz", "output=s3://bucket/run/", "model=genos_10b"]))
    assert cfg.input.path == "data/*.fa.gz"
    assert cfg.output.path == "s3://bucket/run/"
    assert cfg.model.dtype == "bfloat16" and cfg.model.max_model_len == 131072


def test_command_line_conveniences():
    args = ["-cd", "input=odd", "-v", "--cfg", "job", "input=a.fa", "output=o", "-m", "x=1,2"]
    assert prepare_args(args) == [
        "-cd",
        "input=odd",  # a flag's value, left alone
        "log.verbose=true",
        "--cfg",
        "job",
        "input.path=a.fa",
        "output.path=o",
        "-m",
        "x=1,2",
    ]


def test_list_of_inputs_and_overrides_reach_every_group():
    cfg = to_config(
        compose(
            [
                "input=[a.fa,b.fq.gz]",
                "output=o",
                "model=genos_10b",
                "window.size=4096",
                "window.stride=2048",
                "input.format=fastq",
                "embed.tensor_parallel_size=2",
                "embed.num_actors=[1,4]",
                "output.rows_per_shard=5",
                "ray=cluster",
                "log.progress=lines",
                "+embed.engine_kwargs.enforce_eager=true",
            ]
        )
    )
    assert cfg.input.path == ["a.fa", "b.fq.gz"]
    assert cfg.input.format is InputFormat.fastq and cfg.input.format == "fastq"
    assert (cfg.window.size, cfg.window.step) == (4096, 2048)
    assert cfg.embed.tensor_parallel_size == 2
    assert actor_range(cfg.embed.num_actors) == (1, 4)
    assert cfg.embed.engine_kwargs == {"enforce_eager": True}
    assert cfg.ray.address == "auto"
    validate(cfg)


def test_stride_defaults_to_size():
    cfg = to_config(compose([*BASE, "window.size=100"]))
    assert cfg.window.step == 100


def test_fingerprints_are_unchanged_by_typed_config():
    """Outputs made before the enums came must still resume: the same settings give the same
    fingerprint and chunk-id key as before (values computed by the untyped config)."""
    cfg = to_config(compose(BASE))
    assert stable_hash(fingerprint_fields(cfg)) == "c1a7a27f02f2e79a6a1fc2a9fcfd6c89"
    assert stable_hash(model_fingerprint(cfg)) == "f1db733a5e1b3a7eb48a06c1f0e62e48"
    other = [*BASE, "window.stride=100", "window.size=200", "input.on_error=skip"]
    cfg = to_config(compose([*other, "model=genos_10b"]))
    assert stable_hash(fingerprint_fields(cfg)) == "e3b3ffff01c315d1bff1d0a00534e602"
    assert stable_hash(model_fingerprint(cfg)) == "949e1d59dda8168664028f67a2cc3c64"


def test_layers_poolings_and_merged_strands_are_fingerprinted():
    base = to_config(compose(BASE))
    layered = to_config(compose([*BASE, "embed.layers=[1,-1]", "embed.poolings=[mean,max]"]))
    merged = to_config(compose([*BASE, "window.reverse_complement=merge"]))
    both = to_config(compose([*BASE, "window.reverse_complement=true"]))
    keys = {
        name: (
            stable_hash(fingerprint_fields(c, layers)),
            stable_hash(model_fingerprint(c, layers)),
        )
        for name, c, layers in (
            ("base", base, None),
            ("layered", layered, [1, 2]),
            ("merged", merged, None),
            ("both", both, None),
        )
    }
    # Every run fingerprint differs; the chunk-id key differs wherever a '+' row's numbers do.
    assert len({run for run, _ in keys.values()}) == 4
    assert len({keys[k][1] for k in ("base", "layered", "merged")}) == 3
    assert keys["both"][1] == keys["base"][1]
    assert fingerprint_fields(layered, [1, 2])["embed"] == {
        "layers": [1, 2],
        "poolings": ["mean", "max"],
    }
    # -1 and L are the same run once resolved against the model.
    explicit = to_config(compose([*BASE, "embed.layers=[1,2]", "embed.poolings=[mean,max]"]))
    assert fingerprint_fields(explicit, [1, 2]) == fingerprint_fields(layered, [1, 2])
    assert merged.window.merge_strands and both.window.reverse_complement is True


def test_rna_is_fingerprinted_only_when_set():
    base = fingerprint_fields(to_config(compose(BASE)))
    assert "rna" not in base["input"]  # the pinned hashes above stay valid
    rna = fingerprint_fields(to_config(compose([*BASE, "input.rna=to_t"])))
    assert rna["input"]["rna"] == "to_t" and stable_hash(rna) != stable_hash(base)


def test_fp8_is_fingerprinted_only_when_set_and_reaches_the_engine():
    from pipeline.embed.engine import EngineSpec, engine_kwargs

    base = to_config(compose(BASE))
    fp8 = to_config(compose([*BASE, "model.quantization=fp8"]))
    assert "quantization" not in fingerprint_fields(base)["model"]
    assert fingerprint_fields(fp8)["model"]["quantization"] == "fp8"
    assert stable_hash(model_fingerprint(fp8)) != stable_hash(model_fingerprint(base))
    assert engine_kwargs(EngineSpec.from_config(fp8, "m", "m", {}))["quantization"] == "fp8"
    assert "quantization" not in engine_kwargs(EngineSpec.from_config(base, "m", "m", {}))
    with pytest.raises(ConfigError, match="model.quantization must be one of|fp4"):
        to_config(compose([*BASE, "model.quantization=fp4"]))


REGIONS = ["input.reference=ref.fa", "input.regions=peaks.bed", "output=o", "model=tiny"]
VARIANTS = ["input.reference=ref.fa", "input.variants=calls.vcf.gz", "output=o", "model=tiny"]


def test_regions_and_variants_inputs():
    assert kind_of(validate(to_config(compose(BASE)))).name == "tiles"
    regions = validate(to_config(compose([*REGIONS, "window.flank=500", "regions.stranded=true"])))
    assert kind_of(regions).name == "regions" and regions.window.flank == 500
    variants = validate(to_config(compose([*VARIANTS, "variants.keep_embeddings=true"])))
    assert kind_of(variants).name == "variants"
    with pytest.raises(ConfigError, match="input.regions needs input.reference=FASTA"):
        validate(to_config(compose(["input.regions=x.bed", "output=o", "model=tiny"])))
    with pytest.raises(ConfigError, match="got input.regions, input.variants"):
        validate(to_config(compose([*REGIONS, "input.variants=v.vcf"])))


def test_region_and_variant_settings_are_fingerprinted_only_for_their_runs():
    tiles = fingerprint_fields(to_config(compose(BASE)))
    assert "flank" not in tiles["window"] and "regions" not in tiles and "variants" not in tiles
    assert not {"reference", "regions", "variants"} & set(tiles["input"])
    r = to_config(compose([*REGIONS, "window.flank=500"]))
    fr = fingerprint_fields(r)
    assert fr["window"]["flank"] == 500 and fr["regions"] == {"stranded": False}
    assert fr["input"]["reference"] == "ref.fa" and "variants" not in fr
    stranded = fingerprint_fields(
        to_config(compose([*REGIONS, "window.flank=500", "regions.stranded=true"]))
    )
    assert stable_hash(stranded) != stable_hash(fr)
    # The flank changes what the model sees at the same coordinates: it is in every row id.
    no_flank = to_config(compose(REGIONS))
    assert stable_hash(model_fingerprint(r)) != stable_hash(model_fingerprint(no_flank))
    with pytest.raises(ConfigError, match="embed.per_token applies to input.regions and"):
        validate(to_config(compose([*BASE, "embed.per_token=true"])))
    with pytest.raises(ConfigError, match=r"8192 tokens per window \(window.size\), more than "):
        validate(
            to_config(
                compose([*VARIANTS, "embed.per_token=true", "embed.per_token_max_tokens=8000"])
            )
        )
    fv = fingerprint_fields(to_config(compose(VARIANTS)))
    assert fv["variants"] == {"keep_embeddings": False} and "regions" not in fv


@pytest.mark.parametrize(
    "override,message",
    [
        ("window.stride=20000", "window.stride must be between 1 and window.size"),
        ("window.min_length=9000", "window.min_length must be between 1 and window.size"),
        ("window.size=0", "window.size must be >= 1, got 0"),
        ("window.last=pad", r"window.last=pad: Invalid value 'pad', expected one of \[keep"),
        ("window.max_n_fraction=2", r"window.max_n_fraction must be in \[0.0, 1.0\]"),
        ("model.pooling=MEAN", r"model.pooling is now embed.poolings \(mean, max, last\)"),
        ("embed.poolings=[mean,cls]", "Invalid value 'cls', expected one of"),
        ("embed.poolings=[max,max]", r"embed.poolings must list each .*got \['max', 'max'\]"),
        ("embed.layers=[]", r"embed.layers=\[\] computes no embeddings: ask for scores too"),
        ("embed.layers=[6,6]", "embed.layers must list each value once"),
        ("embed.layers=[six]", "Value 'six' of type 'str' could not be converted to Integer"),
        ("window.reverse_complement=both", "reverse_complement must be false, true or merge"),
        ("input.rna=keep", "Invalid value 'keep', expected one of"),
        ("embed.num_actors=[3,1]", "1 <= min <= max"),
        ("embed.num_actors=many", "embed.num_actors must be an int or"),
        ("embed.gpu_memory_utilization=1.5", r"gpu_memory_utilization must be in \(0, 1\]"),
        ("input.invalid_chars=drop", "Invalid value 'drop', expected one of"),
        ("output.mode=append", "Invalid value 'append', expected one of"),
        ("output.compression=zip", "Invalid value 'zip', expected one of"),
        ("log.interval_s=0", "log.interval_s must be in"),
        ("window.flank=-1", "window.flank must be >= 0"),
        ("output.lease_s=0", "output.lease_s must be in"),
        ("storage.s3.max_attempts=0", "storage.s3.max_attempts must be >= 1"),
        ("ray.object_store_memory=1000000", "ray.object_store_memory must be >= 78643200"),
        ("window.flank=100", "window.flank applies to input.regions only"),
        ("input.reference=ref.fa", "input.reference is read for input.regions or input.variants"),
        ("input.regions=x.bed", "a run reads one input, got input.path, input.regions"),
    ],
)
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        validate(to_config(compose([*BASE, override])))


def test_wrong_types_and_unknown_keys_are_refused():
    with pytest.raises(ConfigError, match=r"window.size=big.*\(key window.size\)"):
        compose([*BASE, "window.size=big"])
    with pytest.raises(ConfigError, match="windw"):
        compose([*BASE, "windw.size=5"])
    with pytest.raises(ConfigError, match="input.path must be a path"):
        to_config(compose(["input=[a.fa,3]", "output=o", "model=tiny"]))


def test_required_values():
    with pytest.raises(ConfigError, match="missing required value model.name: pass model="):
        to_config(compose(["input=x.fa", "output=o"]))
    with pytest.raises(ConfigError, match="missing input: pass input=PATH"):
        validate(to_config(compose(["output=o", "model=tiny"])))
    with pytest.raises(ConfigError, match="output.path: pass output=DIR"):
        to_config(compose(["input=x.fa", "model=tiny"]))


def test_errors_a_caller_can_catch_as_value_errors():
    assert issubclass(ConfigError, ValueError) and issubclass(InputError, ValueError)


def test_every_key_is_documented_once_with_its_default():
    keys = describe()
    assert len({k for k, _, _ in keys}) == len(keys) > 40
    undocumented = [k for k, _, doc in keys if not doc]
    assert undocumented == []
    shown = {k: d for k, d, _ in keys}
    assert shown["window.size"] == "8192" and shown["window.stride"] == "null"
    assert shown["output.path"].startswith("???") and shown["embed.poolings"] == "[mean]"
    assert shown["input.path"] == "null" and shown["window.flank"] == "0"
    assert shown["embed.layers"] == "[-1]"


def test_cli_errors_are_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["input=" + str(tmp_path / "missing.fa"), "output=o", "model=tiny"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dnaembed: error: input not found:") and err.count("\n") == 1
    assert main(["input=x.fa", "output=o", "model=tiny", "+embed.engine_kwargs.dtype=half"]) == 2
    assert "embed.engine_kwargs.dtype is set by dnaembed" in capsys.readouterr().err
    for bad, key in (("window.size=big", "window.size"), ("windw.size=1", "windw")):
        assert main(["input=x.fa", "output=o", "model=tiny", bad]) == 2
        err = capsys.readouterr().err
        assert err.startswith("dnaembed: error: ") and err.count("\n") == 1 and key in err
    assert main(["input=x.fa", "output=o"]) == 2
    assert "missing required value model.name" in capsys.readouterr().err
    assert main(["--no-such-flag"]) == 2


def test_cli_prints_config_and_help(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["--cfg", "job", *BASE]) == 0
    out = capsys.readouterr().out
    assert "path: x.fa" in out and "poolings:\n  - mean" in out
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "model: genos_10b, genos_1_2b, tiny" in text and "ray: cluster, local" in text
    assert "  window.size=8192\n      Bases per window." in text
    assert "--multirun" in text and "--config-dir" in text
    assert not (tmp_path / "outputs").exists()  # nothing ran


# ---- unknown keys: refused with the nearest real ones, before anything runs ---------------


@pytest.fixture
def no_run(monkeypatch):
    """A run (or a service) that starts fails the test."""
    import pipeline.run
    import pipeline.serve.cli

    def started(*args, **kwargs):
        raise AssertionError("a run started")

    monkeypatch.setattr(pipeline.run, "run", started)
    monkeypatch.setattr(pipeline.serve.cli, "serve_forever", started)


@pytest.mark.parametrize(
    "override,message",
    [
        ("+embed.layer=[1]", "unknown key embed.layer (did you mean embed.layers?)"),
        ("++window.sise=10", "unknown key window.sise (did you mean window.size?)"),
        ("embed.layer=[1]", "unknown key embed.layer (did you mean embed.layers?)"),
        ("~embed.layer", "unknown key embed.layer (did you mean embed.layers?)"),
        ("embedd.layers=[1]", "unknown key embedd.layers (did you mean embed.layers?)"),
        ("+embedd=big", "unknown key embedd (did you mean embed?)"),
        ("embedd.foo=1", "unknown key embedd.foo (no group embedd; did you mean embed?)"),
        (
            "++storage.s3={endpoit_url:x}",
            "unknown key storage.s3.endpoit_url (did you mean storage.s3.endpoint_url?)",
        ),
        (
            "serve.port=9000",
            "unknown key serve.port: a key of the service (dnaembed-serve), not of dnaembed",
        ),
    ],
)
def test_unknown_keys_are_refused_before_anything_runs(
    override, message, no_run, capsys, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    for flags in ([], ["--cfg", "job"], ["-m", "window.size=512,1024"]):
        assert main([*flags, *BASE, override]) == 2
        captured = capsys.readouterr()
        assert captured.err == f"dnaembed: error: {message}\n" and captured.out == ""
    # Refused before Hydra: not even its run directory.
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ConfigError) as refused:
        compose([*BASE, override])
    assert str(refused.value) == message


def test_hydras_advice_to_add_a_key_with_plus_never_reaches_users(no_run, capsys):
    for override, message in (
        ("hydra.job.chdri=true", "unknown key hydra.job.chdri (did you mean hydra.job.chdir?)"),
        (
            "embed.engine_kwargs.max_num_seqs=4",
            "embed.engine_kwargs.max_num_seqs is not set: add it with "
            "+embed.engine_kwargs.max_num_seqs=4",
        ),
        ("~embed.env_vars.FOO", "cannot delete embed.env_vars.FOO: it is not set"),
    ):
        assert main(["--cfg", "job", *BASE, override]) == 2
        assert capsys.readouterr().err == f"dnaembed: error: {message}\n"
        with pytest.raises(ConfigError) as refused:
            compose([*BASE, override])
        assert str(refused.value) == message


def test_an_unknown_key_in_a_users_config_file_is_refused(no_run, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "my_conf"
    (mine / "model").mkdir(parents=True)
    (mine / "model" / "mine.yaml").write_text("name: mine\nmax_model_lenn: 4096\n")
    message = "unknown key model.max_model_lenn in model/mine (did you mean model.max_model_len?)"
    for flags in ([], ["--cfg", "job"]):
        assert main([*flags, "-cd", str(mine), "model=mine", "input=x.fa", "output=out"]) == 2
        assert capsys.readouterr().err == f"dnaembed: error: {message}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my_conf"]
    with pytest.raises(ConfigError) as refused:
        compose(["model=mine", "input=x.fa", "output=out"], config_dirs=(str(mine),))
    assert str(refused.value) == message


def test_free_form_groups_take_any_key_and_nothing_else_does(no_run, capsys, tmp_path):
    # The free-form groups: the schema's dict-typed keys, read from the field types.
    free = {"model.engine_kwargs", "embed.engine_kwargs", "embed.env_vars"}
    assert schema_keys(Config).free == schema_keys(ServiceConfig).free == free
    added = ["+embed.engine_kwargs.max_num_seqs=4", "+embed.env_vars.FOO=bar"]
    cfg = to_config(compose([*BASE, *added, "+model.engine_kwargs.block_size=16"]))
    assert cfg.embed.engine_kwargs == {"max_num_seqs": 4}
    assert cfg.embed.env_vars == {"FOO": "bar"}
    assert cfg.model.engine_kwargs == {"enforce_eager": True, "block_size": 16}
    assert serve_config(*added).embed.env_vars == {"FOO": "bar"}
    compose([*BASE, "+hydra.job.env_set.FOO=bar"])  # Hydra's own keys: Hydra's to check
    assert main(["--cfg", "job", *BASE, *added]) == 0
    out = capsys.readouterr().out
    assert "  engine_kwargs:\n    max_num_seqs: 4\n  env_vars:\n    FOO: bar\n" in out
    # A typo in the group's own name is not free-form.
    assert main([*BASE, "+embed.engine_kwarg.max_num_seqs=4"]) == 2
    assert capsys.readouterr().err == (
        "dnaembed: error: unknown key embed.engine_kwarg.max_num_seqs "
        "(did you mean embed.engine_kwargs.max_num_seqs?)\n"
    )


def test_to_config_refuses_a_key_the_schema_lacks():
    # However the key got there: the typed config would leave it out.
    cfg = compose(BASE)
    OmegaConf.update(cfg, "window.sise", 10, force_add=True)
    with pytest.raises(
        ConfigError, match=r"^unknown key window.sise \(did you mean window.size\?\)$"
    ):
        to_config(cfg)


# ---- dnaembed-serve: conf/serve.yaml and ServiceConfig ------------------------------------


def serve_config(*overrides: str) -> ServiceConfig:
    return to_config(compose(["model=tiny", *overrides], config_name="serve"))


def test_serve_composes_with_its_defaults():
    cfg = serve_config()
    assert isinstance(cfg, ServiceConfig)
    assert cfg.model.name == "tiny"
    s = cfg.serve
    assert (s.host, s.port) == ("127.0.0.1", 8000)
    assert s.strands is Strands.forward and s.replicas == 1 and s.api_key is None
    assert s.proxy_location is ProxyLocation.every_node
    assert cfg.ray.address is None  # ray=local
    assert list(cfg.embed.layers) == [-1]
    # The service reads sequences by the batch run's rules, and nothing else of `input`.
    assert type(cfg.input) is SequenceRules
    assert not hasattr(cfg, "output") and not hasattr(cfg, "window")


def test_serve_overrides():
    cfg = serve_config(
        "serve.replicas=[1,3]",
        "serve.strands=merge",
        "serve.proxy_location=head_only",
        "ray=cluster",
        "embed.layers=[6,-1]",
        "serve.port=9001",
        "serve.host=0.0.0.0",
        "input.invalid_chars=to_n",
    )
    assert actor_range(cfg.serve.replicas, "serve.replicas") == (1, 3)
    assert cfg.serve.strands is Strands.merge
    assert cfg.serve.proxy_location is ProxyLocation.head_only
    assert cfg.ray.address == "auto"
    assert list(cfg.embed.layers) == [6, -1]
    assert (cfg.serve.host, cfg.serve.port) == ("0.0.0.0", 9001)
    assert cfg.input.invalid_chars == "to_n"


@pytest.mark.parametrize(
    "override,message",
    [
        ("serve.replicas=[3,1]", r"serve.replicas must satisfy 1 <= min <= max"),
        ("serve.replicas=0", r"serve.replicas must satisfy 1 <= min <= max"),
        ("serve.replicas=many", r"serve.replicas must be an int or \[min, max\]"),
        ("serve.port=0", r"serve.port must be in \[1, 65535\], got 0"),
        ("serve.port=70000", r"serve.port must be in \[1, 65535\], got 70000"),
        ("serve.max_inputs=0", r"serve.max_inputs must be >= 1, got 0"),
        ("serve.strands=both", r"Invalid value 'both'.*\(key serve.strands\)"),
        ("serve.proxy_location=anywhere", r"Invalid value 'anywhere'.*serve.proxy_location"),
        ("serve.nope=1", r"^unknown key serve.nope \(did you mean serve.name\?\)$"),
        ("input.path=x.fa", r"^unknown key input.path: a key of batch runs \(dnaembed\), not of"),
        ("input=x.fa", r"^unknown key input.path: a key of batch runs \(dnaembed\), not of"),
        ("output.path=o", r"^unknown key output.path: a key of batch runs \(dnaembed\), not of"),
        ("window.size=100", r"^unknown key window.size: a key of batch runs"),
    ],
)
def test_serve_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        serve_config(override)


def test_serve_needs_a_model():
    with pytest.raises(ConfigError, match="missing required value model.name: pass model="):
        to_config(compose([], config_name="serve"))


def test_serve_config_shown_masks_the_api_key():
    from pipeline.serve.cli import shown

    secret = "sk-dnaembed-do-not-print-4f9a"
    cfg = serve_config(f"serve.api_key={secret}")
    assert cfg.serve.api_key == secret
    text = shown(cfg)
    assert secret not in text and "sk-dnaembed" not in text
    assert OmegaConf.create(text).serve.api_key == "<set>"
    assert cfg.serve.api_key == secret  # shown() changed a copy, not the config
    # Nothing to mask: null, never "<set>".
    assert OmegaConf.create(shown(serve_config())).serve.api_key is None


def test_serve_api_key_from_the_environment(monkeypatch):
    from pipeline.serve.cli import API_KEY_ENV, api_key

    monkeypatch.delenv(API_KEY_ENV, raising=False)
    assert api_key(serve_config()) is None
    monkeypatch.setenv(API_KEY_ENV, "from-env")
    assert api_key(serve_config()) == "from-env"
    assert api_key(serve_config("serve.api_key=given")) == "given"
    monkeypatch.setenv(API_KEY_ENV, "")
    assert api_key(serve_config()) is None


def test_serve_keys_help_lists_the_service_keys_only():
    text = keys_help(cls=ServiceConfig)
    for key in ("serve.port=8000", "serve.api_key=null", "input.invalid_chars=error"):
        assert f"  {key}\n" in text, key
    for key in ("output.path", "input.path", "window.size", "regions.stranded"):
        assert f"  {key}=" not in text, key
    keys = describe(ServiceConfig)
    assert [k for k, _, doc in keys if not doc] == []


def test_check_port_refuses_a_port_in_use():
    import socket

    from pipeline.serve.cli import check_port

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"serve.port={port}: cannot listen there"):
            check_port("127.0.0.1", port)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    check_port("127.0.0.1", free)  # closed again: free


def test_serve_refuses_an_unknown_key_before_it_starts(no_run, capsys, tmp_path, monkeypatch):
    from pipeline.serve.cli import main as serve_main

    monkeypatch.chdir(tmp_path)
    for override, message in (
        ("+serve.prot=1", "unknown key serve.prot (did you mean serve.port?)"),
        ("output.path=o", "unknown key output.path: a key of batch runs (dnaembed), not of"),
    ):
        assert serve_main(["model=tiny", override]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"dnaembed-serve: error: {message}") and err.count("\n") == 1
        with pytest.raises(ConfigError, match=f"^{re.escape(message)}"):
            serve_config(override)
    assert list(tmp_path.iterdir()) == []


def test_scores_and_the_variant_layout_are_fingerprinted_only_when_asked():
    plain = fingerprint_fields(to_config(compose(VARIANTS)))
    assert "scores" not in plain and plain["variants"] == {"keep_embeddings": False}
    llr = fingerprint_fields(to_config(compose([*VARIANTS, "scores=[llr]"])))
    assert llr["scores"] == {"compute": ["llr"], "per_token": False}
    end = fingerprint_fields(to_config(compose([*VARIANTS, "variants.layout=end"])))
    assert end["variants"] == {"keep_embeddings": False, "layout": "end", "end_bases": 32}
    alone = fingerprint_fields(to_config(compose([*VARIANTS, "scores=[llr]", "embed.layers=[]"])))
    assert len({stable_hash(f) for f in (plain, llr, end, alone)}) == 4
    # `scores=[...]` is shorthand for scores.compute, and each value counts once.
    assert rewrite_overrides(["scores=[llr,loglik]"]) == ["scores.compute=[llr,loglik]"]
    with pytest.raises(ConfigError, match="scores.compute must list each value once"):
        to_config(compose([*VARIANTS, "scores=[llr,llr]"]))
    with pytest.raises(ConfigError, match="variants.end_bases=9000 is longer than window.size"):
        validate(to_config(compose([*VARIANTS, "variants.layout=end", "variants.end_bases=9000"])))


def test_engines_are_own_or_a_deployment_on_a_joined_cluster(make_config):
    with pytest.raises(ConfigError, match=r"embed.engines must be 'own' or 'serve:NAME'.*'gpu'"):
        make_config("model=tiny", "input=x.fa", "output=o", "embed.engines=gpu")
    with pytest.raises(ConfigError, match="embed.engines must be"):
        make_config("model=tiny", "input=x.fa", "output=o", "embed.engines=serve:")
    local = make_config("model=tiny", "input=x.fa", "output=o", "embed.engines=serve:g12")
    with pytest.raises(ConfigError, match=r"embed.engines=serve:g12 .* ray=cluster"):
        validate(local)
    joined = make_config(
        "model=tiny", "input=x.fa", "output=o", "embed.engines=serve:g12", "ray=cluster"
    )
    assert validate(joined).embed.engines == "serve:g12"
