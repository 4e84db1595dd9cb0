"""The lesson notebooks (``notebooks/*.py``, jupytext percent scripts stored without outputs) run
top to bottom on the notebook API, here on a tiny world."""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any

import pytest

from conftest import tiny_kwargs

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.py"))


def test_there_are_notebooks() -> None:
    assert {p.stem for p in NOTEBOOKS} >= {"l1_cvr_discrepancy", "parity_gap", "version_skew"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_on_a_tiny_world(path: Path, tmp_path: Path) -> None:
    text = path.read_text()
    assert text.startswith("# ---\n# jupyter:") and "# %%" in text  # jupytext percent format
    tiny: dict[str, Any] = {**tiny_kwargs(), "days": 0.1, "training.epochs": 1,
                            "training.exploration_requests": 1000,
                            "experiment.exposure_twin": False}  # no ramp step in 0.1 day
    done = runpy.run_path(str(path), init_globals={"OVERRIDES": tiny, "RUN_DIR": str(tmp_path)},
                          run_name="__main__")
    runs = done.get("runs") or {"run": done["run"]}
    for run in runs.values():
        assert run.manifest["status"] == "complete"
        assert str(run.run_dir).startswith(str(tmp_path))  # nothing written elsewhere
