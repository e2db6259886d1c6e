"""Where things live in an output directory. Every reader and writer goes through here.

<output>/shards/part-*.parquet          the rows: nothing else in the output is Parquet
<output>/_manifest.json                 written last: the run is complete iff it exists
<output>/_lease.json                    while a driver runs: who it is (pipeline/write/lease.py)
<output>/_run.json                      written first: the fingerprint of the config it is for
<output>/_config.yaml                   the resolved config
<output>/_commits/part-*.parquet.json   one per shard, written right after it

The run's own bookkeeping starts with `_`, so readers of dataset directories (pyarrow,
pandas, DuckDB, Spark), which pass over `_` and `.` names, read exactly the rows. Outputs
written before this layout (`manifest.json`, `run.json`, `config.yaml`, `commits/` without the
`_`) still load as they are, and a run on one renames them first (`migrate_legacy`).

One rule for every output.mode: dnaembed writes only into a directory that is missing, empty,
or holds nothing but a dnaembed run's own files; anything else is refused before any file is
written (`check_only_ours`).
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
from dataclasses import dataclass, field
from typing import Any

from pipeline import kinds
from pipeline.errors import OutputError
from pipeline.storage import get_fs, is_local, join, write_atomic


def row_order(manifest: dict) -> list[tuple[str, str]]:
    """How a run's rows are ordered, as its kind of input declares (runs before regions and
    variants tiled files)."""
    return kinds.get(manifest.get("input", "tiles")).row_order


MANIFEST = "_manifest.json"
RUN = "_run.json"
LEASE = "_lease.json"
CONFIG = "_config.yaml"
SHARDS = "shards"
COMMITS = "_commits"
SHARD_PREFIX = "part-"  # a committed name; writes in flight are `.tmp-*`
FORMAT = "dnaembed/1"
# The bookkeeping's names before they took a leading `_`: what each is called now.
LEGACY = {"manifest.json": MANIFEST, "run.json": RUN, "config.yaml": CONFIG, "commits": COMMITS}
LEGACY_LEASE = "lease.json"
# What a run writes at the top of its output (shards/ and _commits/ hold part-* files).
OWN_FILES = frozenset({MANIFEST, RUN, CONFIG, LEASE, *LEGACY, LEGACY_LEASE}) - {"commits"}
# tracks/: the bigWigs a tracks run assembles from its shards (pipeline/write/tracks.py).
TRACKS = "tracks"
OWN_DIRS = frozenset({SHARDS, COMMITS, "commits", TRACKS})


@dataclass
class Survey:
    """What an output directory holds, sorted into a run's own files and anything else."""

    ours: list[str] = field(default_factory=list)
    """Full paths of a run's files (in-flight writes included)."""
    foreign: list[str] = field(default_factory=list)
    """Names (relative to the output) a dnaembed run does not write."""
    top: set[str] = field(default_factory=set)
    """The names at the top of the output."""

    @property
    def has_record(self) -> bool:
        """A run record or manifest, in either layout."""
        return bool({RUN, MANIFEST, "run.json", "manifest.json"} & self.top)

    @property
    def legacy(self) -> list[str]:
        return sorted(n for n in self.top if n in LEGACY or n == LEGACY_LEASE)

    def shown_foreign(self) -> str:
        shown = ", ".join(sorted(self.foreign)[:5])
        more = f" and {len(self.foreign) - 5} more" if len(self.foreign) > 5 else ""
        return shown + more


