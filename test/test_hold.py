"""Interval-hold logic (no ROS, no model): query schedule, frame matching, snapshots,
hold and staleness, episode resets."""
import math

import numpy as np
import pytest

from lrm_ros.rewards.base import RewardResult
from lrm_ros.rewards.hold import HoldConfig, IntervalHold

K = 3


def frame(i):
    return np.full((4, 4, 3), i, np.uint8)


def run_ticks(hold, episode, ticks, end_at=None, with_frames=True):
    """Frame then tick for each tick (the bridge's order); returns (queries, helds)."""
    queries, helds = [], []
    for t in ticks:
        stamp = 1000 * episode + t
        if with_frames:
            queries += hold.on_frame(stamp, frame(t))
        q, h = hold.on_tick(episode, t, stamp, episode_start=(t == 0), episode_end=(t == end_at))
        queries += q
        helds.append(h)
    return queries, helds


def test_config_validation_messages():
    with pytest.raises(ValueError, match="interval"):
        HoldConfig(interval=0)
    with pytest.raises(ValueError, match="stale_after_ticks"):
        HoldConfig(stale_after_ticks=-1)
    assert HoldConfig(interval=5).stale_after == 10


def test_queries_every_k_ticks_and_at_the_terminal_tick_with_snapshots():
    hold = IntervalHold(HoldConfig(interval=K), needs={"previous_frame", "first_frame", "frames"})
    hold.set_instruction("stack the cubes")
    queries, _ = run_ticks(hold, 0, range(8), end_at=7)
    assert [q.tick for q in queries] == [3, 6, 7]
    q3, q6, q7 = queries
    assert q3.frame[0, 0, 0] == 3 and q3.previous_frame[0, 0, 0] == 0 and q3.first_frame[0, 0, 0] == 0
    assert q6.previous_frame[0, 0, 0] == 3 and [f[0, 0, 0] for f in q6.frames] == [0, 3, 6]
    assert q7.previous_frame[0, 0, 0] == 6 and q7.instruction == "stack the cubes"


def test_only_what_the_backend_needs_is_snapshotted():
    hold = IntervalHold(HoldConfig(interval=K), needs=frozenset())
    queries, _ = run_ticks(hold, 0, range(4))
    assert queries[0].previous_frame is None and queries[0].first_frame is None
    assert queries[0].frames == () and queries[0].oracle is None


def test_value_is_held_between_queries_with_its_age():
    hold = IntervalHold(HoldConfig(interval=K, initial_value=0.0))
    queries, helds = run_ticks(hold, 0, range(4))
    assert [h.value for h in helds] == [0.0] * 4 and not helds[0].has_result
    hold.on_result(queries[0], RewardResult(value=0.4, progress=0.4), ok=True)
    _, helds = run_ticks(hold, 0, range(4, 6))
    assert [(h.value, h.query_tick, h.age, h.stale) for h in helds] == [(0.4, 3, 1, False), (0.4, 3, 2, False)]
    assert helds[0].progress == 0.4 and math.isnan(helds[0].completion)


@pytest.mark.parametrize("outcome", ["timeout", "invalid", "error"])
def test_a_failed_query_keeps_the_last_good_value_and_marks_it_stale(outcome):
    hold = IntervalHold(HoldConfig(interval=K))
    queries, _ = run_ticks(hold, 0, range(4))
    hold.on_result(queries[0], RewardResult(value=0.5), ok=True)
    queries, _ = run_ticks(hold, 0, range(4, 7))
    if outcome == "invalid":
        hold.on_result(queries[0], RewardResult.invalid_result("unparseable"), ok=True)
    else:
        hold.on_result(queries[0], None, ok=False)
    _, (h,) = run_ticks(hold, 0, [7])
    assert (h.value, h.query_tick, h.stale) == (0.5, 3, True)
    queries, _ = run_ticks(hold, 0, range(8, 10))
    hold.on_result(queries[0], RewardResult(value=0.9), ok=True)   # recovers
    _, (h,) = run_ticks(hold, 0, [10])
    assert (h.value, h.query_tick, h.stale) == (0.9, 9, False)


def test_held_value_goes_stale_when_too_old():
    hold = IntervalHold(HoldConfig(interval=K, stale_after_ticks=4))
    queries, _ = run_ticks(hold, 0, range(4))
    hold.on_result(queries[0], RewardResult(value=0.5), ok=True)
    _, helds = run_ticks(hold, 0, range(4, 9))       # queries at 6 never answered
    assert [h.stale for h in helds] == [False, False, False, False, True]


def test_a_new_episode_resets_and_old_results_are_discarded():
    hold = IntervalHold(HoldConfig(interval=K))
    queries, _ = run_ticks(hold, 0, range(4))
    _, helds = run_ticks(hold, 1, range(2))
    assert helds[0].episode == 1 and helds[0].value == 0.0
    assert hold.on_result(queries[0], RewardResult(value=0.7), ok=True) is False
    assert hold.results_discarded == 1
    _, (h,) = run_ticks(hold, 1, [2])
    assert h.value == 0.0 and not h.has_result


