"""Command line: Hydra overrides in, one run out.

dnaembed input=genome.fa.gz output=out/ model=genos_10b embed.tensor_parallel_size=2
python -m pipeline --cfg input=x.fa output=o model=tiny    # print the config, run nothing
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from pipeline.config import Config
from pipeline.errors import ConfigError, find_user_error

USAGE = """usage: dnaembed [--cfg] [--help] KEY=VALUE ...

Embed DNA (FASTA/FASTQ, plain or gzip, local or s3://) with a genomic language model.

  input=PATH        file, glob, directory or URI (shorthand for input.path=PATH)
  output=DIR        local directory or URI (shorthand for output.path=DIR)
  model=NAME        {models}
  window.size=N window.stride=N embed.num_actors=N embed.tensor_parallel_size=N ...

  --cfg             print the resolved config and exit
Config groups: {groups}. See README.md.
"""

# Groups whose name is also a top-level value: `input=x.fa` means `input.path=x.fa`.
_PATH_SHORTHAND = ("input", "output")


def conf_dir() -> Path:
    """`conf/` of this checkout (or $DNAEMBED_CONF_DIR)."""
    env = os.environ.get("DNAEMBED_CONF_DIR")
    path = Path(env) if env else Path(__file__).resolve().parent.parent / "conf"
    if not (path / "config.yaml").exists():
        raise ConfigError(f"config directory not found at {path}; set DNAEMBED_CONF_DIR")
    return path


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))


def rewrite_overrides(overrides: list[str]) -> list[str]:
    out = []
    for o in overrides:
        key, sep, value = o.partition("=")
        if sep and key in _PATH_SHORTHAND and value not in group_options(key):
            o = f"{key}.path={value}"
        out.append(o)
    return out


def _register_schema() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="dnaembed_schema", node=Config)


def compose(overrides: list[str]) -> DictConfig:
    """The Hydra config for these overrides (conf/ + typed schema)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException

    _register_schema()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            return hydra_compose("config", overrides=rewrite_overrides(overrides))
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(str(e).strip()) from e


def to_config(cfg: DictConfig) -> Config:
    try:
        return OmegaConf.to_object(cfg)
    except MissingMandatoryValue as e:
        key = e.full_key
        hint = {"input.path": "pass input=PATH", "output.path": "pass output=DIR"}.get(key, "")
        raise ConfigError(f"missing required value {key}" + (f": {hint}" if hint else "")) from e
    except OmegaConfBaseException as e:
        raise ConfigError(str(e).strip()) from e


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        groups = "input, window, model, embed, output, storage, ray"
        print(USAGE.format(models=" | ".join(group_options("model")), groups=groups))
        return 0
    show_only = "--cfg" in args
    args = [a for a in args if a != "--cfg"]
    try:
        dict_cfg = compose(args)
        if show_only:
            print(OmegaConf.to_yaml(dict_cfg))
            return 0
        from pipeline.run import run

        run(to_config(dict_cfg))
        return 0
    except Exception as e:
        user = find_user_error(e)
        if user is None:
            raise
        print(f"dnaembed: error: {user}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
