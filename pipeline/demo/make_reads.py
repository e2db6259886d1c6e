"""Regenerate reads.fastq.gz from the bundled genome: `python -m pipeline.demo.make_reads`."""

from __future__ import annotations

import gzip
import random

from Bio.SeqIO.FastaIO import SimpleFastaParser

from pipeline.demo import GENOME, READS
from pipeline.window.windows import reverse_complement


def make_reads(n: int = 24, seed: int = 7) -> str:
    rng = random.Random(seed)
    with open(GENOME) as f:
        ((_, genome),) = list(SimpleFastaParser(f))
    lines = []
    for i in range(n):
        length = rng.choice((150, 250, 600, 1200, 3000))
        start = rng.randrange(0, len(genome) - length)
        seq = genome[start : start + length]
        strand = "+"
        if i % 3 == 1:
            seq, strand = reverse_complement(seq), "-"
        if i % 5 == 2:  # soft-masked stretch, as repeat-masked data has
            seq = seq[:40] + seq[40:90].lower() + seq[90:]
        if i == 11:
            seq = seq[:70] + "N" + seq[71:]
        qual = "".join(chr(33 + rng.randrange(20, 41)) for _ in seq)
        lines += [f"@read{i:03d} NC_045512.2:{start}-{start + length}({strand})", seq, "+", qual]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    # mtime=0: the same bytes on every run.
    with open(READS, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        gz.write(make_reads().encode())
    print(f"wrote {READS}")
