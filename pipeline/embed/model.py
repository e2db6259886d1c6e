"""dnaembed's vLLM model for Mixtral-architecture models (Genos): chosen layers, chosen poolings.

vLLM offers the last layer only, pooled by MEAN, LAST or CLS. This model runs the blocks up to
the deepest requested layer (deeper blocks are neither built nor loaded), keeps the requested
layers' hidden states side by side, and pools each over every window's tokens on the device:
the engine returns one float32 vector per window, [layer, pooling, hidden] flattened; per-token
tensors never leave the GPU.

Layers are numbered as Hugging Face's `output_hidden_states`: 0 is the token embeddings, k the
output of block k (the residual stream, before any norm), and L (the last) the output of the
final norm. It is loaded in every engine process through the `vllm.general_plugins` entry point
(pipeline/embed/plugin.py) and chosen with `hf_overrides` (pipeline/embed/engine.py).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Set
from typing import Any

import numpy as np
import torch
from torch import nn
from vllm.config import VllmConfig
from vllm.distributed import (
    get_tensor_model_parallel_world_size,
    tensor_model_parallel_all_gather,
)
from vllm.model_executor.layers.pooler import Pooler, PoolingParamsUpdate
from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead
from vllm.model_executor.models.mixtral import MixtralModel
from vllm.model_executor.models.utils import maybe_prefix
from vllm.sequence import IntermediateTensors
from vllm.v1.pool.metadata import PoolingMetadata

from pipeline.embed.outputs import CONFIG_KEY, SCORE_KEY, SPAN_KEY, TOKENS_KEY, DeviceHead

# Mean pooling accumulates float32 sums this many bytes of hidden states at a time, so a
# 1M-token window never needs a float32 copy of all its tokens at once.
_CHUNK_BYTES = 32 * 1024 * 1024
# Up to this many windows in a step, each is pooled by dense reductions of its own; beyond,
# all tokens are reduced at once by segment (many short windows, e.g. reads).
LOOP_SEQS = 32
# Scored tokens per LM-head matmul: bounds the float32 logits held at once.
_SCORE_ROWS = 65536


class LayerCaptureModel(MixtralModel):
    """MixtralModel built with only the blocks we run; forward returns the captured layers
    concatenated along the hidden dimension. `head` is set by the model that builds it."""

    head: DeviceHead
    input_ids: torch.Tensor | None = None
    """The step's token ids, kept for the pooler: a scored token's id is the one after the
    hidden state that predicts it, in the same flattened order."""

    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors: IntermediateTensors | None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        head = self.head
        self.input_ids = input_ids
        hidden = inputs_embeds if inputs_embeds is not None else self.embed_input_ids(input_ids)
        residual = None
        captured = []
        if 0 in head.layers:
            # The next block's fused add-norm updates its residual input in place: copy.
            captured.append(hidden.clone())
        for k, layer in enumerate(self.layers[self.start_layer : self.end_layer], start=1):
            hidden, residual = layer(positions, hidden, residual)
            if k in head.layers and k != head.num_layers:
                # vLLM carries the residual stream in two parts; HF's hidden_states[k] is
                # their sum.
                captured.append(hidden + residual)
        if head.num_layers in head.layers or head.scores:
            # Scores read the last layer after the final norm: captured last, once.
            normed, _ = self.norm(hidden, residual)
            captured.append(normed)
        return captured[0] if len(captured) == 1 else torch.cat(captured, dim=-1)


class LayerPooler(Pooler):
    """Pools each captured layer by each requested method over each window's tokens; with
    scores, also the log-probabilities of the tokens a request asks for (SCORE_KEY)."""

    def __init__(self, head: DeviceHead, hidden_size: int, model: nn.Module | None = None):
        super().__init__()
        self.head = head
        self.hidden_size = hidden_size
        # The model holding the LM head and the step's token ids (scores only).
        self._model = [model]

    def get_supported_tasks(self) -> Set[str]:
        return {"embed"}

    def get_pooling_updates(self, task: str) -> PoolingParamsUpdate:
        return PoolingParamsUpdate()

    def forward(
        self, hidden_states: torch.Tensor, pooling_metadata: PoolingMetadata
    ) -> torch.Tensor:
        cursor = pooling_metadata.get_pooling_cursor()
        if _split_window(cursor):
            # The engine is built without chunked prefill (MEAN in its pooler config, or
            # chunked prefill off for scores), which keeps every window in one step; a split
            # window would pool a part of it.
            raise RuntimeError("dnaembed pooling needs each window in one step")
        # Tokens computed in this step per window: all of it, less its prefix-cached tokens
        # (an engine that scores alone caches prefixes; the others do not).
        lens_cpu = cursor.num_scheduled_tokens_cpu
        cached = (cursor.prompt_lens_cpu - lens_cpu).tolist()
        n_seqs = int(lens_cpu.numel())
        params = pooling_metadata.pooling_params
        n_layers, d = len(self.head.layers), self.hidden_size
        full = hidden_states.view(-1, self.head.captured, d)
        starts = [0, *itertools.accumulate(lens_cpu.tolist())][:-1]
        scored = self._scores(full, params, starts, lens_cpu.tolist(), cached)
        if n_layers == 0:
            return _joined(torch.zeros((n_seqs, 0), device=hidden_states.device), scored)
        if any(cached):
            raise RuntimeError("dnaembed pooling needs every token: prefix caching is on")
        hidden_states = full[:, :n_layers].reshape(-1, n_layers * d)
        x = hidden_states.view(-1, n_layers, d)
        out = torch.empty(
            (n_seqs, n_layers, len(self.head.poolings), d),
            dtype=torch.float32,
            device=hidden_states.device,
        )
        if n_seqs == 0:
            return out.view(0, -1)
        lens_list = lens_cpu.tolist()
        spans = request_spans(params, lens_list)
        if n_seqs <= LOOP_SEQS:
            # Few windows per step (the usual case: a step holds max_model_len tokens): one
            # dense reduction per window beats scattering every token.
            for i, (lo, (a, b)) in enumerate(zip(starts, spans, strict=True)):
                seg = x[lo + a : lo + b]
                for j, how in enumerate(self.head.poolings):
                    out[i, :, j] = _pool_one(seg, how)
            return _joined(_with_tokens(out.view(n_seqs, -1), x, params, starts, spans), scored)
        dev = hidden_states.device
        segment = torch.repeat_interleave(
            torch.arange(n_seqs, device=dev),
            lens_cpu.to(device=dev, dtype=torch.int64, non_blocking=True),
            output_size=int(lens_cpu.sum()),
        )
        span_lens = torch.tensor([b - a for a, b in spans], dtype=torch.int64)
        lasts = torch.tensor([lo + b - 1 for lo, (_, b) in zip(starts, spans, strict=True)])
        if any(b - a != n for (a, b), n in zip(spans, lens_list, strict=True)):
            # Pool over each window's span only: drop the other (flank) tokens first.
            first = torch.tensor(starts, dtype=torch.int64, device=dev)
            a_ = torch.tensor([a for a, _ in spans], dtype=torch.int64, device=dev)
            b_ = torch.tensor([b for _, b in spans], dtype=torch.int64, device=dev)
            pos = torch.arange(segment.numel(), device=dev) - first[segment]
            keep = (pos >= a_[segment]) & (pos < b_[segment])
            x, segment = x[keep], segment[keep]
        span_lens = span_lens.to(device=dev, non_blocking=True)
        for j, how in enumerate(self.head.poolings):
            if how == "last":
                out[:, :, j] = hidden_states.view(-1, n_layers, d)[lasts.to(dev)].float()
            elif how == "mean":
                out[:, :, j] = _segment_reduce(x, segment, n_seqs, "sum") / span_lens.view(-1, 1, 1)
            elif how == "max":
                out[:, :, j] = _segment_reduce(x, segment, n_seqs, "amax")
            else:  # the config refuses others before any engine starts
                raise ValueError(f"unknown pooling {how!r}")
        x_all = hidden_states.view(-1, n_layers, d)
        return _joined(_with_tokens(out.view(n_seqs, -1), x_all, params, starts, spans), scored)

    def _scores(
        self,
        captured: torch.Tensor,
        params: list,
        starts: list[int],
        lens: list[int],
        cached: list[int],
    ) -> list[torch.Tensor | None] | None:
        """Per request asking for SCORE_KEY [a, b): a [1 + b - a, width] block flattened: a
        header row (its cached token count first), then per t in [a, b) log P(x_t | x_<t),
        the entropy and the alphabet's log-probs (NaN where the state predicting t is
        prefix-cached, so not computed here). All of them views of one tensor, filled by one
        scatter: a step may hold a thousand short windows."""
        head = self.head
        asked = [(p.extra_kwargs or {}).get(SCORE_KEY) if p is not None else None for p in params]
        if not any(a is not None for a in asked):
            return None
        if not head.scores:
            raise ValueError("this engine was built without its LM head: no scores")
        model = self._model[0]
        assert model is not None
        dev = captured.device
        width = head.score_width
        src, dest, headers, sizes, offset = [], [], [], [], 0
        for rng, lo, n, k in zip(asked, starts, lens, cached, strict=True):
            if rng is None:
                sizes.append(0)
                continue
            a, b = int(rng[0]), int(rng[1])
            if not 1 <= a <= b <= k + n:
                raise ValueError(f"score range {rng} does not fit a window of {k + n} tokens")
            first = max(a, k + 1)
            # Token t is predicted by the state of t - 1: row lo + (t - 1 - k) of this step.
            src.append(np.arange(lo + first - 1 - k, lo + b - 1 - k))
            dest.append(np.arange(offset + 1 + first - a, offset + 1 + b - a))
            headers.append((offset, k))
            sizes.append(1 + b - a)
            offset += 1 + b - a
        rows = torch.from_numpy(np.concatenate(src)).to(dev)
        to = torch.from_numpy(np.concatenate(dest)).to(dev)
        # The scored token's id is the next row's input id (the same window: t < b <= n).
        targets = model.model.input_ids[rows + 1]
        normed = captured[:, -1]
        alphabet = torch.tensor(head.alphabet, dtype=torch.long, device=dev)
        out = torch.full((offset, width), float("nan"), dtype=torch.float32, device=dev)
        for lo in range(0, rows.numel(), _SCORE_ROWS):
            part = rows[lo : lo + _SCORE_ROWS]
            logp = torch.log_softmax(model.logits(normed[part]).float(), dim=-1)
            values = torch.empty((part.numel(), width), dtype=torch.float32, device=dev)
            values[:, 0] = logp.gather(1, targets[lo : lo + part.numel()].view(-1, 1)).view(-1)
            values[:, 1] = -(logp.exp() * logp).sum(-1)
            values[:, 2:] = logp[:, alphabet]
            out[to[lo : lo + part.numel()]] = values
        where, count = zip(*headers, strict=True)
        out[torch.tensor(where, device=dev), 0] = torch.tensor(
            count, dtype=torch.float32, device=dev
        )
        blocks = iter(out.split([x for x in sizes if x]))
        return [next(blocks).view(-1) if x else None for x in sizes]


def _with_tokens(
    pooled: torch.Tensor, x: torch.Tensor, params: list, starts: list[int], spans: list
) -> torch.Tensor | list[torch.Tensor]:
    """The pooled rows, each followed by its span's per-token states (float32, [tokens,
    layers, hidden] flattened) where its request asks for them (embed.per_token)."""
    wanted = [p is not None and (p.extra_kwargs or {}).get(TOKENS_KEY) for p in params]
    if not any(wanted):
        return pooled
    return [
        torch.cat([row, x[lo + a : lo + b].float().reshape(-1)]) if want else row
        for row, want, lo, (a, b) in zip(pooled, wanted, starts, spans, strict=True)
    ]


def _split_window(cursor: Any) -> bool:
    """A window of this step does not end in it (its prefill was chunked)."""
    seq = getattr(cursor, "seq_lens_cpu", None)
    if seq is not None:
        return bool((cursor.prompt_lens_cpu != seq).any())
    # Without sequence lengths (older vLLM) a cached prefix looks partial too: there an engine
    # that scores alone stops here rather than score a part.
    return cursor.is_partial_prefill()


def _joined(
    pooled: torch.Tensor | list[torch.Tensor], scored: list[torch.Tensor | None] | None
) -> torch.Tensor | list[torch.Tensor]:
    """Each request's output followed by its score block, where it asked for one."""
    if scored is None:
        return pooled
    if isinstance(pooled, torch.Tensor) and pooled.shape[-1] == 0:
        # Scores alone: nothing to join them to.
        empty = pooled.new_zeros(0)
        return [extra if extra is not None else empty for extra in scored]
    return [
        torch.cat([row.reshape(-1), extra]) if extra is not None else row.reshape(-1)
        for row, extra in zip(pooled, scored, strict=True)
    ]


