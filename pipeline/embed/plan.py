"""Planning an engine, the same for a batch run and the service: the model, its tokenizer,
the columns and head, the engine spec. Runs on the driver and fails fast."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.embed.engine import FINGERPRINTED_KEYS, EngineKeys, EngineSpec, check_engine_kwargs
from pipeline.embed.outputs import (
    ARCHITECTURE,
    CONFIG_KEY,
    SUPPORTED_ARCHITECTURES,
    DeviceHead,
    EmbeddingColumn,
    embedding_columns,
    is_native,
    resolve_layers,
)
from pipeline.errors import ConfigError
from pipeline.models import model_layout, resolve_model_path
from pipeline.tokenize.tokenizer import DnaTokenizer, TokenizerSpec


@dataclass
class EnginePlan:
    """What an entry point needs to start engines and to name their outputs."""

    spec: EngineSpec
    columns: list[EmbeddingColumn]
    tokenizer: DnaTokenizer
    hidden_size: int | None
    """The model's hidden size (the embedding columns' D), from its config."""
    engine_kwargs: dict
    """model.engine_kwargs and embed.engine_kwargs, merged (the latter win)."""

    @property
    def affecting(self) -> dict:
        """The engine kwargs that change embeddings (recorded in the model key)."""
        kw = self.engine_kwargs
        return {k: kw[k] for k in FINGERPRINTED_KEYS if k in kw}

    @property
    def layers(self) -> list[int]:
        """The layers of the columns, each once, in their order."""
        return list(dict.fromkeys(c.layer for c in self.columns))


def plan_engine(
    cfg: EngineKeys,
    spans: bool,
    base_env: dict[str, str],
    scores: bool = False,
    embeddings: bool = True,
    prefix_caching: bool = True,
) -> EnginePlan:
    """The engine of `cfg` (a run's or the service's config). `spans`: rows pool over a part
    of their window or want per-token states, which only our model does; `base_env`: the
    entry point's engine variables (pipeline/embed/engine.py); `scores`: the LM head runs
    too; `embeddings`: embed.layers x embed.poolings are computed (not with scores alone);
    `prefix_caching`: scores alone share prefixes worth caching."""
    check_engine_kwargs(cfg.model.engine_kwargs, "model.engine_kwargs")
    check_engine_kwargs(cfg.embed.engine_kwargs)
    engine_kwargs = {**cfg.model.engine_kwargs, **cfg.embed.engine_kwargs}
    model_path = resolve_model_path(cfg.model)
    tok_spec = TokenizerSpec.of_model(cfg.model)
    tokenizer = DnaTokenizer(tok_spec)
    # Read once: for a hub id it is a download.
    layout = model_layout(cfg.model, model_path)
    columns, head = embedding_head(
        cfg,
        model_path,
        engine_kwargs,
        spans=spans,
        layout=layout,
        alphabet=score_alphabet(cfg, model_path, tokenizer, layout) if scores else (),
        embeddings=embeddings,
    )
    spec = EngineSpec.from_config(
        cfg, model_path, tok_spec.path, engine_kwargs, head, base_env, prefix_caching
    )
    return EnginePlan(spec, columns, tokenizer, layout[2], engine_kwargs)


def embedding_head(
    cfg: EngineKeys,
    model_path: str,
    engine_kwargs: dict,
    spans: bool = False,
    layout: tuple[list[str], int | None, int | None] | None = None,
    alphabet: tuple[int, ...] = (),
    embeddings: bool = True,
) -> tuple[list[EmbeddingColumn], DeviceHead | None]:
    """The embedding columns, and what our engine model computes (None: vLLM's own pooler
    does). `spans`: rows pool over a part of their window (regions), which only our model
    does; `alphabet`: scores' token ids (score_alphabet), empty without scores;
    `embeddings`: false for scores alone. Checked against the model's config (`layout`:
    model_layout's answer, if read already) before any engine starts."""
    architectures, num_layers, _ = layout or model_layout(cfg.model, model_path)
    poolings = [str(p) for p in cfg.embed.poolings]
    if num_layers is None:
        raise ConfigError(
            f"model {cfg.model.name!r} ({model_path}) has no num_hidden_layers in its config: "
            "embed.layers cannot be resolved"
        )
    if not embeddings or not cfg.embed.layers:
        if not alphabet:
            raise ConfigError("embed.layers=[] computes no embeddings: list some layers")
        layers: tuple[int, ...] = ()
    else:
        layers = resolve_layers(cfg.embed.layers, num_layers)
    columns = embedding_columns(layers, poolings, num_layers)
    if is_native(layers, poolings, num_layers) and not spans and not alphabet:
        return columns, None
    asked = f"embed.layers={list(cfg.embed.layers)} embed.poolings={poolings}"
    if alphabet:
        asked = "scores"
    elif spans:
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
    return columns, DeviceHead.of(layers, poolings, num_layers, alphabet)


def score_alphabet(
    cfg: EngineKeys,
    model_path: str,
    tokenizer: DnaTokenizer,
    layout: tuple[list[str], int | None, int | None],
) -> tuple[int, ...]:
    """The token ids of A, C, G, T (and N where the vocabulary has it) that scores report,
    after checking that the model can score: a causal LM with its LM head's weights and a
    tokenizer of one token per base. Fails naming the model and what is missing."""
    name = f"model {cfg.model.name!r} ({model_path})"
    architectures = layout[0]
    if not any(a.endswith("ForCausalLM") for a in architectures):
        raise ConfigError(
            f"scores need a causal language model with an LM head; {name} is "
            f"{', '.join(architectures) or 'of unknown architecture'}"
        )
    if not tokenizer.char_level or tokenizer.n_special:
        raise ConfigError(
            f"scores need a tokenizer with one token per base and no special tokens; {name}'s "
            f"is not (model.add_special_tokens={tokenizer.spec.add_special_tokens})"
        )
    if lm_head_weights(model_path) is False:
        raise ConfigError(
            f"scores need the LM head's weights, and {name} has no lm_head.weight (and does not "
            "tie it to its embeddings)"
        )
    ids = [tokenizer.token_id(b) for b in "ACGTN"]
    if any(i is None for i in ids[:4]):
        raise ConfigError(f"scores need tokens for A, C, G and T; {name}'s tokenizer lacks some")
    return tuple(i for i in ids if i is not None)


def lm_head_weights(model_path: str) -> bool | None:
    """Whether a local checkpoint has LM-head weights (or ties them to its embeddings);
    None where that cannot be told without loading it (a hub id not downloaded)."""
    import json
    from pathlib import Path

    root = Path(model_path)
    config = root / "config.json"
    if not config.is_file():
        return None
    if json.loads(config.read_text()).get("tie_word_embeddings"):
        return True
    index = root / "model.safetensors.index.json"
    if index.is_file():
        return "lm_head.weight" in json.loads(index.read_text()).get("weight_map", {})
    files = sorted(root.glob("*.safetensors"))
    if not files:
        return None
    from safetensors import safe_open

    for f in files:
        with safe_open(str(f), "np") as st:
            names = set(st.keys())
            if "lm_head.weight" in names:
                return True
    return False
