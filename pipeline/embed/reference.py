"""Reference embeddings with Hugging Face transformers: AutoModel + attention-masked mean.

This is how Genos' own examples compute embeddings; we check the vLLM path against it. For
other layers and poolings, `pooled` reduces `output_hidden_states` the same way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np

# Reductions over a window's tokens [tokens, hidden], as dnaembed names them.
_POOL = {"mean": lambda h: h.mean(0), "max": lambda h: h.amax(0), "last": lambda h: h[-1]}
_DTYPES = {
    "float64": "float64",
    "float32": "float32",
    "bfloat16": "bfloat16",
    "float16": "float16",
}


def _keep_float64():
    """A torch function mode in which no cast turns a float64 tensor into float32.

    Modeling code upcasts to float32 for accuracy in half precision (RMSNorm's input, the
    router's softmax); in a float64 model those casts would round the reference like the
    float32 results it is there to judge. Casts of other tensors (integer positions, float32
    buffers such as RoPE's inv_freq) are left alone: both engines share those tables."""
    import torch
    from torch.overrides import TorchFunctionMode

    f32, f64 = torch.float32, torch.float64

    class KeepFloat64(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if args and isinstance(args[0], torch.Tensor) and args[0].dtype == f64:
                if func is torch.Tensor.float:
                    return args[0]
                args = tuple(f64 if a is f32 else a for a in args)
                if kwargs.get("dtype") is f32:
                    kwargs = {**kwargs, "dtype": f64}
            return func(*args, **kwargs)

    return KeepFloat64()


class HFReferenceEmbedder:
    def __init__(
        self,
        model_path: str,
        dtype: str = "float32",
        device: str = "cpu",
        attn_implementation: str = "sdpa",
        trust_remote_code: bool = False,
    ):
        import torch
        from transformers import AutoModel

        self.torch = torch
        self.device = device
        float64 = dtype == "float64"
        self.model = AutoModel.from_pretrained(
            model_path,
            dtype=getattr(torch, _DTYPES[dtype]),
            attn_implementation=attn_implementation,
            trust_remote_code=trust_remote_code,
            # Straight onto the GPU (needs accelerate); on CPU the default is right.
            **({"device_map": device} if device != "cpu" else {}),
            # The grouped-matmul experts (the default for MoE models) take no float64.
            **({"experts_implementation": "eager"} if float64 else {}),
        ).eval()
        # A float64 model is a reference for float32 results: it reduces in float64 too, and
        # nothing in it rounds to float32. Any other reduces in float32 (see embed).
        self.reduce_dtype = torch.float64 if float64 else torch.float32
        self._mode = _keep_float64 if float64 else contextlib.nullcontext

    def forward(self, **inputs):
        """The model's outputs on `inputs` (no gradients)."""
        with self.torch.inference_mode(), self._mode():
            return self.model(**inputs)

    def hidden_states(self, token_ids: Sequence[int]) -> tuple:
        """HF's hidden_states of one window: [1, tokens, hidden] for k = 0 (token
        embeddings) .. L (after the final norm)."""
        x = self.torch.as_tensor([list(token_ids)], device=self.device)
        return self.forward(input_ids=x, output_hidden_states=True).hidden_states

    def embed(self, token_ids: Sequence[Sequence[int]], batch_size: int = 1) -> np.ndarray:
        """Mean of the last hidden state over real tokens; padded batches when batch_size > 1.
        float32, or float64 for a float64 model."""
        torch = self.torch
        out = []
        with torch.inference_mode():
            for lo in range(0, len(token_ids), batch_size):
                chunk = token_ids[lo : lo + batch_size]
                width = max(len(x) for x in chunk)
                ids = torch.zeros((len(chunk), width), dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for i, x in enumerate(chunk):
                    ids[i, : len(x)] = torch.as_tensor(list(x))
                    mask[i, : len(x)] = 1
                ids, mask = ids.to(self.device), mask.to(self.device)
                # No padding, no mask: attention takes its causal fast path (a 4-D mask for a
                # 131072-token window would not fit in memory).
                padded = any(len(x) != width for x in chunk)
                hidden = self.forward(
                    input_ids=ids, attention_mask=mask if padded else None
                ).last_hidden_state
                # The mean in float32: a bf16 sum over thousands of tokens would round the
                # reference itself by more than the differences it is there to show.
                hidden = hidden.to(self.reduce_dtype)
                m = mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * m).sum(1) / m.sum(1)
                out.append(pooled.cpu().numpy())
        return np.concatenate(out)

    def pooled(
        self,
        token_ids: Sequence[Sequence[int]],
        layers: Sequence[int],
        poolings: Sequence[str],
        spans: Sequence[tuple[int, int]] | None = None,
    ) -> np.ndarray:
        """[windows, layers, poolings, hidden] from HF's hidden_states[k] (k = 0 token
        embeddings .. L after the final norm), one window at a time, reduced in float32
        (float64 for a float64 model) over each window's tokens, or over its [a, b) of
        `spans`."""
        torch = self.torch
        out = []
        with torch.inference_mode():
            for i, ids in enumerate(token_ids):
                states = self.hidden_states(ids)
                a, b = spans[i] if spans is not None else (0, len(ids))
                per_layer = []
                for k in layers:
                    h = states[k][0, a:b].to(self.reduce_dtype)
                    per_layer.append(torch.stack([_POOL[p](h) for p in poolings]))
                out.append(torch.stack(per_layer).cpu().numpy())
        return np.stack(out)
