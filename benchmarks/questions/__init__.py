"""One module per measured question; each prints a table and writes JSON (BENCHMARKS.md has
one section per question, with the command that reproduces its figures)."""
