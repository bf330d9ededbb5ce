"""The launch files and the graph resolution behind them, without a ROS 2 launch install.

launch/*.launch.py must stay thin: every node, topic and parameter comes from the graph YAML
through lrm_ros.bringup (so `ros2 launch lrm_ros sim.launch.py` and `lrm-ros up sim` cannot
drift apart). What `resolve()` gives is checked here; the launch files themselves run in
test/launch/test_sim_graph_launch.py on a real ROS 2 install.
"""
import ast
import importlib
import sys
from pathlib import Path

import pytest
import yaml

from lrm_ros.bringup.graph import (GraphError, NodeSpec, argument_choices, argument_defaults,
                                   load_graph, parse_launch_arguments, resolve)

REPO = Path(__file__).resolve().parents[1]
LAUNCH_DIR = REPO / "launch"
GRAPH_YAML = REPO / "config" / "graphs" / "sim.yaml"
PER_ENV = ("maniskill_bridge", "camera_ingest", "scripted_policy")


def _launch_files():
    return sorted(LAUNCH_DIR.glob("*.launch.py"))


def _strings(value):
    """Every string (keys and values) inside a YAML document."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, str):
        yield value


def _graph_words():
    """Names that belong in the graph YAML (and its parameter files), never in a launch file:
    executables, node names, argument names, parameter names and string values (topics)."""
    graph = yaml.safe_load(GRAPH_YAML.read_text())
    words = set(graph["arguments"])
    for node in graph["nodes"]:
        words.add(node["executable"])
        words.add(node["name"])
        for entry in node.get("parameters", []):
            if "file" in entry and len(entry) == 1:
                params = yaml.safe_load((REPO / "config" / entry["file"]).read_text())
                words.update(_strings(params))
            else:
                words.update(_strings(entry))
        words.update(_strings(node.get("remappings") or {}))
    words -= {"", "/**", "ros__parameters"}
    return words


def _by(specs, executable):
    return [s for s in specs if s.executable == executable]


# --- the launch files ---------------------------------------------------------------------

def test_launch_directory_has_the_sim_launch_file():
    names = [p.name for p in _launch_files()]
    assert "sim.launch.py" in names, names


@pytest.mark.parametrize("path", _launch_files(), ids=lambda p: p.name)
def test_launch_file_is_valid_python_with_an_entry_point(path):
    source = path.read_text()
    compile(source, str(path), "exec")                    # SyntaxError fails the test
    tree = ast.parse(source, str(path))
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in functions, \
        f"{path.name} has no top-level generate_launch_description()"
    assert not functions["generate_launch_description"].args.args, \
        "generate_launch_description() takes no arguments"


@pytest.mark.parametrize("path", _launch_files(), ids=lambda p: p.name)
def test_launch_file_takes_everything_from_the_graph(path):
    tree = ast.parse(path.read_text(), str(path))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    assert any(m.startswith("lrm_ros.bringup") for m in imported), \
        f"{path.name} does not build its nodes through lrm_ros.bringup (imports: {imported})"
    # No node is constructed here: no launch_ros import, no Node(...) call.
    assert not any(m.startswith("launch_ros") for m in imported), imported
    called = {n.func.id if isinstance(n.func, ast.Name) else getattr(n.func, "attr", None)
              for n in ast.walk(tree) if isinstance(n, ast.Call)}
    assert not called & {"Node", "ExecuteProcess", "DeclareLaunchArgument",
                         "SetParameter", "SetRemap"}, called
    # No executable, node name, argument, parameter or topic of the graph written out.
    words = _graph_words()
    assert {"maniskill_bridge", "camera_ingest", "scripted_policy", "num_envs"} <= words
    literals = {n.value for n in ast.walk(tree)
                if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    docstrings = {ast.get_docstring(n, clean=False) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef))}
    code_literals = literals - docstrings
    hard_coded = sorted(code_literals & words)
    assert not hard_coded, f"{path.name} hard-codes graph content: {hard_coded}"
    assert not [s for s in code_literals if "/" in s], \
        f"{path.name} has topic- or path-like literals: {code_literals}"


def test_sim_launch_file_names_the_sim_graph():
    tree = ast.parse((LAUNCH_DIR / "sim.launch.py").read_text())
    literals = {n.value for n in ast.walk(tree)
                if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert "sim" in literals
    assert load_graph("sim")["_path"].endswith("sim.yaml")


def test_launch_support_imports_without_launch_installed():
    """The shared launch code imports launch/launch_ros lazily (this machine has neither)."""
    module = importlib.import_module("lrm_ros.bringup.launch_support")
    assert callable(module.graph_launch_description)
    if "launch" not in sys.modules:
        with pytest.raises(ImportError):
            module.graph_launch_description("sim")


def test_node_kwargs_put_files_first_then_graph_values():
    from lrm_ros.bringup.launch_support import node_kwargs, resolve_for_launch
    kwargs = resolve_for_launch("sim", {"num_envs": "2", "policy": "zero"})
    assert len(kwargs) == 7
    bridge1 = [k for k in kwargs if k["executable"] == "maniskill_bridge"
               and k["namespace"] == "/env1"][0]
    assert bridge1["package"] == "lrm_ros" and bridge1["name"] == "maniskill_bridge"
    assert bridge1["output"] == "screen"
    assert bridge1["parameters"][0].endswith("params/maniskill_bridge.yaml")
    assert Path(bridge1["parameters"][0]).is_file()
    assert bridge1["parameters"][-1]["env_index"] == 1
    assert bridge1["remappings"] == []
    policy = [k for k in kwargs if k["executable"] == "scripted_policy"][0]
    assert policy["name"] == "policy" and policy["parameters"][-1]["kind"] == "zero"
    # A node outside any namespace gets none (launch_ros: namespace=None), no empty dict.
    spec = NodeSpec(package="p", executable="e", name="n", namespace="",
                    param_files=("/a.yaml",), remappings=(("in", "/out"),))
    k = node_kwargs(spec)
    assert k["namespace"] is None and k["parameters"] == ["/a.yaml"]
    assert k["remappings"] == [("in", "/out")]


# --- resolve() ---------------------------------------------------------------------------

def test_defaults_come_from_the_yaml():
    graph = load_graph("sim")
    raw = yaml.safe_load(GRAPH_YAML.read_text())["arguments"]
    defaults = argument_defaults(graph)
    assert set(defaults) == set(raw)
    assert all(isinstance(v, str) for v in defaults.values())
    assert defaults["num_envs"] == "1" and defaults["policy"] == str(raw["policy"]["default"])
    specs = resolve(graph)
    assert sorted(s.executable for s in specs) == sorted(
        ("maniskill_bridge", "camera_ingest", "vla_policy", "reward_model"))
    assert {s.namespace for s in specs} == {"/env0", ""}


def test_policy_and_learner_choices_pick_their_nodes():
    def executables(**args):
        return sorted(s.executable for s in resolve(load_graph("sim"), args))
    assert "scripted_policy" in executables(policy="random")
    assert "scripted_policy" in executables(policy="zero")
    assert not {"scripted_policy", "vla_policy"} & set(executables(policy="none"))
    specs = resolve(load_graph("sim"), {"num_envs": "2", "learner": "filtered_bc",
                                        "policy_checkpoint": "/tmp/p.pt", "deterministic": "true"})
    (learner,) = [s for s in specs if s.executable == "learner"]
    assert learner.parameters["algorithm"] == "filtered_bc"
    assert learner.parameters["envs"] == ["env0", "env1"]
    assert learner.parameters["init_checkpoint"] == "/tmp/p.pt"
    policies = [s for s in specs if s.executable == "vla_policy"]
    assert [p.parameters["checkpoint"] for p in policies] == ["/tmp/p.pt"] * 2
    assert all(p.parameters["deterministic"] is True for p in policies)


def test_one_reward_model_serves_all_envs():
    specs = resolve(load_graph("sim"), {"num_envs": "3", "reward": "vlm",
                                        "reward_model_path": "/models/qwen"})
    (reward,) = _by(specs, "reward_model")
    assert reward.namespace == "" and reward.parameters["envs"] == ["env0", "env1", "env2"]
    assert reward.parameters["backend"] == "vlm" and reward.parameters["model_path"] == "/models/qwen"
    assert "-p" in reward.ros_args() and "envs:=[env0, env1, env2]" in reward.ros_args()
    assert _by(resolve(load_graph("sim"), {"reward": "none"}), "reward_model") == []


def test_two_envs_give_per_namespace_nodes_with_their_env_index():
    specs = resolve(load_graph("sim"), {"num_envs": "2", "reward": "none", "policy": "random"})
    assert len(specs) == 6
    for executable in PER_ENV:
        mine = _by(specs, executable)
        assert sorted(s.namespace for s in mine) == ["/env0", "/env1"], executable
        for s in mine:
            assert s.package == "lrm_ros"
            assert s.param_files and all(Path(p).is_file() for p in s.param_files)
            assert s.label == f"{s.namespace.strip('/')}/{s.name}"
    for executable in ("maniskill_bridge", "scripted_policy"):
        indices = {s.namespace: s.parameters["env_index"] for s in _by(specs, executable)}
        assert indices == {"/env0": 0, "/env1": 1}, executable
        assert all(isinstance(v, int) for v in indices.values())
    assert {s.name for s in _by(specs, "scripted_policy")} == {"policy"}
    labels = [s.label for s in specs]
    assert len(set(labels)) == len(labels)


def test_argument_values_reach_the_parameters_with_yaml_types():
    specs = resolve(load_graph("sim"), {"env_id": "PushCube-v1", "seed": "7",
                                        "max_episode_ticks": "20", "image_size": "96",
                                        "mode": "realtime", "policy": "zero"})
    bridge = _by(specs, "maniskill_bridge")[0].parameters
    assert bridge["env_id"] == "PushCube-v1" and bridge["mode"] == "realtime"
    assert bridge["seed"] == 7 and bridge["max_episode_ticks"] == 20
    assert isinstance(bridge["seed"], int)
    ingest = _by(specs, "camera_ingest")[0].parameters
    assert ingest == {"width": 96, "height": 96, "use_sim_time": True}
    assert bridge["publish_clock"] is True                   # simulated time by default
    policy = _by(specs, "scripted_policy")[0].parameters
    assert policy["kind"] == "zero" and policy["seed"] == 7


def test_policy_none_drops_the_policy_nodes():
    specs = resolve(load_graph("sim"), {"policy": "none", "num_envs": "3"})
    assert not _by(specs, "scripted_policy")
    assert sorted(s.namespace for s in _by(specs, "maniskill_bridge")) == \
        ["/env0", "/env1", "/env2"]
    assert len(specs) == 7


def test_unknown_argument_is_rejected_naming_the_known_ones():
    graph = load_graph("sim")
    with pytest.raises(GraphError) as info:
        resolve(graph, {"num_env": "2"})
    message = str(info.value)
    assert "num_env" in message
    for known in argument_defaults(graph):
        assert known in message


@pytest.mark.parametrize("graph_name,argument,value,allowed", [
    ("sim", "policy", "scripted", "tiny_vla, random, zero, none"),
    ("sim", "learner", "PPO", "ppo, filtered_bc, none"),
    ("sim", "record", "True", "true, false"),
    ("real_robot", "policy", "random", "tiny_vla, none")])
def test_a_value_outside_an_arguments_choices_is_rejected_naming_them(graph_name, argument, value, allowed):
    # before: policy:=scripted matched no node's condition and the graph ran without a policy
    with pytest.raises(GraphError) as info:
        resolve(load_graph(graph_name), {argument: value})
    assert str(info.value).startswith(f"{argument}:={value} is not one of {allowed} (graph ")


@pytest.mark.parametrize("graph_name", ["sim", "real_robot"])
def test_choices_cover_the_defaults_and_every_value_a_node_condition_tests(graph_name):
    graph = load_graph(graph_name)
    choices, defaults = argument_choices(graph), argument_defaults(graph)
    assert {"policy", "learner", "record", "respawn", "reward_signal"} <= set(choices)
    for name, allowed in choices.items():
        assert defaults[name] in allowed, name
    tested = 0
    for node in graph["nodes"]:
        for key in ("if", "unless"):
            cond = node.get(key)
            if cond and cond["arg"] in choices:
                values = [str(v) for v in cond.get("in", [cond.get("equals")])]
                assert set(values) <= set(choices[cond["arg"]]), (node["name"], cond)
                tested += 1
    assert tested >= 3


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_bad_num_envs_is_rejected(value):
    with pytest.raises(GraphError, match="num_envs"):
        resolve(load_graph("sim"), {"num_envs": value})


def test_unknown_graph_is_rejected_naming_the_known_ones():
    with pytest.raises(GraphError, match="sim"):
        load_graph("no_such_graph")


def test_a_graph_given_by_path(tmp_path):
    # A graph next to the package's params/ directory (param files are found relative to
    # the graph's parent directory's parent, as for config/graphs/*.yaml).
    graph = yaml.safe_load(GRAPH_YAML.read_text())
    graph["nodes"] = [n for n in graph["nodes"] if n["executable"] == "camera_ingest"]
    graph["nodes"][0]["remappings"] = {"camera/image_raw": "$(env_ns)/sensors/rgb"}
    graphs = tmp_path / "graphs"
    graphs.mkdir()
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "camera_ingest.yaml").write_text(
        (REPO / "config" / "params" / "camera_ingest.yaml").read_text())
    path = graphs / "mine.yaml"
    path.write_text(yaml.safe_dump(graph))
    specs = resolve(load_graph(str(path)), {"num_envs": "2"})
    assert [(s.executable, s.namespace) for s in specs] == \
        [("camera_ingest", "/env0"), ("camera_ingest", "/env1")]
    assert specs[1].remappings == (("camera/image_raw", "/env1/sensors/rgb"),)


# --- NodeSpec.ros_args() -----------------------------------------------------------------

def test_ros_args_of_a_resolved_node():
    spec = _by(resolve(load_graph("sim"), {"num_envs": "2"}), "maniskill_bridge")[1]
    args = spec.ros_args()
    assert args[:5] == ["--ros-args", "-r", "__node:=maniskill_bridge", "-r", "__ns:=/env1"]
    assert args[5] == "--params-file" and args[6] == spec.param_files[0]
    pairs = [args[i + 1] for i, a in enumerate(args) if a == "-p"]
    assert "env_id:=PickCube-v1" in pairs
    assert "env_index:=1" in pairs and "seed:=0" in pairs
    assert "mode:=lockstep" in pairs
    # Files before -p values, so the graph's values win over the file's.
    assert args.index("--params-file") < args.index("-p")


def test_ros_args_format_values_as_yaml():
    spec = NodeSpec(package="lrm_ros", executable="x", name="n", namespace="",
                    param_files=("/tmp/a.yaml", "/tmp/b.yaml"),
                    parameters={"s": "PickCube-v1", "quoted": "true", "num_text": "1.5",
                                "empty": "", "spaced": "a b", "i": 3, "neg": -2, "f": 0.25,
                                "whole_f": 2.0, "b": True, "bf": False, "li": [1, 2],
                                "lf": [0.5, 1.5], "ls": ["camera/image_raw", "x"],
                                "lb": [True, False]},
                    remappings=(("camera/image_raw", "/cam/raw"),))
    args = spec.ros_args()
    assert args[:3] == ["--ros-args", "-r", "__node:=n"]
    assert "__ns:=" not in " ".join(args)                 # no namespace: none given
    assert args[3:7] == ["--params-file", "/tmp/a.yaml", "--params-file", "/tmp/b.yaml"]
    pairs = dict(args[i + 1].split(":=", 1) for i, a in enumerate(args) if a == "-p")
    assert pairs == {"s": "PickCube-v1", "quoted": "'true'", "num_text": "'1.5'",
                     "empty": "''", "spaced": "a b", "i": "3", "neg": "-2", "f": "0.25",
                     "whole_f": "2.0", "b": "true", "bf": "false", "li": "[1, 2]",
                     "lf": "[0.5, 1.5]", "ls": "[camera/image_raw, x]",
                     "lb": "[true, false]"}
    # Each value reads back (as rcl reads -p values: YAML) to what was given.
    for key, text in pairs.items():
        assert yaml.safe_load(text) == spec.parameters[key], key
    assert args[-2:] == ["-r", "camera/image_raw:=/cam/raw"]


# --- parse_launch_arguments() ----------------------------------------------------------

def test_parse_launch_arguments():
    assert parse_launch_arguments([]) == {}
    assert parse_launch_arguments(["num_envs:=2", "env_id:=PushCube-v1"]) == \
        {"num_envs": "2", "env_id": "PushCube-v1"}
    # Only the first := splits; values stay strings, empty values are allowed.
    assert parse_launch_arguments(["a:=b:=c", "empty:=", " spaced :=x"]) == \
        {"a": "b:=c", "empty": "", "spaced": "x"}
    assert parse_launch_arguments(["seed:=1", "seed:=2"]) == {"seed": "2"}


@pytest.mark.parametrize("item", ["num_envs=2", "num_envs", "num_envs:2", "--num_envs", ""])
def test_parse_launch_arguments_rejects_other_forms(item):
    with pytest.raises(GraphError, match=":="):
        parse_launch_arguments([item])


def test_parsed_arguments_feed_resolve():
    specs = resolve(load_graph("sim"), parse_launch_arguments(["num_envs:=2", "policy:=none",
                                                                    "reward:=none"]))
    assert sorted(s.label for s in specs) == ["env0/camera_ingest", "env0/maniskill_bridge",
                                               "env1/camera_ingest", "env1/maniskill_bridge"]
    with pytest.raises(GraphError, match="known"):
        resolve(load_graph("sim"), parse_launch_arguments(["bogus:=1"]))


def test_the_test_requirements_keep_pytest_below_9_for_launch_testing():
    """launch_testing's pytest plugin does not load under pytest 9 (ros2/launch#979)."""
    from pathlib import Path
    import pytest as _pytest
    root = Path(__file__).resolve().parents[1]
    lines = [line.split("#")[0].strip() for line in (root / "requirements" / "test.txt").read_text().splitlines()]
    assert "pytest>=8.4,<9" in lines
    assert int(_pytest.__version__.split(".")[0]) < 9, _pytest.__version__
