"""A one-line progress bar on a terminal: simulated time and requests per second."""

from __future__ import annotations

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


def wants_progress(setting: str, stream: TextIO = sys.stderr) -> bool:
    return setting == "on" or (setting == "auto" and stream.isatty())
