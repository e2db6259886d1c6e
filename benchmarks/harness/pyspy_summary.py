"""Where the CPU time went, per process and thread, from a py-spy raw (collapsed) profile.

    py-spy record --subprocesses --threads --nonblocking --format raw -o prof.raw -- CMD
    python -m benchmarks.harness.pyspy_summary prof.raw --rate 25 > prof.txt

py-spy samples only threads that are running (not idle), so a thread's samples / rate is
the CPU time it was busy. The summary lists, for each process, its busy threads and their
hottest functions: by self time (the frame on top) and inclusive (anywhere in the stack).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

_COUNT = re.compile(r"^(.*) (\d+)$", re.S)
_PROCESS = re.compile(r"^process (\d+):\"(.*)\"$", re.S)


def read_stacks(path: Path) -> list[tuple[list[str], int]]:
    """Stacks and their sample counts. A command line with newlines (`python -c`) spans
    several lines of the file: a record ends at the line that ends with its count."""
    stacks, pending = [], ""
    for line in path.read_text(errors="replace").splitlines():
        pending = f"{pending}\n{line}" if pending else line
        m = _COUNT.match(pending)
        if m and not pending.endswith('"'):
            stacks.append((m.group(1).split(";"), int(m.group(2))))
            pending = ""
    return stacks


def summarize(stacks: list[tuple[list[str], int]], rate: float, top: int = 12) -> str:
    # A stack's frames: the processes from the root down, then a thread, then functions.
    by_proc: dict[str, Counter] = defaultdict(Counter)
    threads: dict[str, Counter] = defaultdict(Counter)
    self_t: dict[str, Counter] = defaultdict(Counter)
    incl: dict[str, Counter] = defaultdict(Counter)
    for frames, n in stacks:
        procs = [f for f in frames if _PROCESS.match(f)]
        rest = [f for f in frames if not _PROCESS.match(f)]
        if not procs:
            continue
        m = _PROCESS.match(procs[-1])
        name = f"{m.group(1)} {m.group(2).splitlines()[0][:90]}"
        thread = rest[0] if rest and rest[0].startswith("thread ") else "thread ?"
        funcs = rest[1:] if rest and rest[0].startswith("thread ") else rest
        by_proc[name]["all"] += n
        threads[name][thread] += n
        if funcs:
            self_t[name][funcs[-1]] += n
            for f in set(funcs):
                incl[name][f] += n
    lines = []
    for name, c in sorted(by_proc.items(), key=lambda kv: -kv[1]["all"]):
        lines.append(f"== {name}: {c['all'] / rate:.1f} CPU s")
        for t, n in threads[name].most_common(4):
            lines.append(f"   {t}: {n / rate:.1f} s")
        lines.append("   self:")
        lines += [f"     {n / rate:6.2f} s  {f[:150]}" for f, n in self_t[name].most_common(top)]
        lines.append("   inclusive:")
        lines += [f"     {n / rate:6.2f} s  {f[:150]}" for f, n in incl[name].most_common(top)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("raw", type=Path)
    ap.add_argument("--rate", type=float, default=25.0, help="py-spy's --rate")
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args(argv)
    print(summarize(read_stacks(args.raw), args.rate, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
