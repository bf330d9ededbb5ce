"""A rosbags Typestore with the standard ROS 2 types plus lrm_ros's own messages (from msg/*.msg).

ROS-free: the custom types are parsed from the .msg text, so bags can be written and read
without rclpy or the generated lrm_ros message package. rosbags computes the same RIHS01 type
hashes as rosidl, so the bags replay in a real ROS 2 install.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

__all__ = ["PACKAGE", "find_msg_dir", "custom_msg_types", "make_typestore", "msgtype"]

PACKAGE = "lrm_ros"


def find_msg_dir() -> Path:
    """The directory with lrm_ros's .msg files: the installed share dir or the source tree."""
    candidates = [
        Path(sys.prefix) / "share" / PACKAGE / "msg",
        Path(__file__).resolve().parents[2] / "msg",
    ]
    for d in candidates:
        if d.is_dir() and any(d.glob("*.msg")):
            return d
    raise FileNotFoundError(
        f"cannot find the {PACKAGE} .msg files; looked in {', '.join(str(c) for c in candidates)}"
    )


def msgtype(name: str) -> str:
    """'ControlTick' -> 'lrm_ros/msg/ControlTick'."""
    return f"{PACKAGE}/msg/{name}"


def custom_msg_types(msg_dir: Path | None = None) -> dict[str, str]:
    """{'lrm_ros/msg/ControlTick': <.msg text>, ...}"""
    d = Path(msg_dir) if msg_dir is not None else find_msg_dir()
    return {msgtype(p.stem): p.read_text() for p in sorted(d.glob("*.msg"))}


@functools.lru_cache(maxsize=4)
def _typestore(msg_dir: str | None):
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store_name = getattr(Stores, "ROS2_KILTED", None) or getattr(Stores, "LATEST")
    store = get_typestore(store_name)
    types: dict = {}
    for name, text in custom_msg_types(Path(msg_dir) if msg_dir else None).items():
        types.update(get_types_from_msg(text, name))
    store.register(types)
    return store


def make_typestore(msg_dir: Path | str | None = None):
    """A rosbags Typestore (ROS 2 Kilted) with the lrm_ros message types registered (cached)."""
    return _typestore(str(msg_dir) if msg_dir is not None else None)
