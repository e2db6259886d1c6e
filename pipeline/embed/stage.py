"""EmbedStage: token-budget packs -> float32 embeddings per window (one vLLM engine per actor).

One column per (layer, pooling) of the run; with merged strands, each is the mean of the
window's forward and reverse-complement embeddings, both computed by the engine.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute

from pipeline.config import EmbedConfig, actor_range
from pipeline.embed.engine import EngineSpec, build_llm, engine_env
from pipeline.embed.outputs import DEFAULT_COLUMN, DeviceHead, EmbeddingColumn
from pipeline.stages import RaySpec, Stage, StageActor, StatsSink, report_key
from pipeline.tokenize.pack import PACK_COLUMN, unpack
from pipeline.tokenize.stage import RC_IDS
from pipeline.write.layout import OUTPUT_COLUMNS, embedding_array


class EmbeddingMismatch(RuntimeError):
    """The engine answered for other tokens than it was given: never write such a row."""


class EmbedStage(Stage):
    needs = (PACK_COLUMN,)

    def __init__(
        self,
        spec: EngineSpec,
        cfg: EmbedConfig | None = None,
        stats: StatsSink | None = None,
        columns: list[EmbeddingColumn] | None = None,
    ):
        self.spec = spec
        self.cfg = cfg or EmbedConfig()
        self.stats = stats or StatsSink()
        # The default: vLLM's pooler, one column.
        self.columns = columns or [EmbeddingColumn(DEFAULT_COLUMN, -1, "mean")]
        self.adds = tuple(c.column for c in self.columns)
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
        self.llm.encode(
            [TokensPrompt(prompt_token_ids=[0] * 16)], pooling_task="embed", use_tqdm=False
        )

    def embed_windows(self, windows: pa.Table) -> pa.Table:
        """Windows with `token_ids` (and `token_ids_rc` for merged strands) -> the output
        columns plus one column per embedding."""
        self.ensure_setup()
        prompts = _prompts(windows.column("token_ids"))
        merged = RC_IDS in windows.column_names
        if merged:
            prompts += _prompts(windows.column(RC_IDS))
        outputs = self.llm.encode(prompts, pooling_task="embed", use_tqdm=False)
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
                    f"(chunk {windows.column('chunk_id')[i % windows.num_rows].as_py()})"
                )
            vectors.append(out.outputs.data.float().numpy())
        emb = np.stack(vectors) if vectors else np.zeros((0, 0), np.float32)
        if emb.ndim != 2 or not np.isfinite(emb).all():
            raise EmbeddingMismatch(f"engine returned non-finite or ragged embeddings {emb.shape}")
        if merged:
            n = windows.num_rows
            emb = (emb[:n] + emb[n:]) / np.float32(2)
        out = windows.select(list(OUTPUT_COLUMNS))
        for name, part in zip(self.adds, self._split(emb), strict=True):
            out = out.append_column(name, embedding_array(part))
        return out

    def _split(self, emb: np.ndarray) -> list[np.ndarray]:
        """The engine's vector per window -> one [windows, hidden] array per column."""
        if self.spec.head is None:
            return [emb]
        head = DeviceHead.from_dict(self.spec.head)
        d = emb.shape[1] // (len(head.layers) * len(head.poolings))
        parts = []
        for c in self.columns:
            i = head.index(c.layer, c.pooling)
            parts.append(emb[:, i * d : (i + 1) * d])
        return parts

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
            if RC_IDS in windows.column_names:
                tokens *= 2  # both strands went through the engine
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


def _prompts(ids: pa.ChunkedArray) -> list[Any]:
    """Token id lists as vLLM prompts (vLLM wants plain Python ints)."""
    from vllm.inputs import TokensPrompt

    ids = ids.combine_chunks()
    offsets = ids.offsets.to_numpy()
    values = ids.values.to_numpy()
    return [
        TokensPrompt(prompt_token_ids=values[offsets[i] : offsets[i + 1]].tolist())
        for i in range(len(ids))
    ]
