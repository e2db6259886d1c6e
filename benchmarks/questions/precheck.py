"""Input checks: what the driver's checks of the input cost before Ray starts
(pipeline/precheck.py): the plan of the user's command, and the checks alone, at realistic
input sizes. Prints a table, writes precheck.json.

    python -m benchmarks.questions.precheck --out /tmp/precheck           # CPU, about a minute
    python -m benchmarks.questions.precheck --loci 2000 --files 20 --out /tmp/p   # the test's

Inputs, written under --work from the demo genome (real DNA): a reference of --contigs
contigs of --contig-bases each (indexed), a VCF of --loci SNVs at random positions with the
reference's own REF, a BED of --loci intervals, and a directory of --files FASTA files of
--file-bases each. `plan` is pipeline.run.plan (config, inputs listed, tokenizer, the model's
config, fingerprint, and the checks); `checks` is the checks alone, as plan runs them (the
input kind's precheck over the run's own read stages).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
from pathlib import Path

from benchmarks.harness.runner import REPO


def write_inputs(
    work: Path, contigs: int, contig_bases: int, loci: int, files: int, file_bases: int
):
    from pipeline.read.reference import Reference

    genome = "".join(
        line.strip()
        for line in (REPO / "pipeline/demo/NC_045512.2.fasta").read_text().splitlines()[1:]
    )
    seqs = {
        f"chr{i + 1}": (genome * (contig_bases // len(genome) + 1))[i : i + contig_bases]
        for i in range(contigs)
    }
    work.mkdir(parents=True, exist_ok=True)
    ref = work / "ref.fa"
    with open(ref, "w") as f:
        for name, s in seqs.items():
            f.write(f">{name}\n")
            f.writelines(s[i : i + 60] + "\n" for i in range(0, len(s), 60))
    Reference.prepare(str(ref))
    rng = random.Random(7)
    sites = sorted(
        (rng.randrange(contigs), rng.randrange(1, contig_bases - 200)) for _ in range(loci)
    )
    with open(work / "calls.vcf", "w") as f:
        f.write("##fileformat=VCFv4.2\n")
        f.writelines(f"##contig=<ID={n}>\n" for n in seqs)
        f.write("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n")
        for c, pos in sites:
            name = f"chr{c + 1}"
            ref_base = seqs[name][pos - 1]
            alt = "A" if ref_base != "A" else "C"
            f.write(f"{name}\t{pos}\t.\t{ref_base}\t{alt}\t.\t.\t.\n")
    with open(work / "peaks.bed", "w") as f:
        f.writelines(f"chr{c + 1}\t{pos}\t{pos + 150}\n" for c, pos in sites)
    (work / "reads").mkdir(exist_ok=True)
    for i in range(files):
        a = rng.randrange(len(genome) - file_bases)
        (work / "reads" / f"r{i:05d}.fa").write_text(f">r{i}\n{genome[a : a + file_bases]}\n")
    return ref


def measure(args: list[str]) -> dict:
    from pipeline.compose import compose, to_config
    from pipeline.run import plan

    cfg = to_config(compose(["model=tiny", "output=/nonexistent/out", *args]))
    t0 = time.perf_counter()
    p = plan(cfg)
    t1 = time.perf_counter()
    p.kind.precheck(p.sources, p.model_key)
    t2 = time.perf_counter()
    return {"plan_s": round(t1 - t0, 3), "checks_s": round(t2 - t1, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--contigs", type=int, default=3)
    ap.add_argument("--contig-bases", type=int, default=1_000_000)
    ap.add_argument("--loci", type=int, default=100_000)
    ap.add_argument("--files", type=int, default=2_000)
    ap.add_argument("--file-bases", type=int, default=5_000)
    ap.add_argument("--work", type=Path, default=Path("/tmp/dnaembed-precheck"))
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    ref = write_inputs(a.work, a.contigs, a.contig_bases, a.loci, a.files, a.file_bases)
    cases = [
        (
            "variants",
            f"VCF of {a.loci} SNVs",
            [f"input.reference={ref}", f"input.variants={a.work / 'calls.vcf'}"],
        ),
        (
            "regions",
            f"BED of {a.loci} intervals",
            [f"input.reference={ref}", f"input.regions={a.work / 'peaks.bed'}", "window.flank=100"],
        ),
        ("tiles", f"directory of {a.files} FASTA files", [f"input={a.work / 'reads'}"]),
    ]
    rows = []
    for kind, what, args in cases:
        measure(args)  # warm: imports, the tiny model, the OS cache
        rows.append({"kind": kind, "input": what, **measure(args)})
    print(f"{'kind':<9} | {'input':<34} | {'plan s':>7} | {'checks s':>8}")
    for r in rows:
        print(f"{r['kind']:<9} | {r['input']:<34} | {r['plan_s']:>7.2f} | {r['checks_s']:>8.2f}")
    a.out.mkdir(parents=True, exist_ok=True)
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
        "python": platform.python_version(),
        "args": {k: str(v) for k, v in vars(a).items()},
        "runs": rows,
    }
    (a.out / "precheck.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
