"""Fidelity to the published methods, with golden fixtures written from the original code:

- LRM (physical-superintelligence-lab/Large-Reward-Models, vlm_reward/vlm_reward_server.py
  and envs/vlm_maniskill_env.py): the three prompts as the released adapters saw them, the
  released answer format and the server's parsing rules, per-signal generation lengths, the
  published tri combination, and three adapters on one base model switched per signal.
- TOPReward (topreward/clients/qwen.py; LeRobot's and LRM's ports): the statement in the open
  user turn, the frames as one Qwen3-VL video with timestamps, and log P of the final " True"
  (id 3007) read at the position before it.

The golden strings below are typed from the original code, not generated from our YAML.
"""
import json
import math
import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from lrm_ros.rewards.base import RewardQuery, tri_value, tri_value_released  # noqa: E402
from lrm_ros.rewards.parsers import (has_closed_answer, parse_completion_released,  # noqa: E402
                                     parse_contrastive_released, parse_progress_released)

TASK = "push the red cube to the target"
IMG = "<|vision_start|><|image_pad|><|vision_end|>"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import torch
    torch.set_num_threads(1)
    from lrm_ros.rewards.qwen import load_qwen_vl
    from lrm_ros.rewards.qwen_tiny import make_tiny_qwen3vl
    path = make_tiny_qwen3vl(tmp_path_factory.mktemp("tiny_qwen3vl"))
    model, processor = load_qwen_vl(path, max_pixels=64 * 64)
    return path, model, processor


def _frames(n, seed, size=64):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


# -- LRM prompts, as the released adapters saw them --------------------------------------------

GOLDEN_PROGRESS = (
    "<|im_start|>user\n"
    "Task: Estimate the completion progress.\nThe task is: " + TASK + "\nYou are given:\n"
    "- Initial observation: " + IMG + "\n- Current observation: " + IMG + "\n\n"
    "Question: Based on the task description, estimate the completion progress as a value "
    "between 0.0 and 1.0.\nSelect one value from the following list:\n"
    "[0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]\n\nDefinitions:\n"
    "- 0.0: Task has just started.\n"
    "- 0.1 - 0.9: Intermediate progress steps (assess how close to completion).\n"
    "- 1.0: Task is Finished.\nOutput your answer in the following JSON format:\n"
    '{ "completion_progress": selected_value }'
    "<|im_end|>\n<|im_start|>assistant\n")

GOLDEN_COMPLETION = (
    "<|im_start|>user\n"
    "Task: Whether the task has been completed.\n\nThe task is: " + TASK + "\n\n"
    "You are given:\n- Current observation:" + IMG + "Has the task been completed?\n"
    "Output your answer in the following JSON format:\n"
    '{ "task_completed": "yes" or "no" }'
    "<|im_end|>\n<|im_start|>assistant\n")

GOLDEN_CONTRASTIVE = (
    "<|im_start|>user\n"
    "Task: Compare the completion progress.\n\nThe task is: " + TASK + ".\n\n"
    "You are given:\n- Later observation (Image A): " + IMG + "\n"
    "- Later observation (Image B): " + IMG + "\n\n"
    "Question: Which of Image A or Image B is closer to completing the task?\n"
    'Select one value from the following list:\n["ImageA", "ImageB"]\n\n'
    "Please provide a step-by-step visual analysis first, and then output your answer in the "
    'following JSON format:\n{ "more_complete_image": "selected_value" }'
    "<|im_end|>\n<|im_start|>assistant\n")


