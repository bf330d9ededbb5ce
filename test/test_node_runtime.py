"""run_node (lrm_ros.nodes.runtime) with real rclpy processes: a stop requested by SIGINT or
SIGTERM while messages flood in is a clean exit (0, no traceback) - with the previous
run_node 5 of 12 such subscribers died on SIGINT with `RuntimeError: Unable to convert call
argument '0' to Python object` from take_message, and 4 of 9 on SIGTERM with `RCLError:
Failed to publish: publisher's context is invalid`; a stop while the node is still being built (a model
loading) ends it at once; an exception escaping a callback is logged with its traceback and
exits 1."""
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from lrm_ros.ros.env import ros_environment

NODES = str(Path(__file__).with_name("_runtime_nodes.py"))


class Node:
    """A node process with its output read in a thread (readline blocks)."""

    def __init__(self, kind, env):
        self.proc = subprocess.Popen([sys.executable, NODES, kind], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()

    def wait_for(self, marker, timeout_s) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: any(marker in line for line in self.lines), timeout_s)

    def exit_code(self, timeout_s) -> int:
        code = self.proc.wait(timeout=timeout_s)
        self._reader.join(timeout=10)
        return code

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_during_a_message_flood_is_a_clean_exit(fresh_domain, sig):
    env = ros_environment(domain_id=fresh_domain)
    pub = Node("flood_pub", env)
    subs = [Node("flood_sub", env) for _ in range(3)]
    try:
        for node in subs:
            assert node.wait_for("RECEIVING", 60), node.text + pub.text
        for node in subs:
            node.proc.send_signal(sig)
        for node in subs:
            code = node.exit_code(10)
            assert code == 0, node.text
            assert "Traceback" not in node.text, node.text
    finally:
        for node in [pub, *subs]:
            node.kill()


def test_an_exception_in_a_callback_is_logged_and_exits_1(fresh_domain):
    node = Node("raiser", ros_environment(domain_id=fresh_domain))
    try:
        assert node.wait_for("RAISING", 60), node.text
        code = node.exit_code(30)
    finally:
        node.kill()
    assert code == 1, node.text
    assert "node failed" in node.text, node.text
    assert "ValueError: unexpected failure injected by the test" in node.text, node.text


def test_a_stop_while_the_node_is_still_loading_exits_at_once(fresh_domain):
    node = Node("slow_start", ros_environment(domain_id=fresh_domain))
    try:
        assert node.wait_for("LOADING", 60), node.text
        node.proc.send_signal(signal.SIGINT)
        code = node.exit_code(5)           # the constructor would take 120 s more
    finally:
        node.kill()
    assert code == 0, node.text
    assert "Traceback" not in node.text, node.text


def test_the_stop_handler_asks_once_and_interrupts_the_second_time():
    from lrm_ros.nodes.runtime import StopRequest
    stop = StopRequest()
    stop.handler(signal.SIGINT, None)
    assert stop.requested and stop.signal == signal.SIGINT
    with pytest.raises(KeyboardInterrupt):
        stop.handler(signal.SIGINT, None)


def test_sigusr1_dumps_every_thread_and_the_node_goes_on(fresh_domain):
    """`kill -USR1 <pid>` asks a hanging node where it is: the stack of every thread goes to
    its output, and the node keeps receiving and still stops cleanly."""
    env = ros_environment(domain_id=fresh_domain)
    pub, sub = Node("flood_pub", env), Node("flood_sub", env)
    try:
        assert sub.wait_for("RECEIVING", 60), sub.text + pub.text
        sub.proc.send_signal(signal.SIGUSR1)
        assert sub.wait_for("most recent call first", 10), sub.text
        assert sub.wait_for(" in _run_node", 10), sub.text     # the spin loop's frame is named
        assert sub.proc.poll() is None, sub.text
        sub.proc.send_signal(signal.SIGINT)
        assert sub.exit_code(10) == 0, sub.text
    finally:
        for node in (pub, sub):
            node.kill()
