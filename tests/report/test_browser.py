"""report.html in a real browser (headless Chromium, Debian's `chromium`, driven by playwright): the 3D
viewer shows the object in its colour and turns and zooms, the splats show, every plot has a size, the
video decodes, no console error, and nothing but the file itself is requested (offline)."""

import io
import shutil
from pathlib import Path

import numpy as np
import pytest

from dreampropeller.cli import main

from .conftest import copy_run, write_splats

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium; .ci/run installs it)"
)
BACKGROUND = np.array([237, 240, 245])  # the viewer's clear colour (0.93, 0.94, 0.96)
SPLAT_RGB = (0.1, 0.8, 0.2)


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra")
    with sync_api.sync_playwright() as p:
        # software WebGL (SwiftShader): the same pixels on any machine, no GPU needed
        b = p.chromium.launch(
            executable_path=CHROMIUM, args=["--enable-unsafe-swiftshader", "--use-angle=swiftshader"]
        )
        yield b
        b.close()


class Page:
    """A page of ``browser`` at ``path`` that records console errors and blocks every request but the file."""

    def __init__(self, browser, path: Path) -> None:
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.route("**/*", self._route)
        self.page.goto(path.resolve().as_uri())
        self.page.wait_for_function(
            "[...document.querySelectorAll('canvas.dp-viewer')].every(c => c.dataset.ready)", timeout=30_000
        )

    def _route(self, route) -> None:
        url = route.request.url
        if url.startswith("file://"):
            route.continue_()
        else:
            self.requests.append(url)
            route.abort()

    def canvas_pixels(self, selector: str, save: Path | None = None) -> np.ndarray:
        from PIL import Image

        png = self.page.locator(selector).screenshot(path=str(save) if save else None)
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def object_pixels(img: np.ndarray) -> np.ndarray:
    """The pixels that are not the viewer's background."""
    return img[np.abs(img - BACKGROUND).max(-1) > 40]


def chromaticity(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb, dtype=float)
    return rgb / np.maximum(rgb.sum(-1, keepdims=True), 1e-6)


def test_the_viewer_shows_the_object_in_its_colour_and_every_plot(browser, tiny_run, tmp_path):
    import trimesh

    page = Page(browser, tiny_run / "report.html")
    img = page.canvas_pixels("#viewer-0", save=tmp_path / "viewer.png")
    obj = object_pixels(img)
    assert 0.02 < len(obj) / (img.shape[0] * img.shape[1]) < 0.9, "the object fills part of the canvas"
    colours = trimesh.load(tiny_run / "mesh.glb", force="mesh").visual.vertex_colors[:, :3]
    # lambert shading scales the colour: its chromaticity stays the mesh's
    assert np.abs(np.median(chromaticity(obj), 0) - chromaticity(colours.mean(0))).max() < 0.04
    plots = page.page.locator("figure.plot svg")
    assert plots.count() == 5
    for i in range(plots.count()):
        box = plots.nth(i).bounding_box()
        assert box["width"] > 200 and box["height"] > 80, i
    assert page.page.evaluate("document.querySelector('video').error") is None
    page.page.wait_for_function("document.querySelector('video').readyState >= 1", timeout=10_000)
    # orbit (drag) and zoom (wheel) change the view
    box = page.page.locator("#viewer-0").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.page.mouse.move(cx, cy)
    page.page.mouse.down()
    page.page.mouse.move(cx + 120, cy + 40, steps=4)
    page.page.mouse.up()
    page.page.wait_for_timeout(100)
    camera = page.page.evaluate(
        "(c => [c.azimuth, c.elevation])(document.querySelector('#viewer-0').viewer.camera)"
    )
    assert camera != pytest.approx([0.6, 0.35])  # turned from the start view
    page.page.mouse.wheel(0, 600)  # zoom out: the object gets smaller
    page.page.wait_for_timeout(100)
    assert len(object_pixels(page.canvas_pixels("#viewer-0"))) < 0.8 * len(obj)
    assert page.errors == [] and page.requests == []


def test_a_comparison_shows_both_runs_and_the_splats(browser, tiny_run, tmp_path):
    other = copy_run(tiny_run, tmp_path / "gaussian")
    write_splats(other / "gaussians.ply", rgb=SPLAT_RGB)
    out = tmp_path / "compare.html"
    assert main(["report", str(tiny_run), str(other), "--no-eval", "--out", str(out)]) == 0
    page = Page(browser, out)
    assert page.page.locator("canvas.dp-viewer").count() == 2
    splats = object_pixels(page.canvas_pixels("#viewer-1", save=tmp_path / "splats.png"))
    assert len(splats) > 500
    assert np.abs(np.median(chromaticity(splats), 0) - chromaticity(SPLAT_RGB)).max() < 0.05
    # the viewers share one camera: turning the first turns the second
    before = page.canvas_pixels("#viewer-1")
    box = page.page.locator("#viewer-0").bounding_box()
    page.page.mouse.move(box["x"] + 100, box["y"] + 100)
    page.page.mouse.down()
    page.page.mouse.move(box["x"] + 220, box["y"] + 130, steps=4)
    page.page.mouse.up()
    page.page.wait_for_timeout(100)
    assert (np.abs(page.canvas_pixels("#viewer-1") - before).max(-1) > 40).mean() > 0.005
    page.page.click('button[data-viewer="viewer-1"][data-viewer-mode="mesh"]')
    page.page.wait_for_timeout(100)
    mesh = object_pixels(page.canvas_pixels("#viewer-1"))
    assert np.abs(np.median(chromaticity(mesh), 0) - chromaticity(SPLAT_RGB)).max() > 0.05  # now the mesh
    assert page.page.locator("#compare table tr").count() > 5
    assert page.errors == [] and page.requests == []
