"""Training code (heavy imports live in the submodules, never here):

  lite_data   LiteExamples: labelled examples for the `lite` reward model (frame table +
              progress / completion / contrastive examples)
  train_lite  train the `lite` reward model's heads on frozen features -> checkpoint
  lora_vlm    LoRA fine-tuning of a Qwen-VL reward model
"""
