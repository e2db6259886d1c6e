"""Zero-shot variant scores (LLR): variants per hour of the user's command, against vLLM's own
prompt_logprobs path on the same variants in the same run, and the tokens computed per variant.
Prints a table and writes one JSON.

    python -m benchmarks.questions.scores --shapes genos_1_2b --windows 255,8192 \
        --variants 255:30000,8192:1000 --layouts centred,end --out X.json

Inputs are generated: a random-base bgzip reference of `--contigs` x `--contig-mbp` (as loci.py
writes it) and, per window size, a sorted bgzip VCF of one allele per site: 80% SNVs, 10%
insertions and 10% deletions of 1-5 bases, REF read from the reference. Numbers do not depend
on the bases.

Rows (--parts):
- layouts: `python -m pipeline ... 'scores=[llr]' 'embed.layers=[]' window.size=W
  variants.layout=L` as a user types it, per shape x window x layout: wall from launch to exit,
  the engines' busy span (the manifest), variants per hour over each, and the tokens submitted
  and computed per variant in windows of window.size tokens ("windows per variant": with
  scores alone the engine caches prefixes, so an alternate window computes only what follows
  the blocks it shares with its reference window).
- beside: 8192-base centred windows, `'scores=[llr]'` with the default embeddings (no prefix
  caching then) against embeddings alone: the engine span's ratio is what scores cost beside
  embeddings.
- peer: `vllm.LLM(runner="generate")` in a process of its own, `generate` with
  `SamplingParams(prompt_logprobs=0, max_tokens=1)` on each variant's reference and alternate
  window (the first --peer-variants of each set), timed around generate alone; the LLR of the
  first --fidelity variants (alternate minus reference over the positions from the variant's
  on) against dnaembed's llr_sum. vLLM skips reading its prefix cache for a request that asks
  for prompt logprobs, so enable_prefix_caching changes nothing there (--peer-caching on,off
  shows it).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.harness.runner import read_manifest, repo_env, run_logged, spawn_json
from benchmarks.harness.shapes import model_dir
from benchmarks.questions.loci import random_bases, write_reference

MODULE = "benchmarks.questions.scores"
WORK = Path(os.environ.get("SCORES_WORK", "/tmp/scores-work"))
# The Genos-like vocabulary of harness/shapes.py: A C G T = 4..7.
LUT = np.zeros(256, dtype=np.int32)
LUT[np.frombuffer(b"ACGT", np.uint8)] = np.arange(4, 8)
# The 8192-base windows of the scores-beside-embeddings rows.
BESIDE_WINDOW = 8192


def write_vcf(path: Path, seqs: dict[str, str], n: int, seed: int) -> list[tuple]:
    """n alleles, one per site (80% SNV, 10% insertion, 10% deletion), sorted, bgzip (and a
    tabix index where pysam is there: the run needs none); (contig, pos, ref, alt) each."""
    from Bio import bgzf

    rng = np.random.default_rng(seed)
    names = list(seqs)
    sites: set[tuple[int, int]] = set()
    while len(sites) < n:
        c = int(rng.integers(0, len(names)))
        sites.add((c, int(rng.integers(10, len(seqs[names[c]]) - 10))))
    alleles, lines = [], []
    for c, pos in sorted(sites):
        name, kind = names[c], rng.random()
        if kind < 0.8:
            ref = seqs[name][pos - 1]
            alt = "ACGT"[("ACGT".index(ref) + int(rng.integers(1, 4))) % 4]
        elif kind < 0.9:
            ref = seqs[name][pos - 1]
            alt = ref + random_bases(rng, int(rng.integers(1, 6)))
        else:
            ref = seqs[name][pos - 1 : pos + int(rng.integers(1, 6))]
            alt = ref[0]
        lines.append(f"{name}\t{pos}\t.\t{ref}\t{alt}\t.\t.\t.\n")
        alleles.append((name, pos, ref, alt))
    header = "##fileformat=VCFv4.2\n" + "".join(
        f"##contig=<ID={c},length={len(s)}>\n" for c, s in seqs.items()
    )
    header += "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
    with bgzf.BgzfWriter(str(path), "wb") as f:
        f.write((header + "".join(lines)).encode())
    try:
        import pysam
    except ImportError:  # the GPU kit has no pysam
        pass
    else:
        pysam.tabix_index(str(path), preset="vcf", force=True)
    return alleles


def before_of(layout: str, size: int, end_bases: int) -> int:
    """Bases of a window before its variant: centred, or end_bases from the window's end."""
    return size // 2 if layout == "centred" else size - end_bases


