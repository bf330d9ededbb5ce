"""The `main()` shared by every lrm_ros node process.

Shutdown: SIGINT and SIGTERM only *request* a stop. Our own Python handlers are installed
before `rclpy.init()`, so rclpy's C-level handler chains to them (and wakes the executor
through its guard condition); the handler sets a flag and raises nothing. The spin loop
notices the flag between callbacks, so a callback is never cut in half: rclpy's default
(KeyboardInterrupt raised wherever the main thread happens to be) could land inside the
conversion of a taken message, which rclpy reports as `RuntimeError: Unable to convert call
argument '0' to Python object` from `take_message`, and a callback still running while the
context was shut down failed with `RCLError: Failed to publish: publisher's context is
invalid`. While the node is still being built (a model loading) a signal interrupts at once
(KeyboardInterrupt: no executor is running yet); a second signal aborts a hanging clean-up.

A node that hangs can be asked where: `kill -USR1 <pid>` writes every thread's Python stack
to its stderr (faulthandler), and the node goes on.

Exit codes: 0 after a requested stop (an exception raised while the stop was under way is a
shutdown race and is logged at debug level only); 1 when the node failed (`node.failed`, or
an exception escaped a callback: logged with its traceback); 2 when the node could not start.
"""
import faulthandler
import signal
import sys
import threading
import traceback
from typing import Callable, Optional, Sequence

from lrm_ros.ros.env import apply_ros_environment

EXIT_OK, EXIT_FAILED, EXIT_CANNOT_START = 0, 1, 2


class StopRequest:
    """Set by SIGINT/SIGTERM (or `request()`); the spin loop ends at the next callback
    boundary. The second signal raises KeyboardInterrupt (a clean-up that hangs can still be
    interrupted)."""

    def __init__(self):
        self.event = threading.Event()
        self.signal = None
        self.interrupt = False     # True while the node is being built: stop at once

    def request(self, signum=None) -> None:
        self.signal = signum
        self.event.set()

    def handler(self, signum, frame) -> None:
        again = self.event.is_set()
        self.request(signum)
        if again or self.interrupt:
            raise KeyboardInterrupt

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self.handler)

    @property
    def requested(self) -> bool:
        return self.event.is_set()


def _report(node, text: str) -> None:
    """An error goes to the node's logger (and /rosout) and to stderr, so a runner that
    keeps the last lines of output shows it."""
    if node is not None:
        try:
            node.get_logger().error(text)
        except Exception:          # the context may be gone
            pass
    print(f"[lrm_ros] {text}", file=sys.stderr, flush=True)


def _end_process(code: int) -> None:
    """Exit now, after the node's own clean-up: atexit handlers run and output is flushed,
    but the interpreter's finalisation (tearing down torch, transformers, SAPIEN module by
    module) is skipped: it took 1.6 s for an idle vla_policy and up to 4.7 s per node when a
    2-env graph stopped at once on 2 cores, against ros2 launch's 5 s before SIGTERM."""
    import atexit
    import logging
    import os
    try:
        atexit._run_exitfuncs()
        logging.shutdown()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


def run_node(factory: Callable, args: Optional[Sequence[str]] = None, *,
             multithreaded: bool = False, spin_period_s: float = 0.2,
             exit_process: bool = True) -> int:
    """Initialise rclpy, build the node, spin until SIGINT/SIGTERM or shutdown, clean up.

    With `exit_process` (the node's process is its own: console scripts, `python -m`) the
    process ends here with the exit code (see `_end_process`); otherwise it is returned.
    """
    code = _run_node(factory, args, multithreaded, spin_period_s)
    if exit_process and threading.current_thread() is threading.main_thread():
        _end_process(code)
    return code


def _run_node(factory: Callable, args, multithreaded: bool, spin_period_s: float) -> int:
    apply_ros_environment()
    import rclpy
    from rclpy.executors import (ExternalShutdownException, MultiThreadedExecutor,
                                 SingleThreadedExecutor)

    stop = StopRequest()
    stop.install()                 # before rclpy.init: rclpy's handlers chain to these
    if hasattr(signal, "SIGUSR1"):
        faulthandler.register(signal.SIGUSR1, all_threads=True)   # where is it stuck?
    rclpy.init(args=list(sys.argv if args is None else args))
    node = None
    code = EXIT_OK

    def shutting_down() -> bool:
        return stop.requested or not rclpy.ok()

    try:
        try:
            stop.interrupt = True      # loading a model can take a minute: no need to finish it
            node = factory()
            stop.interrupt = False
        except (ValueError, FileNotFoundError, RuntimeError) as exc:
            if shutting_down():
                return EXIT_OK         # stopped while starting: not a start-up failure
            print(f"[lrm_ros] cannot start: {exc}", file=sys.stderr, flush=True)
            return EXIT_CANNOT_START
        executor = MultiThreadedExecutor(num_threads=2) if multithreaded else SingleThreadedExecutor()
        executor.add_node(node)
        while not shutting_down() and not getattr(node, "failed", False):
            executor.spin_once(timeout_sec=spin_period_s)
    except ExternalShutdownException:
        pass
    except KeyboardInterrupt:      # stopped while starting, or a second signal
        pass
    except Exception as exc:       # noqa: BLE001 - every other failure must be loud
        if shutting_down():
            if node is not None:
                node.get_logger().debug(f"ignored during shutdown: {exc!r}")
        else:
            code = EXIT_FAILED
            _report(node, "node failed: " + "".join(
                traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip())
    finally:
        if node is not None and getattr(node, "failed", False):
            code = EXIT_FAILED
        if node is not None:
            try:
                close = getattr(node, "close", None)
                if close is not None:
                    close()
                node.destroy_node()
            except KeyboardInterrupt:
                code = code or EXIT_FAILED
            except Exception as exc:   # noqa: BLE001 - logged; a failure unless stopping
                _report(node, f"clean-up failed: {exc!r}")
                if not stop.requested:
                    code = EXIT_FAILED
        rclpy.try_shutdown()
    return code
