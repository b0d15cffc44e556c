"""Image-to-3D with Gaussians: reference image loading, bad input, the reference loss, a full tiny run."""

import json

import imageio.v2 as imageio
import numpy as np
import pytest
import torch

from dreampropeller.bench.picard import states_equal
from dreampropeller.config.loading import ConfigError, build, merge_config
from dreampropeller.config.schema import TextTo3DConfig
from dreampropeller.export.gaussians import read_gaussian_ply
from dreampropeller.guidance.tiny.model import TinyPrior, TinyPriorConfig
from dreampropeller.picard.solver import PicardSolver, SolverConfig, run_sequential
from dreampropeller.runs.driver import run_text_to_3d
from dreampropeller.runs.loading import load_run
from dreampropeller.scene.gaussians import MEANS
from dreampropeller.systems.factory import build_process, validate
from dreampropeller.systems.image_to_3d import ImageError, load_reference_image

TINY = [
    "representation=gaussians",
    "render.height=16",
    "render.width=16",
    "render.batch_size=2",
    "gaussians.num_points=120",
    "gaussians.densify.start=1",
    "gaussians.densify.interval=3",
    "gaussians.densify.grad_threshold=1.0",
    "gaussians.densify.max_count=1000",
    "steps=6",
    "export.turntable_views=4",
    "export.video_size=16",
    "export.mesh_resolution=24",
]


def disc_image(path, channels=4, size=24):
    """A red disc: RGBA with alpha, or RGB on white."""
    yy, xx = np.mgrid[:size, :size]
    inside = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2
    img = np.full((size, size, channels), 255, np.uint8)
    img[inside, 1:3] = 0
    if channels == 4:
        img[..., 3] = np.where(inside, 255, 0)
        img[~inside, :3] = 0  # colour under alpha 0 must not matter
    imageio.imwrite(path, img)
    return path


def make_cfg(image, *overrides):
    data = merge_config(
        TextTo3DConfig(), overrides=[*TINY, f"image.path={image}", *overrides], free=["optimizer"]
    )
    return build(TextTo3DConfig, data)


@pytest.fixture(scope="module")
def prior_dir(tmp_path_factory):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("prior")
    TinyPrior(TinyPriorConfig(channels=(16, 32, 32), text_dim=32, pooled_dim=32)).save(directory)
    return directory


@pytest.mark.parametrize("channels", [3, 4])
def test_rgba_and_white_background_images_load_alike(tmp_path, channels):
    rgb, mask = load_reference_image(disc_image(tmp_path / "a.png", channels), 16, 16)
    assert rgb.shape == (16, 16, 3) and mask.shape == (16, 16, 1)
    assert float(mask[8, 8]) == pytest.approx(1.0) and float(mask[0, 0]) == pytest.approx(0.0)
    assert rgb[8, 8].tolist() == pytest.approx([1.0, 0.0, 0.0])
    assert rgb[0, 0].tolist() == pytest.approx([1.0, 1.0, 1.0])  # background is white either way


