"""The benchmarks: `make bench` (all of it) and `make bench QUICK=1` (the same, scaled down).

Every benchmark measures its baseline in the same run, on the same machine, and prints a table of
ratios; results go to `bench/results/<name>.json`. See docs/benchmarks.md.
"""
