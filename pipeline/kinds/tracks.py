"""Tracks: every base of a genome (input.tracks: FASTA files) scored by a causal model: the
log-probability of the reference base, the entropy over A, C, G, T and their probabilities,
per strand; Parquet shards of windows' scored spans, and bigWig files assembled from them."""

from __future__ import annotations

import functools
import time
from bisect import bisect_left
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from pipeline.config import LastWindow, TrackValue
from pipeline.errors import ConfigError, InputError
from pipeline.kinds import DEFAULT_ROLE, Kind
from pipeline.rows import SORT_KEYS, TRACK_COLUMNS, TRACK_SCHEMA

if TYPE_CHECKING:
    from pipeline.config import WindowConfig
    from pipeline.embed.core import TokenScores
    from pipeline.embed.outputs import EmbeddingColumn
    from pipeline.read.sources import Source
    from pipeline.stages import Stage, StatsSink

# A '-' row's A, C, G, T are the forward strand's T, G, C, A.
_COMPLEMENT = [3, 2, 1, 0]
VALUE_TYPE = pa.large_list(pa.float32())
SHARD_VALUE_BYTES = 64 << 20
PROBS_TYPE = pa.large_list(pa.list_(pa.float32(), 4))


class Tracks(Kind):
    name = "tracks"
    key = "tracks"
    usage = "input.tracks=FASTA (a genome to score base by base)"
    whole = "is read whole (or in pieces, indexed)"
    per_token = False
    scores_only = True
    # Windows of a genome overlap at their ends, never at their starts.
    shares_prefixes = False
    row_columns = TRACK_COLUMNS
    window_schema = TRACK_SCHEMA
    row_order = SORT_KEYS
    coordinates = (
        "start, end: the bases a row scores, window_start, window_end: what the model saw; "
        "0-based half-open on the forward strand (BED), on both strands"
    )
    loci = "records"

    # ---- the config ----

    def check(self) -> None:
        super().check()
        cfg, t, w = self.cfg, self.cfg.tracks, self.cfg.window
        if cfg.scores.compute or cfg.scores.per_token:
            raise ConfigError(
                "input.tracks writes tracks.values; scores.compute and scores.per_token do "
                "not apply"
            )
        if t.context >= w.size:
            raise ConfigError(
                f"tracks.context={t.context} must be less than window.size={w.size} (each "
                "window scores the bases after its context)"
            )
        own = {
            "window.stride": (w.stride, None),
            "window.last": (w.last, LastWindow.keep),
            "window.reverse_complement": (w.reverse_complement, False),
            "window.n_policy": (w.n_policy, "keep"),
        }
        for key, (value, default) in own.items():
            if value != default:
                raise ConfigError(
                    f"{key}={value} does not apply to input.tracks: windows overlap by "
                    "tracks.context, tracks.strands picks the strands, N bases are gaps"
                )

    def fingerprint(self) -> dict[str, Any]:
        return {"tracks": {k: v for k, v in asdict(self.cfg.tracks).items() if k != "bigwig"}}

    def spans(self) -> bool:
        return True

    def rows_per_shard(self, asked: int) -> int:
        """At most SHARD_VALUE_BYTES of values a shard: a row holds window.size - context
        values of each track (what the write task holds at once)."""
        w = self.window()
        floats = sum(4 if v == TrackValue.probs else 1 for v in self.cfg.tracks.values)
        per_row = w.step * 4 * floats
        return max(1, min(asked, SHARD_VALUE_BYTES // per_row))

    def window(self) -> WindowConfig:
        """The windows: window.size every size - context bases, the last one short."""
        w = self.cfg.window
        return replace(w, stride=w.size - self.cfg.tracks.context, last=LastWindow.keep)

    def strands(self) -> tuple[str, ...]:
        s = self.cfg.tracks.strands
        return {"forward": ("+",), "reverse": ("-",)}.get(str(s), ("+", "-"))

    # ---- the plan ----

    def items(self, sources: list[Source], storage: dict) -> list[dict]:
        from pipeline.read.pieces import plan_pieces

        return plan_pieces(sources, self.cfg.input, self.window(), storage)

    def estimated_tokens(self, sources: list[Source]) -> int | None:
        from pipeline.tokenize.budget import file_bases

        w = self.window()
        bases = sum(file_bases(s, str(self.cfg.input.format)) for s in sources)
        return int(bases * w.size / w.step) * len(self.strands())

    def read_stages(self, model_key: str, stats: StatsSink) -> list[Stage]:
        from pipeline.kinds.tiles import read_stage
        from pipeline.window.tracks import TrackWindowStage

        cfg = self.cfg
        contigs = frozenset(cfg.tracks.contigs) if cfg.tracks.contigs else None
        return [
            read_stage(cfg, stats, self.window()),
            TrackWindowStage(
                self.window(),
                cfg.tracks.context,
                self.strands(),
                model_key,
                contigs,
                self.intervals(),
                stats,
            ),
        ]

    def precheck(self, sources: list[Source], model_key: str) -> None:
        """The files' first bytes (as tiles), then the contigs: unique across the files, and
        every one tracks.contigs or tracks.regions names present (and its intervals inside)."""
        from pipeline.precheck import check_tiles

        cfg = self.cfg
        check_tiles(sources, cfg.input, 1, cfg.storage.options())
        lengths = dict(self.contigs())
        missing = [c for c in cfg.tracks.contigs if c not in lengths]
        if missing:
            raise ConfigError(
                f"tracks.contigs names {', '.join(map(repr, missing))}, which the input lacks "
                f"(it has {_some(lengths)})"
            )
        for seq_id, ivs in (self.intervals() or {}).items():
            if seq_id not in lengths:
                raise InputError(
                    f"{cfg.tracks.regions}: interval on {seq_id!r}, a contig the input lacks "
                    f"(it has {_some(lengths)})"
                )
            if ivs[-1][1] > lengths[seq_id]:
                raise InputError(
                    f"{cfg.tracks.regions}: interval ending at {ivs[-1][1]} on {seq_id!r}, "
                    f"past its end ({lengths[seq_id]} bases)"
                )

    @functools.cached_property
    def _contigs(self) -> list[tuple[str, int]]:
        from pipeline.read.sources import find_inputs

        storage = self.cfg.storage.options()
        found: dict[str, tuple[str, int]] = {}
        out = []
        for s in find_inputs(self.paths(), storage).sources:
            for name, length in contig_lengths(s.uri, storage):
                if name in found:
                    raise InputError(
                        f"{s.uri}: contig {name!r} is also in {found[name][0]}: a track has "
                        "one value per base of each contig, so names must be unique"
                    )
                found[name] = (s.uri, length)
                out.append((name, length))
        return out

    def contigs(self) -> list[tuple[str, int]]:
        """(name, length) of every contig of the input, in file order (from each file's .fai,
        or one pass over it); duplicate names fail naming both files."""
        return self._contigs

    @functools.cached_property
    def _intervals(self) -> dict[str, list[tuple[int, int]]] | None:
        from pipeline.read.bed import iter_intervals

        uri = self.cfg.tracks.regions
        if not uri:
            return None
        by: dict[str, list[tuple[int, int]]] = {}
        for iv in iter_intervals(uri, self.cfg.storage.options()):
            by.setdefault(iv.seq_id, []).append((iv.start, iv.end))
        return {k: _merged(v) for k, v in by.items()}

    def intervals(self) -> dict[str, list[tuple[int, int]]] | None:
        """tracks.regions per contig, sorted and merged; None: the whole input."""
        return self._intervals

    # ---- what is written ----

    def outputs(self, columns: list[EmbeddingColumn]) -> list[str]:
        return []

    def score_columns(self) -> list[str]:
        return [str(v) for v in self.cfg.tracks.values]

    def schema(self, columns: list[EmbeddingColumn], layers: tuple[int, ...], hidden: int):
        types = {f.name: f.type for f in self.window_schema} | {"n_tokens": pa.int32()}
        fields = [(n, types[n]) for n in self.row_columns]
        fields += [(n, PROBS_TYPE if n == "probs" else VALUE_TYPE) for n in self.score_columns()]
        return pa.schema(fields)

    def written(
        self,
        rows: pa.Table,
        columns: list[EmbeddingColumn],
        vectors: dict[str, dict[str, np.ndarray]],
        states: dict[str, dict[str, list[np.ndarray]]],
        scores: dict[str, list[list[TokenScores]]] | None = None,
    ) -> pa.Table:
        """Per row, its scored span's values on forward coordinates (NaN: a gap)."""
        assert scores is not None
        asked = self.score_columns()
        got: dict[str, list[np.ndarray]] = {v: [] for v in asked}
        starts = rows.column("start").to_pylist()
        ends = rows.column("end").to_pylist()
        seq_ids = rows.column("seq_id").to_pylist()
        strands = rows.column("strand").to_pylist()
        for i, item in enumerate(scores[DEFAULT_ROLE]):
            values = track_values(item[0], strands[i] == "-")
            keep = self._inside(seq_ids[i], starts[i], ends[i])
            for v in asked:
                x = values[v]
                if keep is not None:
                    x[~keep] = np.nan
                got[v].append(x)
        out = rows
        for v in asked:
            out = out.append_column(v, _lists(got[v], PROBS_TYPE if v == "probs" else VALUE_TYPE))
        return out

    def _inside(self, seq_id: str, start: int, end: int) -> np.ndarray | None:
        """Which bases of [start, end) tracks.regions holds (None: all)."""
        ivs = self.intervals()
        if ivs is None:
            return None
        keep = np.zeros(end - start, bool)
        on = ivs.get(seq_id, [])
        # Sorted and merged: the ones overlapping [start, end) are a run from the first
        # that ends after start.
        i = bisect_left(on, (start,))
        if i and on[i - 1][1] > start:
            i -= 1
        for s, e in on[i:]:
            if s >= end:
                break
            keep[max(s, start) - start : min(e, end) - start] = True
        return keep

    def manifest_strands(self) -> str | None:
        return str(self.cfg.tracks.strands)

    def manifest_model_scores(self) -> list[dict]:
        return [{"column": v, "score": "track", "statistic": v} for v in self.score_columns()]

    def finish(self, out: Any, manifest: dict) -> dict:
        """The manifest's `tracks`: the contigs, and the bigWigs, assembled from the
        committed shards (again on a resumed run: the same shards make the same files)."""
        from pipeline.write.tracks import write_bigwigs

        t = self.cfg.tracks
        entry: dict[str, Any] = {
            "context": t.context,
            "values": self.score_columns(),
            "strands": str(t.strands),
            "contigs": [list(c) for c in self.contigs()],
        }
        if t.bigwig:
            shards = [out.uri_of(s["path"]) for s in manifest["shards"]]
            t0 = time.perf_counter()
            entry["bigwig"] = write_bigwigs(
                shards,
                self.contigs(),
                self.score_columns(),
                str(t.strands),
                self.cfg.output.path,
                self.cfg.storage.options(),
            )
            entry["bigwig_s"] = round(time.perf_counter() - t0, 2)
        return {"tracks": entry}

    def header(self, first: str, what: str, columns: list[EmbeddingColumn]) -> tuple[str, str, str]:
        t, w = self.cfg.tracks, self.cfg.window
        return (
            first,
            f"windows of {w.size} with {t.context} bases of context, strands {t.strands}",
            "per-base " + ", ".join(self.score_columns()),
        )


def track_values(ts: TokenScores, reverse: bool) -> dict[str, np.ndarray]:
    """One row's values on forward coordinates: logp of each base, entropy and
    probabilities over A, C, G, T (renormalised to them); NaN where the base is not one of
    A, C, G, T or had no prediction."""
    logp = ts.logp.astype(np.float32)
    four = ts.alphabet[:, :4].astype(np.float64)
    top = np.max(four, axis=1, keepdims=True)
    norm = four - (top + np.log(np.exp(four - top).sum(axis=1, keepdims=True)))
    probs = np.exp(norm)
    entropy = -(probs * norm).sum(axis=1)
    gap = np.isnan(logp)
    if ts.base is not None:
        gap |= (ts.base < 0) | (ts.base > 3)
    probs = probs.astype(np.float32)
    entropy = entropy.astype(np.float32)
    logp = logp.copy()
    logp[gap], entropy[gap], probs[gap] = np.nan, np.nan, np.nan
    if reverse:
        logp, entropy, probs = logp[::-1], entropy[::-1], probs[::-1][:, _COMPLEMENT]
    return {
        str(TrackValue.logp): np.ascontiguousarray(logp),
        str(TrackValue.entropy): np.ascontiguousarray(entropy),
        str(TrackValue.probs): np.ascontiguousarray(probs),
    }


def _lists(arrays: list[np.ndarray], type_: pa.DataType) -> pa.Array:
    """Per-row float32 arrays ([m] or [m, 4]) as one large list column."""
    lengths = np.array([len(a) for a in arrays], np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    flat = np.concatenate(arrays) if arrays else np.zeros((0,), np.float32)
    if type_ == PROBS_TYPE:
        inner = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), 4)
    else:
        inner = pa.array(flat.reshape(-1))
    return pa.LargeListArray.from_arrays(pa.array(offsets), inner)


def contig_lengths(uri: str, storage: dict | None) -> list[tuple[str, int]]:
    """A FASTA file's (name, length) per record: its .fai where current, else one pass."""
    from pipeline.read.fastx import scan_contigs
    from pipeline.read.pieces import current_index_lengths

    found = current_index_lengths(uri, storage)
    return found if found is not None else scan_contigs(uri, storage)


def _merged(ivs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s, e in sorted(ivs):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def _some(lengths: dict[str, int]) -> str:
    names = list(lengths)
    return ", ".join(map(repr, names[:5])) + (
        f" and {len(names) - 5} more" if len(names) > 5 else ""
    )
