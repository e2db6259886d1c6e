"""One run: read -> window -> tokenize -> embed -> write, on Ray Data, then the manifest."""

from __future__ import annotations

import logging
import posixpath
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from omegaconf import OmegaConf

from pipeline.config import (
    MERGE,
    Config,
    EmbedConfig,
    InputKind,
    actor_range,
    fingerprint_fields,
    input_kind,
    model_fingerprint,
    validate,
)
from pipeline.console import (
    ProgressReporter,
    library_logs_routed,
    logging_to,
    worker_output_to_log,
)
from pipeline.embed.engine import FINGERPRINTED_KEYS, EngineSpec, check_engine_kwargs
from pipeline.embed.outputs import (
    ALLELES,
    ARCHITECTURE,
    CONFIG_KEY,
    METRICS,
    SUPPORTED_ARCHITECTURES,
    DeviceHead,
    EmbeddingColumn,
    embedding_columns,
    is_native,
    resolve_layers,
    suffixed,
)
from pipeline.embed.placement import ActorShape, EngineWatch, check_placement
from pipeline.embed.stage import EmbedStage
from pipeline.errors import ClusterError, ConfigError, InputError
from pipeline.models import model_layout, resolve_model_path
from pipeline.precheck import check_loci, check_tiles
from pipeline.read.pieces import plan_pieces
from pipeline.read.reference import Reference
from pipeline.read.sources import find_inputs
from pipeline.read.stage import ReadStage, RegionReadStage, VariantReadStage
from pipeline.stages import RunStats, Stage, StatsSink, add_stage
from pipeline.storage import failed_requests, store_errors
from pipeline.tokenize.budget import pack_budget
from pipeline.tokenize.stage import TokenizeStage
from pipeline.tokenize.tokenizer import DnaTokenizer, TokenizerSpec, check_window_fits
from pipeline.util import stable_hash
from pipeline.window.regions import RegionWindowStage
from pipeline.window.stage import WindowStage
from pipeline.window.variants import VariantWindowStage
from pipeline.write.layout import CONFIG, MANIFEST, ROW_ORDER, OutputDir
from pipeline.write.lease import Lease
from pipeline.write.manifest import build_manifest, claim_output
from pipeline.write.resume import Committed, SkipCommitted, check_exactly_once, scan_committed
from pipeline.write.stage import WriteStage

log = logging.getLogger(__name__)
Echo = Callable[[str], Any]


@dataclass
class RunSummary:
    output: str
    records: int
    records_skipped: int
    windows: int
    tokens: int
    elapsed_s: float
    already_complete: bool = False
    windows_resumed: int = 0
    input_errors: list = field(default_factory=list)
    storage_retries: int = 0
    skipped: list = field(default_factory=list)
    """The first records passed over, as the manifest lists them."""

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def line(self) -> str:
        state = "already complete, nothing to do: " if self.already_complete else ""
        resumed = f" ({self.windows_resumed} resumed)" if self.windows_resumed else ""
        text = (
            f"dnaembed: {state}{self.records} records ({self.records_skipped} skipped), "
            f"{self.windows} windows{resumed}, {self.tokens} tokens in {self.elapsed_s:.1f} s "
            f"({self.tokens_per_s:,.0f} tokens/s) -> {self.output}"
        )
        if self.storage_retries:
            n = self.storage_retries
            text += f"\ndnaembed: {n} object store requests failed and were retried"
        if self.records_skipped:
            first = "; ".join(_skip_reason(s) for s in self.skipped[:SKIPS_SHOWN])
            more = ", ..." if self.records_skipped > SKIPS_SHOWN else ""
            text += (
                f"\ndnaembed: warning: {self.records_skipped} of {self.records} records "
                f"skipped ({first}{more}); the manifest lists each (skipped_records)"
            )
        for e in self.input_errors:
            text += f"\ndnaembed: warning: input broke off after {e['records_read']} records: "
            text += e["reason"]
        return text

    @classmethod
    def from_manifest(cls, output: str, manifest: dict, already_complete: bool) -> RunSummary:
        c = manifest["counts"]
        return cls(
            output,
            c["records"],
            c["records_skipped"],
            c["windows"],
            c["tokens"],
            manifest["elapsed_s"],
            already_complete,
            c.get("windows_resumed", 0),
            manifest.get("input_errors", []),
            c.get("storage_retries", 0),
            manifest.get("skipped_records", [])[:SKIPS_SHOWN],
        )


