"""The keys: one typed dataclass per config group, their enums and checks (composed from
``conf/`` by pipeline.compose, identity in pipeline.identity, help in pipeline.keys_help).

This file is the one place for every key's type, default and documentation (the docstring
under each field; ``dnaembed --help`` prints them). ``conf/`` holds only named options that
differ from these defaults (``model=genos_10b``, ``ray=cluster``) and the defaults list. A typo,
a wrong type or an out-of-range value fails at start, naming the key.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any

from omegaconf import MISSING

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


class Score(StrEnum):
    loglik = "loglik"
    llr = "llr"


class TrackValue(StrEnum):
    logp = "logp"
    entropy = "entropy"
    probs = "probs"


class TrackStrands(StrEnum):
    forward = "forward"
    reverse = "reverse"
    both = "both"
    merged = "merged"


class VariantLayout(StrEnum):
    centred = "centred"
    end = "end"


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
    mutagenesis: str | None = None
    """BED file of intervals to mutate in silico: every base to each of the three others,
    scored like variants (scores=[llr]), plus one row per base with the mean and the most
    damaging. Needs input.reference; intervals longer than mutagenesis.max_bases are refused."""
    tracks: Any = None
    """FASTA files of a genome (plain, gzip or indexed; a path, glob, directory, URI or list,
    as input.path) to score base by base: per-base tracks (tracks.values) as Parquet shards
    and bigWig files. Plain gzip streams through in bounded memory."""
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
        for key in ("path", "tracks"):
            value = getattr(self, key)
            if not _is_set(value):
                continue
            paths = value if isinstance(value, list | tuple) else [value]
            # OmegaConf has no Union of a string and a list, so these keys are checked here.
            if not paths or not all(isinstance(p, str) and p for p in paths):
                raise ConfigError(
                    f"input.{key} must be a path, glob or URI (or a list), got {paths!r}"
                )


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
    (BENCHMARKS.md, "FP8"). A run with it is a different run (fingerprinted)."""
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
    engines: str = "own"
    """own: the run starts its engines (embed.num_actors) | serve:NAME: the run uses the warm
    engines of the dnaembed-serve deployment NAME (its serve.name, or model.name) on the
    same Ray cluster (ray.address=auto), through Ray's handles; the model, head and
    sequence rules must be the deployment's."""

    def __post_init__(self) -> None:
        for key in ("layers", "poolings"):
            values = getattr(self, key)
            # embed.layers=[]: no embeddings (a run of scores alone; checked in validate).
            if _is_set(values) and (
                (not values and key == "poolings") or len(set(values)) != len(values)
            ):
                shown = [str(v) for v in values]
                raise ConfigError(f"embed.{key} must list each value once, got {shown}")
        if _is_set(self.num_actors):
            actor_range(self.num_actors)
        _at_least("embed.per_token_max_tokens", self.per_token_max_tokens, 1)
        for key in ("tensor_parallel_size", "pipeline_parallel_size", "max_batch_tokens"):
            _at_least(f"embed.{key}", getattr(self, key), 1)
        _at_least("embed.max_restarts", self.max_restarts, 0)
        _within("embed.gpu_memory_utilization", self.gpu_memory_utilization, 0, 1, True)
        if _is_set(self.engines):
            engines_source(self.engines)


def engines_source(value: str) -> str | None:
    """embed.engines: None for the run's own engines, else the deployment's name."""
    if value == "own":
        return None
    kind, _, name = str(value).partition(":")
    if kind != "serve" or not name:
        raise ConfigError(
            f"embed.engines must be 'own' or 'serve:NAME' (a dnaembed-serve deployment), "
            f"got {value!r}"
        )
    return name


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
    layout: VariantLayout = VariantLayout.centred
    """Where a variant sits in its windows (variants and mutagenesis): centred (window.size
    // 2 bases before it) | end (variants.end_bases from its first base to the window's end:
    most of the window is left context, which the reference and alternate share, so a run
    that scores alone computes it once)."""
    end_bases: int = 32
    """The end layout: bases from the variant's first base to the window's end."""

    def __post_init__(self) -> None:
        _at_least("variants.end_bases", self.end_bases, 1)


