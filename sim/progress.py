"""A one-line progress bar: simulated time and requests per second, on a terminal or in a
Jupyter notebook (whose output renders the carriage return that redraws the line)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import TextIO

from sim.clock import DAY_S

Progress = Callable[[float, int], None]  # (simulated seconds, requests so far) -> None


def progress_bar(horizon_s: float, stream: TextIO = sys.stderr, width: int = 30) -> Progress:
    started: list[float] = []  # wall time of the first call: the rate excludes set-up
    last = [0.0]

    def show(now_s: float, requests: int) -> None:
        t = time.perf_counter()
        if not started:
            started.append(t)
        if t - last[0] < 0.2 and now_s < horizon_s:
            return
        last[0] = t
        frac = min(now_s / horizon_s, 1.0)
        bar = "#" * int(frac * width)
        rate = requests / max(t - started[0], 1e-9)
        stream.write(f"\r[{bar:<{width}}] day {now_s / DAY_S:5.2f}/{horizon_s / DAY_S:.2f}  "
                     f"{requests:>9,d} requests  {rate:>8,.0f} req/s")
        if now_s >= horizon_s:
            stream.write("\n")
        stream.flush()

    return show


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (and not one a CI job runs: ``CI`` unset)."""
    return "ipykernel" in sys.modules and not os.environ.get("CI")


def wants_progress(setting: str, stream: TextIO = sys.stderr) -> bool:
    """``on``; ``off``; ``auto``: on a terminal or in a notebook, off in a log file or CI."""
    return setting == "on" or (setting == "auto" and (stream.isatty() or in_notebook()))
