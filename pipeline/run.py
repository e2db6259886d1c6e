"""One run: read -> window -> tokenize -> embed -> write, on Ray Data, then the manifest."""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

from omegaconf import OmegaConf

from pipeline import faults
from pipeline.config import Config, actor_range, fingerprint_fields, model_fingerprint, validate
from pipeline.embed.engine import (
    FINGERPRINTED_KEYS,
    EngineSpec,
    check_engine_kwargs,
    engine_env,
)
from pipeline.embed.placement import ActorShape, check_placement
from pipeline.embed.stage import EmbedStage
from pipeline.models import resolve_model_path, resolve_tokenizer_path
from pipeline.read.sources import expand_inputs
from pipeline.read.stage import ReadStage
from pipeline.stages import RunStats, StatsSink, actor_class
from pipeline.tokenize.stage import TokenizeStage
from pipeline.tokenize.tokenizer import DnaTokenizer, TokenizerSpec, check_window_fits
from pipeline.util import stable_hash
from pipeline.window.stage import WindowStage
from pipeline.write.layout import CONFIG, MANIFEST, OutputDir
from pipeline.write.manifest import build_manifest, claim_output
from pipeline.write.resume import SkipCommitted, check_exactly_once, scan_committed
from pipeline.write.stage import WriteStage


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
        )


@dataclass
class Plan:
    """Everything decided on the driver before any Ray work starts."""

    cfg: Config
    sources: list
    engine: EngineSpec
    tokenizer: TokenizerSpec
    fingerprint: str
    fields: dict
    model_key: str
    model_info: dict


def plan(cfg: Config) -> Plan:
    """Validate config and inputs, load the tokenizer, fingerprint the run. Fails fast."""
    validate(cfg)
    engine_kwargs = {**cfg.model.engine_kwargs, **cfg.embed.engine_kwargs}
    check_engine_kwargs(cfg.model.engine_kwargs, "model.engine_kwargs")
    check_engine_kwargs(cfg.embed.engine_kwargs)
    sources = expand_inputs(cfg.input.path, cfg.storage.options())
    model_path = resolve_model_path(cfg.model)
    tok_spec = TokenizerSpec(
        path=resolve_tokenizer_path(cfg.model),
        revision=cfg.model.revision,
        add_special_tokens=cfg.model.add_special_tokens,
        trust_remote_code=cfg.model.trust_remote_code,
    )
    check_window_fits(DnaTokenizer(tok_spec), cfg.window.size, cfg.model.max_model_len)
    fields = fingerprint_fields(cfg)
    affecting = {k: engine_kwargs[k] for k in FINGERPRINTED_KEYS if k in engine_kwargs}
    if affecting:
        fields["engine"] = affecting
    model_key = stable_hash({**model_fingerprint(cfg), **affecting})
    engine = EngineSpec(
        model=model_path,
        tokenizer=tok_spec.path,
        revision=cfg.model.revision,
        dtype=cfg.model.dtype,
        max_model_len=cfg.model.max_model_len,
        pooling=cfg.model.pooling,
        device=cfg.embed.device,
        tensor_parallel_size=cfg.embed.tensor_parallel_size,
        pipeline_parallel_size=cfg.embed.pipeline_parallel_size,
        gpu_memory_utilization=cfg.embed.gpu_memory_utilization,
        seed=cfg.embed.seed,
        trust_remote_code=cfg.model.trust_remote_code,
        engine_kwargs=engine_kwargs,
    )
    model_info = {
        "name": cfg.model.name,
        "path": model_path,
        "dtype": cfg.model.dtype,
        "pooling": cfg.model.pooling,
        "key": model_key,
    }
    return Plan(cfg, sources, engine, tok_spec, stable_hash(fields), fields, model_key, model_info)


def _init_ray(cfg: Config) -> bool:
    import ray

    if ray.is_initialized():
        return False
    ray.init(
        # "local": a new Ray for this run, even where `ray start` left one running.
        address=cfg.ray.address or "local",
        num_cpus=cfg.ray.num_cpus if cfg.ray.address is None else None,
        include_dashboard=False,
        log_to_driver=cfg.ray.log_to_driver,
        logging_level=cfg.ray.log_level,
    )
    logging.getLogger("ray.data").setLevel(cfg.ray.log_level)
    return True


def _resolve_device(device: str) -> str:
    import ray

    if device != "auto":
        return device
    return "cuda" if ray.cluster_resources().get("GPU", 0) > 0 else "cpu"


