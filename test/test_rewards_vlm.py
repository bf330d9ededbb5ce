"""VLM reward backends (vlm, topreward) on a tiny random Qwen3-VL with the real Qwen
tokenizer; the answer parsers; prompts; the registry. One tiny model per session."""
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from lrm_ros.rewards.base import RewardQuery  # noqa: E402
from lrm_ros.rewards.parsers import (parse_completion, parse_contrastive,  # noqa: E402
                                     parse_progress)

MAX_PIXELS = 96 * 96          # 3x3 = 9 visual tokens per frame: fast, still multi-token


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    import torch
    torch.set_num_threads(1)
    from lrm_ros.rewards.qwen import load_qwen_vl
    from lrm_ros.rewards.qwen_tiny import make_tiny_qwen3vl
    path = make_tiny_qwen3vl(tmp_path_factory.mktemp("tiny_qwen3vl"))
    model, processor = load_qwen_vl(path, max_pixels=MAX_PIXELS)
    return path, model, processor


def _frames(n, seed):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(n)]


def _same(a, b):
    return (math.isnan(a) and math.isnan(b)) or a == b


# -- registry / light import ---------------------------------------------------------------

def test_import_is_light_and_registry_lists_backends():
    code = ("import sys, lrm_ros.rewards as r, lrm_ros.rewards.parsers, "
            "lrm_ros.rewards.prompts\n"
            "heavy = [m for m in ('torch', 'transformers', 'peft') if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "assert {'vlm', 'topreward'} <= set(r.list_backends()), r.list_backends()\n"
            "import lrm_ros.rewards.prompts as p; p.default_prompts()\n"
            "assert 'torch' not in sys.modules\n")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd="/tmp")


def test_unknown_backend_names_the_known_ones():
    from lrm_ros.rewards import make_backend
    with pytest.raises(ValueError, match="vlm"):
        make_backend("nope")


# -- tokenizer facts --------------------------------------------------------------------------

def test_token_ids_with_real_tokenizer(tiny_model):
    _, _, proc = tiny_model
    tok = proc.tokenizer
    assert tok.encode("True") == [2514]
    assert tok.encode(" True") == [3007]
    assert tok.encode("False") == [4049]
    assert tok.encode("Hello world") == [9707, 1879]
    assert tok.convert_tokens_to_ids("<|vision_start|>") == 151652
    assert tok.convert_tokens_to_ids("<|image_pad|>") == 151655
    assert tok.convert_tokens_to_ids("<|im_end|>") == 151645
    # the JSON keys / answers of the LRM prompts
    assert tok.encode('{"more_complete_image": 2}') == [4913, 6384, 27675, 4954, 788, 220, 17, 92]
    assert tok.encode('{"completion_progress": 0.7}') == [4913, 43312, 27200, 788, 220, 15, 13, 22, 92]
    assert tok.encode('{"task_completed": "yes"}') == [4913, 8202, 49068, 788, 330, 9693, 9207]
    assert tok.encode("yes") == [9693] and tok.encode("no") == [2152]


def test_chat_template_renders_images(tiny_model):
    _, _, proc = tiny_model
    text = proc.render([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}])
    assert text == ("<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>hi<|im_end|>\n"
                    "<|im_start|>assistant\n")
    batch = proc([text], [_frames(1, 0)])
    assert int((batch["input_ids"] == 151655).sum()) == 9          # 96x96 -> 3x3 merged tokens
    assert batch["mm_token_type_ids"].sum().item() == 9


# -- vlm backend ------------------------------------------------------------------------------

def _queries(n=3, seed=1):
    instructions = ["pick up the cube", "stack the red cube on top of the green cube",
                    "push the cube to the goal region and then stop moving", "open the drawer"]
    out = []
    for i in range(n):
        f = _frames(3, seed + i)
        out.append(RewardQuery(env=f"env{i}", episode=0, tick=10, instruction=instructions[i % 4],
                               frame=f[2], previous_frame=f[1], first_frame=f[0]))
    return out


