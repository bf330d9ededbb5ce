"""Shared test set-up: one thread per test process (2 shared cores), ROS variables for a
pip-only environment, a per-run ROS_DOMAIN_ID, and no stray shared-memory files after."""
import os
import random
import sys
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

_RUN_DOMAIN = int(os.environ.get("LRM_TEST_DOMAIN_ID", 0)) or random.Random(os.getpid()).randint(1, 100)


def pytest_configure(config):
    from lrm_ros.ros.env import apply_ros_environment
    apply_ros_environment(domain_id=_RUN_DOMAIN)
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:
        pass


def pytest_sessionfinish(session, exitstatus):
    from lrm_ros.bringup.runner import clean_stale_shm
    clean_stale_shm()


@pytest.fixture(scope="session")
def ros_domain_id() -> int:
    return _RUN_DOMAIN


@pytest.fixture
def fresh_domain(ros_domain_id):
    """A ROS_DOMAIN_ID of its own for one graph test (the run's id + an offset)."""
    from lrm_ros.ros.env import fresh_domain_id
    return fresh_domain_id(avoid=ros_domain_id)


@pytest.fixture(scope="module")
def graph_domain(ros_domain_id):
    """(ROS_DOMAIN_ID, environment for node processes) of one module's graph: a domain of its
    own, also set in this process (for the test's monitor) until the module ends."""
    from lrm_ros.ros.env import fresh_domain_id, ros_environment
    domain = fresh_domain_id(avoid=ros_domain_id)
    before = os.environ.get("ROS_DOMAIN_ID")
    os.environ["ROS_DOMAIN_ID"] = str(domain)
    yield domain, ros_environment(domain_id=domain)
    if before is None:
        os.environ.pop("ROS_DOMAIN_ID", None)
    else:
        os.environ["ROS_DOMAIN_ID"] = before


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory):
    """A real vLLM (CPU build, .venv-vllm from scripts/setup_vllm.sh) serving a random
    Qwen3-VL and three LoRA modules on 127.0.0.1, started once per session (test/vllm_server.py).
    LRM_ROS_SKIP_VLLM=1 skips the tests that need it (say so explicitly: a missing venv fails)."""
    if os.environ.get("LRM_ROS_SKIP_VLLM") == "1":
        pytest.skip("LRM_ROS_SKIP_VLLM=1: vLLM tests skipped")
    sys.path.insert(0, str(Path(__file__).parent))
    from vllm_server import start_server
    server = start_server(tmp_path_factory.mktemp("vllm"))
    try:
        yield server
    finally:
        server.stop()
