"""Run every speed benchmark: ``python -m benchmarks.perf [--data-root DIR] [--device auto]``.

Prints a table and writes ``benchmarks/perf/results.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from benchmarks.perf.path_step import path_step_benchmark
from benchmarks.stages import resolve_device
from losstopo.data import load_dataset
from losstopo.io import save_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default=str(Path(__file__).with_name("results.json")))
    args = parser.parse_args()
    device = resolve_device(args.device)
    mnist = load_dataset("mnist", root=args.data_root).subset(10000, 0).to(device)
    results = [path_step_benchmark("fc-4-32", mnist)]
    meta = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
            "threads": torch.get_num_threads(), "torch": torch.__version__}
    print(f"{'benchmark':60s} {'baseline s':>11s} {'fast s':>9s} {'speed-up':>9s}")
    for r in results:
        print(f"{r['benchmark']:60s} {r['baseline_s']:11.4f} {r['fast_s']:9.4f} {r['speedup']:8.2f}x")
    save_json({"meta": meta, "results": results}, Path(args.out))
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
