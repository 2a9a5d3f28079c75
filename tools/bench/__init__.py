"""`make bench`: one table of measured figures, each with its goal.

Each ``bench_*.py`` module in this package exposes ``run(ctx)`` returning a
list of ``Row``.  Figures are measured in this run and printed (and written to
JSON), never asserted: tests check behaviour, benchmarks report numbers.
"""