def build_dataset(p: Plan, stats: StatsSink, done: Any = None) -> Any:
    """The Ray Data plan; nothing runs until it is consumed. `done`: committed chunk ids."""
    import ray

    cfg = p.cfg
    cpus = cfg.ray.cpus_per_task
    storage = cfg.storage.options()
    # An armed fault (tests only) reaches every worker.
    task_env = {"runtime_env": {"env_vars": faults.env()}} if faults.env() else {}
    lo, hi = actor_range(cfg.embed.num_actors)
    ds = ray.data.from_items(
        [{"source": s.uri} for s in p.sources], override_num_blocks=len(p.sources)
    )
    ds = ds.map_batches(
        ReadStage(
            cfg.input.format,
            cfg.input.invalid_chars,
            cfg.input.ambiguity_codes,
            cfg.input.on_error,
            storage,
            stats,
        ),
        batch_size=1,
        batch_format="pyarrow",
        num_cpus=cpus,
        **task_env,
    )
    ds = ds.map_batches(
        WindowStage(cfg.window, p.model_key, stats),
        batch_size=None,
        batch_format="pyarrow",
        num_cpus=cpus,
        **task_env,
    )
    if done is not None:
        ds = ds.map_batches(
            SkipCommitted(done, stats),
            batch_size=None,
            batch_format="pyarrow",
            num_cpus=cpus,
            **task_env,
        )
    ds = ds.map_batches(
        TokenizeStage(p.tokenizer, cfg.model.max_model_len, cfg.embed.max_batch_tokens),
        batch_size=None,
        batch_format="pyarrow",
        num_cpus=cpus,
        **task_env,
    )
    # One pack (one token budget) per block, so packs spread evenly over the engines.
    ds = ds.repartition(target_num_rows_per_block=1)
    gpu_args = {"num_gpus": p.engine.gpus} if p.engine.gpus else {}
    env = {**engine_env(p.engine, cfg.embed.env_vars), **faults.env()}
    with warnings.catch_warnings():
        # Ray 2.60 warns about passing max_restarts this way but offers no other.
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        ds = ds.map_batches(
            actor_class(EmbedStage(p.engine, stats)),
            batch_size=1,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(min_size=lo, max_size=hi),
            num_cpus=cfg.embed.cpus_per_actor,
            max_restarts=cfg.embed.max_restarts,
            runtime_env={"env_vars": env},
            **gpu_args,
        )
    return ds.map_batches(
        WriteStage(
            cfg.output.path,
            p.fingerprint,
            {"dnaembed.model": p.model_info["name"], "dnaembed.pooling": cfg.model.pooling},
            cfg.output.compression,
            storage,
        ),
        batch_size=cfg.output.rows_per_shard,
        batch_format="pyarrow",
        num_cpus=cpus,
        **task_env,
    )


def run(cfg: Config, echo=print) -> RunSummary:
    """Embed `cfg.input` into `cfg.output`, resuming what an earlier attempt committed."""
    t0 = time.perf_counter()
    resolved = OmegaConf.to_yaml(OmegaConf.structured(cfg))
    echo(f"dnaembed config:\n{resolved}")
    p = plan(cfg)
    out = OutputDir(cfg.output.path, cfg.storage.options())
    existing = claim_output(out, p.fingerprint, p.fields, cfg.output.mode)
    if existing is not None:
        summary = RunSummary.from_manifest(cfg.output.path, existing, already_complete=True)
        echo(summary.line())
        return summary
    out.write_bytes(resolved.encode(), CONFIG)
    committed = scan_committed(out, p.fingerprint)
    if committed.rows:
        echo(
            f"dnaembed: resuming: {committed.rows} windows already in "
            f"{len(committed.shards)} committed shards"
        )

    import ray
    from ray.data import DataContext

    started = _init_ray(cfg)
    stats_actor = None
    try:
        p.engine.device = _resolve_device(cfg.embed.device)
        lo, _ = actor_range(cfg.embed.num_actors)
        shape = ActorShape(
            p.engine.gpus,
            cfg.embed.cpus_per_actor,
            lo,
            cfg.embed.tensor_parallel_size,
            cfg.embed.pipeline_parallel_size,
        )
        placed = check_placement(
            shape, cfg.ray.cpus_per_task, ray.nodes(), cfg.ray.placement_timeout_s
        )
        echo(f"dnaembed: {placed} on {p.engine.device}")
        DataContext.get_current().enable_progress_bars = cfg.ray.progress_bars
        stats_actor = ray.remote(RunStats).options(num_cpus=0).remote()
        stats = StatsSink(stats_actor)
        done = ray.put(committed.ids) if committed.rows else None
        commits = []
        for row in build_dataset(p, stats, done).iter_rows():
            commits.append(row)
            faults.trigger("driver.commits", len(commits))
        totals = stats.totals()
        check_exactly_once(totals, commits, committed)
        manifest = build_manifest(
            fingerprint=p.fingerprint,
            fields=p.fields,
            model={
                **p.model_info,
                "device": p.engine.device,
                "tensor_parallel_size": p.engine.tensor_parallel_size,
            },
            commits=committed.shards + commits,
            stats=totals,
            elapsed_s=time.perf_counter() - t0,
        )
        out.write_json(manifest, MANIFEST)
    finally:
        if stats_actor is not None:
            for handle in ray.get(stats_actor.actors.remote()):
                ray.kill(handle)
            ray.kill(stats_actor)
        if started:
            ray.shutdown()
    summary = RunSummary.from_manifest(cfg.output.path, manifest, already_complete=False)
    echo(summary.line())
    return summary
