"""Parameters of the reward_model node (one flat dataclass: ROS parameters map 1:1).

The interval-hold's and the engine's fields are taken from `HoldConfig` and `EngineConfig`
(defaults and help), not restated. `backend` is a name of the registry in
`lrm_ros.rewards` (`list_backends()`), or a factory of another package as
"package.module:function", which is how a backend of your own reaches the node's process.
"""
import dataclasses
from dataclasses import dataclass, field, fields
from typing import Dict, Tuple

from lrm_ros.rewards import is_factory_spec, list_backends
from lrm_ros.rewards.engine import EngineConfig
from lrm_ros.rewards.hold import HoldConfig

BUILT_IN = ("lite", "vlm", "topreward", "oracle", "vllm")   # the backends this config knows settings of
LRM_SIGNALS = ("progress", "completion", "contrastive", "tri")
SERVER_SIGNALS = LRM_SIGNALS + ("topreward",)


def _h(text):
    return {"help": text}


def _same_as(cls, name: str):
    """The field `name` of config dataclass `cls`, with its default and help."""
    f = cls.__dataclass_fields__[name]
    if f.default is dataclasses.MISSING:
        raise TypeError(f"{cls.__name__}.{name} has no plain default to share")
    return field(default=f.default, metadata=f.metadata)


