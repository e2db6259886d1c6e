"""Stages declare what they need from Ray Data; `add_stage` is the only place that asks."""

from __future__ import annotations

import os

import pyarrow as pa
import pytest

from pipeline.embed.stage import EmbedActor, EmbedStage
from pipeline.read.stage import ReadStage
from pipeline.run import plan, stages
from pipeline.stages import RaySpec, Stage, StageActor, StatsSink, add_stage
from pipeline.tokenize.stage import TokenizeStage
from pipeline.window.stage import WindowStage
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
    # Only the user's variables travel with Ray; ours are set in the actor (use_engine_env).
    assert embed.env_vars == {"MY_VAR": "1"}
    p.engine.device = "cuda"
    p.engine.tensor_parallel_size = 2
    assert got[4].ray_spec().num_gpus == 2
