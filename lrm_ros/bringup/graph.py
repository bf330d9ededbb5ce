"""Graph descriptions (config/graphs/*.yaml) resolved into concrete node processes.

ROS-free and launch-free, so that both `launch/*.launch.py` (a real ROS 2 install) and the
pip-only runner (`lrm-ros up`) build their processes from the same data, and cannot drift.
"""
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import yaml

from lrm_ros.paths import share_dir

_SUBST = re.compile(r"\$\((arg\s+(?P<arg>[A-Za-z_][A-Za-z0-9_]*)|"
                    r"(?P<var>env_index|env_ns|env_names|ready_before_ticks))\)")


_OMIT = object()            # a parameter whose substitution came out empty: not passed


class GraphError(ValueError):
    """The graph description or a launch argument is invalid."""


@dataclass(frozen=True)
class NodeSpec:
    """One node process, fully resolved."""
    package: str
    executable: str
    name: str
    namespace: str
    param_files: Tuple[str, ...] = ()
    parameters: Dict[str, object] = field(default_factory=dict)
    remappings: Tuple[Tuple[str, str], ...] = ()
    prefix: str = ""            # command prefix, as launch_ros's Node(prefix=...), e.g. "nice -n 10"
    respawn: bool = False       # restart the process when it dies (launch's respawn=True)
    respawn_delay_s: float = 2.0

    @property
    def label(self) -> str:
        return f"{self.namespace.strip('/')}/{self.name}".lstrip("/")

    def ros_args(self) -> List[str]:
        """Command-line ROS arguments equivalent to what launch_ros passes."""
        args = ["--ros-args", "-r", f"__node:={self.name}"]
        if self.namespace:
            args += ["-r", f"__ns:={self.namespace}"]
        for path in self.param_files:
            args += ["--params-file", path]
        for key, value in self.parameters.items():
            args += ["-p", f"{key}:={_yaml_scalar(value)}"]
        for src, dst in self.remappings:
            args += ["-r", f"{src}:={dst}"]
        return args


def _yaml_scalar(value) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return text.removesuffix("...").strip()