def test_released_prompts_render_exactly(tiny):
    from lrm_ros.rewards import make_backend
    path, model, proc = tiny
    be = make_backend("vlm", model_path=path, model=model, processor=proc, signal="tri",
                      prompts="lrm_released")
    f = _frames(3, 0)
    q = RewardQuery("env0", 0, 20, TASK, f[2], previous_frame=f[1], first_frame=f[0])
    jobs = {j.signal: j for j in be.build_jobs([q])}
    assert proc.render(jobs["progress"].messages) == GOLDEN_PROGRESS
    assert proc.render(jobs["completion"].messages) == GOLDEN_COMPLETION
    assert proc.render(jobs["contrastive"].messages) == GOLDEN_CONTRASTIVE
    # image order: progress (initial, current), contrastive (A = the previous query's, B = now)
    assert [im is x for im, x in zip(jobs["progress"].images, (f[0], f[2]))] == [True, True]
    assert [im is x for im, x in zip(jobs["contrastive"].images, (f[1], f[2]))] == [True, True]
    assert jobs["completion"].images[0] is f[2]
    # the instruction goes in verbatim (a trailing "." stays, as in the original)
    q2 = RewardQuery("env0", 0, 20, "open the door.", f[2], previous_frame=f[1], first_frame=f[0])
    contr = [j for j in be.build_jobs([q2]) if j.signal == "contrastive"][0]
    assert "The task is: open the door..\n\n" in proc.render(contr.messages)
    # token ids of the completion prompt's text (real Qwen tokenizer): the answer format
    # line, where a change of one character would change what the adapter reads
    tok = proc.tokenizer
    assert tok.encode('{ "task_completed": "yes" or "no" }') == [90, 330, 8202, 49068, 788, 330,
                                                                 9693, 1, 476, 330, 2152, 1, 335]
    assert tok.encode(" ImageB") == [4654, 33]


def test_first_query_compares_with_the_start_only_in_our_profile(tiny):
    """LRM's environment has no earlier frame at an episode's first query (tick K); our hold
    offers the start frame (tick 0). lrm_released does not ask contrastive there; lrm_ros does."""
    from lrm_ros.rewards import make_backend
    path, model, proc = tiny
    f = _frames(3, 2)
    first = RewardQuery("env0", 0, 10, TASK, f[1], previous_frame=f[0], previous_tick=0, first_frame=f[0])
    later = RewardQuery("env0", 0, 20, TASK, f[2], previous_frame=f[1], previous_tick=10, first_frame=f[0])
    for profile, asked in (("lrm_released", [False, True]), ("lrm_ros", [True, True])):
        be = make_backend("vlm", model_path=path, model=model, processor=proc, signal="tri",
                          prompts=profile)
        got = [any(j.signal == "contrastive" for j in be.build_jobs([q])) for q in (first, later)]
        assert got == asked, profile


def test_released_profile_settings():
    from lrm_ros.rewards.prompts import load_prompts
    p = load_prompts("lrm_released")
    assert p.answer_format == "lrm_released" and p.instruction == "verbatim" and p.system == ""
    assert {s: p.gen(s).max_new_tokens for s in ("progress", "completion", "contrastive")} == \
        {"progress": 128, "completion": 128, "contrastive": 512}
    assert p.tri.combination == "released"
    assert (p.min_pixels, p.max_pixels) == (0, 0)         # the checkpoint's processor decides
    own = load_prompts("lrm_ros")
    assert own.tri.combination == "mean_parsed" and own.answer_format == "lrm_ros"
    assert load_prompts("topreward_official").topreward.answer_word == " True"


def test_released_profile_uses_the_checkpoints_pixel_bounds(tiny, tmp_path):
    from lrm_ros.rewards.qwen import QWEN3VL_MAX_PIXELS, QWEN3VL_MIN_PIXELS, checkpoint_pixels
    assert checkpoint_pixels({"size": {"shortest_edge": 65536, "longest_edge": 16777216}}) == \
        (65536, 16777216)
    assert checkpoint_pixels({"min_pixels": 3136, "max_pixels": 12845056}) == (3136, 12845056)
    assert checkpoint_pixels({}) == (QWEN3VL_MIN_PIXELS, QWEN3VL_MAX_PIXELS)
    from lrm_ros.rewards.qwen import load_processor
    path, _, _ = tiny
    own = load_processor(path, 0, 0)          # the tiny checkpoint's config: 1024 .. 50176
    _, grid = own.preprocess_images(_frames(1, 0, 224))
    assert grid.tolist() == [[1, 14, 14]]


