"""Hydra composition: the config for a command line or a Python caller, with unknown keys
refused (naming the nearest real ones) and Hydra's errors made one line."""

from __future__ import annotations

import difflib
import functools
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from pipeline.config import Config, ServiceConfig
from pipeline.errors import ConfigError
from pipeline.keys_help import keys_help

# ---- composing: the same for the CLI (a Hydra app) and for Python callers ----------------


def conf_dir() -> Path:
    """The shipped configs: `pipeline/conf` in an installed wheel, `conf/` in a checkout."""
    package = Path(__file__).resolve().parent
    for path in (package / "conf", package.parent / "conf"):
        if (path / "config.yaml").exists():
            return path
    raise ConfigError(f"no config directory beside {package}: the installation is incomplete")


# `input=x.fa` means `input.path=x.fa` unless x.fa names an option of the group; and
# `scores=[llr]` means `scores.compute=[llr]`.
_PATH_SHORTHAND = ("input", "output")
_LIST_SHORTHAND = {"scores": "compute"}


def group_options(group: str, extra_dirs: tuple[str, ...] = ()) -> list[str]:
    dirs = [conf_dir(), *map(Path, extra_dirs)]
    return sorted({p.stem for d in dirs for p in (d / group).glob("*.yaml")})


# Keys that moved, and where to.
_MOVED = {"model.pooling": "embed.poolings (mean, max, last), e.g. 'embed.poolings=[mean]'"}


def rewrite_overrides(overrides: list[str], extra_dirs: tuple[str, ...] = ()) -> list[str]:
    out = []
    for o in overrides:
        key, sep, value = o.partition("=")
        if (moved := key.lstrip("+~")) in _MOVED:
            raise ConfigError(f"{moved} is now {_MOVED[moved]}")
        if sep and key in _PATH_SHORTHAND and value not in group_options(key, extra_dirs):
            o = f"{key}.path={value}"
        elif sep and key in _LIST_SHORTHAND and value not in group_options(key, extra_dirs):
            o = f"{key}.{_LIST_SHORTHAND[key]}={value}"
        out.append(o)
    return out


# ---- unknown keys: refused wherever they come from, naming the nearest real ones ---------

# The schema of each config in conf/ (by config name), and who reads it.
SCHEMAS: dict[str, type] = {"config": Config, "serve": ServiceConfig}
_PROGRAMS: dict[type, str] = {Config: "dnaembed", ServiceConfig: "dnaembed-serve"}
_READERS: dict[type, str] = {
    Config: "batch runs (dnaembed)",
    ServiceConfig: "the service (dnaembed-serve)",
}


@dataclass(frozen=True)
class SchemaKeys:
    """The dotted keys of a config dataclass."""

    nodes: frozenset[str]
    """Keys holding a dataclass: the groups (`embed`) and nested ones (`storage.s3`)."""
    leaves: frozenset[str]
    """Keys holding a value."""
    free: frozenset[str]
    """The `dict[str, ...]` keys, whose own keys are the user's (`embed.engine_kwargs`)."""

    @property
    def names(self) -> frozenset[str]:
        return self.nodes | self.leaves | self.free

    def known(self, key: str) -> bool:
        return key in self.nodes or key in self.leaves or self.in_free(key)

    def in_free(self, key: str) -> bool:
        return any(key == f or key.startswith(f + ".") for f in self.free)


@functools.cache
def schema_keys(cls: type, prefix: str = "") -> SchemaKeys:
    """Every key of `cls`, read from its fields' types: the free-form ones are its dicts."""
    nodes: set[str] = set()
    leaves: set[str] = set()
    free: set[str] = set()
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        key, hint = prefix + f.name, _optional_of(hints[f.name])
        if isinstance(hint, type) and is_dataclass(hint):
            nodes.add(key)
            sub = schema_keys(hint, key + ".")
            nodes |= sub.nodes
            leaves |= sub.leaves
            free |= sub.free
        elif hint is dict or typing.get_origin(hint) is dict:
            free.add(key)
        else:
            leaves.add(key)
    return SchemaKeys(frozenset(nodes), frozenset(leaves), frozenset(free))


