"""The `vllm` reward backend: the VLM reward asked of an inference server over the
OpenAI-compatible HTTP API (vLLM; SGLang or any compatible server works as far as it
implements the options used below).

The scale-out path: one GPU server (vLLM: continuous batching, automatic prefix caching,
tensor/pipeline parallelism) serves the reward model of many ROS graphs; the reward node,
interval-hold and engine stay as they are, only the model call goes over HTTP.

Two kinds of signal, each the same as the in-process backend it stands in for:

  LRM signals (progress, completion, contrastive, tri) as the `vlm` backend: the same prompt
    profiles (`build_jobs` of vlm.py builds the chat messages), per-signal generation budget
    (`max_tokens`) and stop rule (`stop_on_json`: the answer ends at its first "}", kept in
    the text), the same parsers and `tri` combination (vlm.py's `to_result`). All prompts of
    a batch go out concurrently (at most `max_in_flight` requests at once); the server
    batches them. With LoRA adapters served as vLLM LoRA modules (`--enable-lora
    --lora-modules progress=DIR ...`), each signal's request names its module as `model`.
  topreward: log P(answer) at exactly the in-process `topreward` backend's position and with
    its visual input: the profile's messages (official: the frames as ONE video in the open
    user turn, then the statement), rendered by the server's chat template with
    `add_generation_prompt: false, continue_final_message: true` (open turn: the text ends
    right after the statement, as the in-process backend cuts it at the end-of-turn token)
    or with the generation prompt (closed turn); one token is generated with
    `allowed_token_ids: [answer id], logprobs: true, max_tokens: 1`, whose logprob is the
    model's log P(answer) (vLLM reports the logprobs of the raw distribution). A video is
    sent as a `video_url` of the frames (vLLM's `data:video/jpeg;base64,<f1>,<f2>,...`
    form, frames PNG-encoded, so lossless) with `media_io_kwargs` giving the frame rate and
    every frame (vLLM does not re-sample such a frame sequence), so the timestamps and
    temporal patches are the in-process ones.
    An odd frame count is padded with the last frame (frame indices [0..n-1, n-1]), as the
    in-process backend pads. The chat template of these requests is lrm_ros's ChatML with
    the video as a bare <|video_pad|> (`BARE_VIDEO_TEMPLATE`; vLLM with transformers >= 5.10
    would otherwise keep the template's <|vision_start|>/<|vision_end|> around the expanded
    pairs, a sequence TOPReward never saw). vLLM takes such per-request settings only when
    started with --trust-request-mm-kwargs --trust-request-chat-template (checked at
    start-up). Prefix caching: vLLM hashes a multimodal item whole, so a video grown by a
    frame shares no cached block with the previous query beyond the text before it; with
    frames as images (profile lrm_ros) each earlier frame is a cached prefix. The server's prefix cache keeps the growing frame prefix (images
    are part of its key).
    The answer's token id comes from the server's `/tokenize` (or `answer_token_id`).

Frames are encoded once per batch (PNG lossless, or JPEG; optionally resized so that the
longer side is `image_size`): a frame shown in several prompts (tri) or several queries is
encoded once, and TOPReward keeps each episode's encoded frames (identity-checked: queries
are snapshots, never mutated).

Faults: every query gets a result. A request that fails after `retries` (connection
refused, HTTP 5xx/429: retried with exponential backoff; 4xx: not retried) gives an error
result with the reason (status "error"); no answer within `timeout_s` gives status
"timeout"; a malformed response body is an error naming what was wrong; an unparseable
model answer is an invalid result, as in-process. The engine turns these into
ERROR/TIMEOUT/INVALID results on `reward/result`, the held reward goes stale, nothing
blocks longer than `timeout_s`. At start-up (`check_server`) an unreachable server or a
model (or LoRA module) it does not serve raises `ServerUnavailableError` naming
`server_url` and `model`: the node's configure fails and can be retried.

The API key is read from the environment variable named by `api_key_env` (default
LRM_ROS_REWARD_API_KEY) and is never logged or put into results.

Why one file of about 630 lines: one backend class; its per-signal request building (LRM
answers, TOPReward log-probabilities), the HTTP client with retries and deadlines, and the
parsing share the connection pool, the counters and the config.
"""
from __future__ import annotations

