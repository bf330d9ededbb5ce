#!/usr/bin/env bash
# Idempotent set-up of lrm_ros on a fresh machine (Debian 12, Python 3.11, no ROS install).
#   scripts/setup.sh deps    [VENV]  create the venv, install pinned dependencies, software Vulkan
#   scripts/setup.sh package [VENV]  build (CMake/rosidl, via setup.py) and install lrm_ros
# The Makefile calls these only when their inputs changed, so a second `make` takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
step=${1:?usage: setup.sh deps|package [VENV]}
VENV=${2:-.venv}
PYTHON=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1

case "$step" in
  deps)
    if [ ! -x "$VENV/bin/python" ]; then
      echo "[setup] creating $VENV"
      "$PYTHON" -m venv "$VENV"
    fi
    echo "[setup] installing pinned dependencies (first run: a few minutes, ~2.7 GB)"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -c requirements/constraints.txt \
      -r requirements/ros.txt -r requirements/runtime.txt -r requirements/build.txt -r requirements/test.txt
    echo "[setup] software Vulkan for SAPIEN"
    bash scripts/setup_vulkan.sh "$VENV"
    ;;
  package)
    echo "[setup] building and installing lrm_ros (messages via CMake/rosidl)"
    VIRTUAL_ENV="$(cd "$VENV" && pwd)" PATH="$(cd "$VENV" && pwd)/bin:$PATH" \
      "$VENV/bin/python" -m pip install -q --no-build-isolation --no-deps --force-reinstall . \
      > /tmp/lrm_ros-pip-install.log 2>&1 || { cat /tmp/lrm_ros-pip-install.log; exit 1; }
    vpy="$(cd "$VENV" && pwd)/bin/python"
    (cd / && "$vpy" -c "from lrm_ros.msg import HeldReward, ControlTick; print('[setup] lrm_ros installed: messages import')")
    ;;
  *) echo "unknown step $step" >&2; exit 2 ;;
esac
