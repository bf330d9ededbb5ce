"""A small pip-only stand-in for `ros2 launch`: start each node of a graph as its own process.

It does not re-implement the launch framework: no event handlers, no substitutions beyond
graph.py's. It starts processes with their parameters, prefixes their output with the node's
name, forwards Ctrl-C (SIGINT) to all of them, reports a node that dies, and then shuts the
rest down (SIGINT, then SIGTERM, then SIGKILL after timeouts); a node with `respawn: true`
in the graph is restarted instead (reported, after its `respawn_delay`), as launch does.
"""
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Dict, List, Optional, Sequence, TextIO

from lrm_ros.bringup.graph import NodeSpec
from lrm_ros.ros.env import ros_environment


def node_command(spec: NodeSpec) -> List[str]:
    """The command line of one node: its console script (pip install), its executable under
    <prefix>/lib/<package>/ (colcon install), else `python -m lrm_ros.nodes.<executable>`;
    after the spec's command prefix, if any (e.g. `nice -n 10`)."""
    return shlex.split(spec.prefix) + _node_command(spec)


def _node_command(spec: NodeSpec) -> List[str]:
    bindir = Path(sys.executable).parent
    script = bindir / f"{spec.package}_{spec.executable}"
    if script.exists():
        return [str(script), *spec.ros_args()]
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    for prefix in prefixes + [sys.prefix]:
        exe = Path(prefix) / "lib" / spec.package / spec.executable
        if exe.exists():
            return [str(exe), *spec.ros_args()]
    if spec.package == "lrm_ros":
        return [sys.executable, "-m", f"lrm_ros.nodes.{spec.executable}", *spec.ros_args()]
    raise FileNotFoundError(f"executable '{spec.executable}' of package '{spec.package}' not "
                            "found in the console scripts or <prefix>/lib/<package>/")


CANNOT_START = 2           # run_node's exit code for a node that cannot start (bad parameters...)

SHM_PREFIXES = ("fastdds_", "fastrtps_", "sem.fastdds_", "sem.fastrtps_")


def shm_in_use() -> set:
    """Paths under /dev/shm that some live process has open or mapped."""
    in_use = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                try:
                    target = os.readlink(fd)
                except OSError:
                    continue
                if target.startswith("/dev/shm/"):
                    in_use.add(target)
            with open(proc / "maps") as maps:
                for line in maps:
                    if "/dev/shm/" in line:
                        in_use.add(line[line.index("/dev/shm/"):].strip().split(" (deleted)")[0])
        except OSError:
            continue
    return in_use


def stale_shm(prefixes: Sequence[str] = SHM_PREFIXES) -> List[Path]:
    """FastDDS shared-memory files in /dev/shm that no live process holds."""
    shm = Path("/dev/shm")
    if not shm.is_dir():
        return []
    candidates = [p for p in shm.iterdir() if p.name.startswith(tuple(prefixes))]
    if not candidates:
        return []
    in_use = shm_in_use()
    return [p for p in candidates if str(p) not in in_use]


def clean_stale_shm(prefixes: Sequence[str] = SHM_PREFIXES) -> int:
    """Remove FastDDS shared-memory files that no live process holds (killed nodes leave
    them behind). Returns how many were removed."""
    removed = 0
    for path in stale_shm(prefixes):
        try:
            path.unlink()
            removed += 1
        except OSError:
            pass
    return removed


def unclean_exits(codes: Dict[str, Optional[int]]) -> Dict[str, Optional[int]]:
    """The nodes whose exit after a stop was not clean: anything but 0 (run_node after SIGINT)
    or -SIGINT (the signal came before the node's handlers were installed)."""
    return {k: v for k, v in codes.items() if v not in (0, -signal.SIGINT)}


class NodeProcess:
    def __init__(self, spec: NodeSpec, popen: subprocess.Popen):
        self.spec = spec
        self.popen = popen
        self.tail: deque = deque(maxlen=40)
        self.reader: Optional[threading.Thread] = None
        self.respawn_at: Optional[float] = None     # when a respawn is due (spec.respawn)
        self.restarts = 0


