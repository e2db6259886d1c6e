"""Typed configuration: one dataclass per config group, composed by Hydra from ``conf/``.

This file is the one place for every key's type, default and documentation (the docstring
under each field; ``dnaembed --help`` prints them). ``conf/`` holds only named options that
differ from these defaults (``model=genos_10b``, ``ray=cluster``) and the defaults list. A typo,
a wrong type or an out-of-range value fails at start, naming the key.
"""

from __future__ import annotations

import ast
import difflib
import functools
import inspect
import itertools
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from pipeline.errors import ConfigError

IUPAC_DNA = "ACGTRYKMSWBDHVN"
MERGE = "merge"


class InputFormat(StrEnum):
    auto = "auto"
    fasta = "fasta"
    fastq = "fastq"


class InvalidChars(StrEnum):
    error = "error"
    to_n = "to_n"


class AmbiguityCodes(StrEnum):
    to_n = "to_n"
    keep = "keep"


class Rna(StrEnum):
    error = "error"
    to_t = "to_t"


class OnError(StrEnum):
    error = "error"
    skip = "skip"


class LastWindow(StrEnum):
    keep = "keep"
    shift = "shift"
    drop = "drop"


class NPolicy(StrEnum):
    keep = "keep"
    skip = "skip"


class DType(StrEnum):
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


class Quantization(StrEnum):
    fp8 = "fp8"


class Pooling(StrEnum):
    mean = "mean"
    max = "max"
    last = "last"


