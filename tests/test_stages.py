"""Stages declare what they need from Ray Data; `add_stage` is the only place that asks. They
declare their columns too, and a run's stages are checked to fit before anything runs."""

from __future__ import annotations

import os

import pyarrow as pa
import pytest

from pipeline.config import InputConfig, WindowConfig
from pipeline.embed.stage import EmbedActor, EmbedStage
from pipeline.errors import ConfigError, WiringError
from pipeline.read.stage import ReadStage, RegionReadStage, VariantReadStage
from pipeline.rows import (
    DEFAULT_COLUMN,
    METRICS,
    OUTPUT_COLUMNS,
    PACK_COLUMN,
    PACK_COLUMNS,
    PIECE_COLUMNS,
    RECORD_SCHEMA,
    REGION_COLUMNS,
    SEQUENCE_ALT,
    SEQUENCE_RC,
    TOKEN_IDS,
    TOKEN_IDS_ALT,
    TOKEN_IDS_ALT_RC,
    TOKEN_IDS_RC,
    VARIANT_COLUMNS,
    WRITE_SCHEMA,
    packed,
    suffixed,
    unpacked,
)
from pipeline.run import plan, stages
from pipeline.stages import RaySpec, Stage, StageActor, StatsSink, add_stage, check_wiring
from pipeline.tokenize.pack import pack
from pipeline.tokenize.stage import TokenizeStage
from pipeline.tokenize.tokenizer import TokenizerSpec
from pipeline.window.regions import RegionWindowStage
from pipeline.window.stage import WindowStage
from pipeline.window.variants import VariantWindowStage
from pipeline.write.resume import SkipCommitted
from pipeline.write.stage import WriteStage
from tests.conftest import DEMO_GENOME, compose_config


class Double(Stage):
    needs = ("id",)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return batch.append_column("double", pa.compute.multiply(batch["id"], 2))


class CountSetups(Stage):
    needs = ("id",)

    def __init__(self) -> None:
        self.setups = 0

    def ray_spec(self) -> RaySpec:
        return RaySpec(batch_size=4, actor=CountActor, pool=(1, 1), num_cpus=0.5)

    def setup(self) -> None:
        self.setups += 1

    def __call__(self, batch: pa.Table) -> pa.Table:
        n = len(batch)
        return batch.append_column("setups", pa.array([self.setups] * n)).append_column(
            "pid", pa.array([os.getpid()] * n)
        )


class CountActor(StageActor):
    pass


@pytest.mark.slow
def test_declared_tasks_and_actors_run_on_ray(ray_session):
    ds = ray_session.data.range(20, override_num_blocks=4)
    ds = add_stage(add_stage(ds, Double(), 1.0), CountSetups(), 1.0)
    assert "MapBatches(CountActor)" in str(ds)  # the actor's own name, as Ray shows it
    rows = sorted(ds.take_all(), key=lambda r: r["id"])
    assert [r["double"] for r in rows] == [2 * i for i in range(20)]
    # One actor, set up once when it started, before its first batch.
    assert {r["setups"] for r in rows} == {1} and len({r["pid"] for r in rows}) == 1


def test_each_stage_declares_its_ray_needs(tmp_path):
    cfg = compose_config(
        "model=tiny",
        f"input={DEMO_GENOME}",
        f"output={tmp_path / 'out'}",
        "embed.num_actors=[1,3]",
        "embed.cpus_per_actor=2",
        "embed.max_restarts=2",
        "output.rows_per_shard=77",
        "+embed.env_vars.MY_VAR=1",
    )
    p = plan(cfg)
    p.engine.device = "cpu"
    got = stages(p, StatsSink(), done="ids")
    assert [type(s) for s in got] == [
        ReadStage,
        WindowStage,
        SkipCommitted,
        TokenizeStage,
        EmbedStage,
        WriteStage,
    ]
    assert [type(s) for s in stages(p, StatsSink())][2] is TokenizeStage  # nothing to resume
    read, window, _, tokenize, embed, write = (s.ray_spec() for s in got)
    assert read == RaySpec(batch_size=1)  # one file per task
    assert window == tokenize == RaySpec()  # whole blocks, as tasks
    assert write == RaySpec(batch_size=77)  # one shard per call
    assert embed.actor is EmbedActor and embed.pool == (1, 3) and embed.batch_size == 1
    assert (embed.num_cpus, embed.num_gpus, embed.max_restarts) == (2, 0, 2)
    assert embed.block_per_row  # packs spread over the engines
    # Only the user's variables travel with Ray; the engine sets its spec's env in the actor.
    assert embed.env_vars == {"MY_VAR": "1"}
    p.engine.device = "cuda"
    p.engine.tensor_parallel_size = 2
    assert got[4].ray_spec().num_gpus == 2