def windows(
    seqs: dict[str, str], alleles: list[tuple], size: int, before: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(reference ids, alternate ids, the variant's offset) per allele, by the README's rule:
    start = pos0 - before clipped to the contig; the alternate has the same start, REF replaced
    by ALT, filled from the contig (or cut) at its far end to `size` bases."""
    ref_ids = np.zeros((len(alleles), size), np.uint8)
    alt_ids = np.zeros_like(ref_ids)
    offsets = np.zeros(len(alleles), np.int32)
    for i, (c, pos, ref, alt) in enumerate(alleles):
        s, pos0 = seqs[c], pos - 1
        start = min(max(0, pos0 - before), max(0, len(s) - size))
        edited = s[start:pos0] + alt + s[pos0 + len(ref) : start + 2 * size]
        ref_ids[i] = LUT[np.frombuffer(s[start : start + size].encode(), np.uint8)]
        alt_ids[i] = LUT[np.frombuffer(edited[:size].encode(), np.uint8)]
        offsets[i] = pos0 - start
    return ref_ids, alt_ids, offsets


def peer(args: argparse.Namespace) -> dict:
    """In a subprocess: vLLM's generate runner with prompt_logprobs on each case's reference and
    alternate windows, timed around generate; the LLR of each case's first variants."""
    import vllm
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    spec = json.loads(Path(args.peer_spec).read_text())
    if args.device == "cuda":
        # The Genos MoE tiles the pipeline ships (vLLM's own where it has none): the same
        # kernels as dnaembed's engines, so the rows differ by the path alone.
        from pipeline.embed.engine import MOE_CONFIGS, MOE_ENV

        os.environ.setdefault(MOE_ENV, str(MOE_CONFIGS))
    kwargs = dict(
        model=spec["model"],
        runner="generate",
        dtype="bfloat16" if args.device == "cuda" else "float32",
        enforce_eager=True,
        max_model_len=spec["max_model_len"],
        max_num_seqs=1024,
        enable_prefix_caching=spec["caching"],
        gpu_memory_utilization=0.9 if args.device == "cuda" else 0.2,
        seed=0,
    )
    if spec.get("max_num_batched_tokens"):
        kwargs["max_num_batched_tokens"] = spec["max_num_batched_tokens"]
    t = time.perf_counter()
    llm = vllm.LLM(**kwargs)
    config = llm.llm_engine.vllm_config
    sched = config.scheduler_config
    out: dict = {
        "engine_start_s": round(time.perf_counter() - t, 1),
        "enable_prefix_caching": spec["caching"],
        "max_num_batched_tokens": sched.max_num_batched_tokens,
        "chunked_prefill": bool(sched.enable_chunked_prefill),
        "block_size": config.cache_config.block_size,
        "cases": {},
    }
    sp = SamplingParams(prompt_logprobs=0, max_tokens=1)
    for size in sorted({c["window"] for c in spec["cases"]}):
        # A warm-up per length, a batch of windows, so the first timed case starts warm.
        warm = [TokensPrompt(prompt_token_ids=[4 + (i + k) % 4 for i in range(size)])
                for k in range(32)]  # fmt: skip
        llm.generate(warm, sp, use_tqdm=False)
    for case in spec["cases"]:
        data = np.load(case["npz"])
        ref, alt, offsets = data["ref"], data["alt"], data["offsets"]
        prompts = []
        for r, a in zip(ref.tolist(), alt.tolist(), strict=True):
            # A variant's two windows side by side, as per-variant tools submit them.
            prompts += [TokensPrompt(prompt_token_ids=r), TokensPrompt(prompt_token_ids=a)]
        t = time.perf_counter()
        got = llm.generate(prompts, sp, use_tqdm=False)
        s = time.perf_counter() - t
        llr = []
        for i in range(min(case["fidelity"], len(ref))):
            r = prompt_logp(got[2 * i], ref[i])
            a = prompt_logp(got[2 * i + 1], alt[i])
            llr.append(float((a[offsets[i] :] - r[offsets[i] :]).sum()))
        out["cases"][case["name"]] = {
            "variants": len(ref),
            "tokens": int(ref.size + alt.size),
            "s": round(s, 3),
            "variants_per_h": round(len(ref) / s * 3600) if s > 0 else None,
            "tokens_per_s": round((ref.size + alt.size) / s, 1) if s > 0 else None,
            "llr": llr,
        }
        del got, prompts
        gc.collect()
    return out


def prompt_logp(output, ids: np.ndarray) -> np.ndarray:
    """log P(x_t | x_<t) per position of a prompt from vLLM's prompt_logprobs (the first has no
    context: 0, outside every LLR sum anyway)."""
    lp = output.prompt_logprobs
    values = np.zeros(len(ids), np.float64)
    for t in range(1, len(ids)):
        values[t] = lp[t][int(ids[t])].logprob
    return values


def pipeline_run(args, shape: str, model: str, name: str, vcf: Path, extra: list[str]) -> dict:
    """The user's command on `vcf`; its rows, times and tokens from the manifest."""
    out = WORK / f"out-{name}"
    cmd = [
        sys.executable, "-m", "pipeline", f"model={shape}", f"model.path={model}",
        f"input.reference={WORK / 'ref.fa.gz'}", f"input.variants={vcf}", *extra,
        f"output={out}", "output.mode=overwrite", "+embed.engine_kwargs.max_num_seqs=1024",
        f"hydra.run.dir={WORK}/hydra-{name}",
    ]  # fmt: skip
    if args.device == "cpu":
        cmd += ["embed.device=cpu"]
    row: dict = {"run": name, "command": cmd[1:]}
    try:
        proc, wall = run_logged(cmd, WORK / f"log-{name}.txt", args.timeout, repo_env())
    except subprocess.TimeoutExpired:  # the rows after it still run
        return {**row, "error": f"timed out after {args.timeout} s"}
    if proc.returncode:
        return {**row, "error": (proc.stdout + proc.stderr)[-3000:]}
    m = read_manifest(out)
    c, e = m["counts"], m["engine"]
    n, span = c["windows"], e["span_s"]
    return {
        **row,
        "output": str(out),
        "variants": n,
        "records_skipped": c["records_skipped"],
        "wall_s": round(wall, 1),
        "engine_span_s": span,
        "variants_per_h_span": round(n / span * 3600) if span else None,
        "variants_per_h_wall": round(n / wall * 3600),
        "engine_tokens": c["engine_tokens"],
        "engine_tokens_computed": c["engine_tokens_computed"],
        "engine_tokens_per_s": e["tokens_per_s"],
        "engine_computed_per_s": round(c["engine_tokens_computed"] / span, 1) if span else None,
        "engine_requests": c["engine_requests"],
        "engine_packs": e["packs"],
    }


def per_variant(row: dict, size: int) -> None:
    """Tokens per variant, in windows of `size` tokens: submitted (two windows each, less any
    reference window a site's alleles share) and computed (less the cached prefixes)."""
    n = row["variants"]
    row["windows_submitted_per_variant"] = round(row["engine_tokens"] / n / size, 3)
    row["windows_per_variant"] = round(row["engine_tokens_computed"] / n / size, 3)


def fidelity(row: dict, alleles: list[tuple], peer_llr: list[float]) -> dict:
    """dnaembed's llr_sum against the peer's LLR on the same variants."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = ["seq_id", "pos", "ref", "alt", "llr_sum"]
    shards = sorted((Path(row["output"]) / "shards").glob("*.parquet"))
    table = pa.concat_tables([pq.read_table(f, columns=cols) for f in shards])
    ours = {
        (c, p, r, a): v
        for c, p, r, a, v in zip(*(table.column(k).to_pylist() for k in cols), strict=True)
    }
    diffs = [abs(ours[k] - v) for k, v in zip(alleles, peer_llr, strict=False) if k in ours]
    if not diffs:
        return {"variants": 0}
    return {
        "variants": len(diffs),
        "max_abs_diff": round(max(diffs), 5),
        "mean_abs_diff": round(float(np.mean(diffs)), 5),
        "mean_abs_llr": round(float(np.mean(np.abs(peer_llr[: len(diffs)]))), 5),
    }


def per_window(text: str, windows_: list[int], what: str) -> dict[int, int]:
    """`W:N,W:N` (a value per window size; one without `W:` is every other window's) as
    {window: N}, for the windows measured."""
    given, default = {}, None
    for item in filter(None, text.split(",")):
        w, _, n = item.rpartition(":")
        if w:
            given[int(w)] = int(n)
        else:
            default = int(n)
    missing = [w for w in windows_ if w not in given and default is None]
    if missing:
        raise SystemExit(f"--{what} {text}: no value for window {missing[0]}")
    return {w: given.get(w, default) for w in windows_}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shapes", default="genos_1_2b", help="comma list (tiny: the CPU smoke run)")
    ap.add_argument("--device", default="cuda", help="cpu: a smoke run (tiny shape, fp32)")
    ap.add_argument("--model", default=None, help="a model directory (one shape only)")
    ap.add_argument("--parts", default="layouts,peer,beside")
    ap.add_argument("--windows", default="255,8192")
    ap.add_argument("--layouts", default="centred,end")
    ap.add_argument("--end-bases", default="255:31,8192:256", help="the end layout's, W:N")
    ap.add_argument("--variants", default="255:30000,8192:1000", help="per window, W:N")
    ap.add_argument("--peer-variants", default="255:4000,8192:120", help="per window, W:N")
    ap.add_argument("--peer-caching", default="on", help="on, off or on,off")
    ap.add_argument("--peer-batched-tokens", type=int, default=None, help="vLLM's default: unset")
    ap.add_argument("--fidelity", type=int, default=32, help="variants whose LLR is compared")
    ap.add_argument("--beside-variants", type=int, default=600)
    ap.add_argument("--contigs", type=int, default=3)
    ap.add_argument("--contig-mbp", type=float, default=10.0)
    ap.add_argument("--timeout", type=int, default=240, help="per run, seconds")
    ap.add_argument("--out", default=None)
    ap.add_argument("--peer", action=argparse.BooleanOptionalAction, default=None)
    ap.add_argument("--peer-spec", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    WORK.mkdir(parents=True, exist_ok=True)
    if args.peer_spec:
        print(json.dumps(peer(args)), flush=True)
        return 0
    shapes = args.shapes.split(",")
    if args.model and len(shapes) > 1:
        raise SystemExit("--model names one shape's model: give one shape")
    parts = set(filter(None, args.parts.split(",")))
    if args.peer is not None:
        parts = parts | {"peer"} if args.peer else parts - {"peer"}
    wins = [int(w) for w in args.windows.split(",")]
    layouts = args.layouts.split(",")
    end_bases = per_window(args.end_bases, wins, "end-bases")
    counts = per_window(args.variants, wins, "variants")
    peer_counts = per_window(args.peer_variants, wins, "peer-variants")

    t = time.perf_counter()
    seqs = write_reference(WORK / "ref.fa.gz", args.contigs, int(args.contig_mbp * 1e6))
    for suffix in (".fai", ".gzi"):
        (WORK / f"ref.fa.gz{suffix}").unlink(missing_ok=True)  # the first run builds them
    sets = {}
    if "layouts" in parts:
        for i, w in enumerate(wins):
            vcf = WORK / f"variants-{w}.vcf.gz"
            sets[w] = (vcf, write_vcf(vcf, seqs, counts[w], seed=10 + i))
    report: dict = {
        "shapes": shapes,
        "device": args.device,
        "parts": sorted(parts),
        "inputs_s": round(time.perf_counter() - t, 1),
        "reference_bases": sum(len(s) for s in seqs.values()),
        "windows": wins,
        "layouts": layouts,
        "end_bases": end_bases,
        "variants": {w: len(a) for w, (_, a) in sets.items()},
        "rows": [],
        "beside": [],
    }

    def save() -> None:  # after every row: a run cut short still leaves what it measured
        if args.out:
            Path(args.out).write_text(json.dumps(report, indent=2))

    for shape in shapes:
        model = args.model or model_dir(shape, WORK, args.device)
        cases = []
        if "layouts" in parts:
            for w in wins:
                vcf, alleles = sets[w]
                for layout in layouts:
                    name = f"{shape}-{w}-{layout}"
                    extra = ["scores=[llr]", "embed.layers=[]", f"window.size={w}"]
                    extra.append(f"variants.layout={layout}")
                    if layout == "end":
                        extra.append(f"variants.end_bases={end_bases[w]}")
                    row = pipeline_run(args, shape, model, name, vcf, extra)
                    row.update(shape=shape, window=w, layout=layout)
                    if layout == "end":
                        row["end_bases"] = end_bases[w]
                    if "error" not in row:
                        per_variant(row, w)
                    report["rows"].append(row)
                    cases.append((name, w, layout, alleles, row))
                    save()
        if "peer" in parts and cases:
            peer_rows(args, shape, model, seqs, cases, end_bases, peer_counts, report)
            save()
        if "beside" in parts:
            beside_rows(args, shape, model, seqs, report)
            save()
    print_table(report)
    save()
    return 0


def peer_rows(args, shape, model, seqs, cases, end_bases, peer_counts, report) -> None:
    """vLLM's prompt_logprobs on each case's first variants, one process per caching setting;
    its rate and LLR go beside the case's row."""
    specs = []
    for name, w, layout, alleles, _ in cases:
        k = min(peer_counts[w], len(alleles))
        before = before_of(layout, w, end_bases[w])
        ref, alt, offsets = windows(seqs, alleles[:k], w, before)
        npz = WORK / f"peer-{name}.npz"
        np.savez(npz, ref=ref, alt=alt, offsets=offsets)
        specs.append({"name": name, "window": w, "npz": str(npz), "fidelity": args.fidelity})
    env = repo_env()
    if args.device == "cpu":
        env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    for setting in args.peer_caching.split(","):
        spec = {
            "model": model,
            "max_model_len": max(w for _, w, *_ in cases) + 64,
            "caching": setting == "on",
            "max_num_batched_tokens": args.peer_batched_tokens,
            "cases": specs,
        }
        path = WORK / f"peer-{shape}-{setting}.json"
        path.write_text(json.dumps(spec))
        cmd = [sys.executable, "-m", MODULE, "--peer-spec", str(path), "--device", args.device]
        log = WORK / f"log-peer-{shape}-{setting}.txt"
        try:
            # A result printed counts even if the engine's shutdown fails after it.
            got = spawn_json(cmd, log, args.timeout, env, check_rc=False)
        except subprocess.TimeoutExpired:
            got = {"error": f"timed out after {args.timeout} s"}
        report.setdefault("peer", {})[f"{shape}-{setting}"] = got
        if "error" in got:
            continue
        for name, _, _, alleles, row in cases:
            p = got["cases"][name]
            row.setdefault("peer", {})[setting] = {k: v for k, v in p.items() if k != "llr"}
            if "error" not in row:
                if row["variants_per_h_span"] and p["variants_per_h"]:
                    row["peer"][setting]["span_vs_peer"] = round(
                        row["variants_per_h_span"] / p["variants_per_h"], 2
                    )
                row.setdefault("fidelity", fidelity(row, alleles, p["llr"]))


def beside_rows(args, shape, model, seqs, report) -> None:
    """8192-base centred windows: scores with the default embeddings, and embeddings alone."""
    vcf = WORK / "beside.vcf.gz"
    if not vcf.exists():
        report["beside_variants"] = len(write_vcf(vcf, seqs, args.beside_variants, seed=20))
    runs = {"scores+embeddings": ["scores=[llr]"], "embeddings": []}
    got = {}
    for what, extra in runs.items():
        name = f"{shape}-beside-{what.replace('+', '-')}"
        row = pipeline_run(args, shape, model, name, vcf, [*extra, f"window.size={BESIDE_WINDOW}"])
        row.update(shape=shape, window=BESIDE_WINDOW, layout="centred", what=what)
        if "error" not in row:
            per_variant(row, BESIDE_WINDOW)
        report["beside"].append(row)
        got[what] = row
    a, b = got["scores+embeddings"], got["embeddings"]
    if "error" not in a and "error" not in b and b["engine_span_s"]:
        a["span_vs_embeddings"] = round(a["engine_span_s"] / b["engine_span_s"], 3)


def fmt(x) -> str:
    return "-" if x is None else f"{x:,}"


def print_table(report: dict) -> None:
    print(
        "shape | window | layout | variants | wall s | engine span s | variants/h span | "
        "variants/h wall | submitted / variant | windows per variant | peer variants/h | "
        "span / peer | LLR max abs diff"
    )
    for r in report["rows"]:
        head = f"{r['shape']} | {r['window']} | {r['layout']}"
        if r["layout"] == "end":
            head += f" ({r['end_bases']})"
        if "error" in r:
            print(head, "| error |", r["error"][-400:])
            continue
        p = next(iter(r.get("peer", {}).values()), {})
        fid = r.get("fidelity", {}).get("max_abs_diff")
        print(
            f"{head} | {r['variants']} | {r['wall_s']} | {r['engine_span_s']} | "
            f"{fmt(r['variants_per_h_span'])} | {fmt(r['variants_per_h_wall'])} | "
            f"{r['windows_submitted_per_variant']} | {r['windows_per_variant']} | "
            f"{fmt(p.get('variants_per_h'))} | {fmt(p.get('span_vs_peer'))} | {fmt(fid)}"
        )
    for key, got in report.get("peer", {}).items():
        if "error" in got:
            print(f"peer {key}: error | {got['error'][-400:]}")
            continue
        print(
            f"peer {key}: engine start {got['engine_start_s']} s, max_num_batched_tokens "
            f"{got['max_num_batched_tokens']}, block {got['block_size']}; "
            + "; ".join(
                f"{n}: {c['variants']} variants in {c['s']} s" for n, c in got["cases"].items()
            )
        )
    if report["beside"]:
        print("shape | beside (8192, centred) | variants | wall s | engine span s | "
              "variants/h span | windows per variant | span / embeddings alone")  # fmt: skip
    for r in report["beside"]:
        head = f"{r['shape']} | {r['what']}"
        if "error" in r:
            print(head, "| error |", r["error"][-400:])
            continue
        print(
            f"{head} | {r['variants']} | {r['wall_s']} | {r['engine_span_s']} | "
            f"{fmt(r['variants_per_h_span'])} | {r['windows_per_variant']} | "
            f"{fmt(r.get('span_vs_embeddings'))}"
        )


if __name__ == "__main__":
    sys.exit(main())