# -- the released answer format and the server's parsing rules --------------------------------

RELEASED_CONTRASTIVE = [
    ('Image A shows the gripper far away; in Image B the cube is on the target.\n'
     '{ "more_complete_image": "ImageB" }', 1.0, True),
    ('Step 1: ... Step 2: ...\n{"more_complete_image": "ImageA"}', -1.0, True),
    ('reasoning {"more_complete_image": "ImageB", "why": "x"}', 1.0, True),
    ('{"notes": "a {nested} thing"} then "more_complete_image": "ImageA"', -1.0, True),
    ("ImageA looks early, ImageB looks done", 1.0, True),        # the one named last wins
    ("The robot moved. In Image B", 0.0, False),                  # truncated: no answer
    ('Analysis: the cube in image A is', 0.0, False),
    ('{"more_complete_image": 2}', 0.0, False),                   # our format: not theirs
    ("", 0.0, False),
]

RELEASED_PROGRESS = [
    ('{ "completion_progress": 0.7 }', 0.7, True),
    ('{"completion_progress": "NA"}', 0.0, True),
    ('{"completion_progress": 1.4}', 1.0, True),                  # clamped
    ('The answer: "completion_progress": 0.3 (cut', 0.3, True),  # key by regex
    ("I estimate 0.6 of the task", 0.6, True),                    # bare number
    ("Progress: 0.45", 0.45, True),
    ("no idea", 0.0, False),
]

RELEASED_COMPLETION = [
    ('{ "task_completed": "yes" }', 1.0, True),
    ('{"task_completed": "no"} ... {"task_completed": "yes"}', 1.0, True),   # the last decides
    ("yes, it is done", 1.0, True),
    ("It is not done", 0.0, True),                                # 'no' as a substring (sic)
    ("The cube sits still.", 0.0, False),
]


@pytest.mark.parametrize("parser, cases", [(parse_contrastive_released, RELEASED_CONTRASTIVE),
                                           (parse_progress_released, RELEASED_PROGRESS),
                                           (parse_completion_released, RELEASED_COMPLETION)],
                         ids=["contrastive", "progress", "completion"])
def test_released_parsers(parser, cases):
    for text, value, ok in cases:
        v, got_ok, reason = parser(text)
        assert (got_ok, v) == (ok, pytest.approx(value)), (text, v, got_ok, reason)
        if not ok:
            assert "unparseable" in reason


def test_closed_json_ends_an_answer():
    assert not has_closed_answer('Image B is later. {"more_complete_image": "Ima', "contrastive")
    assert has_closed_answer('Image B. {"more_complete_image": "ImageB"}', "contrastive")
    assert not has_closed_answer('{"reasoning": "x"}', "contrastive")
    assert has_closed_answer('{ "completion_progress": 0.5 }', "progress")


def test_tri_released_vs_mean_parsed():
    w = (1 / 3, 1 / 3, 1 / 3)
    # parsed: the same in both
    assert tri_value_released(0.6, 1.0, 1.0, w) == pytest.approx(tri_value(0.6, 1.0, 1.0))
    # first query (contrastive not asked): released counts 0, ours 0.5 (and averages it)
    assert tri_value_released(0.6, 1.0, None, w) == pytest.approx((0.0 + 0.6 + 1.0) / 3)
    assert tri_value(0.6, 1.0, 0.0) == pytest.approx((0.5 + 0.6 + 1.0) / 3)
    # unparseable progress: released counts it 0 in a fixed-weight sum, ours leaves it out
    assert tri_value_released(math.nan, 1.0, -1.0, w) == pytest.approx(1.0 / 3)
    assert tri_value(math.nan, 1.0, -1.0) == pytest.approx(0.5)