class Embed(Stage):
    """Stands in for EmbedStage, without an engine: it unpacks the windows and hands on their
    row columns and its own."""

    def __init__(self, row_columns=OUTPUT_COLUMNS, adds=(DEFAULT_COLUMN,), ids=(TOKEN_IDS,)):
        self.row_columns = row_columns
        self.needs = (PACK_COLUMN, *(packed(c) for c in (*row_columns, *ids)))
        self.adds = adds

    def columns_out(self, columns_in: tuple[str, ...]) -> tuple[str, ...]:
        return (*self.row_columns, *self.adds)


def tiles(window: WindowConfig | None = None, tmp: str = "out") -> list[Stage]:
    return [
        ReadStage(window=window),
        WindowStage(window or WindowConfig(), "m"),
        TokenizeStage(TokenizerSpec("unused"), 1000, 4096),
        Embed(),
        WriteStage(tmp, "fp", {}),
    ]


def test_a_run_of_real_stages_fits_together(tmp_path):
    for extra in ([], ["window.reverse_complement=merge"]):
        cfg = compose_config("model=tiny", f"input={DEMO_GENOME}", f"output={tmp_path}", *extra)
        got = stages(plan(cfg), StatsSink(), done="ids")
        assert check_wiring(got, ("source",)) == tuple(WRITE_SCHEMA.names)
        # The rows of pieces of an indexed FASTA.
        assert check_wiring(got, ("source", *PIECE_COLUMNS)) == tuple(WRITE_SCHEMA.names)


def test_columns_are_followed_through_the_stages_and_the_pack():
    columns: tuple[str, ...] = ("source",)
    seen = []
    for stage in tiles(WindowConfig(reverse_complement="merge")):
        columns = stage.columns_out(columns)
        seen.append(columns)
    records, windows, packs, embedded, written = seen
    assert records == tuple(RECORD_SCHEMA.names)
    assert windows[-2:] == ("sequence", SEQUENCE_RC)
    # The pack carries the windows' columns, sequences replaced by their token ids.
    assert packs[:3] == PACK_COLUMNS
    assert unpacked(packs) == (
        *("chunk_id", "source", "seq_id", "start", "end", "strand"),
        *("n_tokens", TOKEN_IDS, TOKEN_IDS_RC),
    )
    assert embedded == (*OUTPUT_COLUMNS, DEFAULT_COLUMN)
    assert written == tuple(WRITE_SCHEMA.names)
    # The alternate allele's windows get theirs too.
    variant = ("chunk_id", "source", "seq_id", "start", "end", "strand", "sequence")
    variant += (SEQUENCE_ALT, SEQUENCE_RC, "sequence_alt_rc")
    tokenize = TokenizeStage(TokenizerSpec("unused"), 1000, 4096)
    assert unpacked(tokenize.columns_out(variant))[-4:] == (
        TOKEN_IDS,
        TOKEN_IDS_RC,
        TOKEN_IDS_ALT,
        TOKEN_IDS_ALT_RC,
    )


