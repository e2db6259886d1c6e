"""One table from benchmark lanes that ran side by side (one `bench --lane` per GPU).

    python -m benchmarks.report OUT/b12/bench.json OUT/b10/bench.json ... --out OUT/report.json

Lanes share their models and workloads (the same chunk ids), so every contender's sample is
compared with the HF references whichever lane computed them: HF as run today (bf16) and HF in
float32. Ratios are taken across lanes too: the lanes ran on identical GPUs of one machine.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.bench import fidelity, load_sample, print_table, ratios


def merge(reports: list[dict]) -> tuple[list[dict], list[str]]:
    rows, seen, notes = [], set(), []
    for report in reports:
        for r in report["runs"]:
            key = (r["model"], r["workload"], r["contender"])
            if key in seen:
                notes.append(f"{'/'.join(key)}: ran in more than one lane; the first is kept")
                continue
            seen.add(key)
            rows.append(dict(r))
    refs = {}
    for r in rows:
        if r["contender"] in ("hf_today", "hf_fp32") and r.get("sample_file"):
            refs[(r["model"], r["workload"], r["contender"])] = load_sample(r["sample_file"])
    for r in rows:
        if "error" in r or not r.get("sample_file"):
            continue
        got = {"sample": load_sample(r["sample_file"])}
        for ref, suffix in (("hf_today", ""), ("hf_fp32", "_fp32")):
            reference = refs.get((r["model"], r["workload"], ref))
            if reference is not None:
                r.update(fidelity(got, reference, suffix))
    return rows, notes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("reports", nargs="+", help="bench.json of each lane")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    reports = []
    for path in args.reports:
        if Path(path).exists():
            reports.append(json.loads(Path(path).read_text()))
        else:
            print(f"missing: {path} (that lane wrote nothing)", flush=True)
    rows, notes = merge(reports)
    merged = {"device": reports[0]["device"] if reports else None, "lanes": args.reports}
    if reports:
        merged["versions"] = reports[0].get("versions")
    ratios(rows, merged)
    merged["runs"], merged["notes"] = rows, notes
    Path(args.out).write_text(json.dumps(merged, indent=2))
    print_table(rows)
    print(json.dumps(merged["ratios"], indent=2))
    for n in notes:
        print(n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
