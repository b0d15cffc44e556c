"""Bundled prior configs resolve, and `generate --config prolificdreamer` runs VSD on a saved tiny SD."""

import json

import pytest
import torch

from dreampropeller.bench.random_models import save_components, sd_components
from dreampropeller.config.loading import build, merge_config
from dreampropeller.config.schema import TextTo3DConfig

TINY = ["render.height=16", "render.width=16", "render.batch_size=1", "render.num_samples=8"]
TINY += ["nerf.n_levels=4", "nerf.log2_hashmap_size=10", "nerf.finest_resolution=64", "levels.start=2"]
TINY += ["export.turntable_views=2", "export.video_size=16", "export.video_samples=4"]
TINY += ["export.mesh_resolution=16", "vsd.lora_rank=2", "vsd.camera_hidden=8"]


@pytest.mark.parametrize(
    ("name", "prior", "guidance", "scale", "convention"),
    [
        ("dreamfusion-sd", "sd", "sds", 100.0, "threestudio"),
        ("dreamfusion-if", "if", "sds", 20.0, "threestudio"),
        ("prolificdreamer", "sd", "vsd", 7.5, "diffusers"),
    ],
)
def test_bundled_configs(name, prior, guidance, scale, convention):
    cfg = build(TextTo3DConfig, merge_config(TextTo3DConfig(), [name], ["prompt=a cat"], free=["optimizer"]))
    assert (cfg.prior, cfg.guidance, cfg.render.height) == (prior, guidance, 64)
    assert (cfg.sds.guidance_scale, cfg.sds.cfg_convention) == (scale, convention)


def test_generate_prolificdreamer_on_tiny_sd(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
    from dreampropeller.cli import main

    sd = save_components(sd_components("tiny"), tmp_path / "sd")
    out = tmp_path / "run"
    args = ["generate", "a red cube", "--config", "prolificdreamer", "--prior-path", str(sd), "--steps", "3"]
    args += ["--out", str(out), "--device", "cpu", "--window", "2", "--quiet", "vsd.mode=synchronized", *TINY]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 3 and metrics["prior"] == "sd"
    assert "guidance: vsd" in (out / "config.yaml").read_text()
