"""Object store pressure: the user's command on inputs whose tokenized windows are 1x .. Nx
the object store, with every process's memory sampled. Prints a table, writes pressure.json.

    python -m benchmarks.questions.pressure --multiples 1,8 --out /tmp/pressure   # CPU, ~15 min
    python -m benchmarks.questions.pressure --multiples 1.1 --out /tmp/p --work /tmp/w  # test

A local Ray of `--object-store-mib` (75 MiB, Ray's minimum, by default) runs the CLI as typed
(`ray.object_store_memory=...`) on a random gzip FASTA of multiple x store / 4 bases (token ids
are int32, one per base), windows of `--window` bases, with a small random Mixtral (one layer,
hidden 64: on CPU the engine, not the model, is what is measured) unless `--model tiny`. The
process tree of the driver is sampled every 0.25 s: resident memory (RSS) per process, peak per
role (driver, engine actor, the largest other Ray worker, Ray's own daemons) and of the whole
tree. Bounded memory shows as peaks that do not grow with the input.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchmarks.harness.runner import read_manifest, repo_env
from benchmarks.harness.workloads import record_lengths, write_fasta

SAMPLE_S = 0.25
MIB = 1 << 20
# A model small enough that the pipeline, not the forward pass, sets the pace on 2 CPU cores.
SMALL = dict(
    hidden_size=64,
    intermediate_size=64,
    num_hidden_layers=1,
    num_attention_heads=1,
    num_key_value_heads=1,
    num_local_experts=2,
    num_experts_per_tok=1,
)


def role(cmdline: str) -> str:
    if "EmbedActor" in cmdline:
        return "engine"
    if cmdline.startswith("ray::"):
        return "worker"
    if " -m pipeline" in cmdline or "pipeline.cli" in cmdline:
        return "driver"
    return "ray"


class RssSampler:
    """Peak RSS of a process and its descendants, per process and in total."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.root = psutil.Process(pid)
        self.peak: dict[int, tuple[int, str]] = {}
        self.peak_uss: dict[int, int] = {}
        self.total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        import psutil

        while not self._stop.wait(SAMPLE_S):
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                continue
            total = 0
            for p in procs:
                try:
                    # USS: the process's private pages; RSS adds the object store's shared
                    # memory and spill files it has mapped.
                    mem = p.memory_full_info()
                    rss, uss = mem.rss, mem.uss
                    cmd = " ".join(p.cmdline())
                except psutil.Error:
                    continue
                self.peak_uss[p.pid] = max(self.peak_uss.get(p.pid, 0), uss)
                total += rss
                if rss > self.peak.get(p.pid, (0, ""))[0]:
                    self.peak[p.pid] = (rss, cmd)
            self.total = max(self.total, total)

    def by_role(self, private: bool = False) -> dict[str, float]:
        out = {"driver": 0.0, "engine": 0.0, "worker": 0.0, "ray": 0.0}
        for pid, (rss, cmd) in self.peak.items():
            r = role(cmd)
            out[r] = max(out[r], (self.peak_uss.get(pid, 0) if private else rss) / MIB)
        out = {k: round(v, 1) for k, v in out.items()}
        return out if private else out | {"total": round(self.total / MIB, 1)}

    def top(self, n: int = 6) -> list[dict]:
        """The n processes of largest peak RSS, with their command lines."""
        rows = sorted(self.peak.items(), key=lambda x: -x[1][0])[:n]
        return [
            {
                "rss_mib": round(rss / MIB, 1),
                "uss_mib": round(self.peak_uss.get(pid, 0) / MIB, 1),
                "cmd": cmd[:120],
            }
            for pid, (rss, cmd) in rows
        ]


def small_model(work: Path) -> str:
    from pipeline.models.tiny import TinySpec, tiny_model_path

    return str(tiny_model_path(TinySpec(**SMALL), root=work / "models"))


