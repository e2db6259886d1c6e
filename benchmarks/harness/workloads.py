"""Inputs the questions share, generated (random bases: no number here depends on them).

- The contenders' workloads (`uniform`, `genome`, `long`) as plain FASTA files, and the exact
  windows and token ids the pipeline makes of them (every contender gets the same token ids).
- Genomes as one plain-gzip FASTA: assembly-shaped (two large records, then small contigs) or
  human chromosomes by their GRCh38 names and sizes, cached by their parameters.
"""

from __future__ import annotations

import fcntl
import gzip
import json
import os
import time
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


def write_records(path: Path, records: list[tuple[str, np.ndarray]]) -> None:
    """A plain FASTA of the records (base codes 0-3 for A, C, G, T), lines of 80."""
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

    write_records(fasta, make_records(kind, tokens, window, seed))
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


# ------------------------------------------------------------------------ genomes, gzip
GENERATOR_VERSION = 1  # bump when the FASTA written for the same parameters changes
CHUNK = 80 * 100_000  # bases generated and compressed at a time (whole lines)
# GRCh38's primary chromosomes and their lengths: genome_fasta(chromosomes=...) writes records
# of these names and sizes (random bases); the whole-genome projection is to all of them.
HUMAN = {
    "chr1": 248_956_422, "chr2": 242_193_529, "chr3": 198_295_559, "chr4": 190_214_555,
    "chr5": 181_538_259, "chr6": 170_805_979, "chr7": 159_345_973, "chr8": 145_138_636,
    "chr9": 138_394_717, "chr10": 133_797_422, "chr11": 135_086_622, "chr12": 133_275_309,
    "chr13": 114_364_328, "chr14": 107_043_718, "chr15": 101_991_189, "chr16": 90_338_345,
    "chr17": 83_257_441, "chr18": 80_373_285, "chr19": 58_617_616, "chr20": 64_444_167,
    "chr21": 46_709_983, "chr22": 50_818_468, "chrX": 156_040_895, "chrY": 57_227_415,
}  # fmt: skip


def record_lengths(bases: int, contigs: int, large: int = 2, large_frac: float = 0.4, seed=0):
    """`large` records of `large_frac` of the bases each, the rest over `contigs` small ones
    with log-normal lengths (an assembly's scaffolds, then its unplaced contigs)."""
    big = int(bases * large_frac)
    lengths = [big] * large
    rest = bases - big * large
    if contigs and rest > 0:
        w = np.random.default_rng(seed).lognormal(0.0, 1.0, contigs)
        cuts = np.round(np.cumsum(w) / w.sum() * rest).astype(np.int64)
        lengths += [int(x) for x in np.diff(cuts, prepend=0) if x > 0]
    elif rest > 0:
        lengths[-1] += rest
    return lengths


def write_fasta(
    path: Path, lengths: list[int], seed: int = 0, names: list[str] | None = None
) -> None:
    """Random ACGT, N runs at both ends of every record, lines of 80, gzip level 1 (speed:
    the file is an input, not the thing measured)."""
    rng = np.random.default_rng(seed + 1)
    alphabet = np.frombuffer(b"ACGT", dtype=np.uint8)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1) as gz:
        for i, length in enumerate(lengths):
            name = names[i] if names else (f"chr{i + 1}" if i < 2 else f"contig{i - 1:05d}")
            gz.write(f">{name}\n".encode())
            n_run = min(10_000, length // 50)  # telomere-like gaps
            for lo in range(0, length, CHUNK):
                hi = min(length, lo + CHUNK)
                seq = alphabet[rng.integers(0, 4, hi - lo, dtype=np.uint8)]
                seq[: max(0, n_run - lo)] = ord("N")
                seq[max(0, length - n_run - lo) :] = ord("N")
                gz.write(_lines(seq))
    os.replace(tmp, path)


def _lines(seq: np.ndarray) -> bytes:
    full = len(seq) // 80
    body = np.empty((full, 81), dtype=np.uint8)
    body[:, :80] = seq[: full * 80].reshape(full, 80)
    body[:, 80] = ord("\n")
    tail = seq[full * 80 :].tobytes()
    return body.tobytes() + (tail + b"\n" if tail else b"")


def genome_fasta(
    work: Path, bases: int, contigs: int, chromosomes: str | None = None, seed: int = 0
) -> tuple[Path, dict]:
    """The gzip FASTA for these parameters, generated once under `work`: human chromosomes
    (a comma list, or 'all') if given, else `bases` in an assembly's shape."""
    names = None
    if chromosomes:
        names = list(HUMAN) if chromosomes == "all" else chromosomes.split(",")
        unknown = [n for n in names if n not in HUMAN]
        if unknown:
            raise SystemExit(f"--chromosomes: {unknown} are not among {list(HUMAN)}")
        lengths = [HUMAN[n] for n in names]
        stem = f"human-{'-'.join(names) if len(names) < 6 else len(names)}"
    else:
        lengths = record_lengths(bases, contigs, seed=seed)
        stem = f"genome-{bases}b-{contigs}c"
    path = work / f"{stem}-s{seed}-v{GENERATOR_VERSION}.fa.gz"
    info = {"path": str(path), "bases": sum(lengths), "records": len(lengths)}
    if names:
        info["chromosomes"] = names
    if path.exists():
        print(f"FASTA: {path} (cached)", flush=True)
        return path, {**info, "generated_s": None}
    t = time.perf_counter()
    write_fasta(path, lengths, seed, names)
    s = time.perf_counter() - t
    mb = path.stat().st_size / 1e6
    print(
        f"FASTA: {path}, {info['bases']:,} bases, {mb:.0f} MB, generated in {s:.1f} s", flush=True
    )
    return path, {**info, "generated_s": round(s, 2)}