import base64
import io
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Dict, FrozenSet, List, Optional, Sequence, Tuple

import numpy as np

from .base import NAN, RewardBackend, RewardQuery, RewardResult, signal_needs
from .vlm import VLM_SIGNALS, frame_key

SERVER_SIGNALS = VLM_SIGNALS + ("topreward",)
IMAGE_FORMATS = ("png", "jpeg")
DEFAULT_API_KEY_ENV = "LRM_ROS_REWARD_API_KEY"
#: per-query failure statuses a backend may report in RewardResult.status
ERROR, TIMEOUT = "error", "timeout"


def _bare_video_template() -> str:
    from .qwen import CHAT_TEMPLATE
    triple = "<|vision_start|><|video_pad|><|vision_end|>"
    assert triple in CHAT_TEMPLATE
    return CHAT_TEMPLATE.replace(triple, "<|video_pad|>")


#: lrm_ros's ChatML template (qwen.CHAT_TEMPLATE) with a video as a bare <|video_pad|>: the
#: transformers>=5.10 Qwen3-VL processor (vLLM's) expands only that token into the pairs
#: "<t seconds><|vision_start|>...<|vision_end|>" and would keep the template's own outer
#: markers around them; the in-process backend (and transformers 4.57, which TOPReward ran
#: with) replaces the whole <|vision_start|><|video_pad|><|vision_end|>.
BARE_VIDEO_TEMPLATE = _bare_video_template()


class ServerUnavailableError(RuntimeError):
    """The server cannot be used (unreachable, or it does not serve the model)."""


class RequestFailed(Exception):
    def __init__(self, status: str, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class ServerConfig:
    """Node parameters of the `vllm` backend."""
    server_url: str = ""                 # the API base, e.g. http://gpu-box:8000/v1
    model: str = ""                      # the served model name (vLLM --served-model-name)
    signal: str = "tri"                  # progress | completion | contrastive | tri | topreward
    adapter: str = ""                    # one served LoRA module for every LRM signal, or
                                         # "progress=NAME,completion=NAME,contrastive=NAME"
    adapter_progress: str = ""           # per-signal served LoRA module names
    adapter_completion: str = ""
    adapter_contrastive: str = ""
    prompts: str = ""                    # profile or YAML file; "" = as the in-process backend
    use_first_frame: bool = True
    tri_combination: str = ""
    max_new_tokens: int = 0              # 0 = the profile's, per signal
    api_key_env: str = DEFAULT_API_KEY_ENV
    max_in_flight: int = 16              # concurrent requests
    timeout_s: float = 8.0               # per query, retries included
    retries: int = 2                     # extra attempts after a connection error / 5xx / 429
    retry_backoff_s: float = 0.2         # first retry after this, doubling
    image_format: str = "png"            # png (lossless) | jpeg
    jpeg_quality: int = 90
    image_size: int = 0                  # resize so the longer side is this; 0 = as is
    max_batch: int = 16                  # queries per score_batch chunk
    video_fps: float = 0.0               # topreward video timestamps; 0 = the profile's
    logp_min: float = -25.0              # topreward online map (as the topreward backend)
    logp_max: float = -5.0
    answer_token_id: int = -1            # topreward: -1 = ask the server's /tokenize
    video_chat_template: str = "bare"    # topreward video: "bare" = send lrm_ros's ChatML
                                         # template with the video as a bare <|video_pad|>
                                         # (see the module doc); "server" = the server's own
    check_on_start: bool = True          # check the server and model when built

    def __post_init__(self):
        if self.signal not in SERVER_SIGNALS:
            raise ValueError(f"vllm: signal must be one of {SERVER_SIGNALS}, got {self.signal!r}")
        if not str(self.server_url).startswith(("http://", "https://")):
            raise ValueError(f"vllm: server_url must be the server's API base URL, e.g. "
                             f"http://gpu-box:8000/v1, got {self.server_url!r}")
        if not str(self.model).strip():
            raise ValueError("vllm: model (the served model name, e.g. "
                             "Qwen/Qwen3-VL-8B-Instruct) is empty")
        if self.image_format not in IMAGE_FORMATS:
            raise ValueError(f"vllm: image_format must be one of {IMAGE_FORMATS}, got {self.image_format!r}")
        if int(self.max_in_flight) < 1 or int(self.max_batch) < 1:
            raise ValueError("vllm: max_in_flight and max_batch must be >= 1")
        if not float(self.timeout_s) > 0:
            raise ValueError(f"vllm: timeout_s must be > 0, got {self.timeout_s}")
        if int(self.retries) < 0 or float(self.retry_backoff_s) < 0:
            raise ValueError("vllm: retries and retry_backoff_s must be >= 0")
        if not 1 <= int(self.jpeg_quality) <= 100 or int(self.image_size) < 0:
            raise ValueError("vllm: need 1 <= jpeg_quality <= 100 and image_size >= 0")
        if not self.logp_min < self.logp_max <= 0.0:
            raise ValueError(f"vllm: need logp_min < logp_max <= 0, got {self.logp_min}, {self.logp_max}")
        if self.video_chat_template not in ("bare", "server"):
            raise ValueError(f"vllm: video_chat_template must be bare or server, got "
                             f"{self.video_chat_template!r}")
        self.server_url = str(self.server_url).rstrip("/")
        self.max_in_flight, self.max_batch = int(self.max_in_flight), int(self.max_batch)
        self.retries = int(self.retries)

    def adapters(self) -> Dict[str, str]:
        per = {"progress": self.adapter_progress, "completion": self.adapter_completion,
               "contrastive": self.adapter_contrastive}
        if self.adapter and any(per.values()):
            raise ValueError("vllm: give either adapter or the per-signal adapter_<signal> "
                             "module names, not both")
        if self.adapter and "=" in self.adapter:   # "progress=NAME,completion=NAME,..."
            out = {}
            for item in self.adapter.split(","):
                sig, _, name = item.strip().partition("=")
                if sig not in per or not name.strip():
                    raise ValueError(f"vllm: adapter {self.adapter!r}: expected one LoRA module "
                                     f"name, or signal=name pairs for {list(per)}")
                out[sig] = name.strip()
            return out
        if self.adapter:
            return {s: self.adapter for s in per}
        return {s: m for s, m in per.items() if m}


def encode_frame(frame: np.ndarray, fmt: str = "png", quality: int = 90, size: int = 0) -> str:
    """An RGB uint8 frame -> base64 text of its PNG/JPEG file (resized so that the longer side
    is `size`, when given and different)."""
    from PIL import Image
    im = Image.fromarray(np.ascontiguousarray(frame))
    if size and max(im.size) != size:
        s = size / max(im.size)
        im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.BICUBIC)
    buf = io.BytesIO()
    if fmt == "jpeg":
        im.save(buf, format="JPEG", quality=int(quality))
    else:
        im.save(buf, format="PNG", compress_level=1)
    return base64.b64encode(buf.getvalue()).decode("ascii")


