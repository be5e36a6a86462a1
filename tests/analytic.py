"""Analytic loss functions on R and R^2 with exactly computable barcodes, shared by tests."""

from __future__ import annotations

import gudhi
import numpy as np
import torch

# Three Gaussian wells of different depths in a shallow bowl, and a hill between the two deepest:
# three minima, two finite bars. The straight segment between wells 0 and 1 crosses the hill, and the
# best direct path from 1 to 0 (around the hill) is higher than going through well 2's basin.
WELL_CENTRES = torch.tensor([[-2.0, 0.0], [2.0, 0.2], [0.3, 2.6]], dtype=torch.float64)
WELL_DEPTHS = torch.tensor([1.0, 0.8, 0.65], dtype=torch.float64)
WELL_WIDTH = 0.7
BOWL = 0.02
HILL_CENTRE = torch.tensor([0.0, 0.3], dtype=torch.float64)
HILL_HEIGHT, HILL_WIDTH = 0.6, 0.5


def wells_2d(thetas: torch.Tensor) -> torch.Tensor:
    """thetas (k, 2) -> (k,) losses."""
    sq = ((thetas[:, None, :] - WELL_CENTRES.to(thetas)) ** 2).sum(-1)
    wells = (WELL_DEPTHS.to(thetas) * torch.exp(-sq / (2 * WELL_WIDTH ** 2))).sum(-1)
    hill = HILL_HEIGHT * torch.exp(-((thetas - HILL_CENTRE.to(thetas)) ** 2).sum(-1) / (2 * HILL_WIDTH ** 2))
    return BOWL * (thetas ** 2).sum(-1) - wells + hill


def wells_1d(thetas: torch.Tensor) -> torch.Tensor:
    """thetas (k, 1) -> (k,): minima near -2, 0.1 and 2.2 of different depths."""
    x = thetas[:, 0]
    return 0.02 * x ** 4 - (1.0 * torch.exp(-(x + 2) ** 2) + 0.7 * torch.exp(-(x - 0.1) ** 2 / 0.5)
                            + 0.85 * torch.exp(-(x - 2.2) ** 2))


def descend_to_minima(fn, starts, steps: int = 4000, lr: float = 0.05) -> list[torch.Tensor]:
    """Plain gradient descent from every start at once: fn maps each row of its (k, d) input alone, so each row
    descends as it would by itself (one batch of 4,000 steps instead of one per start: most of a test's time)."""
    theta = torch.stack([torch.as_tensor(s) for s in starts]).double().reshape(len(starts), -1)
    for _ in range(steps):
        theta.requires_grad_(True)
        (grad,) = torch.autograd.grad(fn(theta).sum(), theta)
        theta = (theta - lr * grad).detach()
    return list(theta)


def grid_barcode(fn, lows, highs, n: int) -> tuple[list[tuple[float, float]], float]:
    """0-dim sublevel-set persistence of fn on a fine grid (gudhi cubical complex), and fn's range there.

    Independent of paths and of our barcode code: the reference answer.
    """
    axes = [np.linspace(lo, hi, n) for lo, hi in zip(lows, highs)]
    mesh = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(axes))
    values = fn(torch.from_numpy(mesh)).numpy().reshape([n] * len(axes))
    complex_ = gudhi.CubicalComplex(vertices=values)
    complex_.compute_persistence(homology_coeff_field=2, min_persistence=1e-9)
    bars = [tuple(map(float, pair)) for pair in complex_.persistence_intervals_in_dimension(0)]
    return sorted(bars), float(values.max() - values.min())


def ring_2d(thetas: torch.Tensor) -> torch.Tensor:
    """thetas (k, 2) -> (k,): a ring valley with two minima near (+-1, 0) and a peak of height ~1 at the
    centre, tilted in y so that a curve started on the straight segment bends one way."""
    x, y = thetas[:, 0], thetas[:, 1]
    return (x ** 2 + y ** 2 - 1) ** 2 - 0.1 * x ** 2 + 0.05 * y


HIMMELBLAU_MINIMA = torch.tensor([[3.0, 2.0], [-2.805118, 3.131312], [-3.779310, -3.283186], [3.584428, -1.848126]],
                                 dtype=torch.float64)
CAMEL_MINIMA = torch.tensor([[0.0898, -0.7126], [-0.0898, 0.7126], [-1.7036, 0.7961], [1.7036, -0.7961],
                             [1.6071, 0.5687], [-1.6071, -0.5687]], dtype=torch.float64)


def himmelblau(thetas: torch.Tensor) -> torch.Tensor:
    """thetas (k, 2) -> (k,): four minima of loss 0, joined through saddles of different heights."""
    x, y = thetas[:, 0], thetas[:, 1]
    return (x ** 2 + y - 11) ** 2 + (x + y ** 2 - 7) ** 2


def six_hump_camel(thetas: torch.Tensor) -> torch.Tensor:
    """thetas (k, 2) -> (k,): six minima in three pairs of depths (-1.03, -0.22, 2.10)."""
    x, y = thetas[:, 0], thetas[:, 1]
    return (4 - 2.1 * x ** 2 + x ** 4 / 3) * x ** 2 + x * y + (-4 + 4 * y ** 2) * y ** 2