def test_vlm_batched_equals_single(tiny_model):
    from lrm_ros.rewards import make_backend
    path, model, proc = tiny_model
    be = make_backend("vlm", model_path=path, model=model, processor=proc, signal="tri",
                      max_new_tokens=6)
    assert be.needs == {"previous_frame", "first_frame"}
    qs = _queries(3)
    jobs = be.build_jobs(qs)
    assert len(jobs) == 9 and len({len(proc.render(j.messages)) for j in jobs}) > 1
    batched = be.score_batch(qs)
    single = [be.score_batch([q])[0] for q in qs]
    for b, s in zip(batched, single):
        assert b.raw["answers"] == s.raw["answers"]
        assert all(len(a) > 0 for a in b.raw["answers"].values())
        for f in ("value", "progress", "completion", "contrastive"):
            assert _same(getattr(b, f), getattr(s, f))
        assert b.valid == s.valid and b.invalid == s.invalid
    # encoding each distinct frame once gives the same answers as encoding every occurrence
    be.config.dedup_frames = False
    plain = be.score_batch(qs)
    assert [r.raw["answers"] for r in plain] == [r.raw["answers"] for r in batched]


def test_vlm_signals_and_first_query(tiny_model):
    from lrm_ros.rewards.vlm import VLMRewardBackend, VLMConfig
    path, model, proc = tiny_model
    be = VLMRewardBackend(VLMConfig(model_path=path, signal="contrastive", max_new_tokens=4),
                          model=model, processor=proc)
    assert be.needs == {"previous_frame"}
    q0 = RewardQuery(env="e", episode=0, tick=0, instruction="x", frame=_frames(1, 3)[0])
    r = be.score_batch([q0])[0]           # no previous frame: 0, not asked
    assert r.valid and r.value == 0.0 and r.raw["answers"] == {}
    be2 = VLMRewardBackend(VLMConfig(model_path=path, signal="completion", use_first_frame=False,
                                     max_new_tokens=4), model=model, processor=proc)
    assert be2.needs == frozenset()
    # the random model's answer (mostly not JSON): valid exactly when the completion parser
    # accepts it; else an explicit invalid result with the parser's reason and value NaN
    r = be2.score_batch([q0])[0]
    assert set(r.raw["answers"]) == {"completion"}
    v, ok, reason = be2.parsers["completion"](r.raw["answers"]["completion"])
    expected = (True, v, ()) if ok else (False, "nan", (reason or "completion: invalid",))
    assert (r.valid, "nan" if math.isnan(r.value) else r.value, r.invalid) == expected


def test_vlm_to_result_from_answers(tiny_model):
    from lrm_ros.rewards.vlm import VLMRewardBackend, VLMConfig
    path, model, proc = tiny_model
    be = VLMRewardBackend(VLMConfig(model_path=path, signal="tri"), model=model, processor=proc)
    q = _queries(1)[0]
    r = be.to_result(q, {"contrastive": '{"more_complete_image": 2}',
                         "progress": '{"completion_progress": 0.4}',
                         "completion": '{"task_completed": "no"}'})
    assert r.valid and r.contrastive == 1.0 and r.progress == 0.4 and r.completion == 0.0
    assert r.value == pytest.approx((1.0 + 0.4 + 0.0) / 3)
    r = be.to_result(q, {"contrastive": "garbage", "progress": "??", "completion": "yes"})
    assert r.valid and r.contrastive == 0.0 and math.isnan(r.progress) and len(r.invalid) == 2
    assert r.value == pytest.approx((0.5 + 1.0) / 2)
    r = be.to_result(q, {"contrastive": "garbage", "progress": "??", "completion": "maybe"})
    assert not r.valid and math.isnan(r.value) and len(r.invalid) == 3


@pytest.mark.parametrize("kwargs, match", [
    (dict(signal="bogus"), "signal must be one of"),
    (dict(model_path=""), "model_path is empty"),
    (dict(max_new_tokens=-1), "max_new_tokens"),
    (dict(max_batch=0), "max_batch"),
    (dict(min_pixels=100, max_pixels=50), "min_pixels"),
    (dict(dtype="int8"), "dtype"),
])
def test_vlm_config_validation(kwargs, match):
    from lrm_ros.rewards.vlm import VLMConfig
    with pytest.raises(ValueError, match=match):
        VLMConfig(**kwargs)


# -- missing model ----------------------------------------------------------------------------

