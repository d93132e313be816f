"""CONTAINER_TRACE=1: where the milliseconds of `run` go, written to stderr.

trace() is the supervisor's (t=0 is main()'s start, with CPU time); trace_pid() is for the forked
children, which write with os.write and say their pid.
"""

from __future__ import annotations

import os
import sys
import time

ENABLED = bool(os.environ.get("CONTAINER_TRACE"))
_T0 = float(os.environ.get("CONTAINER_TRACE_T0") or time.perf_counter())


def trace(what: str) -> None:
    if ENABLED:
        sys.stderr.write(f"trace {(time.perf_counter() - _T0) * 1000:7.2f} ms  "
                         f"(cpu {time.process_time() * 1000:6.1f})  {what}\n")


def trace_pid(what: str) -> None:
    if ENABLED:
        os.write(2, f"trace {time.perf_counter() * 1000:12.2f} [{os.getpid()}] {what}\n".encode())
