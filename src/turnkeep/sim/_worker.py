"""A simulation worker process: `python -m turnkeep.sim._worker`, started and fed by `turnkeep.sim.simulate`.

It reads frames from stdin and writes frames to stdout; a frame is a 4-byte big-endian length and a pickle (both
ends are this package, in processes the parent started). The first frame in is `(workload, catalog)`; each
further one is a run `(index, policy, model)`, or None to stop. For each run it writes `("turn", index, turns)`
after every turn and then `("row", index, row)` or `("error", index, exception)`.

A plain process rather than `multiprocessing`: that would import the caller's `__main__` again in each worker,
which breaks a script without an `if __name__ == "__main__"` guard. It is started with `-P` and the caller's
turnkeep first on `PYTHONPATH`, so it runs the same code, whatever the working directory holds.
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
import sys
import traceback
from typing import IO, Any

_LENGTH = struct.Struct(">I")


def write_frame(stream: IO[bytes], value: Any) -> None:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(_LENGTH.pack(len(data)) + data)
    while view:  # a raw (unbuffered) stream may take part of it
        written = stream.write(view)
        view = view[written or 0 :]
    stream.flush()


def _read_exactly(stream: IO[bytes], size: int) -> bytes:
    parts: list[bytes] = []
    while size:
        part = stream.read(size)
        if not part:
            raise EOFError
        parts.append(part)
        size -= len(part)
    return b"".join(parts)


def read_frame(stream: IO[bytes]) -> Any:
    """The next frame's value; EOFError when the stream ends (also in the middle of a frame)."""
    (size,) = _LENGTH.unpack(_read_exactly(stream, _LENGTH.size))
    return pickle.loads(_read_exactly(stream, size))


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the workers
    source = sys.stdin.buffer
    # Frames go to the original stdout; anything a library prints goes to stderr instead of into a frame.
    sink = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    workload, catalog = read_frame(source)

    from turnkeep.sim.simulator import play_run

    while (task := read_frame(source)) is not None:
        index, policy, model = task

        def report(turns: int, index: int = index) -> None:
            write_frame(sink, ("turn", index, turns))

        try:
            row = play_run(workload, policy, model, catalog, index, report)
        except Exception as err:  # sent to the parent, which raises it
            try:
                pickle.dumps(err)
            except Exception:
                err = RuntimeError("".join(traceback.format_exception(err)))
            write_frame(sink, ("error", index, err))
        else:
            write_frame(sink, ("row", index, row))


if __name__ == "__main__":
    main()
