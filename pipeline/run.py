"""One run: read -> window -> tokenize -> embed -> write, on Ray Data, then the manifest."""

from __future__ import annotations

import logging
import posixpath
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from omegaconf import OmegaConf

from pipeline.cluster import on_this_node, ray_session
from pipeline.config import MERGE, Config, actor_range, engines_source, validate
from pipeline.console import ProgressReporter, logging_to
from pipeline.embed import warm
from pipeline.embed.core import EngineCore
from pipeline.embed.engine import BATCH_ENGINE_ENV, EngineSpec
from pipeline.embed.outputs import EmbeddingColumn
from pipeline.embed.placement import EngineWatch, actor_shape, place
from pipeline.embed.plan import plan_engine
from pipeline.embed.stage import EmbedStage
from pipeline.embed.warm import Needs, Offer
from pipeline.errors import ClusterError, ConfigError, InputError
from pipeline.identity import fingerprint_fields, model_fingerprint
from pipeline.kinds import Kind, kind_of
from pipeline.read.reference import Reference
from pipeline.read.sources import find_inputs
from pipeline.stages import RunStats, Stage, StatsSink, add_stage, check_wiring
from pipeline.storage import failed_requests, store_errors
from pipeline.tokenize.budget import pack_budget
from pipeline.tokenize.stage import TokenizeStage
from pipeline.tokenize.tokenizer import DnaTokenizer
from pipeline.util import stable_hash
from pipeline.write.layout import CONFIG, MANIFEST, OutputDir
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
    kind: Kind
    sources: list
    engine: EngineSpec
    tokenizer: DnaTokenizer
    fingerprint: str
    fields: dict
    model_key: str
    model_info: dict
    columns: list[EmbeddingColumn]
    pack_tokens: int = 0
    """Tokens per pack (pipeline/tokenize/budget.py)."""
    items: list[dict] = field(default_factory=list)
    """The read tasks' rows: one per file, or per piece of an indexed FASTA
    (pipeline/read/pieces.py); empty: one per file of `sources`."""
    hidden_size: int | None = None
    """The model's hidden size (the embedding columns' D), from its config."""
    notes: list[str] = field(default_factory=list)
    """What the input's directories passed over (pipeline/read/sources.py)."""
    offer: Offer | None = None
    """embed.engines=serve:NAME: what the deployment whose engines the run uses computes."""

    @property
    def embed_actors(self) -> int:
        """The embed stage's actors (its smallest pool): one per engine of the run's own, or
        on a deployment's engines two per replica, so that each has the next pack queued
        while it runs one."""
        if self.offer is not None:
            return 2 * self.offer.replicas
        return actor_range(self.cfg.embed.num_actors)[0]


