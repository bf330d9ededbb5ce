"""Trajectories -> labelled training examples (ROS-free).

  labels    successful episodes (+ failures) -> progress / completion / contrastive examples
            in the LiteExamples layout (:func:`build_examples`, :func:`build_labelled`,
            :func:`split_by_task`)
  lite_data LiteExamples: labelled examples for the `lite` reward model (frame table +
            progress / completion / contrastive examples)
  augment   camera variation (zoom, pan, roll, colour, noise, blur) per episode
  failures  failed rollouts in ManiSkillSim stored as episode bags (imports ManiSkill lazily)
"""
from .labels import (KINDS, SOURCES, LabelConfig, LabelledExamples, build_examples,  # noqa: F401
                     build_labelled, instruction_owner, split_by_task)

__all__ = ["KINDS", "SOURCES", "LabelConfig", "LabelledExamples", "build_examples", "build_labelled",
           "instruction_owner", "split_by_task"]
