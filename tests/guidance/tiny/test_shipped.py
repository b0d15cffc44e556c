"""The weights shipped in the package: present, small, and they draw what the prompt says."""

import pytest
import torch

from dreampropeller.evaluation.classifier import load_classifier
from dreampropeller.guidance.tiny.library import COLOUR_NAMES, SHAPE_NAMES, parse_prompt
from dreampropeller.guidance.tiny.model import WEIGHTS_DIR, TinyPrior
from dreampropeller.guidance.tiny.sampling import ddim_sample


@pytest.fixture(scope="module")
def prior():
    return TinyPrior.load()


def test_shipped_weights_are_small_and_documented(prior):
    path = WEIGHTS_DIR / "tiny.safetensors"
    assert path.stat().st_size <= 20 * 1024 * 1024
    info = prior.config.info
    assert info["steps"] > 1000 and info["seed"] == 0 and "command" in info
    assert prior.name == "tiny" and not prior.training


def test_shipped_prior_samples_are_right_on_white(prior):
    classifier = load_classifier()
    prompts = [
        "a red cube",
        "a cube that is green",
        "a blue cone",
        "pink cylinder",
        "a yellow torus",
        "cyan octahedron",
    ]
    camera = torch.tensor(
        [
            [20.0, -150.0, 1.8],
            [10.0, -30.0, 1.6],
            [30.0, 40.0, 1.9],
            [0.0, 100.0, 1.7],
            [45.0, 170.0, 1.8],
            [15.0, 0.0, 1.75],
        ]
    )
    images = ddim_sample(
        prior, prompts, camera, steps=20, guidance_scale=2.0, generator=torch.Generator().manual_seed(0)
    )
    shape_logits, colour_logits, _ = classifier(images)
    truth = [parse_prompt(p) for p in prompts]
    assert shape_logits.argmax(-1).tolist() == [SHAPE_NAMES.index(s) for s, _ in truth]
    assert colour_logits.argmax(-1).tolist() == [COLOUR_NAMES.index(c) for _, c in truth]
    corners = images[:, :, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert corners.min() > 0.9  # white background
