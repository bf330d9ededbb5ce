"""Reward backends: a registry of names -> factories, imported lazily.

`make_backend("vlm", model_path=..., signal="tri")` imports the backend's module only then,
so `import lrm_ros.rewards` stays light (no torch / transformers) for nodes and tools
that only need the interface (base.py) or another backend.

Each factory is "module:function"; the function takes the backend's config as keyword
arguments and returns a RewardBackend. To add a backend, add an entry to _FACTORIES, call
`register_backend()` in your process, or name its factory as "package.module:function"
wherever a backend name is taken (the reward node's `backend` parameter, `--backend`).
"""
from importlib import import_module
from typing import Callable, Dict, List, Union

from .base import RewardBackend, RewardQuery, RewardResult, tri_value  # noqa: F401 (light)

_FACTORIES: Dict[str, Union[str, Callable[..., RewardBackend]]] = {
    "vlm": "lrm_ros.rewards.vlm:make",              # LRM signals from a Qwen-VL (JSON answers)
    "topreward": "lrm_ros.rewards.topreward:make",  # TOPReward log P(True), prefix KV cache
    "oracle": "lrm_ros.rewards.oracle:make",        # the simulator's dense reward (evaluation)
    "lite": "lrm_ros.rewards.lite:make",            # the embedded small reward model (heads on frozen features)
    "vllm": "lrm_ros.rewards.server:make",          # an inference server (vLLM, OpenAI-compatible HTTP API)
}


def register_backend(name: str, factory: Union[str, Callable[..., RewardBackend]]) -> None:
    """Add or replace a backend: factory is a callable or a "module:function" string."""
    _FACTORIES[name] = factory


def list_backends() -> List[str]:
    return sorted(_FACTORIES)


def is_factory_spec(name: str) -> bool:
    """Whether `name` has the "package.module:function" form of a backend factory."""
    module, sep, attr = name.partition(":")
    return bool(sep and module and attr.isidentifier()
                and all(part.isidentifier() for part in module.split(".")))


def make_backend(name: str, **config) -> RewardBackend:
    """A backend by registry name (or "package.module:function"), built from its config
    keyword arguments."""
    factory = _FACTORIES.get(name)
    if factory is None and is_factory_spec(name):
        factory = name
    if factory is None:
        raise ValueError(f"unknown reward backend {name!r}; known: {list_backends()}, or name a "
                         "factory as 'package.module:function'") from None
    if isinstance(factory, str):
        module, _, attr = factory.partition(":")
        try:
            factory = getattr(import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"reward backend {name!r} cannot be imported: {type(exc).__name__}: {exc}") from None
    backend = factory(**config)
    if not isinstance(backend, RewardBackend):
        raise ValueError(f"reward backend {name!r}: its factory returned {type(backend).__name__}, "
                         "not a lrm_ros RewardBackend")
    return backend
