"""lrm_ros.core (and the bag writer) must import no ROS: nodes convert messages, call core, publish."""
import pkgutil
import subprocess
import sys

import lrm_ros.core


def test_every_core_module_imports_without_rclpy_or_messages():
    names = [m.name for m in pkgutil.walk_packages(lrm_ros.core.__path__, "lrm_ros.core.")]
    assert "lrm_ros.core.bridge" in names and "lrm_ros.core.image" in names
    names.append("lrm_ros.bags.recorder")        # the bag writer, usable without ROS too
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m == 'rclpy' or m.startswith('rclpy.') "
        "or m.split('.')[0].endswith('_msgs') or m.split('.')[0].endswith('_srvs') "
        "or m == 'lrm_ros.msg')\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd="/", timeout=120)
    assert proc.returncode == 0, f"core imported ROS modules: {proc.stdout} {proc.stderr[-2000:]}"
