"""Bundled demo data: real DNA, small enough to embed on a laptop CPU.

- NC_045512.2.fasta: SARS-CoV-2 isolate Wuhan-Hu-1 reference genome (NCBI RefSeq), 29,903 bases.
- reads.fastq.gz: 24 reads sampled from it by `make_reads.py` (seeded), both strands, some
  soft-masked, one with an N: a small multi-record FASTQ.
"""

from __future__ import annotations

from pathlib import Path

DEMO_DIR = Path(__file__).resolve().parent
GENOME = DEMO_DIR / "NC_045512.2.fasta"
READS = DEMO_DIR / "reads.fastq.gz"
