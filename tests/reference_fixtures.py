"""A reference of three contigs cut from real DNA (SARS-CoV-2), for the region and variant
tests: contig ends are near, so windows get clipped and shifted."""

from __future__ import annotations

from pathlib import Path

WIDTHS = {"chrA": 60, "chrB": 70, "chrC": 60}


def read_genome(path: Path) -> str:
    return "".join(line.strip() for line in path.read_text().splitlines()[1:])


def cut_contigs(genome_fasta: Path) -> dict[str, str]:
    """chrA: bases 0-12000 (an exact multiple of its line width); chrB: the rest, partly
    soft-masked; chrC: a single base."""
    g = read_genome(genome_fasta)
    b = g[12000:]
    b = b[:100] + b[100:2000].lower() + b[2000:-500] + b[-500:].lower()
    return {"chrA": g[:12000], "chrB": b, "chrC": g[5:6]}


def write_fasta(path: Path, contigs: dict[str, str]) -> Path:
    with open(path, "w") as f:
        for name, seq in contigs.items():
            f.write(f">{name} cut from NC_045512.2\n")
            w = WIDTHS.get(name, 60)
            f.writelines(seq[i : i + w] + "\n" for i in range(0, len(seq), w))
    return path