@dataclass(frozen=True)
class RewardNodeConfig:
    backend: str = field(default="oracle", metadata=_h(
        "reward backend: lite (embedded), vlm (Qwen-VL LRM), topreward (Qwen-VL log P(True)), "
        "oracle (the simulator's dense reward, evaluation only), vllm (the VLM reward from an "
        "inference server over the OpenAI-compatible API: vLLM, SGLang, ...), or a backend of "
        "another package as 'package.module:function' (a factory taking model_path, signal, "
        "max_batch when set, returning a RewardBackend)"))
    model_path: str = field(default="", metadata=_h(
        "vlm/topreward: local directory of a Hugging Face Qwen-VL checkpoint, or a hub id already "
        "in the local Hugging Face cache; lite: checkpoint file ('' = the one shipped)"))
    adapter_path: str = field(default="", metadata=_h(
        "vlm: optional LoRA adapters: one adapter directory (merged into the model), or a "
        "directory with progress/, completion/ and contrastive/ adapters (the published LRM "
        "layout; switched per signal)"))
    adapter_progress: str = field(default="", metadata=_h(
        "vlm: the progress signal's LoRA adapter directory (instead of adapter_path)"))
    adapter_completion: str = field(default="", metadata=_h(
        "vlm: the completion signal's LoRA adapter directory (instead of adapter_path)"))
    adapter_contrastive: str = field(default="", metadata=_h(
        "vlm: the contrastive signal's LoRA adapter directory (instead of adapter_path)"))
    signal: str = field(default="", metadata=_h(
        "lite/vlm/vllm: progress, completion, contrastive or tri ('' = progress); vllm also "
        "topreward; ignored by topreward and oracle"))
    use_first_frame: bool = field(default=True, metadata=_h(
        "progress: show the episode's first frame as well as the current one"))
    prompts_path: str = field(default="", metadata=_h(
        "vlm/topreward: prompt profile (lrm_released, lrm_ros, topreward_official) or a YAML "
        "file; '' = the backend's default (vlm: lrm_released with adapters from elsewhere, "
        "else lrm_ros; topreward: topreward_official)"))
    tri_combination: str = field(default="", metadata=_h(
        "vlm tri: released (LRM's weighted sum) or mean_parsed (mean of what parsed); '' = "
        "the prompt profile's"))
    topreward_logp_min: float = field(default=-25.0, metadata=_h(
        "topreward: log P(True) mapped to 0 (online affine map, clipped; LRM's -25)"))
    topreward_logp_max: float = field(default=-5.0, metadata=_h(
        "topreward: log P(True) mapped to 1 (LRM's -5)"))
    topreward_video_fps: float = field(default=0.0, metadata=_h(
        "topreward with frames as a video: the frame rate of the timestamps (0 = the profile's)"))
    # vllm: the inference server
    server_url: str = field(default="", metadata=_h(
        "vllm: the server's OpenAI-compatible API base URL, e.g. http://gpu-box:8000/v1"))
    model_name: str = field(default="", metadata=_h(
        "vllm: the served model name (vLLM --served-model-name, default its --model), e.g. "
        "Qwen/Qwen3-VL-8B-Instruct; adapter_path / adapter_<signal> name served LoRA modules"))
    api_key_env: str = field(default="LRM_ROS_REWARD_API_KEY", metadata=_h(
        "vllm: environment variable holding the server's API key (sent as a bearer token; "
        "unset = none; never logged)"))
    max_in_flight: int = field(default=16, metadata=_h(
        "vllm: most concurrent requests to the server"))
    request_timeout_s: float = field(default=8.0, metadata=_h(
        "vllm: a query's server requests must answer within this (retries included), else "
        "its result is a timeout; keep it below timeout_s"))
    retries: int = field(default=2, metadata=_h(
        "vllm: extra attempts after a connection error, HTTP 5xx or 429 (backoff doubling)"))
    retry_backoff_s: float = field(default=0.2, metadata=_h("vllm: first retry's delay"))
    image_format: str = field(default="png", metadata=_h(
        "vllm: how frames are sent: png (lossless) or jpeg"))
    image_size: int = field(default=0, metadata=_h(
        "vllm: resize frames so that the longer side is this many pixels before sending (0 = as is)"))
    envs: Tuple[str, ...] = field(default=("",), metadata=_h(
        "environment namespaces served by this node, e.g. ['env0', 'env1'] (topics env0/camera/frame, "
        "...); [''] = the node's own namespace"))
    # hold
    interval: int = _same_as(HoldConfig, "interval")
    stale_after_ticks: int = _same_as(HoldConfig, "stale_after_ticks")
    initial_value: float = _same_as(HoldConfig, "initial_value")
    query_on_episode_end: bool = _same_as(HoldConfig, "query_on_episode_end")
    frame_wait_ticks: int = _same_as(HoldConfig, "frame_wait_ticks")
    max_frames: int = _same_as(HoldConfig, "max_frames")
    # engine
    max_batch: int = _same_as(EngineConfig, "max_batch")
    max_wait_s: float = _same_as(EngineConfig, "max_wait_s")
    timeout_s: float = _same_as(EngineConfig, "timeout_s")
    queue_size: int = _same_as(EngineConfig, "queue_size")
    cpu_threads: int = field(default=1, metadata=_h(
        "CPU threads for inference (torch); 0 = torch's default (all cores). Keep it small on "
        "a shared CPU so the control loop and rendering keep theirs"))
    diagnostics_period_s: float = field(default=1.0, metadata=_h("period of /diagnostics"))

    def __post_init__(self):
        if self.backend not in list_backends() and not is_factory_spec(self.backend):
            raise ValueError(f"backend must be one of {list_backends()} or 'package.module:function', "
                             f"got {self.backend!r}")
        signals = SERVER_SIGNALS if self.backend == "vllm" else LRM_SIGNALS
        if self.signal and self.signal not in signals:
            raise ValueError(f"signal must be one of {signals} (or '' for progress), "
                             f"got {self.signal!r}")
        if self.backend == "vllm":
            if not self.server_url.startswith(("http://", "https://")):
                raise ValueError(
                    "backend 'vllm' needs server_url: the inference server's OpenAI-compatible "
                    "API base, e.g. -p server_url:=http://gpu-box:8000/v1 (graph argument "
                    f"reward_server_url:=...), got {self.server_url!r}")
            if not self.model_name.strip():
                raise ValueError(
                    "backend 'vllm' needs model_name: the model name the server serves, e.g. "
                    "Qwen/Qwen3-VL-8B-Instruct (graph argument reward_model_name:=...)")
            if self.request_timeout_s <= 0 or self.request_timeout_s > self.timeout_s:
                raise ValueError(f"need 0 < request_timeout_s <= timeout_s, got "
                                 f"{self.request_timeout_s} and {self.timeout_s}")
            if self.max_in_flight < 1 or self.retries < 0 or self.retry_backoff_s < 0:
                raise ValueError("need max_in_flight >= 1, retries >= 0, retry_backoff_s >= 0")
            if self.image_format not in ("png", "jpeg") or self.image_size < 0:
                raise ValueError(f"image_format must be png or jpeg and image_size >= 0, got "
                                 f"{self.image_format!r}, {self.image_size}")
        if self.backend in ("vlm", "topreward") and not self.model_path:
            raise ValueError(
                f"backend '{self.backend}' needs model_path: a local directory with a Qwen-VL "
                "checkpoint (config.json + weights), or a hub id already in the local Hugging "
                "Face cache, e.g. -p model_path:=/models/Qwen3-VL-8B-Instruct")
        if not self.topreward_logp_min < self.topreward_logp_max <= 0.0:
            raise ValueError("need topreward_logp_min < topreward_logp_max <= 0 (log-probabilities), "
                             f"got {self.topreward_logp_min}, {self.topreward_logp_max}")
        if self.tri_combination and self.tri_combination not in ("released", "mean_parsed"):
            raise ValueError(f"tri_combination must be released or mean_parsed (or '' for the "
                             f"prompt profile's), got {self.tri_combination!r}")
        if self.topreward_video_fps < 0:
            raise ValueError(f"topreward_video_fps must be > 0 (0 = the profile's), got "
                             f"{self.topreward_video_fps}")
        if self.cpu_threads < 0:
            raise ValueError(f"cpu_threads must be >= 0 (0 = all cores), got {self.cpu_threads}")
        if not self.envs or len(set(self.envs)) != len(self.envs):
            raise ValueError(f"envs must list distinct namespaces, got {list(self.envs)}")
        self.hold_config()
        self.engine_config()

    @property
    def effective_signal(self) -> str:
        if self.backend in ("topreward", "oracle"):
            return self.backend
        if self.backend not in BUILT_IN:
            return self.signal
        return self.signal or "progress"

    def server_kwargs(self) -> Dict[str, object]:
        """Settings of the `vllm` backend (lrm_ros.rewards.server.ServerConfig)."""
        kw: Dict[str, object] = {
            "server_url": self.server_url, "model": self.model_name,
            "signal": self.effective_signal, "use_first_frame": self.use_first_frame,
            "api_key_env": self.api_key_env, "max_in_flight": self.max_in_flight,
            "timeout_s": self.request_timeout_s, "retries": self.retries,
            "retry_backoff_s": self.retry_backoff_s, "image_format": self.image_format,
            "image_size": self.image_size, "max_batch": self.max_batch,
            "logp_min": self.topreward_logp_min, "logp_max": self.topreward_logp_max}
        if self.adapter_path:
            kw["adapter"] = self.adapter_path
        for name in ("adapter_progress", "adapter_completion", "adapter_contrastive",
                     "tri_combination"):
            if getattr(self, name):
                kw[name] = getattr(self, name)
        if self.prompts_path:
            kw["prompts"] = self.prompts_path
        if self.topreward_video_fps:
            kw["video_fps"] = self.topreward_video_fps
        return kw

    def hold_config(self) -> HoldConfig:
        return HoldConfig(**{f.name: getattr(self, f.name) for f in fields(HoldConfig)})

    def engine_config(self) -> EngineConfig:
        return EngineConfig(**{f.name: getattr(self, f.name) for f in fields(EngineConfig)})

    def backend_kwargs(self) -> Dict[str, object]:
        """Settings handed to `make_backend(self.backend, **kwargs)`."""
        if self.backend == "oracle":
            return {}
        if self.backend == "vllm":
            return self.server_kwargs()
        kwargs = {"max_batch": self.max_batch}
        if self.model_path:
            kwargs["model_path"] = self.model_path
        if self.backend not in BUILT_IN and self.signal:
            kwargs["signal"] = self.signal
        if self.backend in ("vlm", "lite"):
            kwargs["signal"] = self.effective_signal
            kwargs["use_first_frame"] = self.use_first_frame
        if self.backend == "vlm":
            for name in ("adapter_path", "adapter_progress", "adapter_completion",
                         "adapter_contrastive", "tri_combination"):
                if getattr(self, name):
                    kwargs[name] = getattr(self, name)
        if self.backend == "topreward" and self.adapter_path:
            kwargs["adapter_path"] = self.adapter_path
        if self.backend in ("vlm", "topreward") and self.prompts_path:
            kwargs["prompts"] = self.prompts_path
        if self.backend == "topreward":
            kwargs["logp_min"] = self.topreward_logp_min
            kwargs["logp_max"] = self.topreward_logp_max
            if self.topreward_video_fps:
                kwargs["video_fps"] = self.topreward_video_fps
        return kwargs