@dataclass
class MutagenesisConfig:
    max_bases: int = 5000
    """The longest interval of input.mutagenesis (3 rows per base, plus one): a longer one is
    a config error naming it."""

    def __post_init__(self) -> None:
        _at_least("mutagenesis.max_bases", self.max_bases, 1)


@dataclass
class TracksConfig:
    context: int = 1024
    """Bases of left context every scored base has at least (windows of window.size overlap
    by this many; a contig's first bases have what exists). On the reverse strand: the
    bases to the right."""
    values: list[TrackValue] = field(default_factory=lambda: [TrackValue.logp, TrackValue.entropy])
    """logp (log P of the reference base given its context) | entropy (over A, C, G, T, in
    nats) | probs (P of A, C, G, T: four tracks). A, C, G, T renormalised to sum to one for
    entropy and probs."""
    strands: TrackStrands = TrackStrands.both
    """forward | reverse (on forward coordinates) | both (a track each) | merged (the mean of
    both strands per base; the Parquet keeps both)."""
    contigs: list[str] = field(default_factory=list)
    """Score only these contigs (empty: all); one the input lacks is an error."""
    regions: str | None = None
    """BED file (0-based, half-open): values only inside its intervals (with full context
    around them); a contig the input lacks is an error."""
    bigwig: bool = True
    """Write tracks/<track>.<strand>.bw from the committed shards at the end of the run."""

    def __post_init__(self) -> None:
        _at_least("tracks.context", self.context, 1)
        values = self.values
        if not _is_set(values) or len(set(values)) != len(values):
            raise ConfigError(f"tracks.values must list each value once, got {list(values)}")
        if len(set(self.contigs)) != len(self.contigs):
            raise ConfigError(f"tracks.contigs lists a contig twice: {list(self.contigs)}")


@dataclass
class ScoresConfig:
    compute: list[Score] = field(default_factory=list)
    """Zero-shot scores from the model's LM head, in the same pass as embed.layers (set
    embed.layers=[] for scores alone, the fastest: shared prefixes are computed once):
    loglik (per window: loglik_sum and loglik_mean of log P(x_t | x_<t) over its scored
    tokens) | llr (variants and mutagenesis: llr_sum, llr_mean of alternate minus reference,
    and llr_site for SNVs). `scores=[llr]` is shorthand. Causal models with an LM head and one
    token per base only."""
    per_token: bool = False
    """Regions and variants: also store per base logp (log P of the base), logp_bases
    (log-probs of A, C, G, T) and entropy, over the bases embed.per_token covers (bounded by
    embed.per_token_max_tokens)."""

    def __post_init__(self) -> None:
        values = self.compute
        if _is_set(values) and len(set(values)) != len(values):
            raise ConfigError(f"scores.compute must list each value once, got {list(values)}")

    @property
    def asked(self) -> bool:
        return bool(self.compute) or self.per_token


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
    mutagenesis: MutagenesisConfig = field(default_factory=MutagenesisConfig)
    scores: ScoresConfig = field(default_factory=ScoresConfig)
    tracks: TracksConfig = field(default_factory=TracksConfig)
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
    spans: bool = False
    """Run dnaembed's engine model even for the default head (layer -1, mean): it pools over
    any part of a sequence, which batch runs of regions (input.regions) and per-token output
    need from these engines (embed.engines=serve:NAME). Off: vLLM's own pooler."""

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


def validate(cfg: Config) -> Config:
    """Checks across keys (each key's own range is checked when the config is built)."""
    # The kinds of input build on these keys, so they are imported here, not at the top.
    from pipeline.kinds import kind_of

    kind_of(cfg).check()
    w = cfg.window
    if w.step > w.size:
        raise ConfigError(
            f"window.stride must be between 1 and window.size ({w.size}), got {w.stride}"
        )
    if w.min_length > w.size:
        raise ConfigError(
            f"window.min_length must be between 1 and window.size, got {w.min_length}"
        )
    name = engines_source(cfg.embed.engines)
    if name is not None and cfg.ray.address is None:
        raise ConfigError(
            f"embed.engines=serve:{name} uses a deployment's engines on its Ray cluster, and "
            "ray.address is null (a new local Ray for this run): join the cluster with "
            "ray=cluster (ray.address=auto) or ray.address=ADDRESS"
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
