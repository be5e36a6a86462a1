"""Speed benchmarks: each compares the project's fast path with a plain baseline in the same run."""