def test_vlm_released_answers_to_results(tiny):
    from lrm_ros.rewards import make_backend
    path, model, proc = tiny
    be = make_backend("vlm", model_path=path, model=model, processor=proc, signal="tri",
                      prompts="lrm_released")
    f = _frames(3, 1)
    q = RewardQuery("env0", 0, 20, TASK, f[2], previous_frame=f[1], first_frame=f[0])
    r = be.to_result(q, {"contrastive": 'The cube moved closer. {"more_complete_image": "ImageB"}',
                         "progress": '{ "completion_progress": 0.4 }',
                         "completion": '{ "task_completed": "no" }'})
    assert r.valid and (r.contrastive, r.progress, r.completion) == (1.0, 0.4, 0.0)
    assert r.value == pytest.approx((1.0 + 0.4 + 0.0) / 3)
    # a truncated contrastive answer: invalid and counted, 0.5 in the released sum
    r = be.to_result(q, {"contrastive": "Image A shows the gripper open while Image B",
                         "progress": '{ "completion_progress": 0.4 }',
                         "completion": '{ "task_completed": "yes" }'})
    assert r.valid and r.contrastive == 0.0 and len(r.invalid) == 1
    assert "contrastive" in r.invalid[0]
    assert r.value == pytest.approx((0.5 + 0.4 + 1.0) / 3)
    # the first query: contrastive not asked, counts 0
    q0 = RewardQuery("env0", 0, 10, TASK, f[2], first_frame=f[0])
    r = be.to_result(q0, {"progress": '{ "completion_progress": 0.4 }',
                          "completion": '{ "task_completed": "yes" }'})
    assert r.valid and r.value == pytest.approx((0.0 + 0.4 + 1.0) / 3)
    # tri_combination overrides the profile's
    ours = make_backend("vlm", model_path=path, model=model, processor=proc, signal="tri",
                        prompts="lrm_released", tri_combination="mean_parsed")
    assert ours.to_result(q0, {"progress": '{ "completion_progress": 0.4 }',
                               "completion": '{ "task_completed": "yes" }'}).value == \
        pytest.approx((0.5 + 0.4 + 1.0) / 3)


def test_generation_budget_and_json_stop(tiny):
    """Each row stops at its own signal's budget, or at its closed JSON answer."""
    import torch
    from lrm_ros.rewards.vlm import _answer_stopper
    _, _, proc = tiny
    tok = proc.tokenizer
    prompt = [1, 2, 3]
    answer = tok.encode('ok {"completion_progress": 0.5} and more')
    cut = len(tok.encode('ok {"completion_progress": 0.5}'))
    stop = _answer_stopper(proc, len(prompt), budgets=[100, 100, 4],
                           json_stop=["progress", None, None])
    seen = []
    for n in range(1, len(answer) + 1):
        ids = torch.tensor([prompt + answer[:n]] * 3)
        seen.append(stop(ids, None).tolist())
    first_stop = [next(i + 1 for i, s in enumerate(seen) if s[row]) if any(s[row] for s in seen)
                  else None for row in range(3)]
    assert first_stop == [cut, None, 4]


# -- three adapters on one base model -----------------------------------------------------------

@pytest.fixture(scope="module")
def three_adapters(tiny, tmp_path_factory):
    from lrm_ros.rewards.qwen_tiny import make_random_lrm_adapters
    path, _, _ = tiny
    return make_random_lrm_adapters(path, tmp_path_factory.mktemp("lrm_adapters"))


