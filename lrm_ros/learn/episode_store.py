"""Crash-safe on-disk record of RL episodes (ROS-free: numpy and the standard library only).

Layout under ``root``::

    ep_<env>_<episode>_<uuid8>/
        header.json          written when the episode begins (env, episode, policy version, ...)
        chunk_000000.npz     append-only step chunks, each (n, ...) per field
        chunk_000001.npz
        meta.json            written last; its presence marks the episode finished

Every file is written atomically: to a ``.tmp-*`` name in the same directory, fsync'd, then
``os.replace``'d into place (and the directory fsync'd), so a reader never sees half a file.
The episode directory itself is built under a ``.tmp-*`` name and renamed into place once its
header is on disk, so every ``ep_*`` directory has a header.

meta.json ``complete`` is true only for episodes closed by :meth:`EpisodeWriter.finish`.
Episodes closed by :meth:`EpisodeWriter.abort` or rebuilt by :meth:`EpisodeStore.recover`
(the process was killed) have ``complete: false`` and are listed by
:meth:`EpisodeStore.incomplete_episodes`, so the learner can choose to skip them.

Why one file of about 610 lines: one on-disk format with its writer, reader and crash
recovery, so the format is stated in one place (the atomic writes are lrm_ros.common.atomic).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Union

import numpy as np

from lrm_ros.common.atomic import TMP_PREFIX, atomic_write, atomic_write_bytes, fsync_dir

FORMAT_VERSION = 1
HEADER_NAME = "header.json"
META_NAME = "meta.json"
DELETING_PREFIX = ".deleting-"
EP_PREFIX = "ep_"
CHUNK_RE = re.compile(r"^chunk_(\d{6,})\.npz$")
CORRUPT_SUFFIX = ".corrupt"
DETACHED_SUFFIX = ".detached"
DEFAULT_FINITE_FIELDS = ("reward", "action")
_FIELD_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]*$")

StepValue = Union[np.ndarray, float, int, bool, np.generic]


# --------------------------------------------------------------------------------------------
# file helpers (atomic writes: lrm_ros.common.atomic)

def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _dumps(obj) -> bytes:
    return json.dumps(obj, indent=1, sort_keys=True, default=_json_default,
                      allow_nan=True).encode("utf-8")


def _atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, _dumps(obj))


def _read_json(path: Path) -> Optional[dict]:
    try:
        with open(path, "rb") as f:
            out = json.loads(f.read().decode("utf-8"))
        return out if isinstance(out, dict) else None
    except (OSError, ValueError):
        return None


def _safe_env(env: str) -> str:
    return re.sub(r"[^A-Za-z0-9.\-]+", "-", env).strip("-") or "env"


def _chunk_name(index: int) -> str:
    return f"chunk_{index:06d}.npz"


def _chunk_index(name: str) -> Optional[int]:
    m = CHUNK_RE.match(name)
    return int(m.group(1)) if m else None


def _dir_bytes(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def _load_chunk(path: Path) -> Dict[str, np.ndarray]:
    """Load every array of a chunk (reading each one checks the zip CRC); raise on damage."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: np.array(z[k]) for k in z.files}
    if not arrays:
        raise ValueError("chunk holds no fields")
    lengths = {k: (a.shape[0] if a.ndim else None) for k, a in arrays.items()}
    if None in lengths.values() or len(set(lengths.values())) != 1:
        raise ValueError(f"chunk fields have inconsistent step counts: {lengths}")
    return arrays


# --------------------------------------------------------------------------------------------
# public records

@dataclass(frozen=True)
class EpisodeInfo:
    """One finished (or recovered) episode as listed by the store."""
    path: Path
    env: str
    episode: int
    steps: int
    policy_version: int
    created: float
    complete: bool
    recovered: bool
    meta: dict = field(repr=False, compare=False, default_factory=dict)


@dataclass
class RecoveryReport:
    recovered: List[Path] = field(default_factory=list)      # episodes given a meta.json
    steps: Dict[str, int] = field(default_factory=dict)       # dir name -> steps kept
    corrupt_chunks: List[Path] = field(default_factory=list)  # new paths of moved-aside chunks
    detached_chunks: List[Path] = field(default_factory=list)  # valid chunks after a gap
    removed_tmp: List[Path] = field(default_factory=list)     # leftover temporaries removed
    skipped_active: List[Path] = field(default_factory=list)  # being written by this store

    @property
    def total_steps(self) -> int:
        return sum(self.steps.values())