SKIPS_SHOWN = 3  # skipped records named in the summary's warning


def _skip_reason(s: dict) -> str:
    where = s.get("seq_id") or "?"
    if "pos" in s:
        where += f":{s['pos']}"
    return f"{where} in {s.get('source', '?')}: {s.get('reason', '?')}"


def no_rows(manifest: dict, output: str) -> str:
    """Why a complete run wrote no row, from its counts."""
    c = manifest["counts"]
    why = []
    if not c.get("records"):
        why.append("the input holds no records")
    elif c.get("records_skipped") == c.get("records"):
        why.append(f"all {c['records']} records were skipped")
    elif not c.get("bases"):
        why.append(f"the {c['records']} records hold no bases")
    if c.get("windows_skipped_n"):
        why.append(f"{c['windows_skipped_n']} windows had more N than window.max_n_fraction")
    if c.get("windows_dropped"):
        why.append(
            f"{c['windows_dropped']} windows were dropped (window.last=drop, or shorter than "
            "window.min_length)"
        )
    for e in manifest.get("input_errors", []):
        why.append(f"{e['uri']} broke off after {e['records_read']} records")
    reasons = "; ".join(why) or "no window was made"
    return f"no rows were written to {output}: {reasons}; the manifest lists what was read"


@dataclass
class Plan:
    """Everything decided on the driver before any Ray work starts."""

    cfg: Config
    sources: list
    engine: EngineSpec
    tokenizer: DnaTokenizer
    fingerprint: str
    fields: dict
    model_key: str
    model_info: dict
    columns: list[EmbeddingColumn]
    kind: InputKind = InputKind.tiles
    pack_tokens: int = 0
    """Tokens per pack (pipeline/tokenize/budget.py)."""
    items: list[dict] = field(default_factory=list)
    """The read tasks' rows: one per file, or per piece of an indexed FASTA
    (pipeline/read/pieces.py); empty: one per file of `sources`."""
    hidden_size: int | None = None
    """The model's hidden size (the embedding columns' D), from its config."""
    notes: list[str] = field(default_factory=list)
    """What the input's directories passed over (pipeline/read/sources.py)."""


def embedding_head(
    cfg: Config,
    model_path: str,
    engine_kwargs: dict,
    spans: bool = False,
    layout: tuple[list[str], int | None, int | None] | None = None,
) -> tuple[list[EmbeddingColumn], DeviceHead | None]:
    """The run's embedding columns, and what our engine model computes (None: vLLM's own
    pooler does). `spans`: rows pool over a part of their window (regions), which only our
    model does. Checked against the model's config (`layout`: model_layout's answer, if read
    already) before any engine starts."""
    architectures, num_layers, _ = layout or model_layout(cfg.model, model_path)
    poolings = [str(p) for p in cfg.embed.poolings]
    if num_layers is None:
        raise ConfigError(
            f"model {cfg.model.name!r} ({model_path}) has no num_hidden_layers in its config: "
            "embed.layers cannot be resolved"
        )
    layers = resolve_layers(cfg.embed.layers, num_layers)
    columns = embedding_columns(layers, poolings, num_layers)
    if is_native(layers, poolings, num_layers) and not spans:
        return columns, None
    asked = f"embed.layers={list(cfg.embed.layers)} embed.poolings={poolings}"
    if spans:
        asked = (
            "input.regions (pooling over each interval inside its flanks) or embed.per_token "
            f"with {asked}"
        )
    if not set(architectures) & set(SUPPORTED_ARCHITECTURES):
        raise ConfigError(
            f"{asked} needs dnaembed's engine model, which supports "
            f"{', '.join(SUPPORTED_ARCHITECTURES)} (Genos); model {cfg.model.name!r} is "
            f"{', '.join(architectures) or 'of unknown architecture'}: only the last layer "
            "with mean or last pooling (vLLM's own pooler) is available for it"
        )
    if cfg.embed.pipeline_parallel_size > 1:
        raise ConfigError(
            f"{asked} runs with embed.pipeline_parallel_size=1 only "
            "(use embed.tensor_parallel_size to shard the model)"
        )
    ours = {"architectures", "num_hidden_layers", CONFIG_KEY} & set(
        engine_kwargs.get("hf_overrides") or {}
    )
    if ours:
        raise ConfigError(
            f"embed.engine_kwargs.hf_overrides sets {sorted(ours)}, which dnaembed sets to run "
            f"{ARCHITECTURE} for {asked}"
        )
    return columns, DeviceHead.of(layers, poolings, num_layers)


