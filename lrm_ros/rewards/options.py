"""A reward backend from command-line options: the `--backend/--model-path/--signal/--set`
arguments every tool that scores with a backend shares (`lrm-ros eval`, `lrm-ros audit`)."""
from __future__ import annotations

import argparse
import json
from typing import Any, Dict, Sequence

__all__ = ["add_backend_arguments", "backend_from_args"]


def _parse_value(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def backend_from_args(name: str, model_path: str = "", signal: str = "", sets: Sequence[str] = ()):
    """A backend from command-line options (`--set KEY=VALUE` takes JSON values); ValueError
    with the reason when the options or the backend are bad."""
    from lrm_ros.rewards import make_backend
    config: Dict[str, Any] = {}
    if model_path:
        config["model_path"] = model_path
    if signal:
        config["signal"] = signal
    for kv in sets:
        k, sep, v = kv.partition("=")
        if not sep or not k:
            raise ValueError(f"--set takes KEY=VALUE, got {kv!r}")
        config[k] = _parse_value(v)
    try:
        return make_backend(name, **config)
    except (ValueError, TypeError, FileNotFoundError, OSError, ImportError) as e:
        raise ValueError(f"cannot create the {name!r} backend with {config}: {type(e).__name__}: {e}") from None


def add_backend_arguments(p: argparse.ArgumentParser, backend_help: str, **backend_kwargs) -> None:
    """--backend, --model-path, --signal, --set: what `backend_from_args` takes."""
    p.add_argument("--backend", help=backend_help, **backend_kwargs)
    p.add_argument("--model-path", default="", help="model checkpoint / directory for the backend")
    p.add_argument("--signal", default="", help="signal for backends that have one (vlm: tri, progress, ...)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="other backend settings (JSON values), e.g. --set device=\"cuda\"")