# --------------------------------------------------------------------------------------------
# writer

class EpisodeWriter:
    """Appends steps to one episode directory; created by :meth:`EpisodeStore.begin`."""

    def __init__(self, store: "EpisodeStore", path: Path, header: dict, chunk_size: int,
                 finite_fields: Sequence[str]):
        self._store = store
        self.path = path
        self.header = header
        self.chunk_size = int(chunk_size)
        self._finite = tuple(finite_fields)
        self._lock = threading.Lock()
        self._buffer: List[Dict[str, np.ndarray]] = []
        self._spec: Optional[Dict[str, tuple]] = None   # name -> (shape, dtype)
        self._chunks = 0
        self._flushed_steps = 0
        self._sums: Dict[str, float] = {}
        self._closed = False

    # ---- properties
    @property
    def steps(self) -> int:
        """Steps accepted so far (flushed and buffered)."""
        return self._flushed_steps + len(self._buffer)

    @property
    def flushed_steps(self) -> int:
        return self._flushed_steps

    @property
    def closed(self) -> bool:
        return self._closed

    # ---- validation
    def _convert(self, step: Mapping[str, StepValue]) -> Dict[str, np.ndarray]:
        index = self.steps
        if not isinstance(step, Mapping) or not step:
            raise ValueError(f"step {index}: a step must be a non-empty dict of fields")
        out: Dict[str, np.ndarray] = {}
        for name, value in step.items():
            if not isinstance(name, str) or not _FIELD_RE.match(name) or name == "meta":
                raise ValueError(f"step {index}: invalid field name {name!r} (letters, digits, "
                                 "'_', '.', '-'; starting with a letter; not 'meta')")
            arr = np.array(value, copy=True)
            if arr.dtype.kind not in "biufc":
                raise ValueError(f"step {index}: field {name!r} has unsupported dtype "
                                 f"{arr.dtype} (numeric or bool arrays only)")
            out[name] = arr
        if self._spec is None:
            spec = {k: (a.shape, a.dtype) for k, a in out.items()}
        else:
            spec = self._spec
            missing = sorted(set(spec) - set(out))
            extra = sorted(set(out) - set(spec))
            if missing or extra:
                raise ValueError(f"step {index}: fields differ from the first step's: "
                                 f"missing {missing}, unexpected {extra}")
            for name, arr in out.items():
                shape, dtype = spec[name]
                if arr.shape != shape:
                    raise ValueError(f"step {index}: field {name!r} has shape {arr.shape}, "
                                     f"but the first step's has shape {shape}")
                if arr.dtype != dtype:
                    raise ValueError(f"step {index}: field {name!r} has dtype {arr.dtype}, "
                                     f"but the first step's has dtype {dtype}")
        for name in self._finite:
            arr = out.get(name)
            if arr is not None and arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
                bad = arr[~np.isfinite(arr)] if arr.ndim else arr
                raise ValueError(f"step {index}: field {name!r} contains non-finite value(s) "
                                 f"{np.ravel(bad)[:4].tolist()}; step rejected, nothing written")
        if self._spec is None:
            self._spec = spec
        return out

    # ---- API
    def append(self, step: Mapping[str, StepValue]) -> None:
        with self._lock:
            self._check_open()
            arrays = self._convert(step)
            self._buffer.append(arrays)
            for name, arr in arrays.items():
                if arr.ndim == 0 and arr.dtype.kind in "biuf":
                    self._sums[name] = self._sums.get(name, 0.0) + float(arr)
            if len(self._buffer) >= self.chunk_size:
                self._flush_locked()

    def flush(self) -> None:
        """Write the buffered steps as one chunk (no-op when nothing is buffered)."""
        with self._lock:
            self._check_open()
            self._flush_locked()

    def finish(self, success: bool, extra: Optional[dict] = None) -> Path:
        """Write the last chunk and meta.json (complete episode); return the episode path."""
        with self._lock:
            self._check_open()
            self._flush_locked()
            self._write_meta(complete=True, success=bool(success), extra=extra)
            self._close()
        return self.path

    def abort(self, reason: str = "", extra: Optional[dict] = None) -> Path:
        """Close the episode as incomplete: buffered steps are kept, meta says why."""
        with self._lock:
            self._check_open()
            self._flush_locked()
            self._write_meta(complete=False, success=False, extra=extra,
                             aborted=True, reason=str(reason))
            self._close()
        return self.path

    def __enter__(self) -> "EpisodeWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self._closed:
            self.abort(f"exception: {exc_type.__name__}: {exc}" if exc_type else
                       "writer left without finish()")

    # ---- internals
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"episode writer for {self.path.name} is already closed")

    def _close(self) -> None:
        self._closed = True
        self._store._release(self.path)

    def _flush_locked(self) -> None:
        if not self._buffer:
            return
        stacked = {k: np.stack([s[k] for s in self._buffer]) for k in self._buffer[0]}
        target = self.path / _chunk_name(self._chunks)
        atomic_write(target, lambda f: np.savez(f, **stacked))
        self._chunks += 1
        self._flushed_steps += len(self._buffer)
        self._buffer = []

    def _write_meta(self, complete: bool, success: bool, extra: Optional[dict],
                    aborted: bool = False, reason: str = "") -> None:
        fields = {} if self._spec is None else {
            k: {"shape": list(s), "dtype": d.str} for k, (s, d) in self._spec.items()}
        meta = dict(self.header)
        meta.update({
            "steps": self._flushed_steps,
            "chunks": self._chunks,
            "return": float(self._sums.get("reward", 0.0)),
            "sums": dict(self._sums),
            "success": success,
            "complete": complete,
            "recovered": False,
            "aborted": aborted,
            "finished": time.time(),
            "fields": fields,
            "extra": dict(extra or {}),
        })
        if aborted:
            meta["abort_reason"] = reason
        _atomic_write_json(self.path / META_NAME, meta)


