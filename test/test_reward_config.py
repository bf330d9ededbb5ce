"""Reward node configuration and the oracle backend (no ROS, no model)."""
import math

import numpy as np
import pytest

from lrm_ros.rewards.base import RewardQuery, RewardResult, tri_value
from lrm_ros.rewards.config import RewardNodeConfig
from lrm_ros.rewards.oracle import OracleRewardBackend


def test_defaults_and_derived_configs():
    cfg = RewardNodeConfig()
    assert cfg.effective_signal == "oracle" and cfg.backend_kwargs() == {}
    assert cfg.hold_config().interval == 10 and cfg.engine_config().max_batch == 8
    vlm = RewardNodeConfig(backend="vlm", model_path="/m", signal="tri", adapter_path="/a")
    assert vlm.effective_signal == "tri"
    assert vlm.backend_kwargs() == {"max_batch": 8, "model_path": "/m", "signal": "tri",
                                    "use_first_frame": True, "adapter_path": "/a"}
    assert RewardNodeConfig(backend="topreward", model_path="/m").effective_signal == "topreward"
    three = RewardNodeConfig(backend="vlm", model_path="/m", signal="tri",
                             adapter_progress="/p", adapter_completion="/c",
                             adapter_contrastive="/x", tri_combination="released",
                             prompts_path="lrm_released")
    assert three.backend_kwargs() == {
        "max_batch": 8, "model_path": "/m", "signal": "tri", "use_first_frame": True,
        "adapter_progress": "/p", "adapter_completion": "/c", "adapter_contrastive": "/x",
        "tri_combination": "released", "prompts": "lrm_released"}
    top = RewardNodeConfig(backend="topreward", model_path="/m", topreward_video_fps=1.0)
    assert top.backend_kwargs() == {"max_batch": 8, "model_path": "/m", "logp_min": -25.0,
                                    "logp_max": -5.0, "video_fps": 1.0}


def test_the_files_that_cannot_import_the_default_interval_state_the_same_one():
    """The YAML graphs and the reward node's params file restate K; they must say DEFAULT_INTERVAL."""
    import yaml
    from lrm_ros.rewards.hold import DEFAULT_INTERVAL, HoldConfig
    from lrm_ros.paths import config_path
    assert HoldConfig().interval == RewardNodeConfig().interval == DEFAULT_INTERVAL
    graphs = {g.name: yaml.safe_load(g.read_text()) for g in config_path("graphs").glob("*.yaml")}
    stated = {name: g["arguments"]["reward_interval"]["default"] for name, g in graphs.items()
              if "reward_interval" in g.get("arguments", {})}
    assert sorted(stated) == ["real_robot.yaml", "replay.yaml", "sim.yaml"]
    assert set(stated.values()) == {DEFAULT_INTERVAL}, stated
    params = yaml.safe_load(config_path("params/reward_model.yaml").read_text())
    assert params["/**"]["ros__parameters"]["interval"] == DEFAULT_INTERVAL


def test_the_hold_and_engine_fields_are_theirs_not_restated():
    from dataclasses import fields
    from lrm_ros.rewards.engine import EngineConfig
    from lrm_ros.rewards.hold import HoldConfig
    cfg = RewardNodeConfig()
    node_fields = {f.name: f for f in fields(RewardNodeConfig)}
    for cls in (HoldConfig, EngineConfig):
        for f in fields(cls):
            assert node_fields[f.name].default == f.default, f.name
            assert node_fields[f.name].metadata["help"] == f.metadata["help"], f.name
    assert cfg.hold_config() == HoldConfig() and cfg.engine_config() == EngineConfig()


def test_a_backend_of_another_package_reaches_the_node_as_module_function():
    from lrm_ros.rewards import list_backends, make_backend, register_backend, _FACTORIES
    spec = "lrm_ros.rewards.oracle:make"          # a real factory, named as a user names theirs
    cfg = RewardNodeConfig(backend=spec, model_path="/ignored/by/oracle", signal="progress")
    assert cfg.effective_signal == "progress"
    assert cfg.backend_kwargs() == {"max_batch": 8, "model_path": "/ignored/by/oracle", "signal": "progress"}
    assert isinstance(make_backend(spec), OracleRewardBackend)
    with pytest.raises(ValueError, match="cannot be imported: ModuleNotFoundError"):
        make_backend("no_such_package.rewards:make")
    with pytest.raises(ValueError, match="returned dict, not a lrm_ros RewardBackend"):
        make_backend("builtins:dict", max_batch=8)
    register_backend("mine", "lrm_ros.rewards.oracle:make")   # registered names are valid too
    try:
        assert "mine" in list_backends() and RewardNodeConfig(backend="mine").backend == "mine"
    finally:
        del _FACTORIES["mine"]
    with pytest.raises(ValueError, match="package.module:function"):
        RewardNodeConfig(backend="mine")


@pytest.mark.parametrize("kwargs, words", [
    ({"backend": "gpt"}, ["backend", "lite", "vlm", "topreward", "oracle"]),
    ({"backend": "vlm"}, ["model_path", "local directory", "-p model_path:="]),
    ({"backend": "topreward"}, ["model_path"]),
    ({"signal": "fun"}, ["signal", "progress", "tri"]),
    ({"interval": 0}, ["interval"]),
    ({"timeout_s": 0.0}, ["timeout_s"]),
    ({"envs": ("env0", "env0")}, ["envs", "distinct"]),
    ({"tri_combination": "avg"}, ["tri_combination", "released", "mean_parsed"]),
])
def test_bad_parameters_say_what_is_wrong(kwargs, words):
    with pytest.raises(ValueError) as info:
        RewardNodeConfig(**kwargs)
    for word in words:
        assert word in str(info.value)


def test_tri_is_the_mean_with_contrastive_mapped_to_unit_range():
    assert tri_value(0.6, 1.0, -1.0) == pytest.approx((0.6 + 1.0 + 0.0) / 3)
    assert tri_value(0.6, 1.0, 1.0) == pytest.approx((0.6 + 1.0 + 1.0) / 3)
    assert tri_value(0.6, math.nan, 0.0) == pytest.approx((0.6 + 0.5) / 2)
    assert math.isnan(tri_value(math.nan, math.nan, math.nan))


def test_oracle_backend_reports_the_oracle_or_an_explicit_invalid_result():
    frame = np.zeros((2, 2, 3), np.uint8)
    backend = OracleRewardBackend()
    good, missing = backend.score_batch([
        RewardQuery("env0", 0, 10, "x", frame, oracle=0.42),
        RewardQuery("env1", 0, 10, "x", frame, oracle=None)])
    assert good == RewardResult(value=0.42, progress=0.42, raw={"oracle": 0.42})
    assert not missing.valid and missing.invalid == ("no_oracle",)
    assert "sim/oracle" in missing.raw["message"]