def test_an_older_query_finishing_after_a_newer_one_is_ignored():
    hold = IntervalHold(HoldConfig(interval=K))
    queries, _ = run_ticks(hold, 0, range(7))
    q3, q6 = queries
    hold.on_result(q6, RewardResult(value=0.6), ok=True)
    assert hold.on_result(q3, RewardResult(value=0.3), ok=True) is False
    assert hold.held_now().value == 0.6


def test_a_query_waits_for_its_frame_arriving_after_the_tick():
    hold = IntervalHold(HoldConfig(interval=K))
    for t in range(3):
        hold.on_frame(t, frame(t))
        hold.on_tick(0, t, t)
    ready, _ = hold.on_tick(0, 3, 3)                  # frame of tick 3 not here yet
    assert ready == []
    ready = hold.on_frame(3, frame(3))
    assert [q.tick for q in ready] == [3] and ready[0].frame[0, 0, 0] == 3
    assert hold.frames_late == 0


def test_a_lost_frame_falls_back_to_the_newest_older_one_after_the_wait():
    hold = IntervalHold(HoldConfig(interval=K, frame_wait_ticks=1))
    for t in range(3):
        hold.on_frame(t, frame(t))
        hold.on_tick(0, t, t)
    assert hold.on_tick(0, 3, 3)[0] == []             # tick 3's frame is lost
    assert hold.on_tick(0, 4, 4)[0] == []             # still waiting (1 tick allowed)
    ready, _ = hold.on_tick(0, 5, 5)
    assert [q.tick for q in ready] == [3] and ready[0].frame[0, 0, 0] == 2
    assert hold.frames_late == 1


def test_a_lost_frame_takes_the_next_frame_of_its_episode_once_that_tick_is_seen():
    hold = IntervalHold(HoldConfig(interval=K, frame_wait_ticks=2))
    for t in range(3):
        hold.on_frame(t, frame(t))
        hold.on_tick(0, t, t)
    assert hold.on_tick(0, 3, 3)[0] == []             # tick 3's frame is lost
    assert hold.on_frame(4, frame(4)) == []           # not yet: tick 4 may be another episode's
    ready, _ = hold.on_tick(0, 4, 4)
    assert [q.tick for q in ready] == [3] and ready[0].frame[0, 0, 0] == 4
    assert hold.frames_late == 1


def test_a_lost_terminal_frame_never_takes_the_next_episode_s_frame():
    hold = IntervalHold(HoldConfig(interval=K))
    for t in range(5):
        hold.on_frame(t, frame(t))
        hold.on_tick(0, t, t)
    assert hold.on_tick(0, 5, 5, episode_end=True)[0] == []    # terminal frame lost
    assert hold.on_frame(1000, frame(99)) == []               # the next episode's first frame
    ready, _ = hold.on_tick(1, 0, 1000, episode_start=True)
    # the terminal query is still made when the episode is over, with its newest own frame
    assert [(q.episode, q.tick) for q in ready] == [(0, 5)] and ready[0].frame[0, 0, 0] == 4
    assert hold.frames_late == 1


def test_no_frame_at_all_fails_the_query_and_marks_stale():
    hold = IntervalHold(HoldConfig(interval=K, frame_wait_ticks=0))
    for t in range(5):
        ready, h = hold.on_tick(0, t, t)
        assert ready == []
    assert hold.frames_missing >= 1 and h.stale


def test_oracle_values_reach_the_query_of_their_tick():
    hold = IntervalHold(HoldConfig(interval=K), needs={"oracle"})
    queries = []
    for t in range(4):
        hold.on_oracle(0, t, t / 10)
        queries += hold.on_frame(t, frame(t))
        queries += hold.on_tick(0, t, t, episode_start=(t == 0))[0]
    assert [q.oracle for q in queries] == [0.3]


def test_topreward_frames_are_thinned_but_keep_the_first():
    hold = IntervalHold(HoldConfig(interval=1, max_frames=4), needs={"frames"})
    queries, _ = run_ticks(hold, 0, range(10))
    last = queries[-1]
    assert len(last.frames) <= 4 and last.frames[0][0, 0, 0] == 0 and last.frames[-1][0, 0, 0] == 9


def test_a_query_waits_for_its_oracle_value_arriving_after_the_tick():
    hold = IntervalHold(HoldConfig(interval=K), needs={"oracle"})
    for t in range(3):
        hold.on_oracle(0, t, t / 10)
        hold.on_frame(t, frame(t))
        hold.on_tick(0, t, t, episode_start=(t == 0))
    hold.on_frame(3, frame(3))
    ready, _ = hold.on_tick(0, 3, 3)                  # tick before its oracle message
    assert ready == []
    ready = hold.on_oracle(0, 3, 0.3)
    assert [(q.tick, q.oracle) for q in ready] == [(3, 0.3)] and ready[0].frame[0, 0, 0] == 3
