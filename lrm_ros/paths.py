"""Where the package's shared files (config/, launch/, msg/) are, installed or from source."""
import os
import sys
from pathlib import Path

_SOURCE_ROOT = Path(__file__).resolve().parent.parent


def share_dir() -> Path:
    """The package's share directory: the source checkout when this module runs from one
    (code and config then come from the same tree), else `<prefix>/share/lrm_ros` of the
    install (colcon or pip)."""
    if (_SOURCE_ROOT / "package.xml").is_file() and (_SOURCE_ROOT / "config").is_dir():
        return _SOURCE_ROOT
    candidates = []
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            candidates.append(Path(prefix) / "share" / "lrm_ros")
    candidates.append(Path(sys.prefix) / "share" / "lrm_ros")
    for cand in candidates:
        if (cand / "config").is_dir():
            return cand
    raise FileNotFoundError(
        "lrm_ros: cannot find the package's config/ directory (looked in: "
        + ", ".join(str(c) for c in candidates)
        + "). Install the package (`make setup`, or colcon build && source install/setup.bash).")


def config_path(name: str) -> Path:
    """A file under config/, e.g. config_path('graphs/sim.yaml')."""
    path = share_dir() / "config" / name
    if not path.exists():
        raise FileNotFoundError(f"lrm_ros: config file {path} does not exist")
    return path


def msg_dir() -> Path:
    """Directory holding the .msg definitions of lrm_ros."""
    for cand in (share_dir() / "msg", _SOURCE_ROOT / "msg"):
        if cand.is_dir():
            return cand
    raise FileNotFoundError("lrm_ros: cannot find the msg/ directory with the .msg files")