class _Frames:
    """Encoded frames of one batch: each distinct frame encoded once."""

    def __init__(self, cfg: ServerConfig):
        self.cfg = cfg
        self._by_id: Dict[int, Tuple[np.ndarray, str]] = {}
        self._by_key: Dict[bytes, str] = {}
        self.encoded = 0

    def get(self, frame: np.ndarray) -> str:
        hit = self._by_id.get(id(frame))
        if hit is not None and hit[0] is frame:
            return hit[1]
        k = frame_key(frame)
        b64 = self._by_key.get(k)
        if b64 is None:
            b64 = encode_frame(frame, self.cfg.image_format, self.cfg.jpeg_quality, self.cfg.image_size)
            self._by_key[k] = b64
            self.encoded += 1
        self._by_id[id(frame)] = (frame, b64)
        return b64

    @property
    def mime(self) -> str:
        return "image/jpeg" if self.cfg.image_format == "jpeg" else "image/png"


class ServerRewardBackend(RewardBackend):
    name = "vllm"

    def __init__(self, config: Optional[ServerConfig] = None, **kwargs):
        self.config = config if config is not None else ServerConfig(**kwargs)
        cfg = self.config
        from .prompts import load_prompts
        self.adapters = cfg.adapters()
        self.topreward = cfg.signal == "topreward"
        if self.topreward:
            self.prompts = load_prompts(cfg.prompts or "topreward_official")
            self.needs: FrozenSet[str] = frozenset({"frames"})
            tp = self.prompts.topreward
            self.video = tp.frames == "video"
            self.fps = float(cfg.video_fps or tp.video_fps)
            self._lrm = None
        else:
            # the LRM part is the in-process vlm backend's input builder and parser, without
            # a model
            from .vlm import VLMConfig, VLMRewardBackend
            self.prompts = load_prompts(cfg.prompts or ("lrm_released" if self.adapters else "lrm_ros"))
            vcfg = VLMConfig(model_path=cfg.model, signal=cfg.signal,
                             use_first_frame=cfg.use_first_frame, prompts=cfg.prompts,
                             tri_combination=cfg.tri_combination,
                             max_new_tokens=cfg.max_new_tokens)
            lrm = VLMRewardBackend.__new__(VLMRewardBackend)
            lrm.config, lrm.adapters, lrm.prompts = vcfg, {}, self.prompts
            from .parsers import PARSERS_BY_FORMAT
            lrm.parsers = PARSERS_BY_FORMAT[self.prompts.answer_format]
            lrm.tri_combination = cfg.tri_combination or self.prompts.tri.combination
            lrm.peft = lrm.model = lrm.processor = None
            self._lrm = lrm
            self.needs = signal_needs(vcfg.signals, cfg.use_first_frame)
        self.max_batch = cfg.max_batch
        self._api_key = os.environ.get(cfg.api_key_env, "") if cfg.api_key_env else ""
        self._pool = ThreadPoolExecutor(max_workers=cfg.max_in_flight,
                                        thread_name_prefix="reward_http")
        self._local = threading.local()
        self._episodes: Dict[Tuple[str, int], List[Tuple[np.ndarray, str]]] = {}
        self.stats = {"requests": 0, "retries": 0, "frames_encoded": 0, "failed": 0}
        self._lock = threading.Lock()
        self.answer_id = int(cfg.answer_token_id)
        if cfg.check_on_start:
            self.check_server()
        if self.topreward and self.answer_id < 0:
            self.answer_id = self._answer_token_id()
        if cfg.check_on_start and self.topreward:
            self._check_topreward()

    @property
    def model_id(self) -> str:
        mid = f"vllm:{self.config.server_url}:{self.config.model}"
        for sig, name in sorted(self.adapters.items()):
            mid += f"+{sig}={name}"
        return f"{mid}:{self.prompts.profile}:{self.config.signal}"

    # -- HTTP ----------------------------------------------------------------------------
    def _client(self):
        c = getattr(self._local, "client", None)
        if c is None:
            import httpx
            headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
            c = httpx.Client(headers=headers, trust_env=False)
            self._local.client = c
        return c

    def _url(self, path: str) -> str:
        return f"{self.config.server_url}/{path.lstrip('/')}"

    def _root_url(self, path: str) -> str:
        """Server-level endpoints (vLLM's /tokenize, /metrics) live beside /v1."""
        base = self.config.server_url
        if base.endswith("/v1"):
            base = base[:-3]
        return f"{base}/{path.lstrip('/')}"

    def request(self, method: str, url: str, body: Optional[dict] = None,
                timeout_s: Optional[float] = None, deadline: Optional[float] = None) -> dict:
        """One API call with retries (connection errors, 5xx, 429: exponential backoff) within
        `timeout_s` in all (or until the monotonic `deadline` shared by a batch's requests, so
        that a batch never takes longer than timeout_s, however many wait for a connection).
        Raises RequestFailed(status, reason); never logs the key."""
        import httpx
        cfg = self.config
        if deadline is None:
            deadline = time.monotonic() + float(timeout_s or cfg.timeout_s)
        attempt, last = 0, ""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RequestFailed(TIMEOUT, f"no answer from {cfg.server_url} within "
                                    f"{timeout_s or cfg.timeout_s:g} s" + (f" ({last})" if last else ""))
            with self._lock:
                self.stats["requests"] += 1
            retry = False
            try:
                r = self._client().request(method, url, json=body, timeout=httpx.Timeout(left))
            except httpx.TimeoutException:
                raise RequestFailed(TIMEOUT, f"no answer from {cfg.server_url} within "
                                    f"{timeout_s or cfg.timeout_s:g} s") from None
            except httpx.HTTPError as exc:
                last = f"server {cfg.server_url} unreachable: {type(exc).__name__}: {exc}"
                retry = True
            else:
                if r.status_code >= 500 or r.status_code == 429:
                    last = f"HTTP {r.status_code} from {url}: {_message(r)}"
                    retry = True
                elif r.status_code >= 400:
                    raise RequestFailed(ERROR, f"HTTP {r.status_code} from {url}: {_message(r)}")
                else:
                    try:
                        data = r.json()
                    except ValueError:
                        raise RequestFailed(ERROR, f"malformed JSON from {url}: "
                                            f"{r.text[:120]!r}") from None
                    if not isinstance(data, dict):
                        raise RequestFailed(ERROR, f"malformed response from {url}: not a JSON object")
                    return data
            if not retry or attempt >= cfg.retries:
                raise RequestFailed(ERROR, last)
            pause = cfg.retry_backoff_s * (2 ** attempt)
            attempt += 1
            with self._lock:
                self.stats["retries"] += 1
            if time.monotonic() + pause >= deadline:
                raise RequestFailed(ERROR, last)
            time.sleep(pause)

    def check_server(self) -> None:
        """The server answers and serves the model (and the LoRA modules): else raise
        ServerUnavailableError naming server_url and model."""
        cfg = self.config
        try:
            data = self.request("GET", self._url("models"), timeout_s=max(cfg.timeout_s, 5.0))
            served = [m.get("id") for m in data.get("data", []) if isinstance(m, dict)]
        except RequestFailed as exc:
            raise ServerUnavailableError(
                f"vllm reward backend: server_url {cfg.server_url!r} is not usable ({exc.reason}); "
                f"start the server (see README: vLLM) or fix reward_server_url, model "
                f"{cfg.model!r}") from None
        wanted = [cfg.model] + sorted(set(self.adapters.values()))
        missing = [m for m in wanted if m not in served]
        if missing:
            raise ServerUnavailableError(
                f"vllm reward backend: the server at server_url {cfg.server_url!r} does not serve "
                f"model {missing[0]!r} (it serves {served}); fix reward_model_name "
                f"(or the adapter module names)")

    def _answer_token_id(self) -> int:
        """The id of the answer word as it follows the statement (vLLM's /tokenize)."""
        from .prompts import fill
        tp = self.prompts.topreward
        # the text the answer follows: the statement (open turn) or the assistant header
        base = (fill(tp.statement, "pick up the cube", self.prompts.instruction)
                if tp.turn == "open" else "<|im_start|>assistant\n")
        try:
            a = self.request("POST", self._root_url("tokenize"),
                             {"model": self.config.model, "prompt": base, "add_special_tokens": False})
            b = self.request("POST", self._root_url("tokenize"),
                             {"model": self.config.model, "prompt": base + tp.answer_word,
                              "add_special_tokens": False})
            ta, tb = list(a["tokens"]), list(b["tokens"])
        except (RequestFailed, KeyError, TypeError) as exc:
            raise ServerUnavailableError(
                f"vllm reward backend: cannot tokenize the answer word {tp.answer_word!r} on "
                f"{self.config.server_url!r} ({getattr(exc, 'reason', exc)}); set "
                f"answer_token_id for a server without /tokenize") from None
        if tb[:len(ta)] != ta or len(tb) != len(ta) + 1:
            raise ValueError(f"vllm: answer word {tp.answer_word!r} is not one token after the "
                             f"statement (server tokens {ta} -> {tb})")
        return int(tb[-1])

    def _check_topreward(self) -> None:
        """One TOPReward request on a blank frame: the server takes the request options
        (logprobs, allowed_token_ids, the chat options, per-request video settings)."""
        blank = encode_frame(np.zeros((32, 32, 3), np.uint8), self.config.image_format)
        mime = "image/jpeg" if self.config.image_format == "jpeg" else "image/png"
        try:
            self._logp(self.request("POST", self._url("chat/completions"),
                                    self.topreward_body("check", [blank, blank], mime),
                                    timeout_s=max(self.config.timeout_s, 30.0)))
        except RequestFailed as exc:
            hint = (" (vLLM: start it with --trust-request-mm-kwargs: the frames' rate and "
                    "indices go with each request)" if "mm-kwargs" in exc.reason
                    or "mm_kwargs" in exc.reason else
                    " (vLLM: start it with --trust-request-chat-template, or set "
                    "video_chat_template to server)" if "chat_template" in exc.reason
                    or "chat-template" in exc.reason else "")
            raise ServerUnavailableError(
                f"vllm reward backend: server_url {self.config.server_url!r}, model "
                f"{self.config.model!r} refused a TOPReward request: {exc.reason}{hint}") from None

    def metrics(self) -> Dict[str, float]:
        """The server's Prometheus counters (vLLM /metrics), name -> value (summed over labels)."""
        r = self._client().get(self._root_url("metrics"), timeout=10)
        out: Dict[str, float] = {}
        for line in r.text.splitlines():
            if not line or line.startswith("#"):
                continue
            name, _, val = line.rpartition(" ")
            name = name.split("{", 1)[0]
            try:
                out[name] = out.get(name, 0.0) + float(val)
            except ValueError:
                continue
        return out

    # -- LRM signals ---------------------------------------------------------------------
    def _lrm_body(self, job, frames: _Frames) -> dict:
        images = iter(job.images)
        msgs = []
        for m in job.messages:
            if isinstance(m["content"], str):
                msgs.append({"role": m["role"], "content": m["content"]})
                continue
            content = []
            for part in m["content"]:
                if part["type"] == "image":
                    url = f"data:{frames.mime};base64,{frames.get(next(images))}"
                    content.append({"type": "image_url", "image_url": {"url": url}})
                else:
                    content.append({"type": "text", "text": part["text"]})
            msgs.append({"role": m["role"], "content": content})
        gen = self.prompts.gen(job.signal)
        body = {"model": self.adapters.get(job.signal, self.config.model), "messages": msgs,
                "max_tokens": self.config.max_new_tokens or gen.max_new_tokens,
                "temperature": 0.0, "n": 1}
        if gen.stop_on_json:
            body["stop"] = ["}"]
            body["include_stop_str_in_output"] = True
        return body

    def _chat_text(self, data: dict) -> str:
        try:
            text = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise RequestFailed(ERROR, "malformed response: no choices[0].message.content") from None
        if not isinstance(text, str):
            raise RequestFailed(ERROR, "malformed response: message content is not text")
        return text.strip()

    def _score_lrm(self, queries: Sequence[RewardQuery]) -> List[RewardResult]:
        lrm = self._lrm
        jobs = lrm.build_jobs(queries)
        frames = _Frames(self.config)
        bodies = [self._lrm_body(j, frames) for j in jobs]     # encoded here, once each
        with self._lock:
            self.stats["frames_encoded"] += frames.encoded
        deadline = time.monotonic() + self.config.timeout_s
        futs = [self._pool.submit(self.request, "POST", self._url("chat/completions"), b,
                                  deadline=deadline) for b in bodies]
        answers: List[Dict[str, str]] = [{} for _ in queries]
        failed: Dict[int, RequestFailed] = {}
        for j, f in zip(jobs, futs):
            try:
                answers[j.query_index][j.signal] = self._chat_text(f.result())
            except RequestFailed as exc:
                failed.setdefault(j.query_index, exc)
        out = []
        for i, q in enumerate(queries):
            if i in failed:
                out.append(_failed(failed[i], signal=self.config.signal))
            else:
                r = lrm.to_result(q, answers[i])
                r.raw["server"] = self.config.server_url
                out.append(r)
        return out

    # -- TOPReward -----------------------------------------------------------------------
    def topreward_body(self, instruction: str, frames_b64: Sequence[str], mime: str) -> dict:
        """The chat request whose one generated token's logprob is log P(answer)."""
        from .prompts import topreward_messages
        p = self.prompts
        tp = p.topreward
        msgs = topreward_messages(tp, instruction, len(frames_b64), p.system, p.instruction)
        n = len(frames_b64)
        indices = list(range(n))
        if self.video and n % 2:        # an odd count: the last frame repeated, as in-process
            frames_b64 = list(frames_b64) + [frames_b64[-1]]
            indices.append(n - 1)
        out_msgs = []
        for m in msgs:
            if isinstance(m["content"], str):
                out_msgs.append(m)
                continue
            content, k = [], 0
            for part in m["content"]:
                if part["type"] == "video":
                    url = "data:video/jpeg;base64," + ",".join(frames_b64)
                    content.append({"type": "video_url", "video_url": {"url": url}})
                elif part["type"] == "image":
                    content.append({"type": "image_url",
                                    "image_url": {"url": f"data:{mime};base64,{frames_b64[k]}"}})
                    k += 1
                else:
                    content.append({"type": "text", "text": part["text"]})
            out_msgs.append({"role": m["role"], "content": content})
        body = {"model": self.config.model, "messages": out_msgs, "max_tokens": 1,
                "temperature": 0.0, "logprobs": True, "allowed_token_ids": [self.answer_id]}
        if tp.turn == "open":
            body["add_generation_prompt"] = False
            body["continue_final_message"] = True
        if self.video:   # every frame, at the profile's rate: the in-process timestamps
            # (vLLM: frames sent as a sequence are not re-sampled: do_sample_frames is false)
            body["media_io_kwargs"] = {"video": {"fps": self.fps, "num_frames": -1,
                                                 "frames_indices": indices}}
            if self.config.video_chat_template == "bare":
                body["chat_template"] = BARE_VIDEO_TEMPLATE
        return body

    def _logp(self, data: dict) -> float:
        try:
            item = data["choices"][0]["logprobs"]["content"][0]
            lp = float(item["logprob"])
        except (KeyError, IndexError, TypeError, ValueError):
            raise RequestFailed(ERROR, "malformed response: no choices[0].logprobs.content[0].logprob "
                                "(does the server support logprobs and allowed_token_ids?)") from None
        return lp

    def _episode_frames(self, q: RewardQuery, frames: _Frames) -> List[str]:
        seq = list(q.frames) if len(q.frames) else [q.frame]
        key = (q.env, q.episode)
        known = self._episodes.get(key, [])
        out = []
        for i, f in enumerate(seq):
            if i < len(known) and known[i][0] is f:
                out.append(known[i][1])
            else:
                out.append(frames.get(f))
        self._episodes[key] = list(zip(seq, out))
        while len(self._episodes) > 64:
            self._episodes.pop(next(iter(self._episodes)))
        return out

    def _score_topreward(self, queries: Sequence[RewardQuery]) -> List[RewardResult]:
        from .topreward import affine_value
        frames = _Frames(self.config)
        bodies = [self.topreward_body(q.instruction, self._episode_frames(q, frames), frames.mime)
                  for q in queries]
        with self._lock:
            self.stats["frames_encoded"] += frames.encoded
        deadline = time.monotonic() + self.config.timeout_s
        futs = [self._pool.submit(self.request, "POST", self._url("chat/completions"), b,
                                  deadline=deadline) for b in bodies]
        out = []
        for q, f in zip(queries, futs):
            try:
                lp = self._logp(f.result())
            except RequestFailed as exc:
                out.append(_failed(exc, signal="topreward"))
                continue
            value = affine_value(lp, self.config.logp_min, self.config.logp_max)
            out.append(RewardResult(value=value, progress=value, valid=math.isfinite(lp),
                                    raw={"log_p_true": lp, "n_frames": len(q.frames) or 1,
                                         "server": self.config.server_url}))
        return out

    # -- the interface -------------------------------------------------------------------
    def score_batch(self, queries: Sequence[RewardQuery]) -> List[RewardResult]:
        results: List[RewardResult] = []
        for s in range(0, len(queries), self.max_batch):
            chunk = list(queries[s:s + self.max_batch])
            results.extend(self._score_topreward(chunk) if self.topreward else self._score_lrm(chunk))
        with self._lock:
            self.stats["failed"] += sum(1 for r in results if r.status)
        return results

    def end_episode(self, env: str, episode: int) -> None:
        self._episodes.pop((env, episode), None)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._episodes.clear()


def _message(r) -> str:
    """The error message of an HTTP error response (OpenAI style {"error": {"message"}} or
    {"message"}), else the start of its text."""
    try:
        data = r.json()
        err = data.get("error", data) if isinstance(data, dict) else data
        msg = err.get("message") if isinstance(err, dict) else err
        return str(msg)[:300]
    except ValueError:
        return r.text[:200]


def _failed(exc: RequestFailed, **raw) -> RewardResult:
    return RewardResult(value=NAN, valid=False, invalid=(exc.reason,), status=exc.status,
                        raw=dict(raw, error=exc.reason))


def make(**config) -> ServerRewardBackend:
    return ServerRewardBackend(ServerConfig(**config))