def test_regions_and_variants_stages_fit_together(tmp_path):
    window = WindowConfig(reverse_complement="merge")
    locus = (window, "m", str(tmp_path / "ref.fa"), None, InputConfig())
    tokenize = TokenizeStage(TokenizerSpec("unused"), 1000, 4096)
    regions = [
        RegionReadStage(),
        RegionWindowStage(window, False, *locus[1:]),
        tokenize,
        Embed(REGION_COLUMNS, ids=(TOKEN_IDS, TOKEN_IDS_RC, "span_start", "span_end")),
        WriteStage(str(tmp_path), "fp", {}, row_columns=REGION_COLUMNS),
    ]
    assert check_wiring(regions, ("source",)) == tuple(WRITE_SCHEMA.names)
    scores = tuple(suffixed(DEFAULT_COLUMN, m) for m in METRICS)
    variants = [
        VariantReadStage(),
        VariantWindowStage(*locus),
        tokenize,
        Embed(VARIANT_COLUMNS, scores, ids=(TOKEN_IDS, TOKEN_IDS_ALT, TOKEN_IDS_ALT_RC)),
        WriteStage(str(tmp_path), "fp", {}, embeddings=scores, row_columns=VARIANT_COLUMNS),
    ]
    assert check_wiring(variants, ("source",)) == tuple(WRITE_SCHEMA.names)
    # The variants' embed stage after the tiles' windows: no alleles in the packs.
    with pytest.raises(WiringError, match=r"^Embed needs columns 'windows.pos', 'windows.id', "):
        check_wiring([*tiles(tmp=str(tmp_path))[:3], *variants[3:]], ("source",))


def test_a_stage_left_out_is_named_with_the_columns_it_misses(tmp_path):
    run = tiles(tmp=str(tmp_path))
    read, window, tokenize, embed, write = run
    with pytest.raises(WiringError) as e:
        check_wiring([read, window, embed, write], ("source",))
    assert str(e.value) == (
        "Embed needs columns 'windows', 'windows.chunk_id', 'windows.source', "
        "'windows.seq_id', 'windows.start', 'windows.end', 'windows.strand', "
        "'windows.n_tokens', 'windows.token_ids', which no earlier stage adds "
        "(available: chunk_id, source, seq_id, start, end, strand, sequence)"
    )
    assert isinstance(e.value, ConfigError)  # the CLI prints it without a traceback
    with pytest.raises(WiringError) as e:
        check_wiring([read, window, tokenize, write], ("source",))
    message = str(e.value)
    assert message.startswith(
        "WriteStage needs columns 'chunk_id', 'source', 'seq_id', 'start', 'end', 'strand', "
        "'n_tokens', which TokenizeStage packs into 'windows' and no stage unpacks; and "
        "column 'embedding', which no earlier stage adds (available: windows, pack_windows, "
    )
    with pytest.raises(WiringError, match=r"^TokenizeStage needs columns 'chunk_id', 'start', "):
        check_wiring([read, tokenize, embed, write], ("source",))
    # A column an earlier stage had, and a later one dropped.
    with pytest.raises(WiringError, match="^WindowStage needs column 'record_index', which Wi"):
        check_wiring([read, window, window], ("source",))
    with pytest.raises(WiringError, match="^TokenizeStage needs column 'sequence', which Token"):
        check_wiring([read, window, tokenize, embed, tokenize], ("source",))
    with pytest.raises(
        WiringError, match=r"ReadStage needs column 'source', .* \(available: none\)"
    ):
        check_wiring(run, ())
    assert check_wiring(run, ("source",)) == tuple(WRITE_SCHEMA.names)
    assert check_wiring([], ("source",)) == ("source",)


def test_a_batch_is_checked_for_the_columns_inside_its_packs():
    windows = pa.table({"chunk_id": ["a", "b"], "n_tokens": pa.array([3, 4], pa.int32())})
    packs = pack(windows, 100)

    class NeedsPacked(Stage):
        needs = (PACK_COLUMN, packed("chunk_id"))

    NeedsPacked().check_columns(packs)
    NeedsPacked.needs = (PACK_COLUMN, packed(TOKEN_IDS))
    with pytest.raises(KeyError, match=r"needs column\(s\) \['windows.token_ids'\]"):
        NeedsPacked().check_columns(packs)
    with pytest.raises(KeyError, match=r"\['windows', 'windows.chunk_id'\]"):
        Embed(("chunk_id",), ids=()).check_columns(windows)
