"""pipeline/serve/app.py and service.py without a server: what Ray Serve is asked for."""

from __future__ import annotations

import pytest

from pipeline.compose import compose, to_config
from pipeline.errors import ConfigError
from pipeline.serve.app import deployment_options, key_digest
from pipeline.serve.service import plan_service


def plan(*overrides: str):
    return plan_service(to_config(compose(["model=tiny", *overrides], config_name="serve")))


def test_a_fixed_number_of_replicas_each_one_engine():
    p = plan("serve.replicas=3", "embed.cpus_per_actor=2")
    p.engine.device = "cpu"
    opts = deployment_options(p)
    assert opts["num_replicas"] == 3 and "autoscaling_config" not in opts
    assert opts["ray_actor_options"] == {"num_cpus": 2.0, "num_gpus": 0}
    assert opts["max_ongoing_requests"] == 256 and opts["graceful_shutdown_timeout_s"] == 30


def test_a_replica_range_autoscales_and_tp_sets_the_gpus_per_replica():
    p = plan("serve.replicas=[1,4]", "serve.target_ongoing_requests=16",
             "embed.tensor_parallel_size=2", "+embed.env_vars.VLLM_X=1")  # fmt: skip
    p.engine.device = "cuda"
    opts = deployment_options(p)
    assert "num_replicas" not in opts
    assert opts["autoscaling_config"] == {
        "min_replicas": 1,
        "max_replicas": 4,
        "target_ongoing_requests": 16.0,
    }
    assert opts["ray_actor_options"]["num_gpus"] == 2
    assert opts["ray_actor_options"]["runtime_env"] == {"env_vars": {"VLLM_X": "1"}}


def test_the_plan_has_the_batch_head_and_keys():
    p = plan("embed.layers=[1,-1]", "embed.poolings=[mean,max]", "serve.name=genos")
    assert p.name == "genos"
    assert p.column_names == ["emb_l1_mean", "emb_l1_max", "embedding", "emb_l2_max"]
    assert p.engine.head is not None  # our model class computes them
    assert p.model_keys["forward"] == p.model_keys["reverse"] != p.model_keys["merge"]
    assert plan().engine.head is None  # the default: vLLM's own pooler, as a batch run


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("embed.num_actors=2", "serve.replicas"),
        ("embed.per_token=true", "embed.per_token"),
        ("+embed.engine_kwargs.max_model_len=10", "model.max_model_len"),
        ("embed.layers=[7]", "embed.layers"),
    ],
)
def test_keys_a_service_cannot_honour_are_refused(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        plan(override)


def test_replicas_get_a_digest_not_the_key():
    d = key_digest("s3cr3t")
    assert d is not None and "s3cr3t" not in d and len(d) == 64
    assert key_digest(None) is None and key_digest("") is None