# --------------------------------------------------------------------------------------------
# store

class EpisodeStore:
    """Directory of recorded episodes; see the module docstring for the layout."""

    def __init__(self, root: Union[str, Path], chunk_size: int = 64,
                 finite_fields: Sequence[str] = DEFAULT_FINITE_FIELDS):
        if int(chunk_size) < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.chunk_size = int(chunk_size)
        self.finite_fields = tuple(finite_fields)
        self._active: Dict[Path, EpisodeWriter] = {}
        self._lock = threading.Lock()

    # ---- writing
    def begin(self, env: str, episode: int, policy_version: int,
              meta: Optional[dict] = None, chunk_size: Optional[int] = None) -> EpisodeWriter:
        user_meta = dict(meta or {})
        try:
            _dumps(user_meta)
        except (TypeError, ValueError) as e:
            raise ValueError(f"episode meta is not JSON serialisable: {e}") from None
        created_ns = time.time_ns()
        uid = uuid.uuid4().hex[:8]
        name = f"{EP_PREFIX}{_safe_env(str(env))}_{int(episode)}_{uid}"
        header = {
            "format": FORMAT_VERSION,
            "env": str(env),
            "episode": int(episode),
            "policy_version": int(policy_version),
            "uuid": uid,
            "created": created_ns / 1e9,
            "created_ns": created_ns,
            "pid": os.getpid(),
            "meta": user_meta,
        }
        # build the directory under a temporary name, so every ep_* directory has a header
        tmp_dir = self.root / f"{TMP_PREFIX}{name}"
        tmp_dir.mkdir()
        try:
            _atomic_write_json(tmp_dir / HEADER_NAME, header)
            final = self.root / name
            os.rename(tmp_dir, final)
        except BaseException:
            shutil.rmtree(tmp_dir, ignore_errors=True)
            raise
        fsync_dir(self.root)
        writer = EpisodeWriter(self, final, header, chunk_size or self.chunk_size,
                               self.finite_fields)
        with self._lock:
            self._active[final] = writer
        return writer

    def _release(self, path: Path) -> None:
        with self._lock:
            self._active.pop(path, None)

    # ---- listing
    def _episode_dirs(self) -> List[Path]:
        try:
            return [p for p in self.root.iterdir() if p.is_dir() and p.name.startswith(EP_PREFIX)]
        except FileNotFoundError:
            return []

    @staticmethod
    def _info(path: Path, meta: dict) -> EpisodeInfo:
        return EpisodeInfo(path=path, env=str(meta.get("env", "")),
                           episode=int(meta.get("episode", -1)), steps=int(meta.get("steps", 0)),
                           policy_version=int(meta.get("policy_version", -1)),
                           created=float(meta.get("created", 0.0)),
                           complete=bool(meta.get("complete", False)),
                           recovered=bool(meta.get("recovered", False)), meta=meta)

    def _finished(self) -> List[EpisodeInfo]:
        out = []
        for d in self._episode_dirs():
            meta = _read_json(d / META_NAME)
            if meta is not None:
                out.append(self._info(d, meta))
        out.sort(key=lambda i: (int(i.meta.get("created_ns", i.created * 1e9)), i.path.name))
        return out

    def complete_episodes(self) -> List[EpisodeInfo]:
        """Episodes closed by finish(), oldest first."""
        return [i for i in self._finished() if i.complete]

    def incomplete_episodes(self) -> List[EpisodeInfo]:
        """Episodes with meta.json but not complete (recovered or aborted), oldest first."""
        return [i for i in self._finished() if not i.complete]

    def pending_episodes(self) -> List[Path]:
        """Episode directories without meta.json (being written, or awaiting recover())."""
        return sorted(d for d in self._episode_dirs() if not (d / META_NAME).exists())

    # ---- reading
    def _resolve(self, episode: Union[str, Path, EpisodeInfo]) -> Path:
        if isinstance(episode, EpisodeInfo):
            return episode.path
        p = Path(episode)
        return p if p.is_absolute() or p.exists() else self.root / p

    def load(self, episode: Union[str, Path, EpisodeInfo]) -> Dict[str, Any]:
        """Stacked arrays (T, ...) of a finished episode plus ``"meta"`` (its meta.json)."""
        path = self._resolve(episode)
        meta = _read_json(path / META_NAME)
        if meta is None:
            raise FileNotFoundError(f"{path} has no readable {META_NAME} (unfinished episode; "
                                    "run recover() first)")
        parts: Dict[str, List[np.ndarray]] = {}
        for i in range(int(meta.get("chunks", 0))):
            for k, a in _load_chunk(path / _chunk_name(i)).items():
                parts.setdefault(k, []).append(a)
        out: Dict[str, Any] = {}
        if parts:
            out = {k: np.concatenate(v, axis=0) for k, v in parts.items()}
        else:
            for k, spec in meta.get("fields", {}).items():
                out[k] = np.zeros((0, *spec["shape"]), dtype=np.dtype(spec["dtype"]))
        n = {a.shape[0] for a in out.values()}
        if out and n != {int(meta.get("steps", 0))}:
            raise ValueError(f"{path.name}: chunks hold {sorted(n)} steps, meta says "
                             f"{meta.get('steps')}")
        out["meta"] = meta
        return out

    def iter_batches(self, batch_size: int, include_incomplete: bool = False,
                     shuffle: bool = True, seed: Optional[int] = None,
                     fields: Optional[Sequence[str]] = None,
                     drop_last: bool = False) -> Iterator[Dict[str, np.ndarray]]:
        """Batches of steps pooled over finished episodes (complete only unless asked)."""
        infos = self.complete_episodes() + (self.incomplete_episodes() if include_incomplete
                                            else [])
        pooled: Dict[str, List[np.ndarray]] = {}
        for info in infos:
            data = self.load(info)
            data.pop("meta")
            if not data or next(iter(data.values())).shape[0] == 0:
                continue
            keys = list(fields) if fields is not None else sorted(data)
            if pooled and set(keys) != set(pooled):
                raise ValueError(f"{info.path.name}: fields {sorted(data)} differ from "
                                 f"earlier episodes' {sorted(pooled)}")
            for k in keys:
                pooled.setdefault(k, []).append(data[k])
        if not pooled:
            return
        cat = {k: np.concatenate(v, axis=0) for k, v in pooled.items()}
        n = next(iter(cat.values())).shape[0]
        order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
        for start in range(0, n, int(batch_size)):
            idx = order[start:start + int(batch_size)]
            if drop_last and len(idx) < batch_size:
                break
            yield {k: v[idx] for k, v in cat.items()}

    # ---- crash recovery
    def recover(self) -> RecoveryReport:
        """Close episodes left without meta.json by a killed process; clean temporaries.

        Chunks that load are kept (the contiguous prefix chunk_000000..); a chunk that fails
        to load is renamed ``*.corrupt``; valid chunks after a gap are renamed ``*.detached``.
        Nothing but temporaries is deleted. Directories being written by this store's own
        writers are skipped; call recover() at start-up, before other processes write.
        """
        report = RecoveryReport()
        with self._lock:
            active = set(self._active)
        for entry in list(self.root.iterdir()):
            if entry.name.startswith(TMP_PREFIX) or entry.name.startswith(DELETING_PREFIX):
                # a half-built episode directory or an interrupted prune
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
                report.removed_tmp.append(entry)
        for d in sorted(self._episode_dirs()):
            if d in active:
                report.skipped_active.append(d)
                continue
            for f in list(d.iterdir()):
                if f.name.startswith(TMP_PREFIX):
                    f.unlink(missing_ok=True)
                    report.removed_tmp.append(f)
            if (d / META_NAME).exists():
                continue
            self._recover_dir(d, report)
        return report

    def _recover_dir(self, d: Path, report: RecoveryReport) -> None:
        header = _read_json(d / HEADER_NAME) or {}
        chunks = sorted((i, f) for f in d.iterdir() if (i := _chunk_index(f.name)) is not None)
        kept: List[Dict[str, np.ndarray]] = []
        spec = None
        expect = 0
        gap = False
        for idx, f in chunks:
            if gap or idx != expect:
                gap = True
            try:
                arrays = _load_chunk(f)
                this = {k: (a.shape[1:], a.dtype) for k, a in arrays.items()}
                if spec is not None and this != spec:
                    raise ValueError("fields differ from earlier chunks")
            except Exception:  # noqa: BLE001 - any failure to load means damaged
                moved = f.with_name(f.name + CORRUPT_SUFFIX)
                os.replace(f, moved)
                report.corrupt_chunks.append(moved)
                gap = True
                continue
            if gap:
                moved = f.with_name(f.name + DETACHED_SUFFIX)
                os.replace(f, moved)
                report.detached_chunks.append(moved)
                continue
            spec = this
            kept.append(arrays)
            expect += 1
        steps = sum(next(iter(a.values())).shape[0] for a in kept)
        sums: Dict[str, float] = {}
        fields = {}
        if kept:
            for k, (shape, dtype) in spec.items():
                fields[k] = {"shape": list(shape), "dtype": dtype.str}
                if len(shape) == 0 and dtype.kind in "biuf":
                    sums[k] = float(sum(float(np.sum(a[k], dtype=np.float64)) for a in kept))
        meta = dict(header)
        meta.setdefault("env", None)
        meta.setdefault("episode", -1)
        meta.setdefault("policy_version", -1)
        if "created" not in meta:
            try:
                meta["created"] = d.stat().st_mtime
            except OSError:
                meta["created"] = 0.0
        meta.update({
            "steps": steps,
            "chunks": len(kept),
            "return": float(sums.get("reward", 0.0)),
            "sums": sums,
            "success": False,
            "complete": False,
            "recovered": True,
            "aborted": False,
            "finished": time.time(),
            "fields": fields,
            "extra": {},
            "recovery": {"corrupt_chunks": [p.name for p in report.corrupt_chunks
                                            if p.parent == d],
                         "detached_chunks": [p.name for p in report.detached_chunks
                                             if p.parent == d],
                         "header_missing": not header},
        })
        _atomic_write_json(d / META_NAME, meta)
        report.recovered.append(d)
        report.steps[d.name] = steps

    # ---- housekeeping
    def disk_usage(self) -> Dict[str, int]:
        """Bytes on disk: total and per state (complete / incomplete / pending)."""
        usage = {"total": 0, "complete": 0, "incomplete": 0, "pending": 0, "episodes": 0}
        for d in self._episode_dirs():
            b = _dir_bytes(d)
            meta = _read_json(d / META_NAME)
            state = "pending" if meta is None else ("complete" if meta.get("complete")
                                                    else "incomplete")
            usage[state] += b
            usage["total"] += b
            usage["episodes"] += 1
        return usage

    def prune(self, keep_last: int, include_incomplete: bool = True) -> List[Path]:
        """Delete all but the newest ``keep_last`` finished episodes; return deleted paths.

        Episodes without meta.json (being written or awaiting recover) are never touched.
        With include_incomplete=False only complete episodes are counted and pruned.
        """
        if keep_last < 0:
            raise ValueError(f"keep_last must be >= 0, got {keep_last}")
        infos = self._finished() if include_incomplete else self.complete_episodes()
        doomed = infos[:max(0, len(infos) - keep_last)]
        removed = []
        for info in doomed:
            # rename first, so an interrupted delete never leaves a half episode listed
            trash = self.root / f"{DELETING_PREFIX}{info.path.name}"
            try:
                os.rename(info.path, trash)
            except OSError:
                continue
            shutil.rmtree(trash, ignore_errors=True)
            removed.append(info.path)
        if removed:
            fsync_dir(self.root)
        return removed


__all__ = ["EpisodeStore", "EpisodeWriter", "EpisodeInfo", "RecoveryReport"]