def request_spans(params: list, lens: list[int]) -> list[tuple[int, int]]:
    """Each request's [a, b) token range to pool: its SPAN_KEY, or the whole window."""
    spans = []
    for p, n in zip(params, lens, strict=True):
        span = (p.extra_kwargs or {}).get(SPAN_KEY) if p is not None else None
        if span is None:
            spans.append((0, n))
            continue
        a, b = int(span[0]), int(span[1])
        if not 0 <= a < b <= n:
            raise ValueError(f"span {span} does not fit a window of {n} tokens")
        spans.append((a, b))
    return spans


def _pool_one(seg: torch.Tensor, how: str) -> torch.Tensor:
    """One window's [tokens, layers, hidden] -> [layers, hidden] in float32."""
    if how == "mean":
        return torch.sum(seg, dim=0, dtype=torch.float32) / seg.shape[0]
    if how == "max":
        return seg.amax(dim=0).float()
    if how == "last":
        return seg[-1].float()
    raise ValueError(f"unknown pooling {how!r}")


def _segment_reduce(x: torch.Tensor, segment: torch.Tensor, n: int, how: str) -> torch.Tensor:
    """Per-window sum or max of x [tokens, layers, hidden], in float32, chunk by chunk."""
    start = 0.0 if how == "sum" else float("-inf")
    acc = torch.full((n, *x.shape[1:]), start, dtype=torch.float32, device=x.device)
    per_token = x[0].numel() * 4 if x.shape[0] else 1
    step = max(1, _CHUNK_BYTES // per_token)
    for lo in range(0, x.shape[0], step):
        part = x[lo : lo + step].float()
        seg = segment[lo : lo + step]
        if how == "sum":
            acc.index_add_(0, seg, part)
        else:
            index = seg.view(-1, 1, 1).expand_as(part)
            acc.scatter_reduce_(0, index, part, reduce="amax", include_self=True)
    return acc


class DnaembedMixtralForEmbedding(nn.Module):
    """The engine's model: LayerCaptureModel + LayerPooler; the LM head only for scores."""

    is_pooling_model = True
    default_seq_pooling_type = "MEAN"
    hf_to_vllm_mapper = MixtralModel.hf_to_vllm_mapper

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = ""):
        super().__init__()
        config = vllm_config.model_config.hf_config
        self.head = DeviceHead.from_dict(getattr(config, CONFIG_KEY))
        if config.num_hidden_layers != self.head.depth:
            raise ValueError(
                f"dnaembed built {config.num_hidden_layers} blocks but needs {self.head.depth}"
            )
        self.model = LayerCaptureModel(
            vllm_config=vllm_config, prefix=maybe_prefix(prefix, "model")
        )
        self.model.head = self.head
        self.vocab_size = config.vocab_size
        self.tied = bool(getattr(config, "tie_word_embeddings", False))
        if self.head.scores:
            self.lm_head = ParallelLMHead(
                config.vocab_size,
                config.hidden_size,
                quant_config=None,
                prefix=maybe_prefix(prefix, "lm_head"),
            )
            if self.tied:
                self.lm_head.weight = self.model.embed_tokens.weight
        self.pooler = LayerPooler(self.head, config.hidden_size, self)
        self.make_empty_intermediate_tensors = self.model.make_empty_intermediate_tensors

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[tokens, vocab] logits of final-norm states (every rank gets all of them)."""
        out = torch.nn.functional.linear(hidden, self.lm_head.weight)
        if get_tensor_model_parallel_world_size() > 1:
            out = tensor_model_parallel_all_gather(out)
        # The vocabulary is padded per shard: the model's own tokens come first.
        return out[:, : self.vocab_size]

    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.embed_input_ids(input_ids)

    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors: IntermediateTensors | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.model(input_ids, positions, intermediate_tensors, inputs_embeds)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        """The checkpoint's weights for the blocks we built; deeper blocks (and the LM head
        unless scores need it) are skipped as they stream past."""
        depth = self.head.depth
        loaded: set[str] = set()

        def ours() -> Iterable[tuple[str, torch.Tensor]]:
            for name, tensor in weights:
                if name.startswith("lm_head."):
                    if self.head.scores and not self.tied:
                        param = self.lm_head.weight
                        getattr(param, "weight_loader", _copy_into)(param, tensor)
                        loaded.add("lm_head.weight")
                    continue
                if _deeper(name, depth):
                    continue
                if not name.startswith("model."):
                    raise ValueError(f"unexpected weight {name!r} in a Mixtral checkpoint")
                yield name.removeprefix("model."), tensor

        loaded |= {f"model.{n}" for n in self.model.load_weights(ours())}
        if self.head.scores and not self.tied and "lm_head.weight" not in loaded:
            raise ValueError("scores need the LM head, but the checkpoint has no lm_head.weight")
        return loaded


def _copy_into(param: torch.Tensor, tensor: torch.Tensor) -> None:
    param.data.copy_(tensor)


def _deeper(name: str, depth: int) -> bool:
    """A weight of block `depth` or deeper (`model.layers.<k>.`)."""
    if not name.startswith("model.layers."):
        return False
    k = name.split(".", 3)[2]
    return k.isdigit() and int(k) >= depth
