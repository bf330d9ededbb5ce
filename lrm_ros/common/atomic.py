"""Atomic file writes, one implementation for every file the stack writes that a crash must
not leave half-written: episode chunks and metadata, policy and reward checkpoints, the
learner's state, feature caches.

A file is written to a temporary name in its own directory (``.tmp-<name>.<pid>.<random>``),
flushed and fsync'd, ``os.replace``'d onto its final name, and the directory is fsync'd, so a
reader sees the old file or the new one, never a mixture; a failed write removes its
temporary file. Standard library only.
"""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any, BinaryIO, Callable, Union

__all__ = ["TMP_PREFIX", "atomic_write", "atomic_write_bytes", "atomic_write_json", "fsync_dir", "tmp_name"]

TMP_PREFIX = ".tmp-"


def fsync_dir(path: Union[str, Path]) -> None:
    """Make a rename in ``path`` durable (best effort: some filesystems refuse)."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def tmp_name(directory: Union[str, Path], final_name: str) -> Path:
    """A temporary name for ``final_name`` in ``directory`` that no other writer uses."""
    return Path(directory) / f"{TMP_PREFIX}{final_name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"


def atomic_write(path: Union[str, Path], write_fn: Callable[[BinaryIO], Any], mode: int = 0o644) -> Path:
    """Write ``path`` through ``write_fn(binary file object)`` atomically; returns the path.
    The directory must exist (a writer whose directory was removed fails rather than
    recreating it); the file gets permissions ``mode``."""
    path = Path(path)
    tmp = tmp_name(path.parent, path.name)
    try:
        with open(tmp, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: Union[str, Path], data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_json(path: Union[str, Path], obj: Any, **dumps_kwargs: Any) -> Path:
    """``json.dumps(obj, **dumps_kwargs)`` (UTF-8) written atomically."""
    return atomic_write_bytes(path, json.dumps(obj, **dumps_kwargs).encode("utf-8"))
