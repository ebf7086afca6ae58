"""`python -m turnkeep.emulator [--port N] ...`: the same as `turnkeep emulate`."""

from __future__ import annotations

import sys

from turnkeep.cli import main

if __name__ == "__main__":
    main(args=["emulate", *sys.argv[1:]], prog_name="turnkeep")