def test_missing_model_error_names_the_parameter(tmp_path, monkeypatch):
    from lrm_ros.rewards import make_backend
    from lrm_ros.rewards.qwen import ModelNotFoundError, resolve_local
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(ModelNotFoundError, match="model_path") as e:
        make_backend("vlm", model_path=str(tmp_path / "nowhere"))
    assert "config.json" in str(e.value) and isinstance(e.value, FileNotFoundError)
    with pytest.raises(ModelNotFoundError, match="huggingface-cli download"):
        resolve_local("Qwen/Qwen3-VL-8B-Instruct", "model_path")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    with pytest.raises(ModelNotFoundError, match="adapter_path"):
        make_backend("topreward", model_path=str(tmp_path / "m"), adapter_path=str(tmp_path / "no"))


# -- topreward --------------------------------------------------------------------------------

def test_topreward_answer_token_and_prompt_lrm_ros_profile(tiny_model):
    from lrm_ros.rewards.topreward import TOPRewardBackend, TopRewardConfig
    path, model, proc = tiny_model
    be = TOPRewardBackend(TopRewardConfig(model_path=path, prompts="lrm_ros"), model=model,
                          processor=proc)
    assert be.answer_id == 2514            # "True" right after "<|im_start|>assistant\n"
    assert be.negative_id == 4049
    text = proc.render(be._messages("pick the cube.", 2))
    assert text.endswith("The video shows the robot completing the task: pick the cube. "
                         "True or False?<|im_end|>\n<|im_start|>assistant\n")
    assert text.count("<|image_pad|>") == 2


@pytest.mark.parametrize("profile, size", [("lrm_ros", 224), ("topreward_official", 64),
                                           ("topreward_official", 224)])
def test_topreward_cached_equals_uncached(tiny_model, profile, size):
    from lrm_ros.rewards import make_backend
    path, model, proc = tiny_model
    cached = make_backend("topreward", model_path=path, model=model, processor=proc,
                          max_episodes=4, prompts=profile)
    plain = make_backend("topreward", model_path=path, model=model, processor=proc, cache=False,
                         prompts=profile)
    rng = np.random.default_rng(size)
    frames = {e: [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(6)]
              for e in "ab"}
    instr = {"a": "pick up the cube", "b": "put the peg into the hole on the side"}

    def q(env, n, episode=0):
        return RewardQuery(env=env, episode=episode, tick=10 * n, instruction=instr[env],
                           frame=frames[env][n - 1], frames=tuple(frames[env][:n]))

    lp = {}
    for n in range(1, 7):   # two envs interleaved: one batch (stacked caches), then one by one
        qs = [q("a", n), q("b", n)]
        res = cached.score_batch(qs) if n % 2 else [cached.score_batch([x])[0] for x in qs[::-1]][::-1]
        ref = plain.score_batch(qs)
        for r, rr, x in zip(res, ref, qs):
            assert r.raw["log_p_true"] == pytest.approx(rr.raw["log_p_true"], abs=1e-4)
            assert r.raw["log_p_false"] == pytest.approx(rr.raw["log_p_false"], abs=1e-4)
            assert 0.0 <= r.value <= 1.0 and r.valid
            lp[(x.env, n)] = r.raw["log_p_true"]
    assert cached.stats["tokens_cached"] > 0
    assert set(cached.cached_episodes()) == {("a", 0), ("b", 0)}
    # eviction: end_episode drops the cache; scoring again recomputes from scratch, same value
    cached.end_episode("a", 0)
    assert cached.cached_episodes() == [("b", 0)]
    before = cached.stats["tokens_cached"]
    r = cached.score_batch([q("a", 6)])[0]
    assert cached.stats["tokens_cached"] == before
    assert r.raw["log_p_true"] == pytest.approx(lp[("a", 6)], abs=1e-4)
    # same frames asked twice, and a changed history: the cache is cut back, still exact
    r = cached.score_batch([q("a", 6)])[0]
    assert r.raw["log_p_true"] == pytest.approx(lp[("a", 6)], abs=1e-4)
    frames["a"][2] = frames["b"][2]
    r = cached.score_batch([q("a", 5)])[0]
    assert r.raw["log_p_true"] == pytest.approx(plain.score_batch([q("a", 5)])[0].raw["log_p_true"], abs=1e-4)
    # LRU bound
    for ep in range(1, 6):
        cached.score_batch([q("b", 2, episode=ep)])
    assert len(cached.cached_episodes()) == 4


