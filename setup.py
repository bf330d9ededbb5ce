"""pip entry point of lrm_ros.

The package is an ament_cmake package (CMakeLists.txt): rosidl generates the message types
in msg/ and the hand-written Python modules are installed next to them. On a ROS 2 install,
build it with colcon. Without one (PyPI ROS 2 wheels in a virtual environment), this file
drives the same CMakeLists.txt into a staging prefix and packs the result into a wheel:

    pip install --no-build-isolation -c requirements/constraints.txt -r requirements/build.txt
    pip install --no-build-isolation --no-deps .

The build reuses build/cmake between runs, so an unchanged tree rebuilds in seconds.
"""
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent
BUILD_DIR = ROOT / "build" / "cmake"
STAGE = ROOT / "build" / "cmake-stage"
PY_DIR = f"lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages"
NODES = ["maniskill_bridge", "camera_ingest", "scripted_policy", "reward_model", "vla_policy",
         "learner", "bag_recorder", "robot_bridge"]


def _cmake_build():
    """Configure (first time), build and install the ament_cmake package into STAGE."""
    prefix = sys.prefix
    env = dict(os.environ)
    # rosidl looks its type-support generators up in the ament index of this prefix.
    env["AMENT_PREFIX_PATH"] = os.pathsep.join(
        p for p in [prefix, env.get("AMENT_PREFIX_PATH", "")] if p)
    env["CMAKE_PREFIX_PATH"] = os.pathsep.join(
        p for p in [prefix, env.get("CMAKE_PREFIX_PATH", "")] if p)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    cmake = shutil.which("cmake", path=env["PATH"])
    if cmake is None:
        sys.exit("lrm_ros: cmake not found. Install the build requirements first: "
                 "pip install -c requirements/constraints.txt -r requirements/build.txt")
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    if not (BUILD_DIR / "CMakeCache.txt").exists():
        subprocess.run([
            cmake, str(ROOT), f"-DCMAKE_INSTALL_PREFIX={STAGE}",
            f"-DCMAKE_PREFIX_PATH={prefix}", f"-DPython3_EXECUTABLE={sys.executable}",
            f"-DPYTHON_INSTALL_DIR={PY_DIR}", "-DBUILD_TESTING=OFF",
            "-DCMAKE_BUILD_TYPE=Release",
        ], cwd=BUILD_DIR, env=env, check=True)
    jobs = str(os.cpu_count() or 2)
    subprocess.run([cmake, "--build", ".", "-j", jobs], cwd=BUILD_DIR, env=env, check=True)
    # Stage afresh so files removed from the source tree do not linger in the wheel.
    shutil.rmtree(STAGE, ignore_errors=True)
    subprocess.run([cmake, "--install", "."], cwd=BUILD_DIR, env=env, check=True,
                   stdout=subprocess.DEVNULL)


def _data_files():
    """Everything the CMake install put outside site-packages, by prefix-relative dir."""
    out = {}
    for path in sorted(STAGE.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(STAGE)
        if str(rel).startswith(PY_DIR):
            continue
        out.setdefault(str(rel.parent), []).append(str(path))
    return sorted(out.items())


_META_ONLY = {"egg_info", "dist_info", "--name", "--version", "clean", "sdist"}
if not _META_ONLY.intersection(sys.argv[1:]) and os.environ.get("LRM_ROS_SKIP_CMAKE") != "1":
    _cmake_build()
    # setuptools copies the packages into build/lib and never removes what it copied earlier:
    # a module moved or deleted in the source tree would go on being packed into the wheel.
    shutil.rmtree(ROOT / "build" / "lib", ignore_errors=True)

_site = STAGE / PY_DIR
_staged = _site.is_dir()
setup(
    name="lrm_ros",
    version="0.1.0",
    description="Vision-language models as online reward generators for robot RL on ROS 2",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(str(_site) if _staged else str(ROOT),
                           include=["lrm_ros", "lrm_ros.*"]),
    package_dir={"": str(_site.relative_to(ROOT))} if _staged else {},
    package_data={"lrm_ros": ["*.so", "msg/*.so", "models/*.pt", "models/*.json"],
                  "": ["*.yaml", "*.json", "*.txt"]},
    exclude_package_data={"lrm_ros": ["*.c"]},
    data_files=_data_files() if _staged else [],
    zip_safe=False,
    entry_points={
        "console_scripts": [
            "lrm-ros = lrm_ros.cli:main",
        ] + [f"lrm_ros_{n} = lrm_ros.nodes.{n}:main" for n in NODES],
    },
)