class GraphRunner:
    """Start, watch and stop the processes of a resolved graph.

    `env` defaults to this process's environment with the ROS variables filled in
    (lrm_ros.ros.env). Output lines are written to `output` as `[env0/node] line`.
    `shutdown_timeout_s`: how long nodes get after SIGINT before SIGTERM (ros2 launch's
    default, 5 s: a node that needs longer exits uncleanly here as it would there).
    """

    def __init__(self, specs: Sequence[NodeSpec], env: Optional[Dict[str, str]] = None,
                 output: Optional[TextIO] = sys.stdout, shutdown_timeout_s: float = 5.0):
        self.specs = list(specs)
        self.env = ros_environment() if env is None else dict(env)
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self.output = output
        self.shutdown_timeout_s = shutdown_timeout_s
        self.procs: List[NodeProcess] = []
        self._lock = threading.Lock()

    def _say(self, text: str) -> None:
        if self.output is not None:
            with self._lock:
                self.output.write(text + "\n")
                self.output.flush()

    def _pump(self, proc: NodeProcess) -> None:
        for raw in iter(proc.popen.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip()
            proc.tail.append(line)
            self._say(f"[{proc.spec.label}] {line}")
        proc.popen.stdout.close()

    def _spawn(self, spec: NodeSpec) -> NodeProcess:
        popen = subprocess.Popen(node_command(spec), env=self.env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True)
        proc = NodeProcess(spec, popen)
        proc.reader = threading.Thread(target=self._pump, args=(proc,), daemon=True)
        proc.reader.start()
        self._say(f"[lrm-ros] started {spec.label} (pid {popen.pid})")
        return proc

    def start(self) -> "GraphRunner":
        for spec in self.specs:
            self.procs.append(self._spawn(spec))
        return self

    def dead(self) -> List[NodeProcess]:
        """Nodes that exited and will not come back: no `respawn` in the graph, or it could
        not start (exit code 2: a respawn would fail the same way, forever)."""
        return [p for p in self.procs if p.popen.poll() is not None
                and (not p.spec.respawn or p.popen.returncode == CANNOT_START)]

    def respawn(self) -> List[str]:
        """Restart the nodes with `respawn: true` that died, `respawn_delay_s` after their
        death (launch's respawn); each death is reported. Returns the labels restarted now."""
        restarted = []
        for i, p in enumerate(self.procs):
            if not p.spec.respawn or p.popen.poll() is None or p.popen.returncode == CANNOT_START:
                continue
            now = time.monotonic()
            if p.respawn_at is None:
                p.respawn_at = now + p.spec.respawn_delay_s
                self._say(f"[lrm-ros] {self.describe_death(p)}\n[lrm-ros] respawning "
                          f"{p.spec.label} in {p.spec.respawn_delay_s:g} s (restart {p.restarts + 1})")
            elif now >= p.respawn_at:
                if p.reader is not None:
                    p.reader.join(timeout=2.0)
                new = self._spawn(p.spec)
                new.restarts = p.restarts + 1
                self.procs[i] = new
                restarted.append(p.spec.label)
        return restarted

    def describe_death(self, proc: NodeProcess) -> str:
        code = proc.popen.returncode
        how = f"signal {-code}" if code < 0 else f"exit code {code}"
        last = "\n    ".join(list(proc.tail)[-8:])
        return f"{proc.spec.label} died ({how}); last output:\n    {last}"

    def stop(self) -> Dict[str, int]:
        """SIGINT all live nodes, then SIGTERM, then SIGKILL. Returns exit codes by label (a
        respawned node: its last process's)."""
        live = [p for p in self.procs if p.popen.poll() is None]
        for sig, wait_s in ((signal.SIGINT, self.shutdown_timeout_s),
                            (signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
            if not live:
                break
            for p in live:
                try:
                    os.killpg(p.popen.pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait_s
            while live and time.monotonic() < deadline:
                live = [p for p in live if p.popen.poll() is None]
                time.sleep(0.05)
            if live and sig != signal.SIGKILL:
                self._say(f"[lrm-ros] {', '.join(p.spec.label for p in live)} still running "
                          f"after {signal.Signals(sig).name}; escalating")
        for p in self.procs:
            # Whatever the node spawned in its session goes too.
            try:
                os.killpg(p.popen.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            if p.reader is not None:
                p.reader.join(timeout=2.0)
        clean_stale_shm()
        return {p.spec.label: p.popen.returncode for p in self.procs}

    def run_until_exit(self, duration_s: Optional[float] = None) -> int:
        """Block until Ctrl-C/SIGTERM, `duration_s`, or a node dying; then stop all.
        Returns 0 on a requested stop, 1 when a node died or did not exit cleanly."""
        stop = threading.Event()
        previous = {}

        def on_signal(signum, frame):
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
        code = 0
        try:
            deadline = None if duration_s is None else time.monotonic() + duration_s
            while not stop.is_set():
                self.respawn()
                dead = self.dead()
                if dead:
                    for proc in dead:
                        self._say(f"[lrm-ros] {self.describe_death(proc)}")
                    self._say("[lrm-ros] shutting the other nodes down")
                    code = 1
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    break
                stop.wait(0.2)
        finally:
            codes = self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        bad = unclean_exits(codes)
        if code == 0 and bad:
            self._say(f"[lrm-ros] nodes exited uncleanly after the stop: {bad} (0 = clean; "
                      "-15/-9: did not stop within the timeout; 1: failed)")
            code = 1
        return code

    def __enter__(self) -> "GraphRunner":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