def plan(cfg: Config) -> Plan:
    """Validate config and inputs, load the tokenizer, fingerprint the run. Fails fast."""
    validate(cfg)
    engine_kwargs = {**cfg.model.engine_kwargs, **cfg.embed.engine_kwargs}
    check_engine_kwargs(cfg.model.engine_kwargs, "model.engine_kwargs")
    check_engine_kwargs(cfg.embed.engine_kwargs)
    kind = input_kind(cfg)
    storage = cfg.storage.options()
    found = find_inputs(
        {InputKind.tiles: cfg.input.path, InputKind.regions: cfg.input.regions}.get(
            kind, cfg.input.variants
        ),
        storage,
    )
    sources = found.sources
    if kind != InputKind.tiles:
        # Fails fast on a plain-gzip reference or an index it cannot build.
        Reference.prepare(cfg.input.reference, storage)
    # One read task per file, or per piece of an indexed FASTA (input.split_bases).
    items = (
        plan_pieces(sources, cfg.input, cfg.window, storage)
        if kind == InputKind.tiles
        else [{"source": s.uri} for s in sources]
    )
    model_path = resolve_model_path(cfg.model)
    tok_spec = TokenizerSpec.of_model(cfg.model)
    tokenizer = DnaTokenizer(tok_spec)
    if kind == InputKind.regions:
        check_regions_fit(tokenizer, cfg.window.flank, cfg.model.max_model_len)
    else:
        check_window_fits(tokenizer, cfg.window.size, cfg.model.max_model_len)
    # Regions pool over a part of each window, per_token returns the states themselves: only
    # our engine model does either.
    spans = kind == InputKind.regions or cfg.embed.per_token
    # Read once: for a hub id it is a download.
    layout = model_layout(cfg.model, model_path)
    columns, head = embedding_head(cfg, model_path, engine_kwargs, spans=spans, layout=layout)
    layers = list(dict.fromkeys(c.layer for c in columns))
    fields = fingerprint_fields(cfg, layers)
    affecting = {k: engine_kwargs[k] for k in FINGERPRINTED_KEYS if k in engine_kwargs}
    if affecting:
        fields["engine"] = affecting
    model_key = stable_hash({**model_fingerprint(cfg, layers), **affecting})
    engine = EngineSpec.from_config(cfg, model_path, tok_spec.path, engine_kwargs, head)
    window_tokens = (
        2 * cfg.window.flank + 1
        if kind == InputKind.regions
        else tokenizer.max_tokens(cfg.window.size)
    )
    pack_tokens = pack_budget(cfg, sources, window_tokens)
    model_info = {
        "name": cfg.model.name,
        "path": model_path,
        "dtype": cfg.model.dtype,
        **({"quantization": str(cfg.model.quantization)} if cfg.model.quantization else {}),
        "key": model_key,
    }
    p = Plan(
        cfg,
        sources,
        engine,
        tokenizer,
        stable_hash(fields),
        fields,
        model_key,
        model_info,
        columns,
        kind,
        pack_tokens,
        items=items,
        hidden_size=layout[2],
        notes=found.notes,
    )
    check_input(p)
    return p


def check_input(p: Plan) -> None:
    """The input's cheap checks (pipeline/precheck.py), with the run's own stages."""
    cfg = p.cfg
    if p.kind == InputKind.tiles:
        check_tiles(p.sources, cfg.input, cfg.window.min_length, cfg.storage.options())
    else:
        read, window = stages(p, StatsSink())[:2]
        check_loci(p.kind, p.sources, read, window)


