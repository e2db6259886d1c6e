"""Genome-wide tracks: the user's command over a chromosome-sized plain gzip FASTA, both
strands, with every process's memory sampled; the engine core alone on the same windows;
the read task's memory at 1x, 4x and 16x one input; projected to GRCh38. Prints a table,
writes tracks.json.

    python -m benchmarks.questions.tracks --device cuda --model genos_1_2b --out DIR \\
        --chromosome chr1 --scored-mbp 50
    python -m benchmarks.questions.tracks --parts memory --device cpu --model small \\
        --multiples 1,4,16 --base-mbp 15.5 --out DIR
    python -m benchmarks.questions.tracks --parts host --host-mbp 62 --out DIR
    python -m benchmarks.questions.tracks --device cpu --model small --smoke --out DIR

Parts (--parts):
- run: `python -m pipeline model=M input.tracks=chr.fa.gz tracks.strands=both
  window.size=8192 tracks.context=1024 [tracks.regions=BED]` as typed, on the chromosome's
  GRCh38 size (random bases, N runs at both ends, gzip: benchmarks.harness.workloads). With
  --scored-mbp the BED keeps that many bases after the first N run, so a run that fits the
  time limit still streams the whole file through its one read task. Figures: wall, start-up
  (launch to the first pack done), the engines' busy span and tokens (the manifest), tokens
  per scored base, the bigWig assembly, peak RSS and private memory (USS) per process.
- core: the engine core alone (pipeline.embed.core.EngineCore, the run's EngineSpec) on
  --core-windows windows of the run's size with the same scored spans, in a process of its
  own: what the engine does without the pipeline around it.
- memory: the same command with a BED of one window (the engine idles) on files of
  multiple x --base-mbp, one record each: the read task's peak against the input's size.
- host: read, window and tokenize chained in this process, no Ray, on one --host-mbp
  record: tokens per second one read task makes.

Projection: GRCh38's 24 chromosomes (3,088,269,832 bases, every base scored, N runs
included: an upper bound) at the run's steady tokens per second per engine, plus its
start-up, on 1 and on 8 engines (one per GPU, sharing nothing), plus the bigWigs at the run's
seconds per scored base (written after the engines, one process per file).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.harness.runner import REPO, read_manifest, repo_env
from benchmarks.harness.workloads import HUMAN, write_fasta
from benchmarks.questions.pressure import SMALL, RssSampler

WORK = Path(os.environ.get("TRACKS_WORK", "/tmp/tracks-work"))


def n_run(length: int) -> int:
    """workloads.write_fasta's N run at each end of a record."""
    return min(10_000, length // 50)


GRCH38 = sum(HUMAN.values())


def model_for(args: argparse.Namespace) -> list[str]:
    """The model overrides: a Genos shape (random weights), the tiny model, or `small` (one
    layer, hidden 64: the pipeline, not the model, sets the pace)."""
    from pipeline.models.tiny import TinySpec, tiny_model_path

    if args.model == "small":
        path = tiny_model_path(TinySpec(**SMALL), root=WORK / "models")
        return ["model=tiny", f"model.path={path}", "model.dtype=float32"]
    if args.model == "tiny":
        return ["model=tiny", "model.dtype=float32"]
    from benchmarks.harness.shapes import model_dir

    return [f"model={args.model}", f"model.path={model_dir(args.model, WORK, args.device)}"]


def fasta(name: str, length: int, seed: int = 0) -> Path:
    path = WORK / f"{name}-{length}-s{seed}.fa.gz"
    if not path.exists():
        t = time.perf_counter()
        write_fasta(path, [length], seed, [name])
        print(f"FASTA {path}: {length:,} bases in {time.perf_counter() - t:.0f} s", flush=True)
    return path


def command(args, path: Path, out: Path, bed: Path | None) -> list[str]:
    cmd = [sys.executable, "-m", "pipeline", *model_for(args), f"input.tracks={path}"]
    cmd += [f"output={out}", "output.mode=overwrite", "tracks.strands=both"]
    cmd += [f"window.size={args.window}", f"tracks.context={args.context}"]
    cmd += [f"embed.num_actors={args.engines}", f"hydra.run.dir={WORK / 'hydra'}"]
    if bed is not None:
        cmd.append(f"tracks.regions={bed}")
    if args.device == "cpu":
        cmd += ["embed.device=cpu"]
    return cmd + list(args.set)


def run_cli(cmd: list[str], timeout: float) -> dict:
    print("$", " ".join(cmd), flush=True)
    log = WORK / "cli.log"
    with open(log, "w") as f:
        launch = time.time()
        proc = subprocess.Popen(cmd, cwd=REPO, env=repo_env(), stdout=f, stderr=subprocess.STDOUT)
        with RssSampler(proc.pid) as rss:
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = -9
        end = time.time()
    tail = log.read_text()[-3000:]
    return {
        "cmd": cmd,
        "rc": rc,
        "launch": launch,
        "wall_s": round(end - launch, 2),
        "peak_rss_mib": rss.by_role(),
        "peak_uss_mib": rss.by_role(private=True),
        "top": rss.top(8),
        "log_tail": tail if rc else tail[-600:],
    }


def projection(f: dict, engines: int, scored: int) -> dict:
    """GRCh38, both strands, at the run's tokens per base and steady rate per engine, on 1
    and 8 engines; plus start-up and the bigWigs at the run's seconds per scored base (they
    are written after the engines, one process per file)."""
    per_engine = f["steady_tok_s"] / engines
    per_base = f["tokens_per_base"] * 2
    bigwig = (f["bigwig_s"] or 0) * GRCH38 / scored
    out = {
        "bases": GRCH38,
        "tokens_per_base_both_strands": per_base,
        "steady_tok_s_per_engine": round(per_engine),
        "bigwig_s": round(bigwig),
    }
    for n in (1, 8):
        engine = GRCH38 * per_base / (per_engine * n)
        out[f"grch38_on_{n}_engine_s"] = round(engine)
        out[f"grch38_on_{n}_s"] = round(engine + (f["startup_s"] or 0) + bigwig)
    out["grch38_on_1_h"] = round(out["grch38_on_1_s"] / 3600, 2)
    out["grch38_on_8_min"] = round(out["grch38_on_8_s"] / 60, 1)
    return out


def run_part(args) -> dict:
    length = args.length or HUMAN[args.chromosome]
    path = fasta(args.chromosome, length)
    out = WORK / "out-run"
    bed = None
    gap = n_run(length)
    scored = length - 2 * gap
    if args.scored_mbp:
        scored = min(scored, int(args.scored_mbp * 1e6))
        bed = WORK / "scored.bed"
        bed.write_text(f"{args.chromosome}\t{gap}\t{gap + scored}\n")
    got = run_cli(command(args, path, out, bed), args.timeout)
    if got["rc"]:
        return {"error": got}
    m = read_manifest(out)
    e, c = m["engine"], m["counts"]
    launch = got.pop("launch")
    strands = 2
    f = {
        "file_bases": length,
        "file_mb": round(path.stat().st_size / 1e6, 1),
        "scored_bases_per_strand": scored,
        "windows": c["windows"],
        "engine_tokens": e["tokens"],
        "tokens_per_base": round(e["tokens"] / (scored * strands), 4),
        "startup_s": round(e["first_pack_t1"] - launch, 2) if e.get("first_pack_t1") else None,
        "engine_span_s": e["span_s"],
        "steady_tok_s": e["tokens_per_s"],
        "e2e_tok_s": round(e["tokens"] / got["wall_s"], 1),
        "bigwig_s": m["tracks"].get("bigwig_s"),
        "bigwig_mb": round(sum(b.stat().st_size for b in (out / "tracks").iterdir()) / 1e6, 1),
    }
    f["projection"] = projection(f, args.engines, scored)
    return {"command": " ".join(got.pop("cmd")), "run": got, "figures": f}


_CORE = r"""
import json, sys, time
import numpy as np
from pipeline.embed.core import EngineCore, Window
from pipeline.run import plan
from pipeline.compose import compose, to_config

import dataclasses
overrides, n, size, context = json.loads(sys.argv[1]), *map(int, sys.argv[2:5])
p = plan(to_config(compose(overrides)))
core = EngineCore(dataclasses.replace(p.engine, prefix_caching=sys.argv[5] == "on"), p.columns)
t0 = time.time()
core.start()
ready = time.time()
rng = np.random.default_rng(0)
ids = [rng.integers(4, 8, size).astype(np.int32) for _ in range(n)]
items = [[Window(w, (context, size), score=(context, size))] for w in ids]
core.embed(items[:2])
t1 = time.time()
core.embed(items)
t2 = time.time()
print(json.dumps({"prefix_caching": sys.argv[5], "start_s": ready - t0, "windows": n,
                  "tokens": n * size, "steady_s": t2 - t1, "tok_s": n * size / (t2 - t1)}))
"""


def core_part(args) -> dict:
    """The core alone with the run's engine (prefix caching off for tracks), and with
    prefix caching on: what hashing blocks that no window shares costs."""
    out = {mode: core_once(args, mode) for mode in args.core_caching.split(",")}
    first = next(iter(out.values()))
    return {**first, "by_prefix_caching": out}


def core_once(args, caching: str) -> dict:
    small = fasta("chrS", 100_000)
    overrides = [
        o
        for o in command(args, small, WORK / "core-out", None)[3:]
        if not o.startswith(("hydra.", "output.mode"))
    ]
    sizes = [str(args.core_windows), str(args.window), str(args.context), caching]
    proc = subprocess.run(
        [sys.executable, "-c", _CORE, json.dumps(overrides), *sizes],
        cwd=REPO,
        env=repo_env(),
        capture_output=True,
        text=True,
        timeout=args.timeout,
    )
    if proc.returncode:
        return {"error": proc.stderr[-3000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def memory_part(args) -> list[dict]:
    rows = []
    for m in (float(x) for x in args.multiples.split(",")):
        length = int(m * args.base_mbp * 1e6)
        path = fasta("chr1", length, seed=int(m))
        bed = WORK / "one-window.bed"
        bed.write_text(f"chr1\t{n_run(length)}\t{n_run(length) + 1000}\n")
        got = run_cli(command(args, path, WORK / "out-memory", bed), args.timeout)
        got.pop("launch")
        got.pop("cmd")
        rows.append({"multiple": m, "bases": length, **got})
        print(json.dumps(rows[-1]["peak_rss_mib"]), flush=True)
    return rows


def host_part(args) -> dict:
    import pyarrow as pa

    from pipeline.config import WindowConfig
    from pipeline.read.stage import ReadStage
    from pipeline.tokenize.stage import TokenizeStage
    from pipeline.tokenize.tokenizer import DnaTokenizer, TokenizerSpec
    from pipeline.window.tracks import TrackWindowStage

    length = int(args.host_mbp * 1e6)
    path = fasta("chr1", length, seed=7)
    w = WindowConfig(size=args.window, stride=args.window - args.context)
    model = model_for(args)[1].split("=", 1)[1] if args.model != "tiny" else None
    from pipeline.models.tiny import tiny_model_path

    tok = DnaTokenizer(TokenizerSpec(model or str(tiny_model_path())))
    read = ReadStage(window=w)
    win = TrackWindowStage(w, args.context, ("+", "-"), "k")
    tokenize = TokenizeStage(tok, args.window, 1 << 22)
    t0 = time.perf_counter()
    tokens = 0
    for table in read(pa.table({"source": [str(path)]})):
        for windows in win(table):
            tokens += int(sum(tokenize(windows).column("pack_tokens").to_pylist()))
    s = time.perf_counter() - t0
    return {"bases": length, "tokens": tokens, "s": round(s, 2), "tok_s": round(tokens / s)}


def print_table(report: dict) -> None:
    f = report.get("run", {}).get("figures")
    if f:
        print("\n| figure | value |\n|---|---|")
        for k, v in f.items():
            print(f"| {k} | {v} |")
        print("peak RSS MiB by role:", report["run"]["run"]["peak_rss_mib"])
        print("peak USS MiB by role:", report["run"]["run"]["peak_uss_mib"])
    if "core" in report:
        print("engine core alone:", report["core"])
    for r in report.get("memory", []):
        print(
            f"memory x{r['multiple']:g} ({r['bases']:,} bases): wall {r['wall_s']} s, "
            f"RSS {r['peak_rss_mib']}, USS {r['peak_uss_mib']}"
        )
    if "host" in report:
        print("host (read, window, tokenize; one process):", report["host"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--parts", default="run,core")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--model", default="genos_1_2b")
    ap.add_argument("--engines", type=int, default=1)
    ap.add_argument("--chromosome", default="chr1")
    ap.add_argument("--length", type=int, default=0, help="bases (0: the chromosome's)")
    ap.add_argument("--scored-mbp", type=float, default=0.0)
    ap.add_argument("--window", type=int, default=8192)
    ap.add_argument("--context", type=int, default=1024)
    ap.add_argument("--core-windows", type=int, default=256)
    ap.add_argument("--core-caching", default="off,on", help="prefix caching of the core runs")
    ap.add_argument("--multiples", default="1,4,16")
    ap.add_argument("--base-mbp", type=float, default=15.5)
    ap.add_argument("--host-mbp", type=float, default=62.0)
    ap.add_argument("--timeout", type=float, default=560)
    ap.add_argument("--set", action="append", default=[], help="KEY=VALUE for the run")
    ap.add_argument("--smoke", action="store_true", help="CPU sizes: a test of this module")
    ap.add_argument("--out", type=Path, default=Path("/tmp/tracks-out"))
    args = ap.parse_args(argv)
    if args.smoke:
        args.length, args.scored_mbp, args.window, args.context = 60_000, 0.0, 1024, 256
        args.core_windows, args.multiples, args.base_mbp, args.host_mbp = 4, "1,2", 0.03, 0.05
    WORK.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    from benchmarks.harness.report import versions

    report: dict = {"date": time.strftime("%Y-%m-%d"), "versions": versions(args.device)}
    report["args"] = {k: str(v) for k, v in vars(args).items()}
    parts = args.parts.split(",")
    steps = {"run": run_part, "core": core_part, "memory": memory_part, "host": host_part}
    for part in parts:
        report[part] = steps[part](args)
        (args.out / "tracks.json").write_text(json.dumps(report, indent=2))
    run_f = report.get("run", {}).get("figures")
    core = report.get("core", {})
    if run_f and core.get("tok_s"):
        run_f["steady_vs_core"] = round(run_f["steady_tok_s"] / args.engines / core["tok_s"], 3)
        (args.out / "tracks.json").write_text(json.dumps(report, indent=2))
    print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
