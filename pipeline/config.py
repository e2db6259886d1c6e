"""Typed configuration: one dataclass per config group, composed by Hydra from ``conf/``.

The YAML files in ``conf/`` hold values; these dataclasses hold types and validation, so a typo
or a wrong type in an override fails at start, naming the key.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from omegaconf import MISSING

from pipeline.errors import ConfigError

IUPAC_DNA = "ACGTRYKMSWBDHVN"
POOLING_TYPES = ("MEAN", "CLS", "LAST")
DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class InputConfig:
    # A path, glob or fsspec URI (s3://...), or a list of them.
    path: Any = MISSING
    format: str = "auto"  # auto | fasta | fastq
    # Characters outside IUPAC DNA: error (naming record and position) or map to N.
    invalid_chars: str = "error"  # error | to_n
    # IUPAC ambiguity codes (R, Y, ...): keep for the tokenizer, or map to N.
    ambiguity_codes: str = "to_n"  # to_n | keep
    # A malformed record or a broken file: stop the run (error), or skip it and list it in
    # the manifest (skip).
    on_error: str = "error"  # error | skip


@dataclass
class WindowConfig:
    size: int = 8192
    stride: Any = None  # null: equal to size (no overlap)
    # The final window of a record when shorter than `size`:
    #   keep  - keep it shorter (no padding)
    #   shift - move it left to end at the record end, so it is full-size (more overlap)
    #   drop  - drop it (its bases are counted as uncovered in the manifest)
    last: str = "keep"
    min_length: int = 1
    n_policy: str = "keep"  # keep | skip
    max_n_fraction: float = 0.5
    reverse_complement: bool = False
    # Windows generated per batch handed to the tokenizer.
    batch_windows: int = 512

    @property
    def step(self) -> int:
        """The stride in effect: `stride`, or `size` when unset."""
        return self.stride or self.size


@dataclass
class ModelConfig:
    name: str = MISSING
    # Local directory or hub id. `tiny` is generated locally when path is null.
    path: Any = None
    revision: Any = None
    tokenizer: Any = None
    dtype: str = "bfloat16"
    max_model_len: int = 131072
    pooling: str = "MEAN"
    add_special_tokens: bool = False
    trust_remote_code: bool = False
    # Engine kwargs this model needs by default; `embed.engine_kwargs` overrides them.
    engine_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class EmbedConfig:
    device: str = "auto"  # auto | cpu | cuda
    # An int for a fixed pool, or [min, max] to autoscale.
    num_actors: Any = 1
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    cpus_per_actor: float = 1.0
    # Restarts of a dead engine actor (its pack is retried on the new one); bounded, so a
    # pack that kills every engine fails the run instead of looping.
    max_restarts: int = 4
    # Token budget of one engine call; a window is never split, so one window may exceed it.
    max_batch_tokens: int = 1048576
    # Fraction of GPU memory (of CPU RAM on the CPU build) for weights + KV cache; null = 0.9 on
    # GPU, 0.2 on CPU.
    gpu_memory_utilization: Any = None
    seed: int = 0
    engine_kwargs: dict[str, Any] = field(default_factory=dict)
    # Environment of the engine actors (e.g. VLLM_ATTENTION_BACKEND).
    env_vars: dict[str, str] = field(default_factory=dict)


@dataclass
class OutputConfig:
    path: str = MISSING
    rows_per_shard: int = 10000
    compression: str = "zstd"
    # error: refuse an output that holds another run; overwrite: remove it first.
    mode: str = "error"  # error | overwrite


@dataclass
class S3Config:
    # Credentials never go here: s3fs reads them from the environment, the AWS profile or the
    # instance role, so no log, manifest or saved config can hold them.
    endpoint_url: Any = None
    region: Any = None
    profile: Any = None
    anon: bool = False


@dataclass
class StorageConfig:
    s3: S3Config = field(default_factory=S3Config)

    def options(self) -> dict[str, dict[str, Any]]:
        """fsspec keyword arguments per protocol."""
        from pipeline.storage import s3_options

        return {"s3": s3_options(**asdict(self.s3))}


@dataclass
class RayConfig:
    # null starts a local Ray; "auto" joins the cluster this process runs on.
    address: Any = None
    num_cpus: Any = None
    cpus_per_task: float = 1.0
    # When no node can host an engine yet: 0 fails at once; on an autoscaling cluster, the
    # seconds to wait for one.
    placement_timeout_s: float = 0.0
    progress_bars: bool = True
    log_to_driver: bool = True
    log_level: str = "INFO"  # Ray's and Ray Data's own log lines


@dataclass
class Config:
    input: InputConfig = field(default_factory=InputConfig)
    window: WindowConfig = field(default_factory=WindowConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    ray: RayConfig = field(default_factory=RayConfig)


def _one_of(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not one of {', '.join(allowed)}")


def validate(cfg: Config) -> Config:
    """Check values that types alone cannot; raise ConfigError naming the key."""
    _one_of("input.format", cfg.input.format, ("auto", "fasta", "fastq"))
    _one_of("input.invalid_chars", cfg.input.invalid_chars, ("error", "to_n"))
    _one_of("input.ambiguity_codes", cfg.input.ambiguity_codes, ("to_n", "keep"))
    _one_of("input.on_error", cfg.input.on_error, ("error", "skip"))
    paths = cfg.input.path if isinstance(cfg.input.path, list | tuple) else [cfg.input.path]
    if not paths or not all(isinstance(p, str) and p for p in paths):
        raise ConfigError(f"input.path must be a path, glob or URI (or a list), got {paths!r}")

    w = cfg.window
    if w.size < 1:
        raise ConfigError(f"window.size must be >= 1, got {w.size}")
    if not isinstance(w.step, int) or not 1 <= w.step <= w.size:
        raise ConfigError(
            f"window.stride must be between 1 and window.size ({w.size}), got {w.stride}"
        )
    _one_of("window.last", w.last, ("keep", "shift", "drop"))
    if not 1 <= w.min_length <= w.size:
        raise ConfigError(
            f"window.min_length must be between 1 and window.size, got {w.min_length}"
        )
    _one_of("window.n_policy", w.n_policy, ("keep", "skip"))
    if not 0.0 <= w.max_n_fraction <= 1.0:
        raise ConfigError(f"window.max_n_fraction must be in [0, 1], got {w.max_n_fraction}")
    if w.batch_windows < 1:
        raise ConfigError(f"window.batch_windows must be >= 1, got {w.batch_windows}")

    m = cfg.model
    _one_of("model.dtype", m.dtype, DTYPES)
    _one_of("model.pooling", m.pooling, POOLING_TYPES)
    if m.max_model_len < 1:
        raise ConfigError(f"model.max_model_len must be >= 1, got {m.max_model_len}")

    e = cfg.embed
    _one_of("embed.device", e.device, ("auto", "cpu", "cuda"))
    actor_range(e.num_actors)
    for key in ("tensor_parallel_size", "pipeline_parallel_size", "max_batch_tokens"):
        if getattr(e, key) < 1:
            raise ConfigError(f"embed.{key} must be >= 1, got {getattr(e, key)}")
    if e.gpu_memory_utilization is not None and not 0 < float(e.gpu_memory_utilization) <= 1:
        raise ConfigError(
            f"embed.gpu_memory_utilization must be in (0, 1], got {e.gpu_memory_utilization}"
        )

    o = cfg.output
    if not isinstance(o.path, str) or not o.path:
        raise ConfigError(f"output must be a directory path or URI, got {o.path!r}")
    if o.rows_per_shard < 1:
        raise ConfigError(f"output.rows_per_shard must be >= 1, got {o.rows_per_shard}")
    _one_of("output.mode", o.mode, ("error", "overwrite"))
    return cfg


def actor_range(value: Any) -> tuple[int, int]:
    """`embed.num_actors` as (min, max): an int n is (n, n)."""
    if isinstance(value, int) and not isinstance(value, bool):
        lo = hi = value
    elif (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(isinstance(v, int) for v in value)
    ):
        lo, hi = value
    else:
        raise ConfigError(f"embed.num_actors must be an int or [min, max], got {value!r}")
    if not 1 <= lo <= hi:
        raise ConfigError(f"embed.num_actors must satisfy 1 <= min <= max, got {value!r}")
    return lo, hi


def fingerprint_fields(cfg: Config) -> dict[str, Any]:
    """The settings that decide output content; a resumed or re-run output must match these."""
    m = cfg.model
    return {
        "input": asdict(cfg.input),
        # The stride in effect, so `stride=null` and `stride=<size>` are the same run.
        "window": {
            **{k: v for k, v in asdict(cfg.window).items() if k != "batch_windows"},
            "stride": cfg.window.step,
        },
        "model": {
            "name": m.name,
            "path": m.path,
            "revision": m.revision,
            "tokenizer": m.tokenizer,
            "dtype": m.dtype,
            "pooling": m.pooling,
            "add_special_tokens": m.add_special_tokens,
        },
    }


def model_fingerprint(cfg: Config) -> dict[str, Any]:
    """What changes a window's embedding for fixed coordinates: goes into every chunk id."""
    fields = fingerprint_fields(cfg)
    return {
        **fields["model"],
        "ambiguity_codes": cfg.input.ambiguity_codes,
        "invalid_chars": cfg.input.invalid_chars,
    }