def test_topreward_value_maps():
    from lrm_ros.rewards.topreward import affine_value, minmax_normalize_episode
    from lrm_ros.rewards.topreward import TopRewardConfig
    assert (TopRewardConfig().logp_min, TopRewardConfig().logp_max) == (-25.0, -5.0)   # LRM's
    assert affine_value(-15.0, -25.0, -5.0) == 0.5
    assert affine_value(-30.0, -25.0, -5.0) == 0.0 and affine_value(-1.0, -25.0, -5.0) == 1.0
    assert math.isnan(affine_value(float("nan"), -10.0, 0.0))
    assert minmax_normalize_episode([-3.0, -1.0, -2.0]) == [0.0, 1.0, 0.5]
    out = minmax_normalize_episode([-1.0, float("nan"), -1.0])
    assert out[0] == 1.0 and math.isnan(out[1])        # constant: 1, as the official code
    assert minmax_normalize_episode([-4.0]) == [1.0]
    assert minmax_normalize_episode([]) == []


# -- prompts ----------------------------------------------------------------------------------

def test_prompts_packaged_and_override(tmp_path):
    from lrm_ros.rewards.prompts import build_messages, load_prompts
    p = load_prompts()
    assert p.images_needed("contrastive") == ("previous", "current")
    assert p.images_needed("progress") == ("first", "current")
    assert p.images_needed("completion") == ("current",)
    assert "more_complete_image" in str(p.contrastive) and "task_completed" in str(p.completion)
    msgs, ims = build_messages(p.contrastive, "open the door.", {"previous": 1, "current": 2})
    assert ims == [1, 2] and "open the door." in msgs[0]["content"][0]["text"]
    f = tmp_path / "p.yaml"
    f.write_text("completion:\n  - image: current\n  - text: 'Done with {instruction}? JSON {\"task_completed\": ...}'\n"
                 "topreward:\n  statement: 'Task {instruction} done. True or False?'\n")
    q = load_prompts(str(f))
    assert q.completion[1][1].startswith("Done with") and q.contrastive == p.contrastive
    assert q.topreward.statement.startswith("Task") and q.topreward.answer_word == "True"
    f.write_text("completon: []\n")
    with pytest.raises(ValueError, match="unknown prompt entries"):
        load_prompts(str(f))
    f.write_text("completion:\n  - image: later\n")
    with pytest.raises(ValueError, match="image must be one of"):
        load_prompts(str(f))
    with pytest.raises(FileNotFoundError, match="prompts"):
        load_prompts(str(tmp_path / "missing.yaml"))


# -- parsers ----------------------------------------------------------------------------------

CONTRASTIVE = [
    ('{"more_complete_image": 2}', 1.0, True, ""),
    ('{"more_complete_image": 1}', -1.0, True, ""),
    ('  {"more_complete_image":2}\n', 1.0, True, ""),
    ('```json\n{"more_complete_image": 2}\n```', 1.0, True, "code fence"),
    ("{'more_complete_image': 1}", -1.0, True, "repaired"),
    ('{"more_complete_image": "2"}', 1.0, True, "not an integer"),
    ('{"more_complete_image": "Image 1"}', -1.0, True, "not an integer"),
    ('{"More Complete Image": 2}', 1.0, True, "key"),
    ('{"answer": 2}', 1.0, True, "key"),
    ('{"more_complete_image": 2,}', 1.0, True, "repaired"),
    ('Sure! {"more_complete_image": 2} because the cube is lifted.', 1.0, True, "text around"),
    ('{"more_complete_image": 2', 1.0, True, "unterminated"),
    ("Image 2 is more complete.", 1.0, True, "free-text"),
    ("more_complete_image: 1", -1.0, True, "free-text"),
    ("2", 1.0, True, "free-text"),
    ('{"more_complete_image": 3}', 0.0, False, "not 1 or 2"),
    ('{"more_complete_image": null}', 0.0, False, ""),
    ('{"more_complete_image": true}', 0.0, False, "not 1 or 2"),
    ("", 0.0, False, "unparseable"),
    ("I cannot tell.", 0.0, False, "unparseable"),
    ("Kata붇馨 condotype portrait", 0.0, False, "unparseable"),
    ("{}", 0.0, False, "unparseable"),
    ("[1, 2]", 0.0, False, "unparseable"),
    ("{{{{{{", 0.0, False, "unparseable"),
]

