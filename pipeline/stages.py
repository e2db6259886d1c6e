"""What every stage shares: declared columns, declared Ray needs, setup on the worker.

A stage is a small picklable object: its constructor only stores settings; `setup()` does the
heavy work (engine, tokenizer) once on the worker; `__call__(batch) -> batch` transforms a
pyarrow batch. Beside its class, a stage declares the columns it needs and adds and what its
output rows hold (`columns_out`), checked across a run's stages before anything runs
(`check_wiring`), and (`ray_spec()`) what it needs from Ray Data; `add_stage` turns that into
one `map_batches`. Column names are pipeline/rows.py's.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from pipeline.errors import WiringError
from pipeline.rows import PACK_COLUMN, packed, unpacked
from pipeline.util import stable_hash


@dataclass(frozen=True)
class RaySpec:
    """What a stage needs from Ray Data."""

    batch_size: int | None = None
    """Rows per call; None: whole blocks."""
    batch_format: str = "pyarrow"
    num_cpus: float | None = None
    """CPUs per task or actor; None: the run's `ray.cpus_per_task`."""
    num_gpus: float = 0
    actor: type | None = None
    """The actor class hosting the stage (its name is what Ray shows); None: Ray tasks."""
    pool: tuple[int, int] = (1, 1)
    """Actors: (min, max) of the pool."""
    max_restarts: int = 0
    """Actors: restarts of a dead actor, its batch retried on the new one."""
    env_vars: dict[str, str] = field(default_factory=dict)
    """Environment of the stage's workers."""
    block_per_row: bool = False
    """Give every input row a block of its own first (spreads packs over the pool)."""


class Stage:
    needs: tuple[str, ...] = ()
    """Columns its input rows must have (a class's, or set per instance); `packed(name)`: a
    column of the windows that its input's packs carry."""
    adds: tuple[str, ...] = ()
    """Columns it adds to the rows it is given."""

    _ready = False

    def columns_out(self, columns_in: tuple[str, ...]) -> tuple[str, ...]:
        """The columns of its output rows, given its input's. Default: the input's, then
        `adds`; a stage whose rows replace its input's (a reader, a window stage, the packer,
        the writer) says what they hold."""
        return (*columns_in, *(c for c in self.adds if c not in columns_in))

    def ray_spec(self) -> RaySpec:
        """What this stage needs from Ray Data. Default: tasks over whole blocks."""
        return RaySpec()

    def setup(self) -> None:
        """Heavy, once per worker. Default: nothing."""

    def ensure_setup(self) -> None:
        if not self._ready:
            self.setup()
            self._ready = True

    def check_columns(self, batch: pa.Table) -> None:
        missing = [c for c in self.needs if not has_column(batch.schema, c)]
        if missing:
            raise KeyError(
                f"{type(self).__name__} needs column(s) {missing}; the batch has "
                f"{batch.column_names}"
            )


def has_column(schema: pa.Schema, name: str) -> bool:
    """Rows of `schema` have column `name`: one of their own, or for `packed(c)` a column c of
    the windows their packs carry."""
    if name in schema.names:
        return True
    inner = unpacked((name,))
    if not inner or PACK_COLUMN not in schema.names:
        return False
    packs = schema.field(PACK_COLUMN).type
    return (
        pa.types.is_list(packs)
        and pa.types.is_struct(packs.value_type)
        and packs.value_type.get_field_index(inner[0]) >= 0
    )


def check_wiring(stages: Sequence[Stage], start: tuple[str, ...]) -> tuple[str, ...]:
    """Walk a run's stages in data order, from the columns of the first block's rows (`start`):
    each must find the columns it needs among those the stages before it hand on. Raises
    WiringError naming the first stage that does not, and what it misses; returns the
    columns of the last stage's rows. Runs on the driver, before any Ray work."""
    columns = tuple(start)
    # Which stage made each column there is, and which dropped each that is gone.
    made: dict[str, str] = {}
    gone: dict[str, str] = {}
    for stage in stages:
        name = type(stage).__name__
        missing = [c for c in stage.needs if c not in columns]
        if missing:
            raise WiringError(_wiring_message(name, missing, columns, made, gone))
        out = tuple(stage.columns_out(columns))
        gone.update((c, name) for c in columns if c not in out)
        made.update((c, name) for c in out if c not in columns)
        for c in out:
            gone.pop(c, None)
        columns = out
    return columns


def _wiring_message(
    stage: str,
    missing: list[str],
    columns: tuple[str, ...],
    made: dict[str, str],
    gone: dict[str, str],
) -> str:
    why: dict[str, list[str]] = {}
    for c in missing:
        if packed(c) in columns:
            packer = made.get(packed(c), "an earlier stage")
            reason = f"which {packer} packs into {PACK_COLUMN!r} and no stage unpacks"
        elif c in gone:
            reason = f"which {gone[c]} drops"
        else:
            reason = "which no earlier stage adds"
        why.setdefault(reason, []).append(repr(c))
    needs = "; and ".join(
        f"{'column' if len(cs) == 1 else 'columns'} {', '.join(cs)}, {reason}"
        for reason, cs in why.items()
    )
    return f"{stage} needs {needs} (available: {', '.join(columns) or 'none'})"


