"""LoRA supervised fine-tuning of a Qwen-VL into an LRM reward model (the `vlm` backend).

Labelled examples (progress / completion / contrastive, see lrm_ros.data) are rendered
with the very prompts the `vlm` backend asks at run time (a prompt profile; lrm_ros's own,
config/prompts/lrm_ros.yaml, by default), and the answer the backend's parsers expect is the
training target:

  contrastive  {"more_complete_image": 2}     (1 = the earlier image, 2 = the current one)
  progress     {"completion_progress": 0.7}
  completion   {"task_completed": "yes"}

Only the answer tokens (and the closing <|im_end|>) carry loss. The result is a peft
adapter directory that the `vlm` backend loads with `adapter_path`; its lrm_ros_sft.json
names the profile it was trained with, which the backend then uses by default.

Here it runs on the tiny random Qwen3-VL (tests); on a GPU machine, for Qwen3-VL-8B:

    python -m lrm_ros.learn.lora_vlm --model-path /models/Qwen3-VL-8B-Instruct \\
        --examples data/labels/train.npz --out adapters/lrm_lora --epochs 1 --device cuda \\
        --dtype bfloat16 --batch-size 8 --lr 1e-4 --rank 16
"""
import argparse
import json
import math
import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

SIGNAL_PROMPT = {"contrastive": "contrastive", "completion": "completion"}


@dataclass(frozen=True)
class SFTSample:
    """One prompt/answer pair. `images` maps the prompt's image roles (first, previous,
    current) to RGB uint8 frames."""
    signal: str                       # contrastive | progress | completion
    instruction: str
    images: Dict[str, np.ndarray]
    answer: str


def answer_text(signal: str, target) -> str:
    """The JSON answer the backend's parser expects for a label."""
    if signal == "progress":
        value = min(1.0, max(0.0, round(float(target) * 10) / 10))
        return json.dumps({"completion_progress": value})
    if signal == "completion":
        return json.dumps({"task_completed": "yes" if float(target) >= 0.5 else "no"})
    if signal == "contrastive":           # target 1 = the current image is closer to done
        return json.dumps({"more_complete_image": 2 if float(target) >= 0.5 else 1})
    raise ValueError(f"unknown signal {signal!r}; expected progress, completion or contrastive")


def prompt_name(signal: str, images: Dict[str, np.ndarray]) -> str:
    if signal == "progress":
        return "progress" if images.get("first") is not None else "progress_current_only"
    return SIGNAL_PROMPT[signal]


def samples_from_examples(ex, max_per_signal: Optional[int] = None, seed: int = 0,
                          use_first_frame: bool = True) -> List[SFTSample]:
    """SFT samples from a labelled example set (lrm_ros.data.lite_data.LiteExamples:
    a frame table, instructions, and index arrays per signal)."""
    rng = random.Random(seed)
    frames, instr = ex.frames, ex.instructions
    out: List[SFTSample] = []

    def take(rows):
        rows = list(rows)
        rng.shuffle(rows)
        return rows[:max_per_signal] if max_per_signal else rows

    for f, first, i, target in take(zip(ex.progress_frame, ex.progress_first, ex.progress_instr,
                                        ex.progress_target)):
        images = {"current": frames[f]}
        if use_first_frame and first >= 0:
            images["first"] = frames[first]
        out.append(SFTSample("progress", instr[i], images, answer_text("progress", target)))
    for f, i, label in take(zip(ex.completion_frame, ex.completion_instr, ex.completion_label)):
        out.append(SFTSample("completion", instr[i], {"current": frames[f]},
                             answer_text("completion", label)))
    for p, c, i, label in take(zip(ex.contrastive_prev, ex.contrastive_cur, ex.contrastive_instr,
                                   ex.contrastive_label)):
        out.append(SFTSample("contrastive", instr[i], {"previous": frames[p], "current": frames[c]},
                             answer_text("contrastive", label)))
    rng.shuffle(out)
    return out


@dataclass
class LoraConfigArgs:
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: Sequence[str] = ("q_proj", "k_proj", "v_proj", "o_proj",
                                     "gate_proj", "up_proj", "down_proj")
    lr: float = 1e-4
    epochs: float = 1.0
    batch_size: int = 4
    max_steps: int = 0                 # 0 = epochs decide
    seed: int = 0


class SFTEncoder:
    """Renders samples with the backend's prompts and tokenizes prompt + answer, with labels
    masking everything but the answer."""

    def __init__(self, processor, prompts):
        self.processor = processor
        self.prompts = prompts
        self.end = "<|im_end|>"

    def encode(self, batch: Sequence[SFTSample]):
        from lrm_ros.rewards.prompts import build_messages
        proc = self.processor
        texts, images, prompt_lens = [], [], []
        for s in batch:
            prompt = getattr(self.prompts, prompt_name(s.signal, s.images))
            messages, ims = build_messages(prompt, s.instruction, s.images, self.prompts.system,
                                           self.prompts.instruction)
            text = proc.render(messages)
            n_tok = proc.tokens_per_image(proc.preprocess_images(ims)[1]) if ims else []
            prompt_lens.append(len(proc.encode_text(text, n_tok).ids))
            texts.append(text + s.answer + self.end)
            images.append(ims)
        enc = proc(texts, images, padding_side="right")
        labels = enc["input_ids"].clone()
        labels[enc["attention_mask"] == 0] = -100
        for row, n in enumerate(prompt_lens):
            labels[row, :n] = -100
        enc["labels"] = labels
        return enc