class Device(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class OutputMode(StrEnum):
    error = "error"
    overwrite = "overwrite"


class Compression(StrEnum):
    zstd = "zstd"
    snappy = "snappy"
    gzip = "gzip"
    lz4 = "lz4"
    brotli = "brotli"
    none = "none"


class LogLevel(StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


class Strands(StrEnum):
    forward = "forward"
    reverse = "reverse"
    merge = "merge"


class ProxyLocation(StrEnum):
    every_node = "every_node"
    head_only = "head_only"


class Progress(StrEnum):
    auto = "auto"
    bar = "bar"
    lines = "lines"
    off = "off"


def _is_set(value: Any) -> bool:
    return value is not None and value != MISSING


def _at_least(key: str, value: Any, low: float) -> None:
    if _is_set(value) and value < low:
        raise ConfigError(f"{key} must be >= {low}, got {value}")


def _within(key: str, value: Any, low: float, high: float, open_low: bool = False) -> None:
    if not _is_set(value):
        return
    if value > high or value < low or (open_low and value == low):
        bracket = "(" if open_low else "["
        raise ConfigError(f"{key} must be in {bracket}{low}, {high}], got {value}")


@dataclass
class SequenceRules:
    """How the characters of a sequence are read: a run's files, a request's inputs."""

    invalid_chars: InvalidChars = InvalidChars.error
    """Characters outside IUPAC DNA: error (naming file, record and position; the service: the
    input and position) | to_n."""
    ambiguity_codes: AmbiguityCodes = AmbiguityCodes.to_n
    """IUPAC codes R, Y, K, ...: to_n (map to N) | keep (pass to the tokenizer)."""
    rna: Rna = Rna.error
    """U in a sequence: error (naming record and position) | to_t (read RNA as DNA)."""


@dataclass
class InputConfig(SequenceRules):
    path: Any = None
    """FASTA/FASTQ files to tile into windows: a path, glob, directory or fsspec URI
    (s3://bucket/*.fa.gz), or a list of them (`input='[a.fa,reads/*.fq.gz]'`); `input=X` is
    shorthand. A run reads one of path, regions or variants."""
    reference: str | None = None
    """Indexed reference FASTA (plain, or bgzip with .fai and .gzi; local or s3://) that
    regions and variants are read from; a missing index is built where it can be written."""
    regions: str | None = None
    """BED file (0-based, half-open; plain or gzip): one embedding per interval, with
    window.flank bases of context each side. Needs input.reference."""
    variants: str | None = None
    """VCF file (plain or bgzip): one row per ALT allele, the reference and alternate windows
    of window.size bases compared. Needs input.reference."""
    format: InputFormat = InputFormat.auto
    """auto (sniffed from the first byte) | fasta | fastq."""
    on_error: OnError = OnError.error
    """A malformed record or broken file: error (stop) | skip (list it in the manifest)."""
    split_bases: int = 67108864
    """FASTA files with a .fai index beside them (plain, or bgzip with .fai and .gzi) are read
    as pieces of about this many bases by parallel tasks (same windows, chunk ids and counts
    as one task); 0: one task per file. A file is read whole, by one task, when it has no index
    (none is built), its index is older than it, it is FASTQ or plain gzip, or it holds one
    piece; and every file is, with input.on_error=skip or window.n_policy=skip, which decide
    per record. An index that leaves out empty records (samtools') fails naming the record."""

    def __post_init__(self) -> None:
        _at_least("input.split_bases", self.split_bases, 0)
        if not _is_set(self.path):
            return
        paths = self.path if isinstance(self.path, list | tuple) else [self.path]
        # OmegaConf has no Union of a string and a list, so this one key is checked here.
        if not paths or not all(isinstance(p, str) and p for p in paths):
            raise ConfigError(f"input.path must be a path, glob or URI (or a list), got {paths!r}")


@dataclass
class WindowConfig:
    size: int = 8192
    """Bases per window."""
    stride: int | None = None
    """Start-to-start distance (null: equal to size); overlap = size - stride."""
    last: LastWindow = LastWindow.keep
    """The final window when shorter than size: keep (shorter, no padding) | shift (moved
    left to end at the record end, full size) | drop (its bases counted as uncovered)."""
    min_length: int = 1
    """Shorter windows are dropped, shorter records skipped."""
    n_policy: NPolicy = NPolicy.keep
    """keep | skip windows whose N fraction exceeds max_n_fraction."""
    max_n_fraction: float = 0.5
    """With n_policy=skip: the largest fraction of N a kept window may have."""
    reverse_complement: Any = False
    """false | true (also a '-' row per window: the reverse complement of the same span) |
    merge (one '+' row per window whose embeddings are the mean of both strands')."""
    flank: int = 0
    """Regions: bases of context each side of every interval, clipped at contig ends; the
    model sees them, the poolings leave them out."""
    batch_windows: int = 512
    """Windows per batch handed to the tokenizer (memory, not results)."""

    def __post_init__(self) -> None:
        for key in ("size", "min_length", "batch_windows"):
            _at_least(f"window.{key}", getattr(self, key), 1)
        _at_least("window.flank", self.flank, 0)
        _at_least("window.stride", self.stride, 1)
        _within("window.max_n_fraction", self.max_n_fraction, 0.0, 1.0)
        # OmegaConf has no Union of bool and str: this key is checked (and normalised) here.
        rc = self.reverse_complement
        rc = {"true": True, "false": False}.get(rc.lower(), rc) if isinstance(rc, str) else rc
        if rc not in (False, True, MERGE):
            raise ConfigError(f"window.reverse_complement must be false, true or merge, got {rc!r}")
        self.reverse_complement = rc

    @property
    def merge_strands(self) -> bool:
        return self.reverse_complement == MERGE

    @property
    def step(self) -> int:
        """The stride in effect: `stride`, or `size` when unset."""
        return self.stride or self.size


@dataclass
class ModelConfig:
    name: str = MISSING
    """Model name, set by the option (`model=tiny|genos_1_2b|genos_10b`, or yours with -cd).
    Required."""
    path: str | None = None
    """Local directory or Hugging Face hub id; `tiny` is generated locally when null."""
    revision: str | None = None
    """Hub revision of model and tokenizer."""
    tokenizer: str | None = None
    """Tokenizer directory or hub id (null: the model's)."""
    dtype: DType = DType.bfloat16
    """Weights and activations: float32 | bfloat16 | float16."""
    quantization: Quantization | None = None
    """null | fp8: weights quantized to FP8 as the engine loads them (GPUs with FP8:
    Hopper and later); faster for Genos-10B, with embeddings close to but not equal to bf16
    (BENCHMARKS.md has the numbers). A run with it is a different run (fingerprinted)."""
    max_model_len: int = 131072
    """Tokens per window at most: a longer window is a config error, never truncated."""
    add_special_tokens: bool = False
    """Add the tokenizer's special tokens (BOS/EOS) to each window."""
    trust_remote_code: bool = False
    """Run the model repository's own code (only for models that need it)."""
    engine_kwargs: dict[str, Any] = field(default_factory=dict)
    """Engine kwargs this model needs by default; embed.engine_kwargs overrides them."""

    def __post_init__(self) -> None:
        _at_least("model.max_model_len", self.max_model_len, 1)


@dataclass
class EmbedConfig:
    layers: list[int] = field(default_factory=lambda: [-1])
    """Layers to embed, numbered as Hugging Face's output_hidden_states: 0 = token
    embeddings, k = output of block k (pre-norm), L or -1 = the last block after the final
    norm. One column per (layer, pooling)."""
    poolings: list[Pooling] = field(default_factory=lambda: [Pooling.mean])
    """Poolings over each window's tokens: mean | max | last."""
    per_token: bool = False
    """Regions and variants: also store every token's hidden states of each layer in
    embed.layers (float16; a region's interval, a variant's two windows) as tokens_l<k>."""
    per_token_max_tokens: int = 65536
    """With per_token: the most tokens a row may store per layer; a longer interval (or
    window) is an error naming it (or skipped with input.on_error=skip)."""
    device: Device = Device.auto
    """auto (cuda if the Ray cluster has GPUs) | cpu | cuda."""
    num_actors: Any = 1
    """Engines: an int for a fixed pool, or [min, max] to autoscale."""
    tensor_parallel_size: int = 1
    """GPUs per engine = tensor_parallel_size x pipeline_parallel_size."""
    pipeline_parallel_size: int = 1
    """Pipeline stages per engine."""
    cpus_per_actor: float = 1.0
    """CPUs reserved per engine actor."""
    max_restarts: int = 4
    """Restarts of a dead engine actor (its pack is retried on the new one); bounded, so a
    pack that kills every engine fails the run instead of looping."""
    max_batch_tokens: int = 1048576
    """Tokens per engine call (one pack); a window is never split, so one may exceed it."""
    gpu_memory_utilization: float | None = None
    """Fraction of GPU memory (CPU RAM on the CPU build) for weights and KV cache; null: 0.9
    on GPU, 0.2 on CPU."""
    seed: int = 0
    """Engine seed."""
    engine_kwargs: dict[str, Any] = field(default_factory=dict)
    """Passed to vllm.LLM (enforce_eager, max_num_batched_tokens, ...); keys that decide
    what is computed are refused, naming the config key to use instead."""
    env_vars: dict[str, str] = field(default_factory=dict)
    """Environment of the engine actors, e.g. {VLLM_ATTENTION_BACKEND: FLASH_ATTN}."""

    def __post_init__(self) -> None:
        for key in ("layers", "poolings"):
            values = getattr(self, key)
            if _is_set(values) and (not values or len(set(values)) != len(values)):
                shown = [str(v) for v in values]
                raise ConfigError(f"embed.{key} must list each value once, got {shown}")
        if _is_set(self.num_actors):
            actor_range(self.num_actors)
        _at_least("embed.per_token_max_tokens", self.per_token_max_tokens, 1)
        for key in ("tensor_parallel_size", "pipeline_parallel_size", "max_batch_tokens"):
            _at_least(f"embed.{key}", getattr(self, key), 1)
        _at_least("embed.max_restarts", self.max_restarts, 0)
        _within("embed.gpu_memory_utilization", self.gpu_memory_utilization, 0, 1, True)


@dataclass
class OutputConfig:
    path: str = MISSING
    """Output directory or URI (s3://bucket/run/). Required; `output=X` is shorthand."""
    rows_per_shard: int = 10000
    """Windows per Parquet shard."""
    compression: Compression = Compression.zstd
    """Parquet compression."""
    mode: OutputMode = OutputMode.error
    """error: refuse an output holding another config's run | overwrite: remove that run's
    own files first (refused where the path holds anything else)."""
    lease_s: float = 60.0
    """Object stores: a driver's lease on the output expires this long after its last renewal
    (every lease_s / 4), so a dead driver's output can be resumed. Local paths use a lock that
    dies with the driver."""

    def __post_init__(self) -> None:
        _at_least("output.rows_per_shard", self.rows_per_shard, 1)
        _within("output.lease_s", self.lease_s, 0, float("inf"), True)


@dataclass
class RegionsConfig:
    stranded: bool = False
    """Embed '-' intervals (BED column 6) as their reverse complement; false: every interval
    as on the reference."""


@dataclass
class VariantsConfig:
    keep_embeddings: bool = False
    """Also store both windows' embeddings (E_ref, E_alt) beside the scores."""


@dataclass
class S3Config:
    # Credentials never go here: s3fs reads them from the environment, the AWS profile or the
    # instance role, so no log, manifest or saved config can hold them.
    endpoint_url: str | None = None
    """S3-compatible endpoint, e.g. http://127.0.0.1:9000 (MinIO, a moto server)."""
    region: str | None = None
    """Region name."""
    profile: str | None = None
    """A profile from ~/.aws/config."""
    anon: bool = False
    """Anonymous access (public buckets)."""
    max_attempts: int = 10
    """Attempts per request (botocore's standard retry mode: exponential backoff with jitter,
    up to 20 s apart) on throttling (503 SlowDown), server errors and dropped connections."""

    def __post_init__(self) -> None:
        _at_least("storage.s3.max_attempts", self.max_attempts, 1)


@dataclass
class StorageConfig:
    s3: S3Config = field(default_factory=S3Config)
    """Object stores; never credentials (they come from the environment or profile)."""

    def options(self) -> dict[str, dict[str, Any]]:
        """fsspec keyword arguments per protocol."""
        from pipeline.storage import s3_options

        return {"s3": s3_options(**asdict(self.s3))}


@dataclass
class RayConfig:
    address: str | None = None
    """null: start a local Ray for this run | auto: join the cluster this process runs on."""
    num_cpus: int | None = None
    """CPUs of a local Ray (null: all)."""
    object_store_memory: int | None = None
    """Bytes of a local Ray's object store (null: Ray's default, 30% of memory); blocks beyond
    it wait (Ray Data's backpressure) or spill to disk. In a container, /dev/shm bounds it."""
    cpus_per_task: float = 1.0
    """CPUs per read, window, tokenize and write task."""
    placement_timeout_s: float = 0.0
    """When no node can host an engine, at the start or after a node is lost mid-run: how long
    to wait for one (an autoscaler's or a replacement node) before the run ends (a rerun
    resumes). 0: at once."""
    progress_bars: bool = False
    """Ray Data's own progress bars (dnaembed draws its own; see log.progress)."""
    log_to_driver: bool = True
    """Collect the workers' output (vLLM's lines among them) on the driver: into the log
    file, or onto the terminal with log.verbose."""
    log_level: LogLevel = LogLevel.INFO
    """Level of Ray's and Ray Data's own log lines (where they go: see log.verbose)."""

    def __post_init__(self) -> None:
        _at_least("ray.num_cpus", self.num_cpus, 1)
        _at_least("ray.object_store_memory", self.object_store_memory, 75 << 20)
        _at_least("ray.placement_timeout_s", self.placement_timeout_s, 0)


@dataclass
class LogConfig:
    verbose: bool = False
    """Show vLLM's and Ray's own log lines on the terminal too (also: -v)."""
    file: str | None = None
    """Log file of the run (null: dnaembed.log in Hydra's run directory, from the CLI;
    unset from Python, where your logging config decides)."""
    progress: Progress = Progress.auto
    """auto (a bar on a terminal, lines otherwise) | bar | lines | off."""
    interval_s: float = 30.0
    """Seconds between progress lines when not on a terminal."""

    def __post_init__(self) -> None:
        _within("log.interval_s", self.interval_s, 0, float("inf"), True)


@dataclass
class Config:
    input: InputConfig = field(default_factory=InputConfig)
    window: WindowConfig = field(default_factory=WindowConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    regions: RegionsConfig = field(default_factory=RegionsConfig)
    variants: VariantsConfig = field(default_factory=VariantsConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    log: LogConfig = field(default_factory=LogConfig)


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"
    """Address the HTTP server listens on (0.0.0.0: every interface)."""
    port: int = 8000
    """HTTP port: /v1/embeddings, /v1/models, /health, /ready."""
    proxy_location: ProxyLocation = ProxyLocation.every_node
    """Where Ray Serve runs an HTTP proxy on serve.port: every_node (any node answers; put
    a load balancer in front) | head_only."""
    name: str | None = None
    """The model id clients send and /v1/models lists (null: model.name)."""
    replicas: Any = 1
    """Engines (Ray Serve replicas, each embed.tensor_parallel_size GPUs): an int, or
    [min, max] to autoscale on ongoing requests."""
    target_ongoing_requests: float = 8.0
    """Autoscaling: ongoing requests per replica to aim for."""
    max_ongoing_requests: int = 256
    """Requests one replica takes at once (batched into engine calls as the engine frees);
    more wait in Ray Serve's queue, which is slower: keep it above the clients per replica
    (at 64, 128 clients on one H200 got a third of the throughput)."""
    max_queued_requests: int = 1024
    """Requests waiting for a replica at most; beyond it: HTTP 503. -1: no limit."""
    max_request_bytes: int = 16777216
    """Largest request body; larger: HTTP 413."""
    max_inputs: int = 2048
    """Most sequences in one request; more: HTTP 413."""
    strands: Strands = Strands.forward
    """Default of a request's strands: forward | reverse (the reverse complement) | merge
    (the mean of both strands' embeddings, as window.reverse_complement=merge)."""
    api_key: str | None = None
    """Clients must send it (Authorization: Bearer KEY); null: the environment variable
    DNAEMBED_API_KEY if set, else no key. Better from the environment than typed (OmegaConf's
    oc.env resolver; README, Serving); it is never printed or logged."""
    log_requests: bool = True
    """One log line per request: inputs, bases, columns, status, time; never sequences."""
    log_sequences: bool = False
    """Add each request's sequences to its log line (debugging only: genomes are private)."""
    shutdown_timeout_s: float = 30.0
    """On SIGTERM/SIGINT: how long requests in flight may take to finish."""

    def __post_init__(self) -> None:
        _within("serve.port", self.port, 1, 65535)
        for key in ("max_ongoing_requests", "max_request_bytes", "max_inputs"):
            _at_least(f"serve.{key}", getattr(self, key), 1)
        _at_least("serve.max_queued_requests", self.max_queued_requests, -1)
        _within("serve.target_ongoing_requests", self.target_ongoing_requests, 0, 1e9, True)
        _at_least("serve.shutdown_timeout_s", self.shutdown_timeout_s, 0)
        if _is_set(self.replicas):
            actor_range(self.replicas, "serve.replicas")


@dataclass
class ServiceConfig:
    """`dnaembed-serve`: the model, its head and sequence rules as a batch run has them."""

    input: SequenceRules = field(default_factory=SequenceRules)
    model: ModelConfig = field(default_factory=ModelConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    log: LogConfig = field(default_factory=LogConfig)


GROUPS = tuple(f.name for f in fields(Config))


class InputKind(StrEnum):
    tiles = "tiles"
    regions = "regions"
    variants = "variants"


def input_kind(cfg: Config) -> InputKind:
    """What the run reads: files to tile (input.path), BED regions or VCF variants."""
    i = cfg.input
    given = [k for k in ("path", "regions", "variants") if _is_set(getattr(i, k))]
    if not given:
        raise ConfigError(
            "missing input: pass input=PATH (FASTA/FASTQ to tile), or input.reference=FASTA "
            "with input.regions=BED or input.variants=VCF"
        )
    if len(given) > 1:
        raise ConfigError(
            f"a run reads one input, got {', '.join('input.' + k for k in given)}: "
            "run them separately"
        )
    if given[0] == "path":
        if _is_set(i.reference):
            raise ConfigError(
                "input.reference is read for input.regions or input.variants; input.path "
                "files are tiled whole"
            )
        return InputKind.tiles
    if not _is_set(i.reference):
        raise ConfigError(f"input.{given[0]} needs input.reference=FASTA (indexed, or bgzip)")
    return InputKind(given[0])


def validate(cfg: Config) -> Config:
    """Checks across keys (each key's own range is checked when the config is built)."""
    kind = input_kind(cfg)
    if cfg.window.flank and kind != InputKind.regions:
        raise ConfigError("window.flank applies to input.regions only")
    if cfg.embed.per_token and kind == InputKind.tiles:
        raise ConfigError("embed.per_token applies to input.regions and input.variants")
    limit = cfg.embed.per_token_max_tokens
    if cfg.embed.per_token and kind == InputKind.variants and cfg.window.size > limit:
        raise ConfigError(
            f"embed.per_token stores {cfg.window.size} tokens per window (window.size), more "
            f"than embed.per_token_max_tokens={limit}; lower window.size or raise the limit"
        )
    w = cfg.window
    if w.step > w.size:
        raise ConfigError(
            f"window.stride must be between 1 and window.size ({w.size}), got {w.stride}"
        )
    if w.min_length > w.size:
        raise ConfigError(
            f"window.min_length must be between 1 and window.size, got {w.min_length}"
        )
    return cfg


def actor_range(value: Any, key: str = "embed.num_actors") -> tuple[int, int]:
    """`embed.num_actors` (or `key`) as (min, max): an int n is (n, n)."""
    if isinstance(value, int) and not isinstance(value, bool):
        lo = hi = value
    elif (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(isinstance(v, int) for v in value)
    ):
        lo, hi = value
    else:
        raise ConfigError(f"{key} must be an int or [min, max], got {value!r}")
    if not 1 <= lo <= hi:
        raise ConfigError(f"{key} must satisfy 1 <= min <= max, got {value!r}")
    return lo, hi


def default_outputs(cfg: Config) -> bool:
    """The one output every earlier version wrote: the last layer, mean-pooled."""
    return list(cfg.embed.layers) == [-1] and list(cfg.embed.poolings) == [Pooling.mean]


def fingerprint_fields(cfg: Config, layers: list[int] | None = None) -> dict[str, Any]:
    """The settings that decide output content; a resumed or re-run output must match these.

    `layers`: embed.layers as non-negative indices (so -1 and L are the same run). The
    default outputs add nothing, so outputs written before layers and poolings existed keep
    their fingerprint.
    """
    m = cfg.model
    kind = input_kind(cfg)
    # Keys added after outputs existed count only where set, so those outputs keep their
    # fingerprint: input.rna, the region/variant inputs, window.flank.
    later = {"rna": Rna.error, "reference": None, "regions": None, "variants": None}
    # input.split_bases decides how the reading is shared out, not what is made.
    how = {"split_bases"}
    out = {
        "input": {
            k: v
            for k, v in asdict(cfg.input).items()
            if k not in how and (k not in later or v != later[k])
        },
        # The stride in effect, so `stride=null` and `stride=<size>` are the same run.
        "window": {
            **{
                k: v
                for k, v in asdict(cfg.window).items()
                if k != "batch_windows" and (k != "flank" or v)
            },
            "stride": cfg.window.step,
        },
        "model": {
            "name": m.name,
            "path": m.path,
            "revision": m.revision,
            "tokenizer": m.tokenizer,
            "dtype": m.dtype,
            "pooling": "MEAN",  # the only pooling before embed.poolings
            "add_special_tokens": m.add_special_tokens,
            # Later keys count only where set (see `later`).
            **({"quantization": m.quantization} if m.quantization else {}),
        },
    }
    if kind == InputKind.regions:
        out["regions"] = asdict(cfg.regions)
    if kind == InputKind.variants:
        out["variants"] = asdict(cfg.variants)
    if not default_outputs(cfg):
        out["embed"] = {
            "layers": list(layers if layers is not None else cfg.embed.layers),
            "poolings": [str(p) for p in cfg.embed.poolings],
        }
    if cfg.embed.per_token:
        out.setdefault("embed", {})["per_token"] = True
    return out


def model_fingerprint(cfg: Config, layers: list[int] | None = None) -> dict[str, Any]:
    """What changes a window's embedding for fixed coordinates: goes into every chunk id."""
    fields_ = fingerprint_fields(cfg, layers)
    return {
        **fields_["model"],
        **({"embed": fields_["embed"]} if "embed" in fields_ else {}),
        # A merged '+' row holds other numbers than a '+' row of either other mode.
        **({"strands": MERGE} if cfg.window.merge_strands else {}),
        # Regions: the flank is context the model sees.
        **({"flank": cfg.window.flank} if cfg.window.flank else {}),
        "ambiguity_codes": cfg.input.ambiguity_codes,
        "invalid_chars": cfg.input.invalid_chars,
    }


# ---- composing: the same for the CLI (a Hydra app) and for Python callers ----------------


def conf_dir() -> Path:
    """The shipped configs: `pipeline/conf` in an installed wheel, `conf/` in a checkout."""
    package = Path(__file__).resolve().parent
    for path in (package / "conf", package.parent / "conf"):
        if (path / "config.yaml").exists():
            return path
    raise ConfigError(f"no config directory beside {package}: the installation is incomplete")


# `input=x.fa` means `input.path=x.fa` unless x.fa names an option of the group.
_PATH_SHORTHAND = ("input", "output")


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


# ---- documentation: the docstring under each field ---------------------------------------


def field_docs(cls: type) -> dict[str, str]:
    """{field: docstring} of a config dataclass (and the dataclasses it extends), read from
    their source."""
    docs: dict[str, str] = {}
    for base in reversed(cls.__mro__):
        if base is not object and is_dataclass(base):
            docs.update(_own_field_docs(base))
    return docs


def _own_field_docs(cls: type) -> dict[str, str]:
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body
    docs = {}
    for node, after in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def describe(cls: type = Config, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, doc) for every leaf key under `cls`."""
    out = []
    docs = field_docs(cls)
    default = cls()
    for f in fields(cls):
        value = getattr(default, f.name)
        key = f"{prefix}{f.name}"
        if is_dataclass(value):
            out += describe(type(value), key + ".")
        else:
            out.append((key, _show(value), docs.get(f.name, "")))
    return out


def _show(value: Any) -> str:
    if value == MISSING:
        return "??? (required)"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return "{}" if not value else str(value)
    if isinstance(value, list):
        return "[" + ",".join(_show(v) for v in value) + "]"
    return str(value)


def keys_help(width: int = 100, cls: type = Config) -> str:
    """Every key with its default and documentation, for `dnaembed --help`."""
    import textwrap

    lines = []
    group = None
    for key, default, doc in describe(cls):
        if key.split(".")[0] != group:
            group = key.split(".")[0]
            lines.append("")
        lines.append(f"  {key}={default}")
        lines += textwrap.wrap(doc, width, initial_indent="      ", subsequent_indent="      ")
    return "\n".join(lines).strip("\n")
