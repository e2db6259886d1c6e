"""Scale: the user's command end to end on N engines (one per GPU) on one large gzip FASTA,
against N x the bare engine on the same machine: steady rate over the engines' busy span, end
to end (tokens over launch to exit), idle gaps between packs, GPU utilisation. Prints a table,
writes scale.json and scale.png (benchmarks/harness/user_command.py has the method).

    python -m benchmarks.questions.scale --device cuda --model genos_1_2b --bases 320000000 \\
        --engines 2 --out $OUT
    python -m benchmarks.questions.scale --device cuda --model genos_10b --bases 8000000 \\
        --engines 1 --set embed.tensor_parallel_size=2 ...              # one TP=2 engine
    python -m benchmarks.questions.scale --device cpu --model tiny --smoke --out /tmp/scale
    python -m benchmarks.questions.scale --plot $OUT/scale.json   # redraw the PNG from the JSON
"""

from __future__ import annotations

import sys

from benchmarks.harness import user_command

DEFAULTS = {"bases": 160_000_000, "contigs": 1000, "engines": 2}


def main(argv: list[str] | None = None) -> int:
    args = user_command.parse(user_command.parser(__doc__, **DEFAULTS), argv)
    return user_command.run(args, "scale")


if __name__ == "__main__":
    sys.exit(main())
