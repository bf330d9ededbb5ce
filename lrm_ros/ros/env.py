"""Process environment a ROS 2 process of this stack needs (no rclpy import here).

On a ROS 2 install, `source /opt/ros/<distro>/setup.bash` provides all of this. In a pip-only
virtual environment (ROS 2 PyPI wheels) rclpy needs a log directory, an ament prefix and,
for tests and demos, discovery kept on this machine. `ros_environment()` fills in whatever
is missing and never overrides what the user has set.
"""
import itertools
import os
import sys
import tempfile
from pathlib import Path
from typing import Mapping, MutableMapping, Optional

from lrm_ros.paths import share_dir


def fastdds_profile() -> Optional[Path]:
    """The FastDDS profile that shortens discovery announcements (config/fastdds.xml)."""
    try:
        path = share_dir() / "config" / "fastdds.xml"
    except FileNotFoundError:
        return None
    return path if path.exists() else None


_BRING_UPS = itertools.count()

# The domain ids ROS 2 documents as safe on Linux: for these every DDS port (7400 + 250 *
# domain + ...) lies below the kernel's ephemeral port range (32768-60999), so no outgoing
# socket of another process can hold a port a participant of the graph needs.
SAFE_DOMAINS = range(1, 102)


def fresh_domain_id(avoid: Optional[int] = None) -> int:
    """A DDS domain for the next graph bring-up of this process, in SAFE_DOMAINS: spread by
    the process id (two demos at once), different for each call, never `avoid`. A process
    that brought graphs up one after another on one domain saw, at the third, a policy whose
    control/tick subscription received nothing while other readers did (`lrm-ros demo`, 3 of
    3 runs; clean in 4 of 4 with a domain per bring-up, then 1 bring-up in 6 failed again:
    see `GraphMonitor.blind_bridges`)."""
    n = len(SAFE_DOMAINS)
    while True:
        d = SAFE_DOMAINS[(os.getpid() + 7 * next(_BRING_UPS)) % n]
        if d != avoid:
            return d


def ros_environment(base: Optional[Mapping[str, str]] = None, *, domain_id: Optional[int] = None,
                    localhost_only: bool = True) -> dict:
    """Return a copy of `base` (default os.environ) with the ROS variables rclpy needs."""
    env = dict(os.environ if base is None else base)
    if not env.get("HOME") and not env.get("ROS_LOG_DIR"):
        env["ROS_LOG_DIR"] = str(Path(tempfile.gettempdir()) / "lrm_ros_logs")
    prefixes = [p for p in env.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    if sys.prefix not in prefixes and (Path(sys.prefix) / "share" / "ament_index").is_dir():
        prefixes.append(sys.prefix)
        env["AMENT_PREFIX_PATH"] = os.pathsep.join(prefixes)
    if domain_id is not None:
        env["ROS_DOMAIN_ID"] = str(domain_id)
    if localhost_only:
        env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    profile = fastdds_profile()
    if profile is not None:
        env.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(profile))
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    return env


def apply_ros_environment(target: Optional[MutableMapping[str, str]] = None, **kwargs) -> None:
    """Fill the missing ROS variables into this process's environment (before rclpy.init)."""
    target = os.environ if target is None else target
    for key, value in ros_environment(target, **kwargs).items():
        if target.get(key) != value:
            target[key] = value