def test_three_adapters_each_signal_uses_its_own(tiny, three_adapters):
    from lrm_ros.rewards import make_backend
    path, _, _ = tiny
    kw = dict(model_path=path, max_new_tokens=6, max_pixels=64 * 64, prompts="lrm_released")
    multi = make_backend("vlm", adapter_path=str(three_adapters), signal="tri", **kw)
    assert multi.peft is not None and set(multi.adapters) == {"progress", "completion", "contrastive"}
    assert multi.prompts.profile == "lrm_released"
    saved = json.loads((three_adapters / "progress" / "adapter_config.json").read_text())
    assert saved["modules_to_save"] == ["visual", "merger"]
    assert list(multi.peft.peft_config["progress"].modules_to_save) == ["visual"]
    # the published adapters default to the released profile
    assert make_backend("vlm", adapter_path=str(three_adapters), model_path=path,
                        max_pixels=64 * 64).prompts.profile == "lrm_released"
    f = _frames(3, 5)
    qs = [RewardQuery("env0", 0, 20, TASK, f[2], previous_frame=f[1], first_frame=f[0]),
          RewardQuery("env1", 0, 20, "stack the cube", f[0], previous_frame=f[2], first_frame=f[1])]
    got = [r.raw["answers"] for r in multi.score_batch(qs)]
    base = [r.raw["answers"] for r in make_backend("vlm", signal="tri", **kw).score_batch(qs)]
    for sig in ("progress", "completion", "contrastive"):
        one = make_backend("vlm", adapter_path=str(three_adapters / sig), signal=sig, **kw)
        assert one.peft is None                      # a single adapter is merged
        if sig == "completion":                      # ... or, on a model passed in, held
            import copy
            m, p = copy.deepcopy(tiny[1]), tiny[2]
            held = make_backend("vlm", adapter_path=str(three_adapters / sig), signal=sig,
                                model=m, processor=p, **kw)
            assert held.peft is not None
            assert [r.raw["answers"][sig] for r in held.score_batch(qs)] == \
                [r.raw["answers"][sig] for r in one.score_batch(qs)]
        alone = [r.raw["answers"][sig] for r in one.score_batch(qs)]
        assert [a[sig] for a in got] == alone, sig   # the head answered with its own adapter
        assert alone != [b[sig] for b in base], sig  # ... which changes the answers
    # per-signal paths work the same, and a signal without an adapter runs on the base model
    part = make_backend("vlm", adapter_progress=str(three_adapters / "progress"), signal="tri", **kw)
    ans = [r.raw["answers"] for r in part.score_batch(qs)]
    assert [a["progress"] for a in ans] == [a["progress"] for a in got]
    assert [a["completion"] for a in ans] == [b["completion"] for b in base]


def test_adapter_that_does_not_fit_is_refused(tiny, three_adapters, tmp_path):
    import shutil
    from safetensors.torch import load_file, save_file
    from lrm_ros.rewards import make_backend
    path, _, _ = tiny
    bad = tmp_path / "bad"
    shutil.copytree(three_adapters / "completion", bad)
    tensors = load_file(str(bad / "adapter_model.safetensors"))
    save_file({k.replace("language_model", "lang_model"): v for k, v in tensors.items()},
              str(bad / "adapter_model.safetensors"))
    with pytest.raises(ValueError, match="did not load into the model"):
        make_backend("vlm", model_path=path, adapter_path=str(bad), signal="completion")
    with pytest.raises(ValueError, match="either adapter_path or"):
        make_backend("vlm", model_path=path, adapter_path=str(bad),
                     adapter_progress=str(three_adapters / "progress"))


def test_own_adapters_keep_their_training_profile(tiny, tmp_path):
    from lrm_ros.rewards.qwen import adapter_profile
    d = tmp_path / "a"
    d.mkdir()
    assert adapter_profile({"*": d}) == "lrm_released"
    (d / "lrm_ros_sft.json").write_text(json.dumps({"prompts": "lrm_ros"}))
    assert adapter_profile({"*": d}) == "lrm_ros"


# -- TOPReward: the official query ------------------------------------------------------------

