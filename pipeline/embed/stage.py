"""EmbedStage: token-budget packs -> one float32 embedding per window (one vLLM engine/actor)."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute

from pipeline import faults
from pipeline.embed.engine import EngineSpec, build_llm
from pipeline.embed.profile import profiled
from pipeline.stages import Stage, StatsSink, report_key
from pipeline.tokenize.pack import PACK_COLUMN, unpack
from pipeline.write.layout import OUTPUT_COLUMNS


class EmbeddingMismatch(RuntimeError):
    """The engine answered for other tokens than it was given: never write such a row."""


class EmbedStage(Stage):
    needs = (PACK_COLUMN,)
    adds = ("embedding",)

    def __init__(self, spec: EngineSpec, stats: StatsSink | None = None):
        self.spec = spec
        self.stats = stats or StatsSink()
        self.llm: Any = None
        self.packs_done = 0

    def setup(self) -> None:
        from vllm.inputs import TokensPrompt

        self.llm = build_llm(self.spec)
        # One tiny request first, so the first real pack does not pay for lazy initialisation.
        self.llm.embed([TokensPrompt(prompt_token_ids=[0] * 16)], use_tqdm=False)

    def embed_windows(self, windows: pa.Table) -> pa.Table:
        """Windows with `token_ids` -> the output columns plus `embedding`."""
        from vllm.inputs import TokensPrompt

        self.ensure_setup()
        ids = windows.column("token_ids").combine_chunks()
        offsets = ids.offsets.to_numpy()
        values = ids.values.to_numpy()
        # vLLM wants plain Python ints.
        prompts = [
            TokensPrompt(prompt_token_ids=values[offsets[i] : offsets[i + 1]].tolist())
            for i in range(len(ids))
        ]
        outputs = self.llm.embed(prompts, use_tqdm=False)
        if len(outputs) != len(prompts):
            raise EmbeddingMismatch(f"{len(prompts)} prompts but {len(outputs)} embeddings")
        vectors = []
        for i, (prompt, out) in enumerate(zip(prompts, outputs, strict=True)):
            got = out.prompt_token_ids
            sent = prompt["prompt_token_ids"]
            # Rows carry their own ids; this check proves the engine kept them aligned.
            if len(got) != len(sent) or got[:8] != sent[:8] or got[-8:] != sent[-8:]:
                raise EmbeddingMismatch(
                    f"engine output {i} does not match its prompt "
                    f"(chunk {windows.column('chunk_id')[i].as_py()})"
                )
            vectors.append(out.outputs.embedding)
        emb = np.asarray(vectors, dtype=np.float32)
        if emb.ndim != 2 or not np.isfinite(emb).all():
            raise EmbeddingMismatch(f"engine returned non-finite or ragged embeddings {emb.shape}")
        column = pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), emb.shape[1])
        return windows.select(list(OUTPUT_COLUMNS)).append_column("embedding", column)

    def __call__(self, batch: pa.Table) -> pa.Table:
        self.check_columns(batch)
        windows = unpack(batch)
        with profiled(f"pack-{os.getpid()}-{self.packs_done}"):
            cpu0 = cpu_seconds()
            t0 = time.time()
            out = self.embed_windows(windows)
            t1 = time.time()
            cpu1 = cpu_seconds()
        self.packs_done += 1
        faults.trigger("embed.pack", self.packs_done)
        if out.num_rows:
            # Engine requests that completed, and when: keyed by pack, so a retried pack
            # counts once.
            tokens = int(pa.compute.sum(out.column("n_tokens")).as_py())
            self.stats.put(
                report_key("embed", out.column("chunk_id")[0].as_py()),
                {
                    "windows_embedded": out.num_rows,
                    "engine_tokens": tokens,
                    "engine_busy_s": t1 - t0,
                    "engine_t0": [t0],
                    "engine_t1": [t1],
                    "engine_packs": [
                        {
                            "t0": t0,
                            "s": t1 - t0,
                            "windows": out.num_rows,
                            "tokens": tokens,
                            # CPU seconds of the actor and its engine processes over the pack:
                            # near the wall time per busy process means CPU-bound, not GPU.
                            "cpu_s": {k: round(cpu1.get(k, v) - v, 3) for k, v in cpu0.items()},
                            "load1": os.getloadavg()[0],
                        }
                    ],
                },
            )
        return out


def cpu_seconds() -> dict[str, float]:
    """CPU time used so far by this process and by each of its descendants (the engine
    core and its workers), keyed by process name and pid."""
    try:
        import psutil
    except ImportError:  # a diagnostic only
        return {}
    me = psutil.Process()
    out = {}
    for proc in [me, *me.children(recursive=True)]:
        try:
            t = proc.cpu_times()
            out[f"{proc.name()}:{proc.pid}"] = t.user + t.system
        except psutil.Error:  # gone between listing and reading
            continue
    return out
