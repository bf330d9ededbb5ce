"""ROS parameters declared from the config dataclasses (lrm_ros.ros.params) on a real rclpy node:
every parameter a node declares has a description, whichever of the two documentation styles
(`help` metadata or an attribute docstring) its config uses."""
import ast
import importlib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import rclpy
from rclpy.context import Context

import lrm_ros.nodes
from lrm_ros.ros.params import ConfigError, declare_config, field_descriptions


def _declared_configs():
    """(node module, config class, prefix) of every declare_config call in lrm_ros/nodes."""
    out = []
    for path in sorted(Path(lrm_ros.nodes.__file__).parent.glob("*.py")):
        module = None
        for call in ast.walk(ast.parse(path.read_text())):
            if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "declare_config":
                module = module or importlib.import_module(f"lrm_ros.nodes.{path.stem}")
                prefix = next((k.value.value for k in call.keywords if k.arg == "prefix"), "")
                out.append((path.stem, getattr(module, call.args[1].id), prefix))
    return out


CONFIGS = _declared_configs()


@pytest.fixture(scope="module")
def context():
    ctx = Context()
    rclpy.init(context=ctx)
    yield ctx
    rclpy.try_shutdown(context=ctx)


def test_every_node_config_is_found():
    names = {(node, cls.__name__, prefix) for node, cls, prefix in CONFIGS}
    assert ("learner", "PPOConfig", "ppo.") in names and ("reward_model", "RewardNodeConfig", "") in names
    assert len(CONFIGS) == 9, names


@pytest.mark.parametrize("node_name, cls, prefix", CONFIGS, ids=lambda v: getattr(v, "__name__", v))
def test_no_declared_parameter_has_an_empty_description(context, node_name, cls, prefix):
    node = rclpy.create_node(f"params_{node_name}", context=context)
    try:
        declared = lambda: set(node.list_parameters([], 0).names)  # noqa: E731  (0: any depth)
        builtin = declared()
        try:
            declare_config(node, cls, prefix=prefix)
        except ConfigError:
            pass                      # some defaults need a value (e.g. a path): declared anyway
        names = sorted(declared() - builtin)
        assert names and all(n.startswith(prefix) for n in names), names
        descriptors = node.describe_parameters(names)
        empty = [n for n, d in zip(names, descriptors) if not d.description.strip()]
        assert empty == [], f"{cls.__name__}: parameters without a description: {empty}"
    finally:
        node.destroy_node()


def test_ppo_parameters_take_the_attribute_docstrings():
    from lrm_ros.learn.ppo import PPOConfig
    docs = field_descriptions(PPOConfig)
    assert docs["gamma"] == "discount factor"
    assert docs["iterations"] == "RL iterations (the LRM paper: 30)"
    assert docs["learning_rate"].startswith("Adam learning rate. Behaviour cloning leaves action spreads ")
    assert "\n" not in docs["learning_rate"] and "  " not in docs["learning_rate"]


@dataclass(frozen=True)
class _Mixed:
    a: int = field(default=1, metadata={"help": "from metadata"})
    """not this one: metadata wins"""
    b: float = 2.0
    """from the
    docstring"""
    c: str = ""


def test_help_metadata_comes_first_and_an_undocumented_field_stays_empty():
    assert field_descriptions(_Mixed) == {"a": "from metadata", "b": "from the docstring", "c": ""}
