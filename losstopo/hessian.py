"""Extreme Hessian eigenvalues by Lanczos on Hessian-vector products: is a critical point a saddle?

The weight-space symmetry paper (section 4) says permutation points are saddles. The Hessian of a
network's loss is never formed: Lanczos needs only products ``H v`` (double backward), and its
extreme Ritz values converge first, so a few dozen products give the smallest eigenvalue of a
20,000-parameter MLP. A negative smallest eigenvalue (beyond the rounding of the products, relative to
the largest) means a descent direction of second order: a saddle, not a minimum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


@dataclass(frozen=True)
class ExtremeEigenvalues:
    smallest: float
    largest: float
    iterations: int
    gradient_norm: float  # |grad| at the point: near 0 where it is a critical point
    noise: float  # relative size of rounding in the products: 100 x the dtype's machine epsilon

    @property
    def is_saddle(self) -> bool:
        """Negative curvature beyond the rounding of the Hessian-vector products."""
        return self.smallest < -self.noise * max(abs(self.largest), 1e-30)


def hessian_vector_product(f: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor):
    """(gradient at theta, v -> H v) for a scalar function f of a flat vector."""
    point = theta.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(f(point), point, create_graph=True)

    def product(v: torch.Tensor) -> torch.Tensor:
        (hv,) = torch.autograd.grad(grad, point, v, retain_graph=True)
        return hv.detach()

    return grad.detach(), product


def extreme_eigenvalues(f: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor, iterations: int = 60,
                        seed: int = 0) -> ExtremeEigenvalues:
    """Lanczos with full reorthogonalisation from a seeded random start; iterations <= dim."""
    grad, product = hessian_vector_product(f, theta)
    dim = theta.numel()
    iterations = min(iterations, dim)
    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(dim, generator=generator, dtype=theta.dtype).to(theta.device)
    q = q / q.norm()
    basis, alphas, betas = [q], [], []
    for step in range(iterations):
        w = product(basis[-1])
        alpha = torch.dot(w, basis[-1])
        alphas.append(alpha)
        stacked = torch.stack(basis)
        w = w - stacked.T @ (stacked @ w)  # full reorthogonalisation (twice is enough)
        w = w - stacked.T @ (stacked @ w)
        beta = w.norm()
        if step == iterations - 1 or beta <= 1e-12 * max(abs(float(alpha)), 1.0):
            break
        betas.append(beta)
        basis.append(w / beta)
    k = len(alphas)
    tridiagonal = torch.diag(torch.stack(alphas))
    if k > 1:
        off = torch.stack(betas[:k - 1])
        tridiagonal = tridiagonal + torch.diag(off, 1) + torch.diag(off, -1)
    ritz = torch.linalg.eigvalsh(tridiagonal.double())
    return ExtremeEigenvalues(float(ritz[0]), float(ritz[-1]), k, float(grad.norm()),
                              100 * torch.finfo(theta.dtype).eps)
