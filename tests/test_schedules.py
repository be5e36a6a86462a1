import pytest

from losstopo.schedules import garipov_lr, piecewise_linear_lr, triangular_lr


def test_triangular_lr_hand_values():
    assert triangular_lr(0, 0.1, 1.1, 10) == pytest.approx(0.1)
    assert triangular_lr(5, 0.1, 1.1, 10) == pytest.approx(1.1)
    assert triangular_lr(2, 0.1, 1.1, 10) == pytest.approx(0.5)
    assert triangular_lr(10, 0.1, 1.1, 10) == pytest.approx(0.1)


def test_piecewise_schedule_s_c10_hand_values():
    # S_c10 = S(10, 80, 1e-2, 1e-4) with |D| = 100 batches per epoch.
    s = lambda i: piecewise_linear_lr(i, 100, 10, 80, 1e-2, 1e-4)
    assert s(0) == s(1000) == 1e-2  # b_i <= |D| m1
    assert s(8000) == s(20000) == 1e-4  # b_i >= |D| m2
    assert s(4500) == pytest.approx(0.5 * 1e-2 + 0.5 * 1e-4)  # halfway: delta = 3500 / 7000
    assert s(1700) == pytest.approx(0.9 * 1e-2 + 0.1 * 1e-4)  # delta = 700 / 7000


def test_constant_schedule_is_s_lr0():
    assert {piecewise_linear_lr(i, 7, 0, 0, 1e-4, 1e-4) for i in range(0, 100, 13)} == {1e-4}


def test_garipov_schedule_hand_values():
    assert garipov_lr(0, 200, 0.03) == pytest.approx(0.03)
    assert garipov_lr(100, 200, 0.03) == pytest.approx(0.03)
    assert garipov_lr(140, 200, 0.03) == pytest.approx((1 - 0.2 / 0.4 * 0.99) * 0.03)
    assert garipov_lr(190, 200, 0.03) == pytest.approx(0.0003)