def graph_path(name: str) -> Path:
    """A graph by name ('sim') or by path to a YAML file."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    path = share_dir() / "config" / "graphs" / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise GraphError(f"unknown graph '{name}'; known graphs: {', '.join(known)} "
                         "(or give the path of a graph YAML file)")
    return path


def load_graph(name: str) -> dict:
    path = graph_path(name)
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data.get("nodes"), list):
        raise GraphError(f"{path}: a graph needs a 'nodes' list")
    data["_path"] = str(path)
    return data


def argument_defaults(graph: dict) -> Dict[str, str]:
    return {k: str((v or {}).get("default", "")) for k, v in (graph.get("arguments") or {}).items()}


def argument_choices(graph: dict) -> Dict[str, List[str]]:
    """{argument: its allowed values} for the arguments whose YAML entry lists `choices`."""
    return {k: [str(c) for c in v["choices"]] for k, v in (graph.get("arguments") or {}).items()
            if (v or {}).get("choices") is not None}


def parse_launch_arguments(items: List[str]) -> Dict[str, str]:
    """['num_envs:=2', 'env_id:=PushCube-v1'] -> dict, as `ros2 launch` takes them."""
    out = {}
    for item in items:
        if ":=" not in item:
            raise GraphError(f"launch arguments are written name:=value, got {item!r}")
        key, value = item.split(":=", 1)
        out[key.strip()] = value
    return out


def _substitute(value, args: Mapping[str, str], env_index: int, env_ns: str,
                ready: Sequence[str] = ()):
    if isinstance(value, dict):
        return {k: _substitute(v, args, env_index, env_ns, ready) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, args, env_index, env_ns, ready) for v in value]
    if not isinstance(value, str) or "$(" not in value:
        return value

    def repl(match):
        if match.group("arg"):
            name = match.group("arg")
            if name not in args:
                raise GraphError(f"$(arg {name}) is used but not declared under 'arguments'")
            return str(args[name])
        var = match.group("var")
        if var == "env_names":
            return "[" + ", ".join(f"env{i}" for i in range(int(args.get("num_envs", 1)))) + "]"
        if var == "ready_before_ticks":
            return "[" + ", ".join(ready) + "]"
        return str(env_index) if var == "env_index" else env_ns

    text = _SUBST.sub(repl, value)
    if not _SUBST.fullmatch(value.strip()) or text == "":
        return text
    if text == "[]":
        return _OMIT        # an empty list has no type as a ROS parameter: leave it unset
    # A value that is only a substitution takes the type YAML gives it ("2" -> 2).
    try:
        typed = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise GraphError(f"{value} = {text!r} is not a valid YAML value: {exc}") from None
    return text if typed is None else typed


def resolve(graph: dict, overrides: Optional[Mapping[str, str]] = None) -> List[NodeSpec]:
    """Resolve a loaded graph with launch-argument overrides into node specs."""
    args = argument_defaults(graph)
    unknown = set(overrides or {}) - set(args)
    if unknown:
        raise GraphError(f"unknown launch argument(s) {sorted(unknown)} for graph "
                         f"{graph.get('_path')}; known: {sorted(args)}")
    args.update({k: str(v) for k, v in (overrides or {}).items()})
    for name, allowed in argument_choices(graph).items():
        # a value no condition matches would silently drop a node (policy:=scripted ran the
        # graph without a policy)
        if args[name] not in allowed:
            raise GraphError(f"{name}:={args[name]} is not one of {', '.join(allowed)} "
                             f"(graph {graph.get('_path')})")
    try:
        num_envs = int(args.get("num_envs", 1))
    except ValueError:
        raise GraphError(f"num_envs must be an integer, got {args.get('num_envs')!r}")
    if num_envs < 1:
        raise GraphError(f"num_envs must be >= 1, got {num_envs}")
    config_dir = Path(graph["_path"]).resolve().parent.parent
    included = [node for node in graph["nodes"] if _included(node, args)]

    def ready_before_ticks(index: Optional[int]) -> List[str]:
        """Fully qualified names of the nodes marked `ready_before_ticks: true` that the
        tick source of env `index` waits for: those in its namespace and the global ones."""
        names = []
        for node in included:
            if not node.get("ready_before_ticks", False):
                continue
            if node.get("per_env", False):
                if index is not None:
                    names.append(f"/env{index}/{node['name']}")
            else:
                names.append(f"/{node['name']}")
        return names

    specs = []
    for node in included:
        envs = range(num_envs) if node.get("per_env", False) else [None]
        for index in envs:
            env_ns = f"/env{index}" if index is not None else ""
            ready = ready_before_ticks(index)
            files, params = [], {}
            for entry in node.get("parameters", []):
                if "file" in entry and len(entry) == 1:
                    name = str(_substitute(entry["file"], args, index or 0, env_ns) or "")
                    if not name:
                        continue          # an optional file argument left empty
                    path = (config_dir / name).resolve()
                    if not path.exists() and Path(name).expanduser().exists():
                        path = Path(name).expanduser().resolve()    # the user's own file
                    if not path.exists():
                        raise GraphError(f"parameter file {name} (node {node['name']}) is missing: "
                                         f"looked in {config_dir} and {Path.cwd()}")
                    files.append(str(path))
                else:
                    params.update(_substitute(entry, args, index or 0, env_ns, ready))
            params = {k: v for k, v in params.items() if v is not _OMIT}
            remaps = tuple((src, _substitute(dst, args, index or 0, env_ns))
                           for src, dst in (node.get("remappings") or {}).items())
            respawn = _substitute(node.get("respawn", False), args, index or 0, env_ns)
            if str(respawn).lower() not in ("true", "false"):
                raise GraphError(f"node {node['name']}: respawn must be true or false, got {respawn!r}")
            try:
                delay = float(_substitute(node.get("respawn_delay", 2.0), args, index or 0, env_ns))
            except (TypeError, ValueError):
                raise GraphError(f"node {node['name']}: respawn_delay must be a number of seconds, "
                                 f"got {node.get('respawn_delay')!r}") from None
            specs.append(NodeSpec(package=node.get("package", "lrm_ros"),
                                  executable=node["executable"], name=node["name"],
                                  namespace=env_ns, param_files=tuple(files),
                                  parameters=params, remappings=remaps,
                                  prefix=str(_substitute(node.get("prefix", ""), args,
                                                         index or 0, env_ns) or ""),
                                  respawn=str(respawn).lower() == "true",
                                  respawn_delay_s=delay))
    return specs


def _included(node: dict, args: Mapping[str, str]) -> bool:
    """Whether the node's `if`/`unless` conditions keep it in the graph."""
    skip = False
    for key in ("if", "unless"):
        cond = node.get(key)
        if not cond:
            continue
        if cond.get("arg") not in args:
            raise GraphError(f"node {node.get('name')}: '{key}' names undeclared argument "
                             f"{cond.get('arg')!r}")
        if "in" in cond:
            equal = str(args[cond["arg"]]) in [str(v) for v in cond["in"]]
        else:
            equal = str(args[cond["arg"]]) == str(cond["equals"])
        skip = skip or (equal if key == "unless" else not equal)
    return not skip
