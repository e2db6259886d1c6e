"""Whole genome: human chromosomes (GRCh38 names and sizes, random bases, N runs at both ends)
in one gzip FASTA through the user's command, one engine per GPU, against the bare engine;
then the whole genome (the 24 chromosomes, 3.09 Gbp) projected on --project-engines engines
from the run's start-up and steady rate per engine. Prints a table, writes genome.json and
genome.png (benchmarks/harness/user_command.py has the method).

    python -m benchmarks.questions.whole_genome --device cuda --model genos_1_2b \\
        --chromosomes chr21,chr22 --engines 2 --out $OUT
    python -m benchmarks.questions.whole_genome --device cuda --chromosomes all --engines 8 ...
    python -m benchmarks.questions.whole_genome --device cpu --model tiny --smoke --out /tmp/g

The projection assumes that engines scale linearly (one per GPU, sharing nothing), that N
engines on one node start as fast as the measured ones (they start in parallel), and no tail
(the last chromosome's packs finish with the others').
"""

from __future__ import annotations

import sys

from benchmarks.harness import user_command
from benchmarks.harness.workloads import HUMAN

DEFAULTS = {"chromosomes": "chr21,chr22", "engines": 2}


def projection(f: dict, engines: int, target: int) -> dict:
    """The whole human genome on `target` engines: the measured start-up, then every base as
    one token at the measured steady rate per engine."""
    bases = sum(HUMAN.values())
    per_engine = f["steady_tok_s"] / engines
    embed_s = bases / (per_engine * target)
    return {
        "bases": bases,
        "engines": target,
        "measured_engines": engines,
        "startup_s": f["startup_s"],
        "steady_tok_s_per_engine": round(per_engine),
        "embed_s": round(embed_s),
        "wall_s": round(f["startup_s"] + embed_s),
        "wall_min": round((f["startup_s"] + embed_s) / 60, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = user_command.parser(__doc__, **DEFAULTS)
    ap.add_argument(
        "--project-engines",
        type=int,
        default=8,
        help="project the whole human genome on this many engines (0: no projection)",
    )
    args = user_command.parse(ap, argv)

    def finish(result: dict) -> None:
        if args.project_engines:
            result["projection"] = projection(result["figures"], args.engines, args.project_engines)

    return user_command.run(args, "genome", finish)


if __name__ == "__main__":
    sys.exit(main())
