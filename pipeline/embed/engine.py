"""Building the vLLM engine: pass tuning kwargs through, own the ones that decide correctness."""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pipeline.embed.outputs import ARCHITECTURE, CONFIG_KEY, DeviceHead
from pipeline.errors import ConfigError
from pipeline.util import require

if TYPE_CHECKING:
    from pipeline.config import EmbedConfig, ModelConfig


class EngineKeys(Protocol):
    """The config groups an engine is made from: a batch run's and the service's have both."""

    model: ModelConfig
    embed: EmbedConfig


VLLM_HINT = "pip install 'dnaembed[gpu]' (CUDA) or 'dnaembed[cpu]' (CPU build)"

# Keys we set from the config: an override in engine_kwargs would change what is computed
# (or would make vLLM truncate), so it is refused, naming the config key to use instead.
OWNED_KEYS = {
    "model": "model.path",
    "tokenizer": "model.tokenizer",
    "revision": "model.revision",
    "tokenizer_revision": "model.revision",
    "runner": "(always 'pooling')",
    "convert": "(always 'embed')",
    "task": "(always embed)",
    "dtype": "model.dtype",
    "quantization": "model.quantization",
    "max_model_len": "model.max_model_len",
    "pooler_config": "embed.poolings",
    "override_pooler_config": "embed.poolings",
    "trust_remote_code": "model.trust_remote_code",
    "tensor_parallel_size": "embed.tensor_parallel_size",
    "pipeline_parallel_size": "embed.pipeline_parallel_size",
    "truncate_prompt_tokens": "(windows are never truncated)",
    "tokenizer_mode": "(we tokenize; the engine gets token ids)",
    # Each window runs in one step (its pooling and scores need all of it); prefix caching
    # is ours to set: on only where no output needs every token's state (scores alone).
    "enable_chunked_prefill": "(each window runs in one engine step)",
    "enable_prefix_caching": "(on when a run computes scores alone, embed.layers=[], of windows "
    "that share prefixes)",
}

# Engine kwargs that change embeddings, allowed but recorded in the model fingerprint.
FINGERPRINTED_KEYS = ("kv_cache_dtype", "hf_overrides")


# Where the engine's core runs, per entry point. A batch run keeps it inside the actor
# process: one process fewer to spawn and import vLLM into (a tiny-model run took 28 s instead
# of 47 s on 2 cores; a Genos-1.2B run on an H200 started 30 s sooner) at the same tokens/s,
# since its calls block until the pack is done anyway. The service gives it a process of its
# own: a replica's event loop parses and answers requests while the engine runs, and in one
# process the two share the GIL with the engine's kernel launches (H200, 1.2B shape, 32
# clients of one 8 kb sequence each: 386k tokens/s in-process, 427k in a process of its own;
# BENCHMARKS.md, "Serving"). Tensor-parallel workers are processes of their own either way.
BATCH_ENGINE_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
SERVICE_ENGINE_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "1"}


def engine_env(
    user_env: dict[str, Any] | None = None, base: dict[str, str] = BATCH_ENGINE_ENV
) -> dict[str, str]:
    """The environment of an engine: ours (`base`), then `embed.env_vars`, which may set ours
    back (e.g. VLLM_ENABLE_V1_MULTIPROCESSING=1)."""
    return {**base, **{k: str(v) for k, v in (user_env or {}).items()}}


@dataclass
class EngineSpec:
    model: str
    tokenizer: str
    revision: str | None
    dtype: str
    max_model_len: int
    # vLLM's own pooler (MEAN or LAST of the last layer) when `head` is None; otherwise our
    # model class computes the head's layers and poolings (pipeline/embed/model.py).
    pooling: str
    device: str  # cpu | cuda
    head: dict[str, Any] | None = None
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    gpu_memory_utilization: float | None = None
    seed: int = 0
    trust_remote_code: bool = False
    quantization: str | None = None
    prefix_caching: bool = True
    """Scores alone: cache prefixes that windows share (a variant's alternates share their
    reference's); off where none are shared (tracks), so no block is hashed for nothing."""
    engine_kwargs: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=lambda: dict(BATCH_ENGINE_ENV))
    """The engine's environment (engine_env): set in its process before vLLM is imported."""
    deployment: str | None = None
    """The dnaembed-serve deployment whose engines answer (embed.engines=serve:NAME); None:
    an engine of its own (pipeline/embed/warm.py)."""

    @classmethod
    def from_config(
        cls,
        cfg: EngineKeys,
        model: str,
        tokenizer: str,
        engine_kwargs: dict[str, Any],
        head: DeviceHead | None = None,
        base_env: dict[str, str] = BATCH_ENGINE_ENV,
        prefix_caching: bool = True,
    ) -> EngineSpec:
        """The engine of a run or of the service; `device` stays as configured until the
        cluster is known. `head`: what our model class computes, or None for vLLM's own
        pooler; `base_env`: the entry point's engine variables (embed.env_vars go on top)."""
        m, e = cfg.model, cfg.embed
        return cls(
            model=model,
            tokenizer=tokenizer,
            revision=m.revision,
            dtype=m.dtype,
            max_model_len=m.max_model_len,
            # Scores alone: LAST, the pooler type with which vLLM caches prefixes (our model
            # pools nothing then); otherwise MEAN, which keeps each window in one step.
            pooling=("LAST" if not head.layers else "MEAN") if head else str(e.poolings[0]).upper(),
            head=head.to_dict() if head else None,
            device=e.device,
            tensor_parallel_size=e.tensor_parallel_size,
            pipeline_parallel_size=e.pipeline_parallel_size,
            gpu_memory_utilization=e.gpu_memory_utilization,
            seed=e.seed,
            trust_remote_code=m.trust_remote_code,
            quantization=str(m.quantization) if m.quantization else None,
            prefix_caching=prefix_caching,
            engine_kwargs=engine_kwargs,
            env=engine_env(e.env_vars, base_env),
        )

    @property
    def gpus(self) -> int:
        """GPUs of this process's engine (none where a deployment's engines answer)."""
        if self.device != "cuda" or self.deployment is not None:
            return 0
        return self.tensor_parallel_size * self.pipeline_parallel_size