def test_bad_images_are_one_clear_line(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image at all")
    gray = tmp_path / "gray.png"
    imageio.imwrite(gray, np.zeros((8, 8), np.uint8))
    two = tmp_path / "two.png"
    imageio.imwrite(two, np.zeros((8, 8, 2), np.uint8))
    cases = [
        (tmp_path / "missing.png", "not found"),
        (bad, "cannot read image"),
        (gray, "has 1 colour channels"),
        (two, "has 2 colour channels"),
    ]
    for path, message in cases:
        with pytest.raises(ImageError, match=message) as err:
            load_reference_image(path, 16, 16)
        assert "\n" not in str(err.value) and ("RGB" in str(err.value) or "PNG" in str(err.value))


def test_image_run_is_exact_through_densification(tmp_path, prior_dir):
    cfg = make_cfg(disc_image(tmp_path / "disc.png"), "image.warmup=false")
    proc = build_process(cfg, TinyPrior.load(prior_dir))  # no prompt: unconditional guidance
    x0 = proc.initial_state()
    out = proc.unit(x0, 0)
    assert float(out[MEANS].abs().sum()) > 0
    seq = run_sequential(proc, x0, 6).state
    prop = PicardSolver(proc, SolverConfig(window=4, threshold=0.0, adaptive=False)).run(x0, 6).state
    assert states_equal(seq, prop)
    assert seq[MEANS].shape[0] > x0[MEANS].shape[0]  # densified inside the windows


def test_reference_loss_alone_fits_the_reference_view(tmp_path, prior_dir):
    from dreampropeller.scene.gaussian_raster import rasterize_gaussians

    cfg = make_cfg(
        disc_image(tmp_path / "disc.png"),
        "image.warmup=false",
        "loss.lambda_sds=0",
        "gaussians.optimizer={name: adam, lr: 0.05}",
        "gaussians.densify.start=100",
        "steps=30",
    )
    proc = build_process(cfg, TinyPrior.load(prior_dir))

    def ref_error(state):
        params = {k: v for k, v in state.items() if k.startswith("gaussians.")}
        r = rasterize_gaussians(params, proc.reference.camera, 16, 16, 1.0)
        return float((r["rgb"][0] - proc.reference.rgb).square().mean())

    x0 = proc.initial_state()
    x = run_sequential(proc, x0, 30).state
    assert ref_error(x) < 0.5 * ref_error(x0)


def test_generate_gaussians_end_to_end(tmp_path, prior_dir):
    image = disc_image(tmp_path / "disc.png")
    cfg = make_cfg(image, "prompt=a red ball", f"prior_path={prior_dir}", "picard.window=3")
    metrics = run_text_to_3d(cfg, tmp_path / "run", progress=False)
    run = tmp_path / "run"
    for name in ("gaussians.ply", "turntable.mp4", "views.png", "mesh.obj", "mesh.glb", "metrics.json"):
        assert (run / name).is_file(), name
    assert not (run / "INCOMPLETE").exists()
    written = json.loads((run / "metrics.json").read_text())
    assert written["steps"] == 6 == metrics["steps"]
    ref = written["reference"]  # the front view against the disc: scored as reference_scores does
    assert set(ref) == {"reference_psnr", "reference_mask_iou"} and 0.0 <= ref["reference_mask_iou"] <= 1.0
    assert ref["reference_psnr"] > 0.0
    ply = read_gaussian_ply(run / "gaussians.ply")
    assert list(ply)[:9] == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    assert list(ply)[-8:] == ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    loaded = load_run(run)
    prompt = loaded.cfg.prompt
    faces = loaded.asset.mesh(colour=False).faces
    from dreampropeller.scene.cameras import turntable

    rgb, alpha = loaded.asset.render_fn(16)(turntable(2))
    assert rgb.shape == (2, 16, 16, 3) and alpha.shape == (2, 16, 16, 1)
    assert float(alpha.max()) > 0.5 and prompt == "a red ball" and len(faces) > 0


def test_eval_of_a_run_without_prompt_asks_for_one(tmp_path, capsys, monkeypatch):
    from types import SimpleNamespace

    from dreampropeller.cli import main
    from dreampropeller.runs import loading

    (tmp_path / "run").mkdir()
    unprompted = SimpleNamespace(cfg=SimpleNamespace(prompt=""), asset=None)
    monkeypatch.setattr(loading, "load_run", lambda d: unprompted)
    assert main(["eval", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "has no prompt" in err and "--prompt" in err and len(err.strip().splitlines()) == 1


def test_image_run_config_errors(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        validate(make_cfg(tmp_path / "nope.png"))
    with pytest.raises(ConfigError, match="needs --representation gaussians"):
        validate(make_cfg(disc_image(tmp_path / "d.png"), "representation=nerf"))


def test_image_flag_selects_gaussians(tmp_path, capsys):
    from dreampropeller.cli import main

    image = disc_image(tmp_path / "disc.png")
    assert main(["generate", "--image", str(image), "--out", str(tmp_path / "r"), "--print-config"]) == 0
    assert "representation: gaussians" in capsys.readouterr().out
    # an explicit representation is the user's word: nerf is refused with the one-line reason
    with pytest.raises(ConfigError, match="needs --representation gaussians"):
        validate(make_cfg(image, "representation=nerf"))


def test_reference_scores_against_hand_values(tmp_path):
    from dreampropeller.runs.reference import REFERENCE_RESOLUTION, mask_iou, psnr, reference_scores

    image = disc_image(tmp_path / "disc.png")
    cfg = make_cfg(image)
    r = REFERENCE_RESOLUTION
    rgb_ref, mask_ref = load_reference_image(image, r, r)

    def perfect(cameras):
        return rgb_ref[None], mask_ref[None]

    def empty(cameras):
        return torch.ones(1, r, r, 3), torch.zeros(1, r, r, 1)

    assert reference_scores(perfect, cfg) == {"reference_psnr": None, "reference_mask_iou": 1.0}
    scores = reference_scores(empty, cfg)
    mse = float(((1.0 - rgb_ref.double()) ** 2).mean())
    assert scores["reference_psnr"] == pytest.approx(-10 * np.log10(mse), abs=1e-3)
    assert scores["reference_mask_iou"] == 0.0
    # hand values: two 1x4 masks overlapping in one of three covered pixels
    assert mask_iou(torch.tensor([1.0, 1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 1.0, 0.0])) == 1 / 3
    assert psnr(torch.zeros(4), torch.full((4,), 0.1)) == pytest.approx(20.0)
