"""Start-up: how long the user's command takes from launch to the first pack's embeddings, and
where that time goes per engine (launch to the actor's start, importing vLLM, building the
engine, its warm-up request, the first pack). One engine on a small gzip FASTA (4 Mbp: four
packs), so that start-up is most of the run. Prints a table, writes startup.json and
startup.png (benchmarks/harness/user_command.py has the method).

    python -m benchmarks.questions.startup --device cuda --model genos_1_2b --bare none \\
        --out $OUT                                  # a first run: nothing warmed before it
    python -m benchmarks.questions.startup --device cuda --model genos_1_2b --bare last ...
    python -m benchmarks.questions.startup ... --set +embed.engine_kwargs.enforce_eager=false \\
        --set +embed.env_vars.VLLM_ENABLE_V1_MULTIPROCESSING=1   # the earlier defaults

--bare first (the default) runs the bare engine before the CLI, which warms vLLM's compile
cache: the CLI's start-up is then that of a second run.
"""

from __future__ import annotations

import sys

from benchmarks.harness import user_command

DEFAULTS = {"bases": 4_000_000, "contigs": 20, "engines": 1}


def main(argv: list[str] | None = None) -> int:
    args = user_command.parse(user_command.parser(__doc__, **DEFAULTS), argv)
    return user_command.run(args, "startup")


if __name__ == "__main__":
    sys.exit(main())
