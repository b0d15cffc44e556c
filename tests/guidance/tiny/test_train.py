import json

import pytest
import torch
from safetensors.torch import load_file

from dreampropeller.guidance.tiny.data import allowed_combos, build_pool, draw_batch
from dreampropeller.guidance.tiny.library import COLOUR_NAMES, HELD_OUT, SHAPE_NAMES
from dreampropeller.guidance.tiny.model import TinyPrior
from dreampropeller.guidance.tiny.train import TrainConfig, Trainer, lr_factor


def _cfg(out, **kw):
    base = dict(out=str(out), steps=3, batch=4, views_per_shape=2, device="cpu", log_every=1, warmup=2)
    base.update(kw)
    return TrainConfig(**base)


def test_three_step_training_exports_loadable_weights_deterministically(tmp_path):
    lines = []
    path = Trainer(_cfg(tmp_path / "a"), log=lines.append).run()
    again = Trainer(_cfg(tmp_path / "b"), log=lambda s: None).run()
    assert any(line.startswith("step 3 loss") for line in lines)
    a, b = load_file(str(path)), load_file(str(again))
    assert all(torch.equal(a[k], b[k]) for k in a)
    info = json.loads(path.with_suffix(".json").read_text())["info"]
    assert info["steps"] == 3 and info["seed"] == 0 and info["device"] == "cpu"
    prior = TinyPrior.load(path)
    assert prior.predict_noise(
        torch.zeros(1, 3, 32, 32), torch.tensor([5]), prior.encode_text(["a red cube"])
    ).shape == (
        1,
        3,
        32,
        32,
    )


def test_resume_continues_from_the_checkpoint(tmp_path):
    Trainer(_cfg(tmp_path), log=lambda s: None).run()
    lines = []
    trainer = Trainer(_cfg(tmp_path, steps=5, resume=True), log=lines.append)
    assert trainer.step == 3
    trainer.run()
    assert trainer.step == 5
    assert any("resumed" in line for line in lines)


def test_bad_options_raise():
    with pytest.raises(ValueError, match="--steps or --minutes"):
        Trainer(TrainConfig(out="/tmp/unused-prior-run"))
    with pytest.raises(ValueError, match="unknown device"):
        Trainer(TrainConfig(out="/tmp/unused-prior-run", steps=1, device="tpu"))


def test_training_batches_exclude_held_out_and_have_white_background():
    pool = build_pool(4, seed=0)
    allowed = allowed_combos(include_held_out=False)
    batch = draw_batch(pool, 512, torch.Generator().manual_seed(0), allowed)
    pairs = {
        (SHAPE_NAMES[s], COLOUR_NAMES[c]) for s, c in zip(batch.shape_ids.tolist(), batch.colour_ids.tolist())
    }
    assert not pairs & set(HELD_OUT)
    assert len(pairs) > 30
    assert torch.allclose(batch.rgb[:, :, 0, 0], torch.ones(512, 3))
    assert batch.camera[:, 0].min() >= -10 and batch.camera[:, 0].max() <= 60
    assert batch.camera[:, 2].min() >= 1.5 and batch.camera[:, 2].max() <= 2.0


def test_lr_schedule():
    assert lr_factor(0, 0.0, 10, 0.3) == pytest.approx(0.1)
    assert lr_factor(50, 0.5, 10, 0.3) == 1.0
    assert lr_factor(99, 1.0, 10, 0.3) == pytest.approx(0.1)
