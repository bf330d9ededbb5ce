"""LoRA fine-tuning of the `vlm` backend's model (tiny random Qwen3-VL: the real 8B cannot
run here): labels render into the backend's own prompts and answers, training reduces the
loss, and the adapter loads into the backend, which then answers in the trained format."""
import json

import numpy as np
import pytest

from lrm_ros.learn.lora_vlm import (LoraConfigArgs, SFTEncoder, SFTSample, answer_text,
                                    train_lora)
from lrm_ros.rewards.base import RewardQuery


def test_answers_are_what_the_parsers_expect():
    from lrm_ros.rewards import parsers
    assert json.loads(answer_text("progress", 0.73)) == {"completion_progress": 0.7}
    assert json.loads(answer_text("completion", 1)) == {"task_completed": "yes"}
    assert json.loads(answer_text("contrastive", 0)) == {"more_complete_image": 1}
    with pytest.raises(ValueError, match="signal"):
        answer_text("fun", 1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import torch
    torch.set_num_threads(1)
    from lrm_ros.rewards.qwen import load_qwen_vl
    from lrm_ros.rewards.qwen_tiny import make_tiny_qwen3vl
    path = make_tiny_qwen3vl(tmp_path_factory.mktemp("tiny") / "qwen3vl")
    return path


def test_only_the_answer_carries_loss(tiny):
    from lrm_ros.rewards.prompts import load_prompts
    from lrm_ros.rewards.qwen import load_processor
    proc = load_processor(tiny, max_pixels=64 * 64)
    frame = np.zeros((64, 64, 3), np.uint8)
    enc = SFTEncoder(proc, load_prompts()).encode(
        [SFTSample("completion", "pick up the cube", {"current": frame}, answer_text("completion", 1))])
    labelled = enc["labels"][0][enc["labels"][0] != -100].tolist()
    assert proc.decode(labelled, skip_special_tokens=False) == '{"task_completed": "yes"}<|im_end|>'


def test_lora_training_reduces_loss_and_the_backend_loads_the_adapter(tiny, tmp_path):
    from lrm_ros.rewards import make_backend
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(2)]
    samples = [SFTSample("completion", "pick up the cube", {"current": frames[0]},
                         answer_text("completion", 1)),
               SFTSample("completion", "pick up the cube", {"current": frames[1]},
                         answer_text("completion", 0))]
    result = train_lora(tiny, samples, str(tmp_path / "adapter"),
                        LoraConfigArgs(rank=8, alpha=16, lr=3e-3, max_steps=40, batch_size=2),
                        progress=False)
    losses = result["losses"]
    assert np.mean(losses[-5:]) < 0.3 * np.mean(losses[:3]), losses
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
    queries = [RewardQuery("env0", 0, 10, "pick up the cube", frames[0]),
               RewardQuery("env0", 0, 20, "pick up the cube", frames[1])]
    tuned = make_backend("vlm", model_path=tiny, adapter_path=str(tmp_path / "adapter"),
                         signal="completion", max_pixels=64 * 64)
    done, not_done = tuned.score_batch(queries)
    # the adapter records the profile it was trained with; the backend then defaults to it
    assert json.loads((tmp_path / "adapter" / "lrm_ros_sft.json").read_text())["prompts"] == "lrm_ros"
    assert tuned.prompts.profile == "lrm_ros"
    assert done.valid and not_done.valid, (done.raw, not_done.raw)
    assert (done.completion, not_done.completion) == (1.0, 0.0)
    base = make_backend("vlm", model_path=tiny, signal="completion", max_pixels=64 * 64)
    assert not any(r.valid for r in base.score_batch(queries))   # random weights: no format
