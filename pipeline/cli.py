"""`dnaembed`: a Hydra application. Overrides in, one run per job out.

    dnaembed model=genos_10b input=genome.fa.gz output=out/ embed.tensor_parallel_size=2
    dnaembed -m model=tiny input=x.fa 'output=out/w${window.size}' window.size=1024,2048
    dnaembed --cfg job model=tiny input=x.fa output=o      # print the config, run nothing
    dnaembed -cd ~/my_conf model=mine input=x.fa output=o  # your configs beside ours

Hydra's flags all work (--help, --hydra-help, --cfg, --resolve, --info, -m, -cd,
--shell-completion). We add two conveniences before Hydra parses the command line: `input=X`
and `output=X` mean `input.path=X` and `output.path=X`, and `-v` means `log.verbose=true`. An
error in the config or the input is one line and exit code 2.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig

from pipeline.compose import (
    SCHEMAS,
    check_overrides,
    composition_error,
    conf_dir,
    register,
    rewrite_overrides,
    to_config,
)
from pipeline.config import Config
from pipeline.errors import ConfigError, find_user_error

# Hydra flags that take the next argument as their value (not an override).
_FLAGS_WITH_VALUE = {
    "-cd",
    "--config-dir",
    "-cp",
    "--config-path",
    "-cn",
    "--config-name",
    "-c",
    "--cfg",
    "-p",
    "--package",
    "--experimental-rerun",
}
_VERBOSE = ("-v", "--verbose")
# Its arguments (`install=bash`) are not overrides.
_SHELL_COMPLETION = {"-sc", "--shell-completion"}


def prepare_args(args: list[str]) -> list[str]:
    """Our shorthands made into what Hydra's parser takes."""
    return _parse(args)[0]


def overrides_and_dirs(args: list[str]) -> tuple[list[str], tuple[str, ...]]:
    """The overrides (shorthands made plain) and the -cd directories of a command line."""
    _, overrides, dirs = _parse(args)
    return overrides, dirs


def _parse(args: list[str]) -> tuple[list[str], list[str], tuple[str, ...]]:
    config_dirs: list[str] = []
    out: list[str] = []
    overrides: list[int] = []
    it = iter(args)
    for a in it:
        if a in _VERBOSE:
            a = "log.verbose=true"
        if a in _FLAGS_WITH_VALUE:
            value = next(it, None)
            out.append(a)
            if value is not None:
                out.append(value)
                if a in ("-cd", "--config-dir"):
                    config_dirs.append(value)
            continue
        if a.startswith("--config-dir="):
            config_dirs.append(a.split("=", 1)[1])
        elif not a.startswith("-"):
            overrides.append(len(out))
        out.append(a)
    dirs = tuple(config_dirs)
    rewritten = rewrite_overrides([out[i] for i in overrides], dirs)
    for i, value in zip(overrides, rewritten, strict=True):
        out[i] = value
    return out, rewritten, dirs


def _task(cfg: DictConfig) -> None:
    """One job: the typed config, the log file in Hydra's run directory, the run."""
    from hydra.core.hydra_config import HydraConfig

    try:
        config = to_config(cfg)
        if config.log.file is None:
            config.log.file = str(Path(HydraConfig.get().runtime.output_dir) / "dnaembed.log")
        from pipeline.run import run

        run(config)
    except Exception as e:
        # Here, not in main(): Hydra would add its own line about the failed job.
        message = user_error(e)
        if message is None:
            raise
        raise SystemExit(report(message)) from None


def report(message: str, prog: str = "dnaembed") -> int:
    """Print a user's error; the exit code for it."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2


def user_error(e: BaseException, schema: type = Config) -> str | None:
    """The one line to print for an error the user can fix, or None for a bug of ours;
    `schema`: the config's, for the keys an unknown one is compared with."""
    ours = find_user_error(e)
    if ours is not None:
        # Our messages are one line; Ray Data appends its retry advice below them.
        return str(ours).strip().splitlines()[0]
    return composition_error(e, schema)


def main(argv: list[str] | None = None) -> int:
    return hydra_main(_task, "config", "dnaembed", argv)


def hydra_main(
    task: Callable[[DictConfig], None], config_name: str, prog: str, argv: list[str] | None
) -> int:
    """Run `task` as a Hydra app on conf/<config_name>.yaml; user errors: one line, exit 2."""
    import hydra

    given = list(sys.argv[1:] if argv is None else argv)
    # None for a config of the user's own (-cn), whose schema only its composition tells.
    schema = SCHEMAS.get(_config_name(given) or config_name)
    try:
        args, overrides, dirs = _parse(given)
        # Here, before Hydra: its `+key=value` adds any key, and a -m sweep would start its
        # first job before a later one failed.
        if schema is not None and not _SHELL_COMPLETION & set(given):
            check_overrides(overrides, schema, dirs)
    except ConfigError as e:
        return report(str(e), prog)
    register()
    # Hydra then raises errors instead of printing them over several lines and exiting 1.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    saved = sys.argv
    sys.argv = [prog, *args]
    try:
        config_path = str(conf_dir())
        hydra.main(config_path=config_path, config_name=config_name, version_base="1.3")(task)()
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except Exception as e:
        message = user_error(e, schema or Config)
        if message is None:
            raise
        return report(message, prog)
    finally:
        sys.argv = saved
    return 0


def _config_name(args: list[str]) -> str | None:
    """The -cn/--config-name of a command line, if any."""
    for flag, value in itertools.pairwise([*args, ""]):
        if flag in ("-cn", "--config-name"):
            return value
        if flag.startswith("--config-name="):
            return flag.split("=", 1)[1]
    return None


if __name__ == "__main__":
    sys.exit(main())