def test_topreward_official_prompt_and_scored_token(tiny):
    """The exact text (open user turn, video with timestamps), " True" (3007) as the last token
    of the scored sequence, and log P read where the original reads it: the log-softmax at the
    position before " True" of a plain forward over prompt + " True"."""
    import torch
    from lrm_ros.rewards import make_backend
    path, model, proc = tiny
    be = make_backend("topreward", model_path=path, model=model, processor=proc, cache=False)
    assert be.prompts.profile == "topreward_official" and be.video
    assert be.answer_id == 3007 and be.negative_id == 3557
    frames = _frames(3, 7)                  # 64x64: 2x2 = 4 tokens per pair; 3 frames -> 2 pairs
    units = be._units(frames, [b""] * 3)
    assert units.timestamps == [0.25, 1.0] and units.stable == 1
    pv, grids = be._pixels(units, 0)
    layout = be._layout(TASK, units, grids)
    pair = "<|vision_start|>" + "<|video_pad|>" * 4 + "<|vision_end|>"
    golden = ("<|im_start|>user\n<0.2 seconds>" + pair + "<1.0 seconds>" + pair +
              "The above video shows a robot manipulation trajectory that completes the "
              "following task: " + TASK + " Decide whether the above statement is True or not. "
              "The answer is:")
    assert proc.tokenizer.decode(layout.ids, skip_special_tokens=False) == golden
    full = proc.tokenizer.encode(golden + " True", add_special_tokens=False)
    assert full[:-1] == layout.ids and full[-3:] == [374, 25, 3007]     # " is", ":", " True"
    assert layout.mm.count(2) == 8 and layout.mm.count(1) == 0
    # the original's computation: labels = the last token only, logits shifted by one
    grid = torch.tensor([[2, 4, 4]])
    with torch.no_grad():
        out = model(input_ids=torch.tensor([full]),
                    mm_token_type_ids=torch.tensor([layout.mm + [0]]),
                    pixel_values_videos=pv, video_grid_thw=grid)
    ref = torch.log_softmax(out.logits[0, -2].float(), -1)[3007].item()
    lt, _ = be.logp_uncached(TASK, frames)
    assert lt == pytest.approx(ref, abs=1e-5)
    # online value with LRM's constants
    r = be.score_batch([RewardQuery("e", 0, 30, TASK, frames[-1], frames=tuple(frames))])[0]
    assert r.value == pytest.approx(min(1.0, max(0.0, (ref + 25.0) / 20.0)), abs=1e-5)


def test_tri_with_three_adapters_offline(tiny, three_adapters):
    """`lrm-ros eval`/`audit` build the backend from options: the same three-adapter tri
    scores a recorded episode through the offline interval-hold."""
    from lrm_ros.bags.reader import Episode
    from lrm_ros.rewards.offline import episode_queries, score_episodes
    from lrm_ros.rewards.options import backend_from_args
    path, _, _ = tiny
    be = backend_from_args("vlm", path, "tri", [f'adapter_path="{three_adapters}"',
                                                 "max_new_tokens=4", "max_pixels=4096"])
    assert be.peft is not None and "contrastive=" in be.model_id
    T = 25
    frames = np.stack(_frames(T, 11))
    z = np.zeros((T, 2))
    ep = Episode(task="PushCube-v1", instruction=TASK, episode=0, ticks=np.arange(T),
                 stamps_ns=np.arange(T) * 50_000_000, frames=frames, actions=np.zeros((T - 1, 7)),
                 joint_names=["a", "b"], joint_positions=z, joint_velocities=z,
                 dense_rewards=np.zeros(T), normalized_dense_rewards=np.zeros(T),
                 successes=np.zeros(T, bool), failures=np.zeros(T, bool), episode_end=True,
                 end_reason=1)
    queries = episode_queries(ep, "ep0", 10, sorted(be.needs))
    assert [q.tick for q in queries] == [10, 20, 24]
    (results,) = score_episodes(be, [("ep0", queries)], progress=False).values()
    assert len(results) == 3
    for i, r in enumerate(results):
        asked = set(r.raw["answers"])
        assert asked == ({"progress", "completion"} if i == 0 else
                         {"progress", "completion", "contrastive"})
        assert r.raw["profile"] == "lrm_released"
