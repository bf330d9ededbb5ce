"""The tiny VLA policy: Gaussian head maths, behaviour cloning, checkpoints that are
refused when bad (the running policy is kept)."""
import numpy as np
import pytest
import torch

from lrm_ros.policy.tiny_vla import (PolicyCheckpointError, TinyVLA, TinyVLAConfig,
                                     load_policy, save_policy, train_bc)

torch.set_num_threads(1)


def _batch(n, cfg, seed=0):
    rng = np.random.default_rng(seed)
    return (torch.as_tensor(rng.normal(size=(n, 1280)), dtype=torch.float32),
            torch.as_tensor(rng.normal(size=(n, 384)), dtype=torch.float32),
            torch.as_tensor(rng.normal(size=(n, cfg.proprio_dim)), dtype=torch.float32))


def test_log_prob_is_the_diagonal_gaussian_density_and_deterministic_is_the_mean():
    cfg = TinyVLAConfig(action_dim=3, proprio_dim=4)
    model = TinyVLA(cfg)
    img, txt, pro = _batch(5, cfg)
    action, logp, value = model.act(img, txt, pro)
    mean, log_std, _ = model(img, txt, pro)
    std = log_std.exp()
    by_hand = (-0.5 * ((action - mean) / std) ** 2 - log_std - 0.5 * np.log(2 * np.pi)).sum(-1)
    torch.testing.assert_close(logp, by_hand.detach())
    assert action.shape == (5, 3) and value.shape == (5,)
    det, _, _ = model.act(img, txt, pro, deterministic=True)
    torch.testing.assert_close(det, mean.detach())


def test_behaviour_cloning_fits_a_learnable_mapping():
    rng = np.random.default_rng(1)
    n = 512
    img = rng.normal(size=(n, 1280)).astype(np.float32)
    txt = np.repeat(rng.normal(size=(1, 384)), n, 0).astype(np.float32)
    pro = rng.normal(size=(n, 9)).astype(np.float32)
    actions = np.tanh(pro[:, :7] * 0.5)                 # depends on proprioception
    model, hist = train_bc(img, txt, pro, actions, epochs=40, progress=False)
    assert hist["mse"][-1] < 0.2 * hist["mse"][0]
    assert hist["nll"][-1] < hist["nll"][0]


def test_checkpoint_round_trip_and_bad_checkpoints_are_refused(tmp_path):
    cfg = TinyVLAConfig(action_dim=2, proprio_dim=3)
    model = TinyVLA(cfg)
    sha = save_policy(model, tmp_path / "p.pt", {"version": 3})
    loaded, meta = load_policy(tmp_path / "p.pt", expected_sha256=sha)
    img, txt, pro = _batch(4, cfg)
    torch.testing.assert_close(loaded(img, txt, pro)[0], model(img, txt, pro)[0])
    assert meta == {"version": 3}
    with pytest.raises(PolicyCheckpointError, match="SHA-256"):
        load_policy(tmp_path / "p.pt", expected_sha256="0" * 64)
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(PolicyCheckpointError, match="cannot be read"):
        load_policy(tmp_path / "bad.pt")
    with pytest.raises(PolicyCheckpointError, match="does not exist"):
        load_policy(tmp_path / "missing.pt")
    with torch.no_grad():
        model.log_std.fill_(float("nan"))
    save_policy(model, tmp_path / "nan.pt")
    with pytest.raises(PolicyCheckpointError, match="non-finite"):
        load_policy(tmp_path / "nan.pt")