def check_regions_fit(tokenizer: DnaTokenizer, flank: int, max_model_len: int) -> None:
    """Regions pool over token ranges of their window: one token per base, no specials; and
    the flanks must leave room for the interval in every tile."""
    if not tokenizer.char_level or tokenizer.n_special:
        raise ConfigError(
            "input.regions needs a tokenizer with one token per base and no special tokens "
            f"(model.add_special_tokens={tokenizer.spec.add_special_tokens}); this one is not"
        )
    if 2 * flank >= max_model_len:
        raise ConfigError(
            f"window.flank={flank} on both sides leaves no room for the interval in "
            f"model.max_model_len={max_model_len} tokens; lower window.flank"
        )


def _resolve_device(device: str) -> str:
    import ray

    if device != "auto":
        return device
    return "cuda" if ray.cluster_resources().get("GPU", 0) > 0 else "cpu"


def stages(p: Plan, stats: StatsSink, done: Any = None) -> list[Stage]:
    """The run's stages in data order. `done`: committed chunk ids (a resumed run)."""
    cfg = p.cfg
    storage = cfg.storage.options()
    i = cfg.input
    if p.kind == InputKind.tiles:
        read: list[Stage] = [
            ReadStage(
                i.format,
                i.invalid_chars,
                i.ambiguity_codes,
                i.on_error,
                storage,
                stats,
                rna=i.rna,
                window=cfg.window,
            ),
            WindowStage(cfg.window, p.model_key, stats),
        ]
    elif p.kind == InputKind.regions:
        read = [
            RegionReadStage(storage, stats),
            RegionWindowStage(
                cfg.window,
                cfg.regions.stranded,
                p.model_key,
                i.reference,
                storage,
                i,
                stats,
                cfg.embed.per_token_max_tokens if cfg.embed.per_token else None,
            ),
        ]
    else:
        read = [
            VariantReadStage(storage, stats),
            VariantWindowStage(cfg.window, p.model_key, i.reference, storage, i, stats),
        ]
    metadata = {
        "dnaembed.model": p.model_info["name"],
        "dnaembed.embeddings": ",".join(c.column for c in p.columns),
        "dnaembed.input": str(p.kind),
    }
    embed = EmbedStage(
        p.engine,
        cfg.embed,
        stats,
        p.columns,
        p.kind,
        cfg.model.max_model_len if p.kind == InputKind.regions else None,
        cfg.window.flank,
        cfg.variants.keep_embeddings,
        cfg.embed.per_token,
    )
    return [
        *read,
        *([SkipCommitted(done, stats)] if done is not None else []),
        TokenizeStage(
            p.tokenizer,
            cfg.model.max_model_len,
            p.pack_tokens,
            tiled=p.kind == InputKind.regions,
        ),
        embed,
        WriteStage(
            cfg.output.path,
            p.fingerprint,
            metadata,
            cfg.output.compression,
            storage,
            cfg.output.rows_per_shard,
            embed.adds,
            embed.row_columns,
            ROW_ORDER[str(p.kind)],
        ),
    ]


def build_dataset(p: Plan, stats: StatsSink, done: Any = None) -> Any:
    """The Ray Data plan, one file (or piece of one) per input block; nothing runs until it is
    consumed."""
    import ray

    items = p.items or [{"source": s.uri} for s in p.sources]
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    for stage in stages(p, stats, done):
        ds = add_stage(ds, stage, p.cfg.ray.cpus_per_task)
    return ds


@contextmanager
def ray_session(cfg: Config) -> Iterator[None]:
    """Ray for this run: joined or started (then stopped at the end)."""
    import ray
    import ray.data  # sets up its loggers on import: before they are routed

    with library_logs_routed(cfg.log):
        started = not ray.is_initialized()
        if started:
            ray.init(
                # "local": a new Ray for this run, even where `ray start` left one running.
                address=cfg.ray.address or "local",
                num_cpus=cfg.ray.num_cpus if cfg.ray.address is None else None,
                object_store_memory=(
                    cfg.ray.object_store_memory if cfg.ray.address is None else None
                ),
                include_dashboard=False,
                log_to_driver=cfg.ray.log_to_driver,
                logging_level=str(cfg.ray.log_level),
            )
            logging.getLogger("ray.data").setLevel(str(cfg.ray.log_level))
        try:
            with worker_output_to_log(cfg.log):
                yield
        finally:
            if started:
                ray.shutdown()


def place_engines(p: Plan) -> str:
    """Resolve the device and check that the cluster can host the engines (fails fast)."""
    lo, _ = actor_range(p.cfg.embed.num_actors)
    placed = place(p.engine, p.cfg, lo, p.cfg.ray.cpus_per_task)
    return f"{placed}, packs of up to {p.pack_tokens:,} tokens"


