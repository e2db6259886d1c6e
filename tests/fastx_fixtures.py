"""Generated FASTA/FASTQ files with known content, for tests of the reader and the pipeline."""

from __future__ import annotations

import gzip
import random
from pathlib import Path

BASES = "ACGT"


def random_seq(rng: random.Random, n: int, alphabet: str = BASES) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def random_records(seed: int, n: int, min_len: int = 0, max_len: int = 3000) -> list[tuple]:
    """(header, sequence) pairs; headers carry a description after the id, as real ones do."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        seq = random_seq(rng, rng.randint(min_len, max_len))
        out.append((f"rec{i} sample=x len={len(seq)}", seq))
    return out


def _wrap(seq: str, width: int | None) -> list[str]:
    if not width:
        return [seq]
    return [seq[i : i + width] for i in range(0, len(seq), width)] or [""]


def fasta_text(records, width: int | None = 60, newline: str = "\n") -> str:
    lines = []
    for header, seq in records:
        lines.append(f">{header}")
        lines.extend(_wrap(seq, width) if seq else [])
    return newline.join(lines) + newline


def fastq_text(records, newline: str = "\n") -> str:
    lines = []
    for header, seq in records:
        lines += [f"@{header}", seq, "+", "I" * len(seq)]
    return newline.join(lines) + newline


def write(path: Path, text: str, gz: bool = False) -> Path:
    data = text.encode("latin-1")
    if gz:
        with gzip.GzipFile(path, "wb", mtime=0) as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path