def train_lora(model_path: str, samples: Sequence[SFTSample], out_dir: str,
               config: Optional[LoraConfigArgs] = None, device: str = "cpu", dtype: str = "auto",
               prompts_path: str = "", progress: bool = True, model=None, processor=None) -> dict:
    """Fine-tune LoRA adapters on `samples`; writes a peft adapter into `out_dir`.
    Returns {"losses": [...], "steps": n, "out_dir": ...}."""
    import torch
    from peft import LoraConfig, get_peft_model
    from tqdm.auto import tqdm
    from lrm_ros.rewards.prompts import load_prompts
    from lrm_ros.rewards.qwen import load_qwen_vl
    cfg = config or LoraConfigArgs()
    if not samples:
        raise ValueError("train_lora: no samples (build them with samples_from_examples)")
    torch.manual_seed(cfg.seed)
    if model is None or processor is None:
        model, processor = load_qwen_vl(model_path, dtype=dtype, device=device)
    lora = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                      target_modules=list(cfg.target_modules), task_type="CAUSAL_LM")
    # Adapt the language model only; the vision tower stays frozen.
    lora.target_modules = r".*language_model.*\.(" + "|".join(cfg.target_modules) + r")$"
    peft_model = get_peft_model(model, lora)
    peft_model.train()
    prompts = load_prompts(prompts_path or None)
    if prompts.answer_format != "lrm_ros":
        raise ValueError(f"train_lora: profile {prompts.profile!r} reads answers in the "
                         f"{prompts.answer_format!r} format; lrm_ros trains adapters in its own "
                         f"answer format only (use a profile with answer_format: lrm_ros)")
    encoder = SFTEncoder(processor, prompts)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=cfg.lr)
    steps_per_epoch = math.ceil(len(samples) / cfg.batch_size)
    total = cfg.max_steps or max(1, int(round(cfg.epochs * steps_per_epoch)))
    order = list(range(len(samples)))
    rng = random.Random(cfg.seed)
    losses: List[float] = []
    bar = tqdm(total=total, desc="LoRA SFT", unit="step", disable=not progress)
    step = 0
    while step < total:
        rng.shuffle(order)
        for start in range(0, len(order), cfg.batch_size):
            if step >= total:
                break
            batch = [samples[i] for i in order[start:start + cfg.batch_size]]
            enc = {k: v.to(device) for k, v in encoder.encode(batch).items()}
            out = peft_model(**enc)
            optim.zero_grad()
            out.loss.backward()
            optim.step()
            losses.append(float(out.loss.detach()))
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()
    peft_model.eval()
    out = Path(out_dir)
    tmp = out.with_name(out.name + ".tmp")
    peft_model.save_pretrained(str(tmp))
    (tmp / "lrm_ros_sft.json").write_text(json.dumps({
        "base_model": str(model_path), "prompts": prompts_path or prompts.profile,
        "samples": len(samples), "steps": step,
        "final_loss": losses[-1], "lora": {"rank": cfg.rank, "alpha": cfg.alpha,
                                            "target_modules": list(cfg.target_modules)}}, indent=2))
    if out.exists():
        import shutil
        shutil.rmtree(out)
    os.replace(tmp, out)
    return {"losses": losses, "steps": step, "out_dir": str(out)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lrm_ros.learn.lora_vlm", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-path", required=True, help="local Qwen-VL checkpoint directory")
    p.add_argument("--examples", required=True, help="labelled examples (.npz, lrm_ros.data)")
    p.add_argument("--out", required=True, help="adapter output directory")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--max-steps", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--max-per-signal", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--prompts", default="")
    a = p.parse_args(argv)
    from lrm_ros.data.lite_data import LiteExamples
    ex = LiteExamples.load(a.examples)
    samples = samples_from_examples(ex, a.max_per_signal or None)
    cfg = LoraConfigArgs(rank=a.rank, alpha=2 * a.rank, lr=a.lr, epochs=a.epochs,
                         batch_size=a.batch_size, max_steps=a.max_steps)
    result = train_lora(a.model_path, samples, a.out, cfg, device=a.device, dtype=a.dtype,
                        prompts_path=a.prompts)
    print(f"adapter: {result['out_dir']} ({result['steps']} steps, final loss "
          f"{result['losses'][-1]:.4f}); use it with the vlm backend's adapter_path")
    return 0


if __name__ == "__main__":
    sys.exit(main())
