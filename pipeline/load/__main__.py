"""`python -m pipeline.load OUTPUT`: summarise a finished run from its manifest and shards."""

from __future__ import annotations

import sys

import numpy as np
import pyarrow as pa

from pipeline import kinds
from pipeline.errors import DnaEmbedError
from pipeline.load.loader import embedding_columns, load_embeddings, read_manifest, to_numpy
from pipeline.write.layout import row_order


def summarize(uri: str, storage_options: dict | None = None) -> str:
    manifest = read_manifest(uri, storage_options)
    table = load_embeddings(uri, storage_options=storage_options)
    c = manifest["counts"]
    names = embedding_columns(manifest)
    lines = [
        f"{uri}: model {manifest['model'].get('name', '?')}, dim {manifest['dim']}, "
        f"{len(manifest['shards'])} shards, embeddings: {', '.join(names)}",
        f"  records {c['records']} ({c['records_skipped']} skipped), windows {c['windows']}, "
        f"tokens {c['tokens']}, bases {c['bases']}",
    ]
    for s in manifest["skipped_records"]:
        where = s["seq_id"] + (f":{s['pos']}" if "pos" in s else "")
        lines.append(f"  skipped {where} ({s['source']}): {s['reason']}")
    if table.num_rows:
        for name in names:
            norms = np.linalg.norm(to_numpy(table, embedding=name)[1], axis=1)
            lines.append(
                f"  {name} norms: min {norms.min():.3f} mean {norms.mean():.3f} "
                f"max {norms.max():.3f}"
            )
        for score in manifest.get("scores", []):
            lines.append(f"  {score['column']}: {describe(table.column(score['column']))}")
        meta = table.drop_columns(names).sort_by(row_order(manifest))
        head = meta.slice(0, 5).to_pylist()
        kind = kinds.get(manifest.get("input", "tiles"))
        lines.append(f"  first rows ({kind.shown_coordinates}):")
        for row in head:
            lines.append(f"    {kind.locus(row)} {row['n_tokens']} tokens  chunk {row['chunk_id']}")
    return "\n".join(lines)


def describe(column: pa.ChunkedArray) -> str:
    """A score column in one line: min, mean and max (per-token ones over every token), or
    its most frequent values; NaN and null left out, and counted."""
    column = column.combine_chunks()
    while pa.types.is_large_list(column.type) or pa.types.is_list(column.type):
        column = column.flatten()
    if pa.types.is_fixed_size_list(column.type):
        column = column.flatten()
    if pa.types.is_string(column.type):
        counts = column.drop_null().value_counts().to_pylist()
        top = sorted(counts, key=lambda c: -c["counts"])[:4]
        return ", ".join(f"{c['values']} {c['counts']}" for c in top) or "no values"
    values = column.to_numpy(zero_copy_only=False).astype(np.float64)
    ok = values[np.isfinite(values)]
    missing = len(values) - len(ok)
    if not len(ok):
        return f"no values ({missing} missing)"
    shown = f"min {ok.min():.4g} mean {ok.mean():.4g} max {ok.max():.4g}"
    return shown + (f" ({missing} missing)" if missing else "")


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m pipeline.load",
        description="Summarise a dnaembed output: its manifest's counts, the embeddings' "
        "norms, the scores and the first rows.",
    )
    parser.add_argument("output", help="the output directory or URI (s3://bucket/run)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        print(summarize(args.output))
    except DnaEmbedError as e:
        print(f"dnaembed: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