def run_one(multiple: float, args: argparse.Namespace, work: Path) -> dict:
    store = args.object_store_mib * MIB
    bases = int(multiple * store / 4) // args.window * args.window
    n = args.records
    fasta = work / f"pressure-{bases}-{n}.fa.gz"
    if not fasta.exists():
        write_fasta(fasta, record_lengths(bases, 0, large=n, large_frac=1 / n))
    out = work / f"pressure-run-{multiple:g}-{n}"
    model = ["model=tiny"] + ([] if args.model == "tiny" else [f"model.path={small_model(work)}"])
    cmd = [
        sys.executable,
        "-m",
        "pipeline",
        *model,
        f"input={fasta}",
        f"output={out}",
        "output.mode=overwrite",
        f"window.size={args.window}",
        f"ray.object_store_memory={store}",
        "log.progress=off",
        *([f"ray.num_cpus={args.cpus}"] if args.cpus else []),
        *args.set,
    ]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        cwd=work,
        env=repo_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with RssSampler(proc.pid) as rss:
        stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    row = {
        "multiple": multiple,
        "bases": bases,
        "records": n,
        "command": cmd,
        "rc": proc.returncode,
        "wall_s": round(wall, 1),
        "object_store_mib": args.object_store_mib,
        "peak_rss_mib": rss.by_role(),
        "peak_uss_mib": rss.by_role(private=True),
        "top": rss.top(),
    }
    if proc.returncode != 0:
        row["error"] = (stdout + stderr)[-3000:]
        return row
    manifest = read_manifest(out)
    c = manifest["counts"]
    row |= {
        "tokens": c["tokens"],
        "windows": c["windows"],
        "tokenized_mib": round(4 * c["tokens"] / MIB, 1),
        "tokenized_vs_store": round(4 * c["tokens"] / store, 2),
        "tok_s": round(c["tokens"] / wall, 1),
        "engine_tok_s": manifest["engine"]["tokens_per_s"],
    }
    return row


def table(rows: list[dict]) -> str:
    head = (
        "tokenized / store | tokens | wall s | driver MiB | engine MiB | largest worker MiB "
        "| Ray daemons MiB | all MiB"
    )
    lines = [head, "|".join("---" for _ in head.split("|"))]
    for r in rows:
        if r["rc"] != 0:
            lines.append(f"{r['multiple']:g} x | failed (rc {r['rc']})")
            continue
        m = r["peak_rss_mib"]
        lines.append(
            f"{r['tokenized_vs_store']:g} x ({r['tokenized_mib']:,.0f} MiB) | {r['tokens']:,} | "
            f"{r['wall_s']:.0f} | {m['driver']:,.0f} | {m['engine']:,.0f} | "
            f"{m['worker']:,.0f} | {m['ray']:,.0f} | {m['total']:,.0f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--multiples", default="1,8", help="tokenized input / object store")
    ap.add_argument("--object-store-mib", type=int, default=75)
    ap.add_argument("--window", type=int, default=1024)
    ap.add_argument("--model", choices=["small", "tiny"], default="small")
    ap.add_argument("--records", type=int, default=4, help="records of equal length")
    ap.add_argument("--cpus", type=int, default=None, help="ray.num_cpus (default: all)")
    ap.add_argument("--set", action="append", default=[], help="more CLI overrides")
    ap.add_argument("--out", default=os.environ.get("OUT", "pressure-out"))
    ap.add_argument("--work", default=None, help="inputs and outputs (default: OUT/../work)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work) if args.work else out.parent / "work"
    work.mkdir(parents=True, exist_ok=True)
    rows = [run_one(float(m), args, work) for m in args.multiples.split(",")]
    report = {"runs": rows, "python": sys.version.split()[0]}
    try:
        import ray
        import vllm

        report |= {"ray": ray.__version__, "vllm": vllm.__version__}
    except ImportError:
        pass
    (out / "pressure.json").write_text(json.dumps(report, indent=2))
    print(table(rows))
    return 0 if all(r["rc"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
