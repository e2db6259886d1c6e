"""Regions and variants: the user's command end to end against the bare engine on the same
windows, on one machine. Prints a table and writes one JSON.

    python -m benchmarks.questions.loci --shape genos_1_2b --regions 4000 --variants 600 \
        --out X.json

Inputs are generated: a random-base reference of `--contigs` x `--contig-mbp` (bgzip with
.fai and .gzi, as an hg38.fa.gz usually is), a BED of peak-like intervals (log-normal widths,
median ~500 bp) and a sorted VCF whose sites carry 1-3 ALT alleles (SNVs, MNVs, indels), so
that variants share reference windows as clinical sets do. Numbers do not depend on the bases.

Rows:
- dnaembed: `python -m pipeline ...` as a user types it (Ray started by the run); wall from
  launch to exit, and the steady rate over the engine's busy span (from the manifest).
- bare engine: vLLM in a process of its own (our EngineSpec, vLLM's own MEAN pooler), given the
  same windows as token ids: regions once each; variants twice per allele (its reference and
  alternate window, as per-variant tools embed them) and the distinct windows only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.harness.runner import read_manifest, run_logged, spawn_json
from benchmarks.harness.shapes import model_dir

MODULE = "benchmarks.questions.loci"
WORK = Path(os.environ.get("LOCI_WORK", "/tmp/loci-work"))
BASES = np.frombuffer(b"ACGT", dtype=np.uint8)


def write_reference(path: Path, contigs: int, length: int, seed: int = 1) -> dict[str, str]:
    """A bgzip FASTA of random bases; its sequences, for building windows here."""
    from Bio import bgzf

    rng = np.random.default_rng(seed)
    seqs = {
        f"chr{i + 1}": BASES[rng.integers(0, 4, length)].tobytes().decode() for i in range(contigs)
    }
    with bgzf.BgzfWriter(str(path), "wb") as f:
        for name, seq in seqs.items():
            f.write(f">{name}\n".encode())
            for i in range(0, len(seq), 60):
                f.write((seq[i : i + 60] + "\n").encode())
    return seqs


def write_bed(path: Path, seqs: dict[str, str], n: int, seed: int = 2) -> list[tuple]:
    rng = np.random.default_rng(seed)
    names = list(seqs)
    rows = []
    for i in range(n):
        c = names[i % len(names)]
        width = int(np.clip(rng.lognormal(np.log(500), 0.6), 50, 5000))
        start = int(rng.integers(0, len(seqs[c]) - width))
        rows.append((c, start, start + width, f"peak{i}", int(rng.integers(0, 1000)), "+-"[i % 2]))
    rows.sort(key=lambda r: (r[0], r[1]))
    path.write_text("".join("\t".join(map(str, r)) + "\n" for r in rows))
    return rows


def write_vcf(path: Path, seqs: dict[str, str], n: int, seed: int = 3) -> list[tuple]:
    """About n alleles at sites with 1-3 ALTs each (SNV, MNV, insertion or deletion), sorted;
    (contig, pos, ref, alt) per allele."""
    rng = np.random.default_rng(seed)
    names = list(seqs)
    sites = sorted(
        {
            (names[i % len(names)], int(rng.integers(10, len(seqs[names[0]]) - 10)))
            for i in range(n)
        },
        key=lambda x: (names.index(x[0]), x[1]),
    )
    alleles: list[tuple] = []
    lines = []
    for c, pos in sites:
        kind = str(rng.choice(["snv", "snv", "snv", "snv", "mnv", "ins", "del"]))
        ref_len = {"snv": 1, "mnv": 2, "ins": 1, "del": 3}[kind]
        ref = seqs[c][pos - 1 : pos - 1 + ref_len]
        alts: list[str] = []
        for _ in range(int(rng.choice([1, 1, 2, 3]))):
            if kind == "del":
                alt = ref[0]
            elif kind == "ins":
                alt = ref + random_bases(rng, int(rng.integers(1, 6)))
            else:
                alt = random_bases(rng, ref_len)
            if alt != ref and alt not in alts:
                alts.append(alt)
        if not alts:
            continue
        lines.append(f"{c}\t{pos}\t.\t{ref}\t{','.join(alts)}\t.\t.\t.\n")
        alleles += [(c, pos, ref, alt) for alt in alts]
        if len(alleles) >= n:
            break
    header = "##fileformat=VCFv4.2\n" + "".join(
        f"##contig=<ID={c},length={len(s)}>\n" for c, s in seqs.items()
    )
    path.write_text(header + "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n" + "".join(lines))
    return alleles


def random_bases(rng: np.random.Generator, n: int) -> str:
    return BASES[rng.integers(0, 4, n)].tobytes().decode()


def region_windows(seqs, rows, flank: int) -> list[str]:
    out = []
    for c, start, end, *_ in rows:
        out.append(seqs[c][max(0, start - flank) : min(len(seqs[c]), end + flank)])
    return out


def variant_windows(seqs, alleles, size: int) -> tuple[list[str], list[str]]:
    """(reference windows, alternate windows) per allele, by the README's window rule."""
    refs, alts = [], []
    for c, pos, ref, alt in alleles:
        s = seqs[c]
        start = min(max(0, pos - 1 - size // 2), max(0, len(s) - size))
        refs.append(s[start : start + size])
        edited = s[start : pos - 1] + alt + s[pos - 1 + len(ref) : start + 2 * size]
        alts.append(edited[:size])
    return refs, alts


def ids_of(seqs: list[str]) -> list[list[int]]:
    lut = np.zeros(256, dtype=np.int64)
    for i, b in enumerate(b"ACGT"):
        lut[b] = 4 + i  # the Genos-like vocabulary of harness/shapes.py: A C G T = 4..7
    return [lut[np.frombuffer(s.encode(), np.uint8)].tolist() for s in seqs]


def bare_engine(args: argparse.Namespace) -> dict:
    """In a subprocess: vLLM with its own MEAN pooler on the saved windows, timed per set."""
    from vllm.inputs import TokensPrompt

    from benchmarks.harness.contenders import engine_spec
    from pipeline.embed.engine import build_llm

    spec = engine_spec(
        args.model,
        args.device,
        16384,
        gpu_memory_utilization=0.85 if args.device == "cuda" else None,
        engine_kwargs={"enforce_eager": True} if args.device == "cpu" else {},
    )
    t = time.perf_counter()
    llm = build_llm(spec)
    out = {"engine_start_s": round(time.perf_counter() - t, 1)}
    sets = json.loads((WORK / "windows.json").read_text())
    llm.encode([TokensPrompt(prompt_token_ids=[4] * 64)], pooling_task="embed", use_tqdm=False)
    for name, windows in sets.items():
        prompts = [TokensPrompt(prompt_token_ids=x) for x in windows]
        t = time.perf_counter()
        llm.encode(prompts, pooling_task="embed", use_tqdm=False)
        s = time.perf_counter() - t
        tokens = sum(len(x) for x in windows)
        out[name] = {"windows": len(windows), "tokens": tokens, "s": round(s, 3)}
    return out


def pipeline_run(args, name: str, extra: list[str]) -> dict:
    out = WORK / f"out-{name}"
    cmd = [
        sys.executable, "-m", "pipeline", f"model={args.shape}", f"model.path={args.model}",
        f"output={out}", "output.mode=overwrite", "model.max_model_len=16384",
        f"input.reference={WORK / 'ref.fa.gz'}", f"hydra.run.dir={WORK}/hydra-{name}", *extra,
    ]  # fmt: skip
    if args.device == "cpu":
        cmd += ["embed.device=cpu", "+embed.engine_kwargs.enforce_eager=true"]
    proc, wall = run_logged(cmd, WORK / f"log-{name}.txt", args.timeout)
    if proc.returncode:
        return {"run": name, "error": (proc.stdout + proc.stderr)[-3000:]}
    m = read_manifest(out)
    c, e = m["counts"], m["engine"]
    return {
        "run": name,
        "rows": c["windows"],
        "wall_s": round(wall, 1),
        "per_s_end_to_end": round(c["windows"] / wall, 2),
        "engine_span_s": e["span_s"],
        "per_s_steady": round(c["windows"] / e["span_s"], 2) if e["span_s"] else None,
        "engine_tokens": e["tokens"],
        "engine_tokens_per_s": e["tokens_per_s"],
        "engine_requests": c["engine_requests"],
        "engine_requests_shared": c["engine_requests_shared"],
        "records_skipped": c["records_skipped"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shape", default="genos_1_2b")
    ap.add_argument("--device", default="cuda", help="cpu: a smoke run (tiny shape, fp32)")
    ap.add_argument("--model", default=None)
    ap.add_argument("--regions", type=int, default=4000)
    ap.add_argument("--variants", type=int, default=600)
    ap.add_argument("--flank", type=int, default=1024)
    ap.add_argument("--window", type=int, default=8192)
    ap.add_argument("--contigs", type=int, default=3)
    ap.add_argument("--contig-mbp", type=float, default=10.0)
    ap.add_argument("--timeout", type=int, default=500)
    ap.add_argument("--out", default=None)
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    WORK.mkdir(parents=True, exist_ok=True)
    if args.one:
        print(json.dumps(bare_engine(args)), flush=True)
        return 0
    if args.model is None:
        args.model = model_dir(args.shape, WORK, args.device)
    t = time.perf_counter()
    seqs = write_reference(WORK / "ref.fa.gz", args.contigs, int(args.contig_mbp * 1e6))
    for suffix in (".fai", ".gzi"):
        (WORK / f"ref.fa.gz{suffix}").unlink(missing_ok=True)  # the run builds them
    beds = write_bed(WORK / "peaks.bed", seqs, args.regions)
    alleles = write_vcf(WORK / "calls.vcf", seqs, args.variants)
    refs, alts = variant_windows(seqs, alleles, args.window)
    sets = {
        "regions": ids_of(region_windows(seqs, beds, args.flank)),
        "variants_per_allele": ids_of(refs + alts),
        "variants_distinct": ids_of(list(dict.fromkeys(refs + alts))),
    }
    (WORK / "windows.json").write_text(json.dumps(sets))
    report: dict = {
        "shape": args.shape,
        "inputs_s": round(time.perf_counter() - t, 1),
        "reference_bases": sum(len(s) for s in seqs.values()),
        "regions": len(beds),
        "alleles": len(alleles),
        "sites": len({(c, p) for c, p, *_ in alleles}),
        "flank": args.flank,
        "window": args.window,
    }
    del sets
    report["dnaembed"] = [
        pipeline_run(
            args, "regions", [f"input.regions={WORK / 'peaks.bed'}", f"window.flank={args.flank}"]
        ),
        pipeline_run(
            args, "variants", [f"input.variants={WORK / 'calls.vcf'}", f"window.size={args.window}"]
        ),
    ]
    env = dict(os.environ)
    if args.device == "cpu":
        env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    cmd = [sys.executable, "-m", MODULE, "--one", "--model", args.model, "--device", args.device]
    # A result printed counts even if the engine's shutdown fails after it.
    bare = spawn_json(cmd, WORK / "log-bare.txt", args.timeout, env, check_rc=False)
    report["bare_engine"] = bare
    print(
        f"{args.shape}: {report['regions']} regions (flank {args.flank}), {report['alleles']} "
        f"alleles at {report['sites']} sites (window {args.window})"
    )
    print("run | rows | wall s | rows/s end to end | rows/s steady | bare rows/s | steady / bare")
    for r in report["dnaembed"]:
        if "error" in r:
            print(r["run"], "| error |", r["error"][-400:])
            continue
        key = "regions" if r["run"] == "regions" else "variants_per_allele"
        b = bare.get(key)
        bare_rate = None
        if b:
            per_row = 1 if key == "regions" else 2  # a variant is two windows to the bare engine
            bare_rate = round(b["windows"] / per_row / b["s"], 2)
            r["bare_per_s"] = bare_rate
            r["steady_vs_bare"] = (
                round(r["per_s_steady"] / bare_rate, 3) if r["per_s_steady"] else None
            )
        print(
            f"{r['run']} | {r['rows']} | {r['wall_s']} | {r['per_s_end_to_end']} | "
            f"{r['per_s_steady']} | {bare_rate} | {r.get('steady_vs_bare')}"
        )
    if "variants_distinct" in bare and "variants_per_allele" in bare:
        d, a = bare["variants_distinct"], bare["variants_per_allele"]
        print(
            f"bare engine: {a['windows']} windows per allele in {a['s']} s; "
            f"{d['windows']} distinct in {d['s']} s"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
