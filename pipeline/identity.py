"""Run identity: the settings that decide an output's content (its fingerprint) and a window's
embedding (the model key in every chunk id), for batch runs and the service alike."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from pipeline.config import (
    MERGE,
    Config,
    EmbedConfig,
    ModelConfig,
    Pooling,
    Rna,
    SequenceRules,
)
from pipeline.kinds import Kind, kind_of


def default_outputs(cfg: Config) -> bool:
    """The one output every earlier version wrote: the last layer, mean-pooled."""
    return _default_embed(cfg.embed)


def _default_embed(embed: EmbedConfig) -> bool:
    return list(embed.layers) == [-1] and list(embed.poolings) == [Pooling.mean]


def _model_fields(m: ModelConfig) -> dict[str, Any]:
    return {
        "name": m.name,
        "path": m.path,
        "revision": m.revision,
        "tokenizer": m.tokenizer,
        "dtype": m.dtype,
        "pooling": "MEAN",  # the only pooling before embed.poolings
        "add_special_tokens": m.add_special_tokens,
        # Later keys count only where set (see `later` in fingerprint_fields).
        **({"quantization": m.quantization} if m.quantization else {}),
    }


def _embed_fields(embed: EmbedConfig, layers: list[int] | None) -> dict[str, Any] | None:
    """The embed keys that decide content: none for the default outputs (so outputs written
    before layers and poolings existed keep their fingerprint)."""
    out: dict[str, Any] = {}
    if not _default_embed(embed):
        out = {
            "layers": list(layers if layers is not None else embed.layers),
            "poolings": [str(p) for p in embed.poolings],
        }
    if embed.per_token:
        out["per_token"] = True
    return out or None


def fingerprint_fields(
    cfg: Config, layers: list[int] | None = None, kind: Kind | None = None
) -> dict[str, Any]:
    """The settings that decide output content; a resumed or re-run output must match these.

    `layers`: embed.layers as non-negative indices (so -1 and L are the same run). The
    default outputs add nothing, so outputs written before layers and poolings existed keep
    their fingerprint. `kind`: the plan's kind of input (else read from `cfg`).
    """
    # Keys added after outputs existed count only where set, so those outputs keep their
    # fingerprint: input.rna, the region/variant inputs, window.flank.
    later = {
        "rna": Rna.error,
        "reference": None,
        "regions": None,
        "variants": None,
        "mutagenesis": None,
        "tracks": None,
    }
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
        "model": _model_fields(cfg.model),
    }
    out.update((kind or kind_of(cfg)).fingerprint())
    if (embed := _embed_fields(cfg.embed, layers)) is not None:
        out["embed"] = embed
    if cfg.scores.asked:
        # Only when asked: outputs without scores keep their fingerprint.
        out["scores"] = {
            "compute": sorted(str(s) for s in cfg.scores.compute),
            "per_token": cfg.scores.per_token,
        }
    return out


def model_key_fields(
    model: ModelConfig,
    embed: EmbedConfig,
    rules: SequenceRules,
    layers: list[int] | None,
    merge_strands: bool,
    flank: int,
) -> dict[str, Any]:
    """What changes a window's embedding for fixed coordinates, from the keys that decide it
    (a batch run's config or the service's): goes into every chunk id."""
    embed_ = _embed_fields(embed, layers)
    return {
        **_model_fields(model),
        **({"embed": embed_} if embed_ is not None else {}),
        # A merged '+' row holds other numbers than a '+' row of either other mode.
        **({"strands": MERGE} if merge_strands else {}),
        # Regions: the flank is context the model sees.
        **({"flank": flank} if flank else {}),
        "ambiguity_codes": rules.ambiguity_codes,
        "invalid_chars": rules.invalid_chars,
    }


def model_fingerprint(cfg: Config, layers: list[int] | None = None) -> dict[str, Any]:
    """What changes a window's embedding for fixed coordinates: goes into every chunk id."""
    return model_key_fields(
        cfg.model, cfg.embed, cfg.input, layers, cfg.window.merge_strands, cfg.window.flank
    )
