"""Training code (heavy imports live in the submodules, never here):

  train_lite  train the `lite` reward model's heads on frozen features -> checkpoint
  lora_vlm    LoRA fine-tuning of a Qwen-VL reward model
"""