PROGRESS = [
    ('{"completion_progress": 0.7}', 0.7, True, ""),
    ('{"completion_progress": 0}', 0.0, True, ""),
    ('{"completion_progress": 1.0}', 1.0, True, ""),
    ('{"completion_progress": 0.73}', 0.7, True, "snapped 0.73 -> 0.7"),
    ('{"completion_progress": 0.05}', 0.1, True, "snapped"),
    ('{"completion_progress": "0.4"}', 0.4, True, "number as string"),
    ('{"completion_progress": "40%"}', 0.4, True, "percentage"),
    ('{"completion_progress": 70}', 0.7, True, "percentage"),
    ('{"completion_progress": "7/10"}', 0.7, True, "fraction"),
    ('{"progress": 0.3}', 0.3, True, "key"),
    ("```\n{'completion_progress': 0.2}\n```", 0.2, True, "code fence"),
    ('The progress is {"completion_progress": 0.9}.', 0.9, True, "text around"),
    ("completion_progress: 0.5", 0.5, True, "free-text"),
    ("0.6", 0.6, True, "free-text"),
    ("80%", 0.8, True, "percentage"),
    ('{"completion_progress": -0.2}', None, False, "outside"),
    ('{"completion_progress": 250}', None, False, "outside"),
    ('{"completion_progress": "a lot"}', None, False, "not a number"),
    ('{"completion_progress": NaN}', None, False, ""),
    ("no idea", None, False, "unparseable"),
    ("", None, False, "unparseable"),
]

COMPLETION = [
    ('{"task_completed": "yes"}', 1.0, True, ""),
    ('{"task_completed": "no"}', 0.0, True, ""),
    ('{"task_completed": "Yes"}', 1.0, True, "read as yes"),
    ('{"task_completed": true}', 1.0, True, "read as yes"),
    ('{"task_completed": 0}', 0.0, True, "read as no"),
    ("{'task_completed': 'no'}", 0.0, True, "repaired"),
    ('```json\n{"task_completed": "yes"}\n```', 1.0, True, "code fence"),
    ('{"completed": "no"}', 0.0, True, "key"),
    ('{"task_completed": "not completed"}', 0.0, True, "read as no"),
    ("Yes, the cube is on the target.", 1.0, True, "free-text"),
    ("task_completed: no", 0.0, True, "free-text"),
    ('{"task_completed": "maybe"}', None, False, "not yes/no"),
    ("The robot is still moving.", None, False, "unparseable"),
    ("", None, False, "unparseable"),
    ("nope", None, False, "unparseable"),
]


@pytest.mark.parametrize("parser, cases", [(parse_contrastive, CONTRASTIVE),
                                           (parse_progress, PROGRESS),
                                           (parse_completion, COMPLETION)],
                         ids=["contrastive", "progress", "completion"])
def test_parsers(parser, cases):
    for text, value, ok, reason in cases:
        v, got_ok, got_reason = parser(text)
        assert got_ok == ok, (text, v, got_ok, got_reason)
        if value is None:
            assert math.isnan(v), (text, v)
        else:
            assert v == pytest.approx(value), (text, v, got_reason)
        if ok and reason == "":
            assert got_reason == "", (text, got_reason)
        elif reason:
            assert reason in got_reason, (text, got_reason)
        assert isinstance(got_reason, str)


def test_parsers_never_raise_on_junk():
    rng = np.random.default_rng(0)
    alphabet = list('{}[]"\':,0123456789.-% abcxyzIMAGE\n`')
    for _ in range(300):
        s = "".join(rng.choice(alphabet, size=rng.integers(0, 40)))
        for parser in (parse_contrastive, parse_progress, parse_completion):
            v, ok, reason = parser(s)
            assert isinstance(ok, bool) and isinstance(reason, str)
    for junk in (None, 5, b"{}"):
        for parser in (parse_contrastive, parse_progress, parse_completion):
            assert parser(junk)[1] is False
