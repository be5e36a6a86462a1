"""Learning-rate schedules of the papers, as pure functions of the iteration."""

from __future__ import annotations


def triangular_lr(iteration: int, lr_base: float, lr_max: float, cycle_iterations: int) -> float:
    """Smith (2015) triangular policy: base -> max -> base over one cycle, repeated (section 2.1)."""
    half = max(cycle_iterations / 2, 1)
    position = (iteration % (2 * half)) / half  # 0 .. 2
    return lr_base + (lr_max - lr_base) * (1 - abs(position - 1))


def piecewise_linear_lr(batch_index: int, batches_per_epoch: int, m1: float, m2: float,
                        lr_max: float, lr_min: float) -> float:
    """S(m1, m2, lr_max, lr_min, i) of Appendix A, per batch: lr_max until epoch m1, linear to lr_min
    at epoch m2, lr_min after. ``S(0, 0, lr0, lr0, .)`` is the constant rate lr0."""
    start, end = batches_per_epoch * m1, batches_per_epoch * m2
    if batch_index <= start:
        return lr_max
    if batch_index >= end:
        return lr_min
    delta = (batch_index - start) / (end - start)
    return (1 - delta) * lr_max + delta * lr_min


def garipov_lr(epoch: int, total_epochs: int, lr_base: float) -> float:
    """Appendix A (Table 6), after Garipov et al. 2018: flat to half, linear to 1% at 90%, then 1%."""
    alpha = epoch / total_epochs
    if alpha <= 0.5:
        return lr_base
    if alpha <= 0.9:
        return (1.0 - (alpha - 0.5) / 0.4 * 0.99) * lr_base
    return 0.01 * lr_base
