from benchmarks.path_study import chosen_budget


def test_chosen_budget_is_the_smallest_that_moves_every_maximum_by_less_than_the_tolerance_when_doubled():
    maxima = {250: [1.0, 2.0], 500: [0.5, 1.9], 1000: [0.499, 1.899], 2000: [0.4989, 1.8989]}
    assert chosen_budget(maxima, 0.01) == 500
    assert chosen_budget(maxima, 1e-6) is None  # no doubling is that still
    assert chosen_budget({250: [1.0], 1000: [1.0]}, 0.01) is None  # not a doubling


def test_normalized_steps_have_no_cap_off_run_and_bf16_runs_only_where_it_is_fast():
    from benchmarks.path_study import StudyRun, study_runs

    sgd = study_runs(19, 1.0, "sgd", 4000, bf16=False)
    assert sgd == [StudyRun(19, 1.0, 4000), StudyRun(37, 1.0, 2000), StudyRun(19, None, 2000)]
    normalized = study_runs(19, 1.0, "normalized", 4000, bf16=True)
    assert normalized == [StudyRun(19, 1.0, 4000), StudyRun(37, 1.0, 2000), StudyRun(19, 1.0, 2000, bf16=True)]


def test_largest_relative_difference_over_the_shared_budgets():
    from benchmarks.path_study import largest_relative_difference

    fp32 = {250: [1.0, 2.0], 500: [0.5, 1.0], 1000: [0.4, 0.8]}
    bf16 = {250: [1.1, 2.0], 500: [0.5, 0.9]}
    assert abs(largest_relative_difference(fp32, bf16) - 0.1) < 1e-12


def test_decaying_lr_is_constant_for_half_the_budget_then_falls_linearly_to_zero():
    from benchmarks.path_study import decaying_lr

    lr = decaying_lr(0.1, 1000)
    assert lr(0) == lr(500) == 0.1
    assert abs(lr(750) - 0.05) < 1e-12
    assert lr(1000) == 0.0


def test_a_maximum_at_its_floor_counts_as_converged_while_others_must_stop_moving():
    maxima = {500: [0.0100, 0.50], 1000: [0.0050, 0.499], 2000: [0.0020, 0.499]}
    assert chosen_budget(maxima, 0.01) is None  # the first path still halves
    # ... unless it already sits on its floor, the higher endpoint's loss: no path can go lower
    assert chosen_budget(maxima, 0.01, floors=[0.00995, 0.2]) == 500
    assert chosen_budget(maxima, 0.01, floors=[0.00496, 0.2]) == 1000


def test_the_largest_budget_qualifies_only_where_every_maximum_is_at_its_floor():
    maxima = {500: [0.0100, 0.50], 1000: [0.0050, 0.30]}
    assert chosen_budget(maxima, 0.01, floors=[0.00496, 0.2]) is None  # 0.30 at 1000: no doubling, not at floor
    assert chosen_budget(maxima, 0.01, floors=[0.00496, 0.2999]) == 1000
