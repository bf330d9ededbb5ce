"""The `main()` shared by every lrm_ros node process."""
import sys
from typing import Callable, Optional, Sequence

from lrm_ros.ros.env import apply_ros_environment


def run_node(factory: Callable, args: Optional[Sequence[str]] = None, *,
             multithreaded: bool = False) -> int:
    """Initialise rclpy, build the node, spin until Ctrl-C or shutdown, clean up.

    Returns the process exit code: 0 on a normal shutdown, 2 when the node could not start
    (bad parameters, missing model, ...), with the reason on stderr.
    """
    apply_ros_environment()
    import rclpy
    from rclpy.executors import (ExternalShutdownException, MultiThreadedExecutor,
                                 SingleThreadedExecutor)

    rclpy.init(args=list(sys.argv if args is None else args))
    node = None
    code = 0
    try:
        try:
            node = factory()
        except (ValueError, FileNotFoundError, RuntimeError) as exc:
            print(f"[lrm_ros] cannot start: {exc}", file=sys.stderr, flush=True)
            return 2
        executor = MultiThreadedExecutor(num_threads=2) if multithreaded else SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None and getattr(node, "failed", False):
            code = 1
        if node is not None:
            close = getattr(node, "close", None)
            if close is not None:
                close()
            node.destroy_node()
        rclpy.try_shutdown()
    return code