def plan(cfg: Config, attach: bool = False) -> Plan:
    """Validate config and inputs, load the tokenizer, fingerprint the run. Fails fast.
    `attach`: check a deployment the run's engines are on (embed.engines=serve:NAME) against
    the run, first (Ray must be up)."""
    validate(cfg)
    kind = kind_of(cfg)
    # Regions pool over a part of each window, per_token returns the states themselves: only
    # our engine model does either.
    engine = plan_engine(
        cfg,
        kind.spans() or cfg.embed.per_token,
        BATCH_ENGINE_ENV,
        scores=kind.scores_asked(),
        embeddings=kind.embeddings_asked(),
        prefix_caching=kind.shares_prefixes,
    )
    offer = None
    deployment = engines_source(cfg.embed.engines)
    if deployment is not None:
        engine.spec.deployment = deployment
        if attach:
            # Before any input is read: a deployment that cannot answer for this run is
            # refused naming what differs. The run then uses its model and head.
            needs = Needs(kind.spans(), cfg.embed.per_token, kind.scores_asked())
            engine.spec, offer = warm.attach(
                deployment, engine.spec, engine.columns, cfg.model.name, needs
            )
    storage = cfg.storage.options()
    found = find_inputs(kind.paths(), storage)
    sources = found.sources
    if kind.reference:
        # Fails fast on a plain-gzip reference or an index it cannot build.
        Reference.prepare(cfg.input.reference, storage)
    items = kind.items(sources, storage)
    kind.check_fits(engine.tokenizer)
    fields = fingerprint_fields(cfg, engine.layers, kind)
    affecting = engine.affecting
    if affecting:
        fields["engine"] = affecting
    model_key = stable_hash({**model_fingerprint(cfg, engine.layers), **affecting})
    pack_tokens = pack_budget(cfg, sources, kind.window_tokens(engine.tokenizer), kind)
    model_info = {
        "name": cfg.model.name,
        "path": engine.spec.model,
        "dtype": cfg.model.dtype,
        **({"quantization": str(cfg.model.quantization)} if cfg.model.quantization else {}),
        "key": model_key,
    }
    p = Plan(
        cfg,
        kind,
        sources,
        engine.spec,
        engine.tokenizer,
        stable_hash(fields),
        fields,
        model_key,
        model_info,
        engine.columns,
        pack_tokens,
        items=items,
        hidden_size=engine.hidden_size,
        notes=found.notes,
        offer=offer,
    )
    # The input's cheap checks (pipeline/precheck.py), with the run's own stages.
    kind.precheck(p.sources, p.model_key)
    return p


def stages(p: Plan, stats: StatsSink, done: Any = None) -> list[Stage]:
    """The run's stages in data order. `done`: committed chunk ids (a resumed run)."""
    cfg = p.cfg
    metadata = {
        "dnaembed.model": p.model_info["name"],
        "dnaembed.embeddings": ",".join(c.column for c in p.columns),
        "dnaembed.input": p.kind.name,
    }
    core = EngineCore(
        p.engine,
        p.columns,
        per_token=cfg.embed.per_token,
        # A window of a tiled kind longer than the model takes: tiles with flank context.
        tile_tokens=cfg.model.max_model_len if p.kind.tiled else None,
        flank=cfg.window.flank,
    )
    calls = p.embed_actors if p.offer is not None else None
    embed = EmbedStage(core, p.kind, cfg.embed, stats, calls=calls)
    return [
        *p.kind.read_stages(p.model_key, stats),
        *([SkipCommitted(done, stats)] if done is not None else []),
        TokenizeStage(p.tokenizer, cfg.model.max_model_len, p.pack_tokens, tiled=p.kind.tiled),
        embed,
        WriteStage(
            cfg.output.path,
            p.fingerprint,
            metadata,
            cfg.output.compression,
            cfg.storage.options(),
            p.kind.rows_per_shard(cfg.output.rows_per_shard),
            embed.adds,
            embed.row_columns,
            p.kind.row_order,
        ),
    ]


def build_dataset(p: Plan, stats: StatsSink, done: Any = None) -> Any:
    """The Ray Data plan, one file (or piece of one) per input block; nothing runs until it is
    consumed. The stages' columns are checked against each other first."""
    import ray

    items = p.items or [{"source": s.uri} for s in p.sources]
    run_stages = stages(p, stats, done)
    check_wiring(run_stages, tuple(dict.fromkeys(k for item in items[:1] for k in item)))
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    for stage in run_stages:
        ds = add_stage(ds, stage, p.cfg.ray.cpus_per_task)
    return ds


def place_engines(p: Plan) -> str:
    """Resolve the device and check that the cluster can host the engines (fails fast)."""
    cfg = p.cfg
    if p.offer is not None:
        return (
            f"engines of deployment {p.offer.name!r}: {p.offer.shown}; packs of up to "
            f"{p.pack_tokens:,} tokens"
        )
    lo, _ = actor_range(cfg.embed.num_actors)
    placed = place(p.engine, cfg.embed, lo, cfg.ray.cpus_per_task, cfg.ray.placement_timeout_s)
    return f"{placed}, packs of up to {p.pack_tokens:,} tokens"


