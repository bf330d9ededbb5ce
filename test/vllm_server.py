"""A real vLLM (CPU build) OpenAI-compatible server for the `vllm` reward backend's tests and
benchmark: a random-weight Qwen3-VL (text and vision head_dim 32, which vLLM's CPU attention
takes) saved with the real Qwen tokenizer, three random LoRA adapters served as LoRA modules
(progress, completion, contrastive), `python -m vllm.entrypoints.openai.api_server` on
127.0.0.1 from the venv that scripts/setup_vllm.sh makes (.venv-vllm; `make test` runs it).
Start-up is waited for on /health (the process dying fails at once, with its log)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VLLM_VENV = Path(os.environ.get("LRM_ROS_VLLM_VENV", ROOT / ".venv-vllm"))
SERVED_NAME = "tiny-qwen3vl"
ADAPTERS = ("progress", "completion", "contrastive")
START_TIMEOUT_S = float(os.environ.get("LRM_ROS_VLLM_START_TIMEOUT_S", 420))


def vllm_python() -> Path:
    return VLLM_VENV / "bin" / "python"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    return free_port()


def make_models(root: Path) -> tuple:
    """(model dir, {signal: adapter dir}) under root (built once, reused)."""
    from lrm_ros.rewards.qwen_tiny import make_random_lora_adapter, make_tiny_qwen3vl
    model = root / "tiny32"
    if not (model / "model.safetensors").is_file():
        make_tiny_qwen3vl(model, "tiny32")
    adapters = {}
    for i, sig in enumerate(ADAPTERS):
        d = root / "lora" / sig
        if not (d / "adapter_model.safetensors").is_file():
            # a list of module names (vLLM's LoRA loader takes no regex); language model only
            make_random_lora_adapter(str(model), d, seed=i + 1,
                                     target_modules=["q_proj", "v_proj", "down_proj"])
        adapters[sig] = d
    return model, adapters


@dataclass
class VLLMServer:
    proc: subprocess.Popen
    url: str                 # API base, .../v1
    model: str               # served name
    model_dir: Path
    adapters: dict
    log: Path
    port: int

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def start_server(root: Path, lora: bool = True, extra_args=(), port: int = 0) -> VLLMServer:
    """Start vLLM on the random model; return once /health answers 200 (or raise with the
    server's log when it dies or does not come up within START_TIMEOUT_S)."""
    import httpx
    py = vllm_python()
    if not py.is_file():
        raise RuntimeError(f"no vLLM venv at {VLLM_VENV}: run `bash scripts/setup_vllm.sh` "
                           "(make test does)")
    model_dir, adapters = make_models(root)
    port = port or free_port()
    args = [str(py), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
            "--served-model-name", SERVED_NAME, "--host", "127.0.0.1", "--port", str(port),
            "--max-model-len", "4096", "--dtype", "float32", "--enforce-eager",
            "--max-num-seqs", "64", "--trust-request-mm-kwargs",
            "--trust-request-chat-template",
            # start-up: profile and warm up with inputs of the tests' size (16 images, one
            # 16-frame video, 224 px) instead of the largest the model takes
            "--skip-mm-profiling", "--limit-mm-per-prompt", json.dumps({
                "image": {"count": 16, "width": 224, "height": 224},
                "video": {"count": 1, "num_frames": 16, "width": 224, "height": 224}})]
    if lora:
        args += ["--enable-lora", "--max-lora-rank", "8", "--max-loras", str(len(adapters)),
                 "--lora-modules"] + [f"{s}={d}" for s, d in adapters.items()]
    args += list(extra_args)
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", HF_HUB_OFFLINE="1",
               VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1", TOKENIZERS_PARALLELISM="false")
    for k in ("LD_LIBRARY_PATH", "PYTHONPATH", "AMENT_PREFIX_PATH", "VIRTUAL_ENV"):
        env.pop(k, None)     # the project venv's ROS set-up is not vLLM's
    log = root / f"vllm_{port}.log"
    fh = open(log, "w")
    proc = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=str(root),
                            start_new_session=True)
    fh.close()
    server = VLLMServer(proc, f"http://127.0.0.1:{port}/v1", SERVED_NAME, model_dir, adapters,
                        log, port)
    deadline = time.monotonic() + START_TIMEOUT_S
    with httpx.Client(trust_env=False) as c:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"vLLM exited with code {proc.returncode} during start-up:\n"
                                   f"{server.log_tail()}")
            try:
                if c.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    return server
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"vLLM did not answer /health within {START_TIMEOUT_S:g} s:\n"
                                   f"{server.log_tail()}")
            # poll the condition: the process either comes up or dies
            proc_wait_s = 0.5
            try:
                proc.wait(proc_wait_s)
            except subprocess.TimeoutExpired:
                pass


if __name__ == "__main__":   # manual use: python test/vllm_server.py DIR
    s = start_server(Path(sys.argv[1]))
    print(s.url, s.model, s.proc.pid, flush=True)
    try:
        s.proc.wait()
    except KeyboardInterrupt:
        s.stop()
