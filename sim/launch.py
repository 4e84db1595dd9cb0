"""Run many worlds as one Hydra multirun: each world a scenario file in a directory put on
Hydra's search path, the jobs spread by a launcher (``joblib``: local processes, as many at a
time as asked; ``ray``: tasks of a local Ray instance, Hydra's ``hydra/launcher=ray``). The
diagnosis library and the calibration's search run their worlds through here.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

LAUNCHERS = ("joblib", "ray")


def multirun(names: Sequence[str], searchpath: Path, sweep: Path, launcher: str = "joblib",
             jobs: int = 1, overrides: Sequence[str] = ()) -> Path:
    """Run the scenarios ``names`` (files ``searchpath/scenario/<name>.yaml``) as one multirun
    into ``sweep`` (job ``k`` in ``sweep/<k>`` is ``names[k]``), ``overrides`` (``key=value``,
    ``hydra.*`` too) on every job's command line. A world that fails is a job whose manifest says
    so; the sweep goes on. Returns ``sweep``."""
    if launcher not in LAUNCHERS:
        raise ValueError(f"launcher must be one of {LAUNCHERS}, got {launcher!r}")
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    cmd = [sys.executable, "-m", "sim", "-m", "scenario=" + ",".join(names),
           f"hydra.searchpath=[file://{searchpath.resolve()}]", f"hydra.sweep.dir={sweep.resolve()}"]
    cmd += [f"hydra.launcher.n_jobs={jobs}"] if launcher == "joblib" else ["hydra/launcher=ray"]
    subprocess.run([*cmd, *overrides], check=False)
    return sweep
