#!/usr/bin/env python3
"""Plot bench/results/rl_diagnosis_<task>.json (the runs of bench_table3.py collected there):
evaluation success with 95% Wilson intervals, and the training rollouts' success per iteration.

  .venv/bin/python bench/plot_rl_diagnosis.py bench/results/rl_diagnosis_PushCube.json
"""
import json
import sys
from pathlib import Path

import numpy as np

LABELS = {"il": "IL (BC)", "il_rerun": "IL (BC),\nre-run", "oracle_explore0.1_lr1e-4": "PPO, std 0.1",
          "oracle_explore0.1_headonly_lr3e-4": "PPO, head only", "oracle_group4_lr1e-4": "PPO, group adv.",
          "filtered_bc_oracle": "filtered BC\n(sim. success)",
          "oracle_group4_sil0.25": "PPO, group adv.\n+ self-imitation",
          "oracle_group4_sil0.25_seed1": "+ self-im.,\n--seed 1",
          "oracle_group4_sil0.25_ep16_seed0": "+ self-im.,\n16 per it.",
          "oracle_group4_sil0.25_ep16_seed1": "+ self-im.,\n16 per it., seed 1",
          "oracle_group4_sil0.25_seed2_ema0.8": "+ self-im.,\n--seed 2",
          "oracle_group4_sil0.25_seed3_ema0.8": "+ self-im.,\n--seed 3",
          "oracle_group4_sil0.25_bc4_seed8": "+ self-im.,\n4 BC epochs, seed 8",
          "oracle_group4_sil0.25_bc4_seed9": "+ self-im.,\n4 BC epochs, seed 9",
          "oracle_group4_sil0.25_bc1_seed8": "+ self-im.,\n1 BC epoch, seed 8",
          "oracle_group4_sil0.25_bc1_seed9": "+ self-im.,\n1 BC epoch, seed 9",
          "oracle_group4_sil0.25_demos47_seed10": "+ self-im. with\n47 demos, seed 10",
          "oracle_group4_sil0.25_demos47_seed11": "+ self-im. with\n47 demos, seed 11",
          "oracle_group4_sil0.25_lr3e-5_seed12": "+ self-im.,\nlr 3e-5, seed 12",
          "oracle_seed0": "PPO + self-im.,\nseed 0", "oracle_seed1": "PPO + self-im.,\nseed 1",
          "oracle_seed2": "PPO + self-im.,\nseed 2", "oracle_seed3": "PPO + self-im.,\nseed 3"}


def main(path: str) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    d = json.loads(Path(path).read_text())
    runs = d["runs"]
    names = [k for k in runs if k in LABELS] + [k for k in runs if k not in LABELS]
    label = lambda k: LABELS.get(k, k)          # noqa: E731
    sr = np.array([runs[k]["eval"]["success_rate"] for k in names])
    ci = np.array([runs[k]["eval"]["ci95"] for k in names])
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(14, 5.5))
    a1.bar([label(k) for k in names], sr, yerr=[sr - ci[:, 0], ci[:, 1] - sr], capsize=4,
           color=["grey" if k.startswith("il") else "C2" if k.startswith("filtered") else "C0" for k in names])
    if "il" in runs:
        lo, hi = runs["il"]["eval"]["ci95"]
        a1.axhspan(lo, hi, color="grey", alpha=0.15)
    a1.set_ylabel("success, deterministic eval episodes (95% Wilson)")
    a1.set_ylim(0, 0.6)
    a1.set_title(f"{d['task']} from {d.get('start', 'the shipped tiny_vla')}")
    a1.tick_params(axis="x", labelsize=7, labelrotation=40)
    plt.setp(a1.get_xticklabels(), ha="right", rotation_mode="anchor")
    for k in names:
        h = runs[k].get("history") or []
        if len(h) < 5:
            continue
        y = np.array([r["train_success"] for r in h])
        a2.plot([r["iteration"] for r in h][4:], np.convolve(y, np.ones(5) / 5, mode="valid"),
                label=label(k).replace("\n", " "))
    a2.set_xlabel("iteration")
    a2.set_ylabel("training rollout success (5-iteration mean)")
    a2.set_title("training rollouts (8 per iteration unless the label says 16)")
    a2.legend(fontsize=8)
    fig.tight_layout()
    out = Path(path).with_suffix(".png")
    fig.savefig(out, dpi=110)
    return out


if __name__ == "__main__":
    print(main(sys.argv[1] if len(sys.argv) > 1 else "bench/results/rl_diagnosis_PushCube.json"))
