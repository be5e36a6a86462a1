"""Where the MNIST permutation merge descent spends its time: ``python -m benchmarks.perf.profile_descent``.

Runs the descents of ``benchmarks.perf.permutation_descent`` (all paths together, then one after another) under
``torch.profiler`` and prints, for each, the operations with the most CPU time of their own, beside the share of
the time spent in matrix products.
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.perf.permutation_descent import descent_problems, fixed_iterations, one_by_one
from losstopo.descent import Convergence

MATRIX_PRODUCTS = ("aten::addmm", "aten::mm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear")


def product_share(events) -> float:
    """The fraction of the self CPU time spent in matrix products."""
    total = sum(e.self_cpu_time_total for e in events)
    return sum(e.self_cpu_time_total for e in events if e.key in MATRIX_PRODUCTS) / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="fc-2-25")
    parser.add_argument("--paths", type=int, default=6)
    parser.add_argument("--inputs", type=int, default=10000)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--rows", type=int, default=12, help="operations listed per table")
    args = parser.parse_args()
    problems = descent_problems(args.model, "mnist", args.paths, args.inputs, torch.device("cpu"))
    rule = fixed_iterations(Convergence(), args.iterations)
    for name, call in (("all paths together", lambda: problems.merge(rule)),
                       ("one path after another", lambda: one_by_one(problems, rule))):
        call()  # warm-up
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            call()
        events = prof.key_averages()
        print(f"\n{name}: {product_share(events):.0%} of the self CPU time in matrix products")
        print(events.table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
