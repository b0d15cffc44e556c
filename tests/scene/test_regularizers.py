"""Regularizers on hand-made cases."""

import math

import torch

from dreampropeller.scene.regularizers import opacity_entropy, opacity_sparsity, orientation_loss, z_variance


def test_orientation_loss():
    d = torch.tensor([[[0.0, 0.0, -1.0], [0.0, 0.0, -1.0]]])  # [P=1, R=2, 3], looking down -z
    w = torch.tensor([[[0.5, 0.25], [1.0, 0.0]]])  # [1, 2, S=2]
    facing = torch.tensor([0.0, 0.0, 1.0]).expand(1, 2, 2, 3)  # towards the camera
    assert orientation_loss(w, facing, d).item() == 0.0
    away = -facing
    # ray 0: 0.5 * 1 + 0.25 * 1, ray 1: 1 -> mean 0.875
    assert abs(orientation_loss(w, away, d).item() - 0.875) < 1e-6
    tilted = torch.nn.functional.normalize(torch.tensor([1.0, 0.0, -1.0]), dim=0).expand(1, 2, 2, 3)
    assert abs(orientation_loss(w, tilted, d).item() - 0.875 * 0.5) < 1e-6
    # detached weights: the gradient reaches the normals only
    wg = w.clone().requires_grad_(True)
    ng = away.clone().requires_grad_(True)
    orientation_loss(wg, ng, d).backward()
    assert wg.grad is None and ng.grad.abs().sum() > 0


def test_opacity_losses_per_slot():
    op = torch.stack([torch.zeros(4, 1), torch.ones(4, 1), torch.full((4, 1), 0.5)])  # [3, 4, 1]
    sp = opacity_sparsity(op)
    assert torch.allclose(sp, torch.tensor([0.1, math.sqrt(1.01), math.sqrt(0.26)]), atol=1e-6)
    ent = opacity_entropy(op)
    assert ent[0] < 1e-3 and ent[1] < 1e-3 and abs(ent[2].item() - math.log(2)) < 1e-6


def test_z_variance():
    t = torch.tensor([[[1.0, 3.0], [1.0, 3.0], [1.0, 3.0]]])
    w = torch.tensor([[[0.5, 0.5], [0.8, 0.0], [0.0, 0.0]]])  # spread, thin, empty (ignored)
    # ray 0: mean 2, variance 1; ray 1: 0 -> mean over the two non-empty rays 0.5
    assert abs(z_variance(w, t).item() - 0.5) < 1e-6


def test_normal_smoothness_by_hand():
    from dreampropeller.scene.regularizers import normal_smoothness

    # one slot, one 2x2 image: left column faces +z, right column +x, all opaque
    n = torch.zeros(1, 1, 2, 2, 3)
    n[..., 0, 2] = 1.0
    n[..., 1, 0] = 1.0
    o = torch.ones(1, 1, 2, 2, 1)
    # horizontal pairs differ by |(1,0,-1)|^2 = 2 (2 pairs), vertical pairs by 0 (2 pairs)
    assert float(normal_smoothness(n, o)) == 0.5 * (2.0 + 0.0)
    flat = torch.zeros(1, 1, 2, 2, 3)
    flat[..., 2] = 1.0
    assert float(normal_smoothness(flat, o)) == 0.0
    # an empty right column: the silhouette edge carries no loss; normals are read per unit opacity
    half = o.clone()
    half[..., 1, :] = 0.0
    assert float(normal_smoothness(n * half, half)) == 0.0
    assert float(normal_smoothness(0.5 * n, 0.5 * o)) == 0.25 * 0.5 * 2.0
    # slots are separate
    two = normal_smoothness(torch.cat([n, flat]), torch.cat([o, o]))
    assert two.tolist() == [1.0, 0.0]
    n.requires_grad_(True)
    normal_smoothness(n, o).sum().backward()
    assert n.grad.abs().sum() > 0
