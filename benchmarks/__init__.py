"""turnkeep's benchmarks: each `bench_*.py` module has a `main()` that measures, prints a table and rewrites its
own section of `docs/benchmarks.md`. Run them all with `python -m benchmarks` (`make bench`)."""
