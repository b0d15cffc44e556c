"""Benchmarks build a fresh prior (and LoRA) for every run: nothing trained in one run reaches the next."""

import json

import torch

import dreampropeller.bench.generate as bench_generate_module
import dreampropeller.bench.vsd as bench_vsd_module
from dreampropeller.guidance.registry import load_prior
from dreampropeller.guidance.vsd import VSDConfig, add_lora, lora_parameters

TINY = ["render.height=16", "render.width=16", "render.batch_size=1", "render.num_samples=8"]
TINY += ["nerf.n_levels=4", "nerf.log2_hashmap_size=10", "nerf.finest_resolution=64", "levels.start=2"]
TINY += ["vsd.lora_rank=2", "vsd.camera_hidden=8", "vsd.lora_lr=0.01", "occupancy.enabled=false"]


def spy(monkeypatch, module, record=lambda cfg, process: (process, process.guidance.lora_tensors())):
    """Record every process a benchmark builds (by default with its LoRA as built, before any
    training); the scoring is stubbed out (what is tested is what each run starts from, not its scores)."""
    monkeypatch.setattr(bench_generate_module, "EVAL_RESOLUTION", 16)
    monkeypatch.setattr(
        bench_generate_module,
        "score_asset",
        lambda asset, prompt: dict.fromkeys(bench_generate_module.SCORES, 1.0),
    )
    built = []
    real = module.make_process

    def make(cfg):
        process = real(cfg)
        built.append(record(cfg, process))
        return process

    monkeypatch.setattr(module, "make_process", make)
    return built


def init_lora():
    prior = load_prior("tiny", None, "cpu")
    add_lora(prior, VSDConfig(lora_rank=2, camera_hidden=8))
    return {k: v.detach().clone() for k, v in lora_parameters(prior).items()}


def test_bench_vsd_runs_each_mode_on_a_fresh_lora(monkeypatch, tmp_path, capsys):
    torch.set_num_threads(1)
    built = spy(monkeypatch, bench_vsd_module)
    from dreampropeller.cli import main

    out = tmp_path / "vsd.json"
    args = ["bench", "vsd", "--steps", "2", "--window", "2", "--seeds", "0", "--modes", "worker,accepted"]
    assert main([*args, "--json", str(out), *TINY]) == 0
    init = init_lora()
    assert len(built) == 3  # sequential, worker, accepted
    assert len({id(p.guidance.prior) for p, _ in built}) == 3
    for process, at_start in built:
        assert all(torch.equal(at_start[k], init[k]) for k in init)  # every run starts from the init
        trained = process.guidance.lora_tensors()
        assert any(not torch.equal(trained[k], init[k]) for k in init)  # and trains (it would leak)
    data = json.loads(out.read_text())
    assert [m["mode"] for m in data["modes"]] == ["worker", "accepted"]
    assert data["steps"] == 2 and data["prior"] == "tiny"
    for m in data["modes"]:
        assert 1.0 <= m["rounds_speedup"] <= 2.0 and m["units_per_step"] >= 1.0
        assert m["scores"]["shape_r_precision"] is not None
    assert "PSNR seq" in capsys.readouterr().out


def test_bench_generate_gives_sequential_and_propelled_their_own_prior(monkeypatch):
    torch.set_num_threads(1)
    built = spy(monkeypatch, bench_generate_module)
    overrides = [*TINY, "guidance=vsd", "sds.guidance_scale=7.5", "sds.cfg_convention=diffusers"]
    bench_generate_module.bench_generate("a red cube", 2, 2, (0,), overrides)
    init = init_lora()
    assert len(built) == 2 and built[0][0].guidance.prior is not built[1][0].guidance.prior
    assert all(torch.equal(at_start[k], init[k]) for _, at_start in built for k in init)
