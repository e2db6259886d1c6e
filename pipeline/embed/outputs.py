"""What a run computes per window: (layer, pooling) pairs, their columns, and the engine's head.

Pure Python (no torch, no vLLM): the run and the engine's model (pipeline/embed/model.py)
share these; the columns' names and types are pipeline/rows.py's.

Layers are numbered as Hugging Face's `output_hidden_states`: 0 = token embeddings, k = output
of block k (pre-norm residual stream), L = the last block after the final norm; -1 means L.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from pipeline.errors import ConfigError
from pipeline.rows import column_name

# Our model class, and the hf_config attribute that tells it what to compute.
ARCHITECTURE = "DnaembedMixtralForEmbedding"
SUPPORTED_ARCHITECTURES = ("MixtralForCausalLM",)
CONFIG_KEY = "dnaembed_head"
# A request's PoolingParams.extra_kwargs key: [a, b), the token range to pool over (regions:
# the interval inside its flanks). Absent: the whole window.
SPAN_KEY = "dnaembed_span"
# ... and true when the request also wants the span's per-token hidden states of the head's
# layers (embed.per_token): they follow the pooled vector in the engine's output.
TOKENS_KEY = "dnaembed_tokens"
# ... and [a, b): the tokens whose log-probabilities under the model are wanted (scores): for
# each t in [a, b), log P(x_t | x_<t), the entropy of that prediction and the log-probs of the
# head's alphabet (A, C, G, T, N). They follow the rest of the request's output.
SCORE_KEY = "dnaembed_score"
# Values per scored token in the engine's output: log P(x_t), entropy, then the alphabet's.
SCORE_FIXED = 2


@dataclass(frozen=True)
class EmbeddingColumn:
    column: str
    layer: int  # non-negative
    pooling: str


def resolve_layers(layers: Sequence[int], num_layers: int) -> tuple[int, ...]:
    """`embed.layers` as non-negative indices (-1 = num_layers), checked against the model."""
    out = []
    for k in layers:
        i = num_layers + 1 + k if k < 0 else k
        if not 0 <= i <= num_layers:
            raise ConfigError(
                f"embed.layers: {k} is out of range for a model with {num_layers} layers "
                f"(0 = token embeddings .. {num_layers} = last, or -1 .. -{num_layers + 1})"
            )
        if i in out:
            raise ConfigError(f"embed.layers: layer {i} is listed twice ({list(layers)})")
        out.append(i)
    return tuple(out)


def embedding_columns(
    layers: Sequence[int], poolings: Sequence[str], num_layers: int
) -> list[EmbeddingColumn]:
    """One column per (layer, pooling), layers in the order given, then poolings."""
    return [EmbeddingColumn(column_name(k, p, num_layers), k, p) for k in layers for p in poolings]


def is_native(layers: Sequence[int], poolings: Sequence[str], num_layers: int) -> bool:
    """vLLM's own pooler computes this: the last layer, one pooling it has."""
    return tuple(layers) == (num_layers,) and tuple(poolings) in (("mean",), ("last",))


@dataclass(frozen=True)
class DeviceHead:
    """What our engine model computes: layers (sorted), poolings, over a model of num_layers;
    with `alphabet` (the token ids of A, C, G, T[, N]) also the LM head's log-probabilities.

    Its output per window is [len(layers), len(poolings), hidden] flattened, then what the
    request asks beside (per-token states, scores).
    """

    layers: tuple[int, ...]
    poolings: tuple[str, ...]
    num_layers: int
    alphabet: tuple[int, ...] = ()
    """Scores: the token ids whose log-probs every scored token reports; empty: no LM head."""

    @classmethod
    def of(
        cls,
        layers: Sequence[int],
        poolings: Sequence[str],
        num_layers: int,
        alphabet: Sequence[int] = (),
    ) -> DeviceHead:
        return cls(tuple(sorted(layers)), tuple(poolings), num_layers, tuple(alphabet))

    @classmethod
    def from_dict(cls, d: dict) -> DeviceHead:
        return cls(
            tuple(d["layers"]),
            tuple(d["poolings"]),
            int(d["num_layers"]),
            tuple(d.get("alphabet", ())),
        )

    def to_dict(self) -> dict:
        d = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        if not self.alphabet:
            # Without scores the head is what it was before them (the same hf_overrides).
            del d["alphabet"]
        return d

    @property
    def scores(self) -> bool:
        """The LM head runs (log-probabilities of the window's own tokens)."""
        return bool(self.alphabet)

    @property
    def depth(self) -> int:
        """Blocks to build and run (at least one: an engine needs an attention layer; all
        of them for scores, which read the last)."""
        if self.scores:
            return self.num_layers
        return max(1, max(self.layers, default=1))

    @property
    def captured(self) -> int:
        """Hidden-state blocks the model hands its pooler: the layers, and the last layer
        after them when scores need it and it is not among them."""
        extra = self.scores and self.num_layers not in self.layers
        return len(self.layers) + int(extra)

    @property
    def score_width(self) -> int:
        """Values per scored token in the engine's output."""
        return SCORE_FIXED + len(self.alphabet)

    def index(self, layer: int, pooling: str) -> int:
        """Position of (layer, pooling) among the output's len(layers) x len(poolings) parts."""
        return self.layers.index(layer) * len(self.poolings) + self.poolings.index(pooling)