@dataclass
class OutputDir:
    uri: str
    storage_options: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.fs, self.path = get_fs(self.uri, self.storage_options)

    def file(self, *parts: str) -> str:
        return join(self.path, *parts)

    def uri_of(self, *parts: str) -> str:
        """A file of the output as a URI (with its protocol), for readers given options."""
        return "/".join([self.uri.rstrip("/"), *parts])

    def exists(self, *parts: str) -> bool:
        return self.fs.exists(self.file(*parts))

    def read_json(self, *parts: str) -> dict:
        with self.fs.open(self.file(*parts), "rb") as f:
            return json.loads(f.read())

    def write_json(self, obj: Any, *parts: str) -> None:
        write_atomic(self.fs, self.file(*parts), json.dumps(obj, indent=2, sort_keys=True).encode())

    def write_bytes(self, data: bytes, *parts: str) -> None:
        write_atomic(self.fs, self.file(*parts), data)

    def name_of(self, name: str) -> str:
        """`name` (MANIFEST, RUN, ...) as this output has it: an output of the earlier layout
        that has not been migrated keeps the name without the `_`."""
        if not self.exists(name):
            old = next((k for k, v in LEGACY.items() if v == name), None)
            if old is not None and self.exists(old):
                return old
        return name

    def survey(self) -> Survey:
        """Sort what the output holds into a run's own files and anything else."""
        self.fs.invalidate_cache(self.path)
        s = Survey()
        if not self.fs.exists(self.path):
            return s
        if self.fs.isfile(self.path):
            raise OutputError(f"output {self.uri} is a file, not a directory")
        for entry in self.fs.ls(self.path, detail=True):
            name = posixpath.basename(entry["name"].rstrip("/"))
            s.top.add(name)
            if entry["type"] == "directory" and name in OWN_DIRS:
                inner, odd = self._run_files(entry["name"], name)
                s.ours += inner
                s.foreign += odd
            elif entry["type"] != "directory" and (name in OWN_FILES or _in_flight(name)):
                s.ours.append(entry["name"])
            else:
                s.foreign.append(name + ("/" if entry["type"] == "directory" else ""))
        return s

    def check_only_ours(self, survey: Survey | None = None) -> Survey:
        """Refuse an output that holds anything a dnaembed run does not write, whatever
        output.mode is: a run never mixes its files with someone else's, so overwrite can
        always clean up after it. Returns the survey."""
        s = survey or self.survey()
        if s.foreign:
            raise OutputError(
                f"output {self.uri} holds files a dnaembed run did not write "
                f"({s.shown_foreign()}); nothing was written or deleted. A run writes only into a "
                "new or empty directory or one of its own runs, in every output.mode: choose "
                "another output (a new subdirectory will do), or move those files away"
            )
        # Our names without a run record: a config file of a user's, say, not a run.
        files = [f for f in s.ours if posixpath.basename(f) not in (LEASE, LEGACY_LEASE)]
        if files and not s.has_record:
            names = sorted(s.top - {LEASE})
            raise OutputError(
                f"output {self.uri} holds {', '.join(names[:5])} but no {RUN} or {MANIFEST} "
                "of a dnaembed run; nothing was written or deleted. Choose another output, or "
                "remove them"
            )
        return s

    def remove_run(self, survey: Survey | None = None) -> list[str]:
        """Delete a previous run's own files (manifest first), and nothing else: refuse, naming
        what was found, where the path holds anything a dnaembed run does not write, or holds
        files but no run record. `survey`: the output's, if taken already. Returns what was
        deleted."""
        s = self.check_only_ours(survey)
        # The lease is the running driver's own: it makes no directory a run.
        files = [f for f in s.ours if posixpath.basename(f) != LEASE]
        # The manifest first: an overwrite cut short leaves an incomplete run, never a manifest
        # listing deleted shards.
        doomed = sorted(
            files, key=lambda f: (posixpath.basename(f) not in (MANIFEST, "manifest.json"), f)
        )
        if doomed:
            self.fs.rm(doomed[:1])
            if doomed[1:]:
                self.fs.rm(doomed[1:])
        self._remove_empty_dirs(s.top & OWN_DIRS)
        return doomed

    def migrate_legacy(self, survey: Survey | None = None) -> list[str]:
        """Rename an output of the earlier layout (`manifest.json`, `run.json`, `config.yaml`,
        `commits/`) to this one, the manifest last: a migration cut short leaves a run to
        resume, and the next run finishes it. `survey`: the output's, if taken already.
        Returns the names moved."""
        s = survey or self.survey()
        if LEGACY_LEASE in s.top:
            raise OutputError(
                f"output {self.uri} holds the lease.json of an earlier dnaembed version: a "
                "driver of that version may be running on it. If none is, delete "
                f"{self.file(LEGACY_LEASE)} and run again"
            )
        moved = []
        if "commits" in s.top:
            if is_local(self.fs):
                os.makedirs(self.file(COMMITS), exist_ok=True)
            for path in sorted(self.fs.ls(self.file("commits"), detail=False)):
                name = posixpath.basename(path.rstrip("/"))
                self.fs.mv(path, self.file(COMMITS, name))
            moved.append("commits/")
            self._remove_empty_dirs({"commits"})
        for old in ("config.yaml", "run.json", "manifest.json"):
            if old in s.top:
                self.fs.mv(self.file(old), self.file(LEGACY[old]))
                moved.append(old)
        self.fs.invalidate_cache(self.path)
        return moved

    def prune(self, listed: set[str]) -> list[str]:
        """Before the manifest: delete shards (and their commit records) that it will not list
        (written by an attempt whose commit record was lost, or dropped as overlapping) and
        writes abandoned by killed writers, so the output holds exactly its rows. Returns what
        was deleted."""
        self.fs.invalidate_cache(self.path)
        doomed = []
        for sub, suffix in ((SHARDS, ""), (COMMITS, ".json")):
            if not self.exists(sub):
                continue
            for path in self.fs.ls(self.file(sub), detail=False):
                name = posixpath.basename(path.rstrip("/"))
                if _in_flight(name) or name.removesuffix(suffix) not in listed:
                    doomed.append(path)
        if self.exists(TRACKS):  # bigWigs a killed assembly left half-written
            doomed += [
                p
                for p in self.fs.ls(self.file(TRACKS), detail=False)
                if _in_flight(posixpath.basename(p.rstrip("/")))
            ]
        if doomed:
            self.fs.rm(doomed)
        return doomed

    def _remove_empty_dirs(self, subs: set[str]) -> None:
        for sub in subs:
            if is_local(self.fs):
                with contextlib.suppress(OSError):
                    os.rmdir(self.file(sub))

    def _run_files(self, path: str, sub: str) -> tuple[list[str], list[str]]:
        """(our files, anything else) directly under shards/ or _commits/."""
        suffix = {SHARDS: ".parquet", TRACKS: ".bw"}.get(sub, ".parquet.json")
        prefix = "" if sub == TRACKS else SHARD_PREFIX
        ours, odd = [], []
        for e in self.fs.ls(path, detail=True):
            name = posixpath.basename(e["name"].rstrip("/"))
            if e["type"] != "directory" and (
                (name.startswith(prefix) and name.endswith(suffix)) or _in_flight(name)
            ):
                ours.append(e["name"])
            else:
                odd.append(f"{sub}/{name}" + ("/" if e["type"] == "directory" else ""))
        return ours, odd


def _in_flight(name: str) -> bool:
    """A write in flight or abandoned by a killed writer (pipeline.storage.write_atomic)."""
    return name.startswith(".tmp-")