def place(engine: EngineSpec, cfg: Any, count: int, task_cpus: float) -> str:
    """Resolve the engine's device; check that the cluster can host `count` engines and
    `task_cpus` for tasks beside them (fails fast). `cfg`: a run's or the service's config."""
    import ray

    engine.device = _resolve_device(cfg.embed.device)
    shape = actor_shape(engine, cfg.embed, count)
    placed = check_placement(shape, task_cpus, ray.nodes(), cfg.ray.placement_timeout_s)
    return f"{placed} on {engine.device}"


def actor_shape(engine: EngineSpec, e: EmbedConfig, count: int) -> ActorShape:
    """What one engine actor needs of a node (once the device is resolved)."""
    return ActorShape(
        engine.gpus, e.cpus_per_actor, count, e.tensor_parallel_size, e.pipeline_parallel_size
    )


def on_this_node() -> Any:
    """Pin an actor to the driver's node: the run's bookkeeping must not die with a worker
    node (it would end the run); the driver's own node going means the run is gone anyway."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)


def embed_all(p: Plan, committed: Committed, echo: Echo, t0: float) -> dict:
    """Run the dataset to its end; the manifest of everything committed, checked."""
    import ray
    from ray.data import DataContext

    cfg = p.cfg
    ctx = DataContext.get_current()
    ctx.enable_progress_bars = cfg.ray.progress_bars
    # A stage's own error reaches the driver as itself (Ray Data would wrap a batch function's
    # in a UserCodeException that loses it on the way), so the user sees our message.
    ctx.raise_original_map_exception = True
    stats_actor = (
        ray.remote(RunStats).options(num_cpus=0, scheduling_strategy=on_this_node()).remote()
    )
    stats = StatsSink(stats_actor)
    try:
        done = ray.put(committed.ids) if committed.rows else None
        progress = ProgressReporter(
            stats.progress, len(p.sources), cfg.log.progress, cfg.log.interval_s, echo
        )
        # Engines lost with a node and never placed again would stall the run: end it instead.
        watch = EngineWatch(
            actor_shape(p.engine, cfg.embed, actor_range(cfg.embed.num_actors)[0]),
            cfg.ray.placement_timeout_s,
            lambda: ray.get(stats_actor.actors.remote()),
        )
        with progress, watch:
            try:
                commits = list(build_dataset(p, stats, done).iter_rows())
            except Exception as e:
                if watch.reason:
                    raise ClusterError(watch.reason) from e
                raise
        totals = stats.totals()
        if not commits and not committed.shards:
            # Nothing to embed: one shard of no rows still carries the columns and their
            # types, so the output loads (and reads with any Parquet reader) as what it is.
            commits = [write_empty_shard(p)]
    finally:
        # Stop the engines now: a failed run's held exception could keep them alive.
        for handle in ray.get(stats_actor.actors.remote()):
            ray.kill(handle)
        ray.kill(stats_actor)
    check_exactly_once(totals, commits, committed)
    return build_manifest(
        fingerprint=p.fingerprint,
        fields=p.fields,
        model={
            **p.model_info,
            "device": p.engine.device,
            "tensor_parallel_size": p.engine.tensor_parallel_size,
        },
        commits=committed.shards + commits,
        embeddings=manifest_embeddings(p),
        strands=_strands(cfg),
        kind=str(p.kind),
        scores=manifest_scores(p),
        stats=totals,
        elapsed_s=time.perf_counter() - t0,
    )


def write_empty_shard(p: Plan) -> dict:
    """Write the run's shard of no rows; its commit row."""
    *_, embed, write = stages(p, StatsSink())
    if p.hidden_size is None:
        raise ConfigError(f"model {p.cfg.model.name!r} has no hidden_size in its config")
    return write(embed.output_schema(p.hidden_size).empty_table()).to_pylist()[0]


def manifest_embeddings(p: Plan) -> list[dict]:
    """The embedding (vector) columns written: {column, layer, pooling[, allele]}."""
    if p.kind != InputKind.variants:
        return [asdict(c) for c in p.columns]
    if not p.cfg.variants.keep_embeddings:
        return []
    return [
        {**asdict(c), "column": suffixed(c.column, allele), "allele": allele}
        for c in p.columns
        for allele in ALLELES
    ]


