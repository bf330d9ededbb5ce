"""`oracle` backend: the simulator's own normalized dense reward at the query tick (the LRM
paper's "Env Reward" upper baseline). Evaluation only: it needs `sim/oracle`, which exists
in simulation alone."""
import math
from typing import List, Sequence

from lrm_ros.rewards.base import RewardBackend, RewardQuery, RewardResult


class OracleRewardBackend(RewardBackend):
    name = "oracle"
    needs = frozenset({"oracle"})
    max_batch = 1024

    def score_batch(self, queries: Sequence[RewardQuery]) -> List[RewardResult]:
        out = []
        for q in queries:
            if q.oracle is None or math.isnan(q.oracle):
                out.append(RewardResult.invalid_result(
                    "no_oracle", message=f"no sim/oracle value for {q.env} episode {q.episode} "
                    f"tick {q.tick}: the oracle backend needs the simulator's sim/oracle topic"))
            else:
                out.append(RewardResult(value=float(q.oracle), progress=float(q.oracle),
                                        raw={"oracle": float(q.oracle)}))
        return out


def make(**config) -> OracleRewardBackend:
    if config:
        raise ValueError(f"the oracle backend takes no settings, got {sorted(config)}")
    return OracleRewardBackend()
