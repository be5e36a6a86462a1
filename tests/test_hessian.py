"""Lanczos extreme eigenvalues against Hessians known in closed form."""

import pytest
import torch

from losstopo.hessian import extreme_eigenvalues


def test_quadratic_with_one_negative_direction_is_a_saddle():
    eigenvalues = torch.tensor([-1.0, 0.5, 2.0, 3.0, 7.0], dtype=torch.float64)
    rotation, _ = torch.linalg.qr(torch.randn(5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))
    hessian = rotation @ torch.diag(eigenvalues) @ rotation.T
    result = extreme_eigenvalues(lambda t: 0.5 * t @ hessian @ t, torch.zeros(5, dtype=torch.float64))
    assert result.smallest == pytest.approx(-1.0, abs=1e-9) and result.largest == pytest.approx(7.0, abs=1e-9)
    assert result.is_saddle and result.gradient_norm == 0.0


def test_rosenbrock_minimum_is_not_a_saddle():
    def rosenbrock(t):
        return (1 - t[0]) ** 2 + 100 * (t[1] - t[0] ** 2) ** 2

    result = extreme_eigenvalues(rosenbrock, torch.tensor([1.0, 1.0], dtype=torch.float64))
    # Hessian at (1, 1): [[802, -400], [-400, 200]], eigenvalues 501 -+ sqrt(301^2 + 400^2)
    assert result.smallest == pytest.approx(501 - (301 ** 2 + 400 ** 2) ** 0.5, rel=1e-8)
    assert not result.is_saddle


def test_large_random_spectrum_smallest_eigenvalue_converges():
    generator = torch.Generator().manual_seed(0)
    matrix = torch.randn(300, 300, dtype=torch.float64, generator=generator)
    hessian = (matrix + matrix.T) / 2
    exact = torch.linalg.eigvalsh(hessian)
    result = extreme_eigenvalues(lambda t: 0.5 * t @ hessian @ t, torch.zeros(300, dtype=torch.float64), iterations=120)
    assert result.smallest == pytest.approx(float(exact[0]), rel=1e-3)