def _optional_of(hint: Any) -> Any:
    """X for `X | None`; any other type as it is."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def _keys_for(key: str, schema: type) -> tuple[SchemaKeys, str]:
    """The keys `key` is one of (ours, or Hydra's own for hydra.*) and their prefix."""
    if key == "hydra" or key.startswith("hydra."):
        from hydra.conf import HydraConf

        return schema_keys(HydraConf, "hydra."), "hydra."
    return schema_keys(schema), ""


def unknown_key_message(key: str, schema: type = Config, source: str | None = None) -> str:
    """`unknown key K (did you mean ...?)`: difflib's nearest real keys, or groups."""
    keys, prefix = _keys_for(key, schema)
    head = f"unknown key {key}" + (f" in {source}" if source else "")
    if not prefix and schema in _READERS:
        for other, readers in _READERS.items():
            if other is not schema and schema_keys(other).known(key):
                return f"{head}: a key of {readers}, not of {_PROGRAMS[schema]}"
    groups = sorted(n for n in keys.names if n.count(".") == prefix.count("."))
    parts = key.split(".")
    if len(parts) == 1:
        candidates = set(groups)
    else:
        candidates = set(keys.names)
        # A typo in a free-form group's name: its key after it is the user's own.
        for f in keys.free:
            depth = f.count(".") + 1
            if len(parts) > depth:
                candidates.add(".".join([f, *parts[depth:]]))
    near = _nearest(key, candidates, 0.75)
    if near:
        return f"{head} (did you mean {_either(near)}?)"
    depth = prefix.count(".") + 1  # a group's parts: `embed`, `hydra.job`
    group = ".".join(parts[:depth])
    if len(parts) > depth and group not in groups:
        near = _nearest(group, groups, 0.6)
        if near:
            return f"{head} (no group {group}; did you mean {_either(near)}?)"
    if prefix:
        return f"{head} (--cfg hydra shows Hydra's keys)"
    return f"{head} ({_PROGRAMS.get(schema, 'dnaembed')} --help lists every key)"


def _nearest(word: str, candidates: typing.Iterable[str], cutoff: float) -> list[str]:
    """difflib's closest candidates to `word`: the best, and up to two about as close."""
    scored = sorted(
        ((difflib.SequenceMatcher(None, word, c).ratio(), c) for c in candidates),
        key=lambda rc: (-rc[0], rc[1]),
    )
    best = scored[0][0] if scored else 0.0
    return [c for ratio, c in scored[:3] if ratio >= max(cutoff, best - 0.05)]


def _either(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _first_unknown(data: Any, keys: SchemaKeys, prefix: str = "") -> str | None:
    """The first key in `data` (a config as dicts, at `prefix`) that `keys` does not have,
    as deep as it goes (`embedd: {layers: ...}`: embedd.layers)."""
    if not isinstance(data, Mapping) or (prefix and prefix[:-1] not in keys.nodes):
        return None  # a value, or a free-form group's own keys
    for name, value in data.items():
        key = f"{prefix}{name}"
        if key == "hydra":
            continue  # Hydra's own, checked by Hydra
        if not keys.known(key):
            while isinstance(value, Mapping) and value:
                name, value = next(iter(value.items()))
                key = f"{key}.{name}"
            return key
        if (deeper := _first_unknown(value, keys, key + ".")) is not None:
            return deeper
    return None


def _is_group(name: str, extra_dirs: tuple[str, ...]) -> bool:
    """A config group of the user's own (`-cd DIR` with DIR/experiment/x.yaml: +experiment=x)."""
    return any((d / name).is_dir() for d in (conf_dir(), *map(Path, extra_dirs)))


def check_overrides(
    overrides: list[str], schema: type = Config, extra_dirs: tuple[str, ...] = ()
) -> None:
    """Refuse an override of a key that `schema` lacks (`+`, `++` and `~` too, and the keys of
    a dict value or of any value of a sweep), before anything is composed or run: Hydra's
    `+key=value` adds any key, and a sweep would start its first job before its second
    failed."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    keys = schema_keys(schema)
    for line in overrides:
        try:
            override = parser.parse_override(line)
        except HydraException:
            continue  # malformed: Hydra says so in its own words
        key = override.key_or_group
        # Hydra's own keys are Hydra's to check; the keys of a config chosen with
        # `group@package=x` or `a/b=x` are checked as Hydra merges it.
        if override.is_hydra_override() or override.package is not None or "/" in key:
            continue
        if not keys.known(key):
            if "." not in key and _is_group(key, extra_dirs):
                continue
            raise ConfigError(unknown_key_message(key, schema))
        if override.is_delete():
            continue
        value = override.value()
        for v in value.list if isinstance(value, ChoiceSweep) else [value]:
            if (bad := _first_unknown({key: v}, keys)) is not None:
                raise ConfigError(unknown_key_message(bad, schema))


def check_keys(cfg: DictConfig) -> None:
    """Refuse a composed config holding a key its schema lacks: to_object would drop it."""
    schema = OmegaConf.get_type(cfg)
    if not (isinstance(schema, type) and is_dataclass(schema)):
        return
    data = OmegaConf.to_container(cfg, resolve=False)
    if (bad := _first_unknown(data, schema_keys(schema))) is not None:
        raise ConfigError(unknown_key_message(bad, schema))


def register() -> None:
    """Put the typed schemas in Hydra's config store (conf/config.yaml and conf/serve.yaml
    list them first), and the key lists that `--help` shows (conf/hydra/help/) among the
    resolvers."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="dnaembed_schema", node=Config)
    ConfigStore.instance().store(name="dnaembed_serve_schema", node=ServiceConfig)
    OmegaConf.register_new_resolver("dnaembed.keys", keys_help, replace=True)
    OmegaConf.register_new_resolver(
        "dnaembed.serve_keys", lambda: keys_help(cls=ServiceConfig), replace=True
    )


def compose(
    overrides: list[str], config_dirs: tuple[str, ...] = (), config_name: str = "config"
) -> DictConfig:
    """The config for these overrides, as the CLI would compose it (for Python callers);
    config_name="serve": `dnaembed-serve`'s."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register()
    schema = SCHEMAS.get(config_name)
    overrides = rewrite_overrides(overrides, config_dirs)
    if schema is not None:
        check_overrides(overrides, schema, config_dirs)
    if config_dirs:  # what -cd does on the command line
        overrides.append(f"hydra.searchpath=[{','.join(f'file://{d}' for d in config_dirs)}]")
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            cfg = hydra_compose(config_name, overrides=overrides)
    except Exception as e:
        message = composition_error(e, schema or Config)
        if message is None:
            raise
        raise ConfigError(message) from e
    check_keys(cfg)
    return cfg


def to_config(cfg: DictConfig) -> Config:
    """The typed config; each key's own checks run here, and an unknown key fails (the typed
    config would leave it out)."""
    check_keys(cfg)
    try:
        return OmegaConf.to_object(cfg)
    except MissingMandatoryValue as e:
        key = e.full_key
        hints = {
            "input.path": "pass input=PATH",
            "output.path": "pass output=DIR",
            "model.name": "pass model=NAME (tiny, genos_1_2b, genos_10b, or yours with -cd DIR)",
        }
        hint = hints.get(key, "")
        raise ConfigError(f"missing required value {key}" + (f": {hint}" if hint else "")) from e
    except OmegaConfBaseException as e:
        raise ConfigError(one_line(e)) from e


# Hydra's errors about a key that is not there. Its advice for the first ("To append to your
# config use +key=value") would add the typo silently: never passed on.
_NOT_OVERRIDDEN = re.compile(
    r"Could not override '(?P<key>[^']+)'\.\s*To append to your config use \+(?P<line>.*)", re.S
)
_NOT_MERGED = re.compile(
    r"^In '(?P<source>[^']+)': ConfigKeyError raised while composing config:.*?"
    r"full_key: (?P<key>\S+)",
    re.S,
)
_NOT_DELETED = re.compile(r"Could not delete from config\. '(?P<key>[^']+)' does not exist")
_APPEND_ADVICE = re.compile(r"\s*To append to your [\w ]+ use \+\S+")


def composition_error(e: BaseException, schema: type = Config) -> str | None:
    """One line for an error of Hydra or OmegaConf (a bad override, an unknown key in an
    override or a config file of `schema`), or None for any other."""
    if not (isinstance(e, OmegaConfBaseException) or type(e).__module__.startswith("hydra.")):
        return None
    text = str(e)
    if m := _NOT_OVERRIDDEN.search(text):
        # OmegaConf's key is the deepest (`storage.s3={endpoit_url: x}`: storage.s3.endpoit_url).
        key = getattr(e.__cause__, "full_key", None) or m["key"]
        keys, _ = _keys_for(key, schema)
        if keys.in_free(key):
            # A free-form group's key that is not set yet: Hydra adds one only with `+`.
            return f"{key} is not set: add it with +{m['line'].strip()}"
        if not keys.known(key):
            return unknown_key_message(key, schema)
    if m := _NOT_MERGED.search(text):
        return unknown_key_message(m["key"], schema, source=m["source"])
    if m := _NOT_DELETED.search(text):
        key = m["key"]
        keys, _ = _keys_for(key, schema)
        if not keys.known(key):
            return unknown_key_message(key, schema)
        return f"cannot delete {key}: it is not set"
    return _APPEND_ADVICE.sub("", one_line(e))


def one_line(e: BaseException) -> str:
    """Hydra's and OmegaConf's multi-line messages (and their cause) as one line."""
    parts = []
    for x in (e, e.__cause__):
        if x is None:
            continue
        text = getattr(x, "msg", None) or str(x)
        lines = [s.strip() for s in text.strip().splitlines() if s.strip()]
        key = getattr(x, "full_key", None)
        keep = [s for s in lines if not s.startswith(("full_key:", "object_type", "reference_"))]
        parts.append(" ".join(keep) + (f" (key {key})" if key else ""))
    return ": ".join(p for p in parts if p)
