"""The GPU benchmarks run on a CPU at tiny sizes: bench prior --small and bench vsd --arch tiny."""

import json

import torch

from dreampropeller.bench.random_models import SD21_BASE_UNET, sd_components


def test_sd21_base_unet_config_is_the_published_architecture():
    assert SD21_BASE_UNET["block_out_channels"] == (320, 640, 1280, 1280)
    assert SD21_BASE_UNET["cross_attention_dim"] == 1024 and SD21_BASE_UNET["attention_head_dim"] == (
        5,
        10,
        20,
        20,
    )
    assert SD21_BASE_UNET["use_linear_projection"] is True and SD21_BASE_UNET["sample_size"] == 64


def test_bench_prior_small_cli(tmp_path, capsys):
    torch.set_num_threads(1)
    from dreampropeller.cli import main

    out = tmp_path / "prior.json"
    assert main(["bench", "prior", "--small", "--batches", "1,2", "--repeats", "1", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["architecture"] == "small" and data["dtype"] == "float32"
    assert [r["batch"] for r in data["rows"]] == [1, 2]
    assert all(r["units_per_s"] > 0 for r in data["rows"])
    assert data["rows"][0]["speedup_vs_batch1"] == 1.0
    assert "units/s" in capsys.readouterr().out


def test_bench_vsd_tiny(tmp_path, capsys):
    torch.set_num_threads(1)
    from dreampropeller.bench.vsd_gpu import main

    out = tmp_path / "vsd.json"
    assert (
        main(["--steps", "4", "--window", "2", "--arch", "tiny", "--device", "cpu", "--json", str(out)]) == 0
    )
    data = json.loads(out.read_text())
    assert [m["mode"] for m in data["modes"]] == ["worker", "synchronized", "accepted"]
    for m in data["modes"]:
        seq, prop = m["sequential"], m["propelled"]
        assert seq["iterations"] == 4 and prop["status"] == "done"
        assert 1 <= prop["iterations"] <= 4 and m["wall_clock_ratio"] > 0
        # like with like: sequentially a LoRA step per step; propelled, synchronized keeps one per
        # accepted step, the others take one per window (worker: every slot's renders; accepted: the
        # accepted slots' renders)
        assert seq["lora_steps"] == 4
        assert prop["lora_steps"] == (4 if m["mode"] == "synchronized" else prop["iterations"])
    assert "wall-clock ratio" in capsys.readouterr().out


def test_tiny_sd_components_shapes():
    c = sd_components("tiny")
    assert c["unet"].config.in_channels == 4 and c["vae"].config.latent_channels == 4
