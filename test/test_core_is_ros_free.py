"""lrm_ros.core (and the bag writer) must import no ROS: nodes convert messages, call core, publish.
The core's copy of the message constants it needs must equal the message's."""
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


def test_the_core_end_reasons_are_the_control_tick_messages():
    import re
    from pathlib import Path
    from lrm_ros.core import episode_end
    from lrm_ros.msg import ControlTick
    text = (Path(__file__).parents[1] / "msg" / "ControlTick.msg").read_text()
    declared = {n: int(v) for n, v in re.findall(r"^uint8 (END_\w+) = (\d+)", text, re.M)}
    ours = {n: v for n, v in vars(episode_end).items() if n.startswith("END_") and n != "END_REASONS"}
    assert len(declared) == 5 and ours == declared
    assert {n: getattr(ControlTick, n) for n in declared} == declared
    assert episode_end.END_REASONS == {n[4:].lower(): v for n, v in declared.items()}
