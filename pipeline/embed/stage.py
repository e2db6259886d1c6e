"""EmbedStage: token-budget packs -> one float32 embedding per window (one vLLM engine/actor)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from pipeline import faults
from pipeline.embed.engine import EngineSpec, build_llm
from pipeline.stages import Stage, StatsSink, report_key
from pipeline.tokenize.pack import PACK_COLUMN, unpack

OUTPUT_COLUMNS = ("chunk_id", "source", "seq_id", "start", "end", "strand", "n_tokens")


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
        self.llm = build_llm(self.spec)

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
        out = self.embed_windows(windows)
        self.packs_done += 1
        faults.trigger("embed.pack", self.packs_done)
        if out.num_rows:
            # Engine requests that completed, keyed by pack: a retried pack counts once.
            self.stats.put(
                report_key("embed", out.column("chunk_id")[0].as_py()),
                {"windows_embedded": out.num_rows},
            )
        return out
