from benchmarks.path_study import chosen_budget


def test_chosen_budget_is_the_smallest_that_moves_every_maximum_by_less_than_the_tolerance_when_doubled():
    maxima = {250: [1.0, 2.0], 500: [0.5, 1.9], 1000: [0.499, 1.899], 2000: [0.4989, 1.8989]}
    assert chosen_budget(maxima, 0.01) == 500
    assert chosen_budget(maxima, 1e-6) is None  # no doubling is that still
    assert chosen_budget({250: [1.0], 1000: [1.0]}, 0.01) is None  # not a doubling
