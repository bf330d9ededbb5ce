"""PPO math: GAE two ways, the clipped surrogate by hand, KL, stale-reward weights."""
import math

import numpy as np
import pytest
import torch

from lrm_ros.learn.ppo import (PPOConfig, compute_gae, gae_direct, gaussian_kl, ppo_losses,
                               stale_weights)


@pytest.mark.parametrize("last_done", [False, True])
def test_gae_recursion_equals_the_direct_sum_across_episode_ends(last_done):
    rng = np.random.default_rng(0)
    T = 37
    rewards, values = rng.normal(size=T), rng.normal(size=T)
    dones = np.zeros(T, bool)
    dones[[5, 20]] = True
    adv, ret = compute_gae(rewards, values, dones, 0.7, last_done, 0.99, 0.95)
    direct = gae_direct(rewards, values, dones, 0.7, last_done, 0.99, 0.95)
    np.testing.assert_allclose(adv, direct, atol=1e-10)
    np.testing.assert_allclose(ret, adv + values)


def test_gae_by_hand_on_two_steps():
    # gamma 0.5, lambda 1: delta1 = 1 + 0.5*4 - 3 = 0; delta0 = 2 + 0.5*3 - 1 = 2.5
    adv, _ = compute_gae([2.0, 1.0], [1.0, 3.0], [False, False], 4.0, False, 0.5, 1.0)
    assert adv.tolist() == [2.5 + 0.5 * 0.0, 0.0]


def test_clipped_surrogate_by_hand():
    cfg = PPOConfig(clip_coef=0.2, vf_coef=0.0, ent_coef=0.0, kl_coef=0.0, norm_adv=False)
    ratio = torch.tensor([1.5, 0.5, 1.1])
    adv = torch.tensor([1.0, 1.0, -2.0])
    out = ppo_losses(ratio.log(), torch.zeros(3), adv, torch.zeros(3), torch.zeros(3),
                     torch.zeros(3), torch.zeros(3), torch.ones(3), cfg)
    # max(-A r, -A clip(r)): [-1.2, -0.5, 2.2] -> mean 0.1667
    assert float(out["pg_loss"]) == pytest.approx((-1.2 - 0.5 + 2.2) / 3)
    assert float(out["clipfrac"]) == pytest.approx(2 / 3)


def test_stale_steps_are_skipped_or_flagged_never_silently_mixed():
    assert stale_weights([False, True, False], "skip").tolist() == [1.0, 0.0, 1.0]
    assert stale_weights([False, True, False], "flag").tolist() == [1.0, 1.0, 1.0]
    cfg = PPOConfig(vf_coef=1.0, kl_coef=0.0, norm_adv=False)
    values, returns = torch.tensor([0.0, 0.0]), torch.tensor([1.0, 100.0])
    out = ppo_losses(torch.zeros(2), torch.zeros(2), torch.zeros(2), values, returns,
                     torch.zeros(2), torch.zeros(2), torch.tensor([1.0, 0.0]), cfg)
    assert float(out["v_loss"]) == pytest.approx(0.5)          # the stale step adds nothing
    with pytest.raises(ValueError, match="skip"):
        stale_weights([True], "ignore")


def test_gaussian_kl_zero_for_equal_and_closed_form_otherwise():
    mu, log_std = torch.zeros(4), torch.zeros(4)
    assert float(gaussian_kl(mu, log_std, mu, log_std)) == 0.0
    # KL(N(1,1)||N(0,1)) = 0.5 per dim
    assert float(gaussian_kl(torch.ones(2), torch.zeros(2), torch.zeros(2), torch.zeros(2))) == pytest.approx(1.0)
    # KL(N(0,s^2)||N(0,1)) = -log s + (s^2 - 1)/2
    s = 2.0
    assert float(gaussian_kl(torch.zeros(1), torch.tensor([math.log(s)]), torch.zeros(1), torch.zeros(1))) == \
        pytest.approx(-math.log(s) + (s * s - 1) / 2)


def test_config_validation():
    with pytest.raises(ValueError, match="stale_rewards"):
        PPOConfig(stale_rewards="ignore")
    with pytest.raises(ValueError, match="gamma"):
        PPOConfig(gamma=0.0)


def test_discounted_returns_cut_at_episode_ends_and_bootstrap_otherwise():
    from lrm_ros.learn.ppo import discounted_returns
    r = [1.0, 1.0, 1.0, 1.0]
    np.testing.assert_allclose(discounted_returns(r, [False, True, False, False], 0.5, last_value=2.0),
                               [1.5, 1.0, 2.0, 2.0])
    np.testing.assert_allclose(discounted_returns(r, [False, False, False, True], 0.5, last_value=9.0),
                               [1.875, 1.75, 1.5, 1.0])
