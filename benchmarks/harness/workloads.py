"""Benchmark workloads as real FASTA files, and the exact windows and token ids the pipeline
makes of them (every contender gets the same token ids)."""

from __future__ import annotations

import fcntl
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


@dataclass(frozen=True)
class Workload:
    name: str
    window: int
    fasta: Path
    windows: Path  # parquet: chunk_id, n_tokens, token_ids


def _write_fasta(path: Path, records: list[tuple[str, np.ndarray]]) -> None:
    alphabet = np.frombuffer(b"ACGT", dtype=np.uint8)
    with open(path, "w") as f:
        for name, codes in records:
            seq = alphabet[codes].tobytes().decode()
            f.write(f">{name}\n")
            for i in range(0, len(seq), 80):
                f.write(seq[i : i + 80] + "\n")


def make_records(kind: str, tokens: int, window: int, seed: int) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    if kind in ("uniform", "long"):
        n = max(1, tokens // window)
        return [(f"{kind}{i:05d}", rng.integers(0, 4, window)) for i in range(n)]
    # genome: log-normal record lengths between 1 kb and 2 Mb, up to `tokens` bases in all.
    out, total, i = [], 0, 0
    while total < tokens:
        length = int(np.clip(rng.lognormal(np.log(40_000), 1.5), 1_000, 2_000_000))
        length = min(length, max(tokens - total, 1_000))
        out.append((f"chr{i:04d}", rng.integers(0, 4, length)))
        total += length
        i += 1
    return out


def build(
    kind: str, tokens: int, window: int, root: Path, model_key: str, tokenizer_spec, seed: int = 0
) -> Workload:
    """FASTA under `root`, and its windows tokenized exactly as the pipeline does.

    Built once per parameter set: benchmark lanes running side by side share the files (and so
    the chunk ids, which hash the FASTA path), and a lock keeps them from building at once.
    """
    root.mkdir(parents=True, exist_ok=True)
    fasta = root / f"{kind}.fa"
    out = root / f"{kind}.windows.parquet"
    meta = root / f"{kind}.meta.json"
    want = {"kind": kind, "tokens": tokens, "window": window, "seed": seed, "model": model_key}
    with open(root / f".{kind}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (meta.exists() and json.loads(meta.read_text()) == want and out.exists()):
            meta.unlink(missing_ok=True)
            _build(kind, tokens, window, fasta, out, model_key, tokenizer_spec, seed)
            meta.write_text(json.dumps(want))
    return Workload(kind, window, fasta, out)


def _build(kind, tokens, window, fasta, out, model_key, tokenizer_spec, seed) -> None:
    from pipeline.config import WindowConfig
    from pipeline.read.stage import ReadStage
    from pipeline.tokenize.stage import TokenizeStage
    from pipeline.window.stage import WindowStage

    _write_fasta(fasta, make_records(kind, tokens, window, seed))
    stage = WindowStage(WindowConfig(size=window, stride=window), model_key)
    tok = TokenizeStage(tokenizer_spec, max_model_len=max(window, 131072), max_batch_tokens=1)
    parts = []
    for records in ReadStage()(pa.table({"source": [str(fasta)]})):
        for windows in stage(records):
            t = tok.tokenize(windows)
            parts.append(t.select(["chunk_id", "n_tokens", "token_ids"]))
    pq.write_table(pa.concat_tables(parts), out)


def load_windows(path: Path) -> tuple[list[str], list[list[int]]]:
    t = pq.read_table(path)
    ids = t.column("token_ids").combine_chunks()
    offsets, values = ids.offsets.to_numpy(), ids.values.to_numpy()
    tokens = [values[offsets[i] : offsets[i + 1]].tolist() for i in range(len(ids))]
    return t.column("chunk_id").to_pylist(), tokens