def manifest_scores(p: Plan) -> list[dict]:
    """Variants: the score columns, {column, embedding, metric}; other runs have none."""
    if p.kind != InputKind.variants:
        return []
    return [
        {"column": suffixed(c.column, m), "embedding": c.column, "metric": m}
        for c in p.columns
        for m in METRICS
    ]


def _strands(cfg: Config) -> str:
    """forward | separate ('+' and '-' rows) | merged (the mean of both in one '+' row)."""
    rc = cfg.window.reverse_complement
    return "merged" if rc == MERGE else ("separate" if rc else "forward")


def header(p: Plan) -> str:
    cfg = p.cfg
    n = len(p.sources)
    first = p.sources[0].uri if n == 1 else f"{n} files"
    m = cfg.model
    what = ", ".join(c.column for c in p.columns)
    if cfg.window.merge_strands:
        what += ", strands merged"
    if p.kind == InputKind.regions:
        first += f" on {cfg.input.reference}"
        shape = f"each interval +- {cfg.window.flank} flank"
    elif p.kind == InputKind.variants:
        first += f" on {cfg.input.reference}"
        shape = f"ref and alt windows of {cfg.window.size}"
        what += " -> " + ", ".join(suffixed(c.column, m) for c in p.columns for m in METRICS)
    else:
        shape = f"window {cfg.window.size} every {cfg.window.step}"
    lines = [
        f"dnaembed: {first} -> {cfg.output.path}",
        f"dnaembed: model {m.name} ({m.dtype}{', ' + m.quantization if m.quantization else ''}), "
        f"{shape}: {what}",
    ]
    if cfg.log.file:
        lines.append(f"dnaembed: log {cfg.log.file}")
    return "\n".join(lines)


def run(cfg: Config, echo: Echo = print) -> RunSummary:
    """Embed `cfg.input` into `cfg.output`, resuming what an earlier attempt committed."""
    with logging_to(cfg.log):
        return _run(cfg, echo)


def _run(cfg: Config, echo: Echo) -> RunSummary:
    t0 = time.perf_counter()
    retried = failed_requests()
    resolved = OmegaConf.to_yaml(OmegaConf.structured(cfg))
    log.info("resolved config:\n%s", resolved)
    p = plan(cfg)
    echo(header(p))
    for note in p.notes:
        echo(f"dnaembed: {note}")
    out = OutputDir(cfg.output.path, cfg.storage.options())

    def output_ops() -> Any:
        # The driver's own requests to the output: a store that is down fails naming itself.
        return store_errors(out.fs, f"using the output {cfg.output.path}")

    # One driver per output: a second one stops here, naming the first.
    with output_ops():
        lease = Lease(out, p.fingerprint, cfg.output.lease_s).acquire()
    try:
        with output_ops():
            existing = claim_output(out, p.fingerprint, p.fields, cfg.output.mode)
            if existing is None:
                out.write_bytes(resolved.encode(), CONFIG)
                committed = scan_committed(out, p.fingerprint)
        if existing is not None:
            summary = RunSummary.from_manifest(cfg.output.path, existing, already_complete=True)
            echo(summary.line())
            if not summary.windows:
                raise InputError(no_rows(existing, cfg.output.path))
            return summary
        if committed.rows:
            echo(
                f"dnaembed: resuming: {committed.rows} windows already in "
                f"{len(committed.shards)} committed shards"
            )
        with ray_session(cfg):
            echo(f"dnaembed: {place_engines(p)}")
            manifest = embed_all(p, committed, echo, t0)
        with output_ops():
            lease.check()  # still ours: no manifest over another driver's run
            # The output then holds exactly the manifest's rows, for readers of the directory.
            out.prune({posixpath.basename(s["path"]) for s in manifest["shards"]})
            manifest["counts"]["storage_retries"] += failed_requests() - retried  # the driver's
            out.write_json(manifest, MANIFEST)
    finally:
        lease.release()
    summary = RunSummary.from_manifest(cfg.output.path, manifest, already_complete=False)
    echo(summary.line())
    if not summary.windows:
        raise InputError(no_rows(manifest, cfg.output.path))
    return summary