def check_engine_kwargs(kwargs: dict[str, Any], where: str = "embed.engine_kwargs") -> None:
    for key in kwargs:
        if key in OWNED_KEYS:
            raise ConfigError(
                f"{where}.{key} is set by dnaembed because it decides the embeddings; "
                f"use {OWNED_KEYS[key]}"
            )


def engine_kwargs(spec: EngineSpec) -> dict[str, Any]:
    """Keyword arguments for `vllm.LLM`."""
    check_engine_kwargs(spec.engine_kwargs)
    kwargs = dict(spec.engine_kwargs)
    # Eager unless asked otherwise: CUDA graphs cover steps of at most 512 tokens and every
    # step of ours carries whole windows (thousands of tokens), so compiling buys nothing
    # (the same tokens/s measured both ways, BENCHMARKS.md, "Start-up") and costs start-up:
    # 20-30 s of torch.compile and graph capture per engine on a GPU, ~5 s on CPU.
    kwargs.setdefault("enforce_eager", True)
    util = spec.gpu_memory_utilization
    kwargs.update(
        model=spec.model,
        tokenizer=spec.tokenizer,
        revision=spec.revision,
        runner="pooling",
        convert="embed",
        dtype=spec.dtype,
        max_model_len=spec.max_model_len,
        tensor_parallel_size=spec.tensor_parallel_size,
        pipeline_parallel_size=spec.pipeline_parallel_size,
        trust_remote_code=spec.trust_remote_code,
        seed=spec.seed,
        gpu_memory_utilization=float(util)
        if util is not None
        else (0.2 if spec.device == "cpu" else 0.9),
    )
    if spec.quantization:
        kwargs["quantization"] = spec.quantization
    if spec.head is not None:
        head = DeviceHead.from_dict(spec.head)
        if not head.layers:
            # Scores alone: a variant's alternates reuse its reference's cached prefix
            # (pipeline/embed/core.py fills the skipped states); no chunked prefill, so each
            # window is computed in one step.
            kwargs.update(enable_prefix_caching=spec.prefix_caching, enable_chunked_prefill=False)
        else:
            kwargs["enable_prefix_caching"] = False
        kwargs["hf_overrides"] = {
            **kwargs.get("hf_overrides", {}),
            "architectures": [ARCHITECTURE],
            # Deeper blocks are neither built nor loaded.
            "num_hidden_layers": head.depth,
            CONFIG_KEY: head.to_dict(),
        }
        if spec.tensor_parallel_size > 1:
            # vLLM's compiler fuses each all-reduce with the next residual add + RMS norm,
            # writing the residual in place; our model also reads the residual stream between
            # blocks, and with the fusion on, TP=2 engines died at start with an illegal
            # memory access (H200, vLLM 0.26). Without it they run (BENCHMARKS.md, "Layers
            # and poolings").
            compilation = dict(kwargs.get("compilation_config") or {})
            compilation["pass_config"] = {
                **compilation.get("pass_config", {}),
                "fuse_allreduce_rms": False,
            }
            kwargs["compilation_config"] = compilation
    if spec.tensor_parallel_size * spec.pipeline_parallel_size > 1:
        # Workers as subprocesses of the actor, on the GPUs Ray gave it.
        kwargs.setdefault("distributed_executor_backend", "mp")
    return kwargs


# Fused-MoE kernel tiles tuned for Genos shapes on GPUs vLLM has none for (written by
# benchmarks/questions/moe_tune.py; Genos-10B on H200: 1.18x the kernel, 1.11x end to end).
MOE_CONFIGS = Path(__file__).with_name("moe_configs")
MOE_ENV = "VLLM_TUNED_CONFIG_FOLDER"


def use_moe_configs(spec: EngineSpec, environ: MutableMapping[str, str]) -> str | None:
    """Point vLLM at our MoE tiles unless the user chose a folder; vLLM falls back to its own
    for any shape or GPU without a file there. Returns the folder in use."""
    if spec.device == "cuda" and MOE_ENV not in environ:
        environ[MOE_ENV] = str(MOE_CONFIGS)
    return environ.get(MOE_ENV)


def build_llm(spec: EngineSpec) -> Any:
    # Set in the engine's process before vLLM reads them (and before its processes start:
    # they inherit them). Only the user's variables also travel in a Ray runtime_env, which
    # costs each actor a fresh worker process (about a second) instead of one Ray started in
    # advance; the spec holds both, so one place decides every value.
    os.environ.update(spec.env)
    use_moe_configs(spec, os.environ)
    vllm = require("vllm", VLLM_HINT)
    from vllm.config import PoolerConfig

    if spec.head is not None:
        # Every engine process (TP workers included) loads our model class by entry point.
        from pipeline.embed.plugin import make_discoverable

        make_discoverable()
    # use_activation=False: no normalisation; the default pooler of a converted causal LM is
    # not MEAN, so the pooling type is always set explicitly. With our head it stays MEAN:
    # that keeps each window in one engine step (no chunked prefill), which its pooling needs.
    pooler = PoolerConfig(pooling_type=spec.pooling, use_activation=False)
    return vllm.LLM(pooler_config=pooler, **engine_kwargs(spec))