BLOCK_BYTES = 32 << 20


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
    # Ray Data gathers what a fused task's stages yield into blocks of up to this size before
    # the next stage sees them: a read task holds that much of its file at once (and a copy),
    # so it is kept near the read stage's own batches (ReadStage.part_bases).
    ctx.target_max_block_size = min(ctx.target_max_block_size or BLOCK_BYTES, BLOCK_BYTES)
    stats_actor = (
        ray.remote(RunStats).options(num_cpus=0, scheduling_strategy=on_this_node()).remote()
    )
    stats = StatsSink(stats_actor)
    try:
        done = ray.put(committed.ids) if committed.rows else None
        progress = ProgressReporter(
            stats.progress,
            len(p.sources),
            cfg.log.progress,
            cfg.log.interval_s,
            echo,
            engines=p.embed_actors,
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
        embeddings=p.kind.manifest_embeddings(p.columns),
        strands=p.kind.manifest_strands() or _strands(cfg),
        kind=p.kind.name,
        coordinates=p.kind.coordinates,
        scores=p.kind.manifest_scores(p.columns),
        stats=totals,
        elapsed_s=time.perf_counter() - t0,
    )


def write_empty_shard(p: Plan) -> dict:
    """Write the run's shard of no rows; its commit row."""
    *_, embed, write = stages(p, StatsSink())
    if p.hidden_size is None:
        raise ConfigError(f"model {p.cfg.model.name!r} has no hidden_size in its config")
    return write(embed.output_schema(p.hidden_size).empty_table()).to_pylist()[0]


def _strands(cfg: Config) -> str:
    """forward | separate ('+' and '-' rows) | merged (the mean of both in one '+' row)."""
    rc = cfg.window.reverse_complement
    return "merged" if rc == MERGE else ("separate" if rc else "forward")


def header(p: Plan) -> str:
    cfg = p.cfg
    n = len(p.sources)
    first = p.sources[0].uri if n == 1 else f"{n} files"
    m = cfg.model
    # The kind shows its own scores itself (variants: after its distances).
    own = set(p.kind.own_scores())
    scores = [c for c in p.kind.score_columns() if c not in own] if p.kind.scores_asked() else []
    what = ", ".join([c.column for c in p.columns] + scores)
    if cfg.window.merge_strands:
        what += ", strands merged"
    first, shape, what = p.kind.header(first, what, p.columns)
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
    resolved = OmegaConf.to_yaml(OmegaConf.structured(cfg))
    log.info("resolved config:\n%s", resolved)
    deployment = engines_source(cfg.embed.engines)
    if deployment is None:
        return _run_planned(cfg, echo, t0, resolved, plan(cfg))
    # The deployment's engines are asked what they compute before anything is read: its
    # Ray cluster is joined first, for the whole run.
    with ray_session(cfg):
        return _run_planned(cfg, echo, t0, resolved, plan(cfg, attach=True))


def _run_planned(cfg: Config, echo: Echo, t0: float, resolved: str, p: Plan) -> RunSummary:
    retried = failed_requests()
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
        with nullcontext() if p.offer is not None else ray_session(cfg):
            echo(f"dnaembed: {place_engines(p)}")
            manifest = embed_all(p, committed, echo, t0)
        with output_ops():
            lease.check()  # still ours: no manifest over another driver's run
            # The output then holds exactly the manifest's rows, for readers of the directory.
            out.prune({posixpath.basename(s["path"]) for s in manifest["shards"]})
            manifest.update(p.kind.finish(out, manifest))
            lease.check()
            manifest["counts"]["storage_retries"] += failed_requests() - retried  # the driver's
            out.write_json(manifest, MANIFEST)
    finally:
        lease.release()
    summary = RunSummary.from_manifest(cfg.output.path, manifest, already_complete=False)
    echo(summary.line())
    if not summary.windows:
        raise InputError(no_rows(manifest, cfg.output.path))
    return summary