class StageActor:
    """A Ray Data actor hosting one stage: the stage's setup runs when the actor starts, so
    an engine loads while the first batches are still being read."""

    def __init__(self, stage: Stage) -> None:
        self.stage = stage
        stage.ensure_setup()
        stats = getattr(stage, "stats", None)
        if stats is not None and stats.actor is not None:
            import ray

            # Ray Data lets a finished pool's actors go by reference counting; a failed run's
            # exception can keep them, and their CPUs or GPUs, alive. The driver kills them.
            ray.get(stats.actor.register.remote(ray.get_runtime_context().current_actor))

    def __call__(self, batch: Any) -> Any:
        return self.stage(batch)


def add_stage(ds: Any, stage: Stage, cpus_per_task: float) -> Any:
    """`ds` followed by `stage`, as the stage declares."""
    import ray

    spec = stage.ray_spec()
    if spec.block_per_row:
        ds = ds.repartition(target_num_rows_per_block=1)
    kwargs: dict[str, Any] = {
        "batch_size": spec.batch_size,
        "batch_format": spec.batch_format,
        "num_cpus": cpus_per_task if spec.num_cpus is None else spec.num_cpus,
    }
    if spec.num_gpus:
        kwargs["num_gpus"] = spec.num_gpus
    if spec.env_vars:
        kwargs["runtime_env"] = {"env_vars": dict(spec.env_vars)}
    if spec.actor is None:
        return ds.map_batches(stage, **kwargs)
    lo, hi = spec.pool
    with warnings.catch_warnings():
        # Ray 2.60 warns about passing max_restarts this way but offers no other.
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        return ds.map_batches(
            spec.actor,
            fn_constructor_args=(stage,),
            compute=ray.data.ActorPoolStrategy(min_size=lo, max_size=hi),
            max_restarts=spec.max_restarts,
            **kwargs,
        )


class StatsSink:
    """Where stages report counts: a Ray actor handle, or a local dict in tests.

    Keys are deterministic in the work done, so a retried task overwrites its own report
    instead of counting twice.
    """

    def __init__(self, actor: Any = None):
        self.actor = actor
        self.local: dict[str, dict] = {}
        self.phases: dict[str, str] = {}

    def phase(self, engine: str, what: str) -> None:
        """What engine `engine` waits for while it starts ("ready" once it answers)."""
        if self.actor is None:
            self.phases[engine] = what
            return
        import ray

        ray.get(self.actor.phase.remote(engine, what))

    def put(self, key: str, part: dict) -> None:
        if self.actor is None:
            self.local[key] = part
            return
        import ray

        # Wait, so every report lands before the driver asks for totals.
        ray.get(self.actor.put.remote(key, part))

    def totals(self) -> dict:
        if self.actor is None:
            return merge_parts(self.local.values())
        import ray

        return ray.get(self.actor.totals.remote())

    def progress(self) -> dict:
        if self.actor is None:
            phases = {"engine_phases": dict(self.phases)} if self.phases else {}
            return {**counters(self.local.values()), **phases}
        import ray

        return ray.get(self.actor.progress.remote())


def merge_parts(parts: Iterable[dict]) -> dict:
    """Sum counters; concatenate lists (skipped records, per-input summaries)."""
    out: dict[str, Any] = {}
    for part in parts:
        for k, v in part.items():
            if isinstance(v, list):
                out.setdefault(k, []).extend(v)
            else:
                out[k] = out.get(k, 0) + v
    return out


# The counters a progress report needs (no lists: cheap to sum every second).
PROGRESS_KEYS = (
    "records_to_window",
    "records_windowed",
    "windows",
    "windows_resumed",
    "windows_embedded",
    "engine_tokens",
    "inputs_read",
)


def counters(parts: Iterable[dict]) -> dict[str, int]:
    out = dict.fromkeys(PROGRESS_KEYS, 0)
    for part in parts:
        for k in PROGRESS_KEYS:
            out[k] += part.get(k, 0)
    return out


class RunStats:
    """Ray actor of one run: collects stage reports for the manifest and the progress line,
    and knows the run's engine actors so the driver can stop them when the run ends."""

    def __init__(self) -> None:
        self.parts: dict[str, dict] = {}
        self.handles: list = []
        self.phases: dict[str, str] = {}

    def put(self, key: str, part: dict) -> None:
        self.parts[key] = part

    def phase(self, engine: str, what: str) -> None:
        self.phases[engine] = what

    def totals(self) -> dict:
        return merge_parts(self.parts.values())

    def progress(self) -> dict:
        return {**counters(self.parts.values()), "engine_phases": dict(self.phases)}

    def register(self, handle: Any) -> None:
        self.handles.append(handle)

    def actors(self) -> list:
        return self.handles


def report_key(kind: str, *ids: Any) -> str:
    return f"{kind}:{stable_hash(list(ids))}"
