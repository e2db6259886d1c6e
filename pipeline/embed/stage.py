"""EmbedStage: token-budget packs -> one float32 embedding per window (one vLLM engine/actor)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute

from pipeline.config import EmbedConfig, actor_range
from pipeline.embed.engine import EngineSpec, build_llm, engine_env
from pipeline.stages import RaySpec, Stage, StageActor, StatsSink, report_key
from pipeline.tokenize.pack import PACK_COLUMN, unpack
from pipeline.write.layout import OUTPUT_COLUMNS


class EmbeddingMismatch(RuntimeError):
    """The engine answered for other tokens than it was given: never write such a row."""


class EmbedStage(Stage):
    needs = (PACK_COLUMN,)
    adds = ("embedding",)

    def __init__(
        self,
        spec: EngineSpec,
        cfg: EmbedConfig | None = None,
        stats: StatsSink | None = None,
    ):
        self.spec = spec
        self.cfg = cfg or EmbedConfig()
        self.stats = stats or StatsSink()
        self.llm: Any = None

    def ray_spec(self) -> RaySpec:
        # One pack per call and per block, so packs spread evenly over the engines.
        return RaySpec(
            batch_size=1,
            actor=EmbedActor,
            pool=actor_range(self.cfg.num_actors),
            num_cpus=self.cfg.cpus_per_actor,
            num_gpus=self.spec.gpus,
            max_restarts=self.cfg.max_restarts,
            env_vars=engine_env(self.spec, self.cfg.env_vars),
            block_per_row=True,
        )

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
        t0 = time.time()
        out = self.embed_windows(windows)
        t1 = time.time()
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
                        {"t0": t0, "s": t1 - t0, "windows": out.num_rows, "tokens": tokens}
                    ],
                },
            )
        return out


class EmbedActor(StageActor):
    """The Ray Data actor of EmbedStage: one engine each (Ray shows this name)."""
