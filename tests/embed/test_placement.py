from __future__ import annotations

import pytest

from pipeline.embed.placement import ActorShape, check_placement
from pipeline.errors import ConfigError


def node(cpu, gpu=0, alive=True):
    return {"Alive": alive, "Resources": {"CPU": cpu, **({"GPU": gpu} if gpu else {})}}


def shape(gpus=1, cpus=1, n=1, tp=1):
    return ActorShape(gpus, cpus, n, tp, 1)


def test_fits():
    nodes = [node(16, 2), node(16, 2)]
    assert "2 engine(s) x (2 GPU, 1 CPU)" in check_placement(shape(2, n=2, tp=2), 1, nodes)
    assert "4 engine(s)" in check_placement(shape(1, n=4), 1, nodes)


def test_tp_larger_than_any_node_fails_at_once():
    with pytest.raises(
        ConfigError,
        match=r"no node of this cluster \(32 CPU, 4 GPU on 2 node"
        r"\(s\)\) can host one embed actor: it needs 4 GPU",
    ):
        check_placement(shape(4, tp=4), 1, [node(16, 2), node(16, 2)])
    with pytest.raises(ConfigError, match="largest node has 0 GPU"):
        check_placement(shape(1), 1, [node(2)])


def test_too_many_engines_and_dead_nodes():
    with pytest.raises(ConfigError, match=r"at least 3 engines .* holds 2; .*\[1,3\]"):
        check_placement(shape(1, n=3), 1, [node(16, 2), node(16, 2, alive=False)])


def test_cpu_engines_must_leave_cpu_for_tasks():
    assert check_placement(shape(0, n=1), 1, [node(2)])
    with pytest.raises(ConfigError, match="leave no CPU for the read, tokenize and write"):
        check_placement(shape(0, n=2), 1, [node(2)])
