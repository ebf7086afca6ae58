"""`python -m benchmarks [name ...]`: run every `benchmarks/bench_*.py` module's `main()` (or only those named)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path


def main(names: list[str]) -> None:
    """Run the named benchmarks (`emulator` or `bench_emulator`), or all of them, in file-name order."""
    found = sorted(path.stem for path in Path(__file__).resolve().parent.glob("bench_*.py"))
    wanted = [name if name.startswith("bench_") else f"bench_{name}" for name in names] or found
    unknown = sorted(set(wanted) - set(found))
    if unknown:
        sys.exit(f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(found)}")
    for name in wanted:
        print(f"== {name}", flush=True)
        importlib.import_module(f"benchmarks.{name}").main()


if __name__ == "__main__":
    main(sys.argv[1:])
