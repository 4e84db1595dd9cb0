"""The notebook API: ``sim.simulate`` composes like the CLI and returns a ``Run`` that reads the
run directory; ``sim.load`` and ``sim.logs.load`` reopen any run."""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl
import pytest
from matplotlib.figure import Figure

import sim
from sim.api import override_strings
from sim.config import ConfigError
from sim.report.run_report import ReportError
from sim.report.verdicts import RULES

from conftest import read_json, tiny_kwargs


def test_override_strings_follow_hydras_grammar() -> None:
    assert override_strings({"days": 0.5, "index.factory": "IVF64,Flat", "progress": "off",
                             "cache.dir": None, "latency.enabled": False,
                             "experiment.arms": ["control", "treatment"],
                             "experiment": {"ramp": [{"day": 0, "share": 0.5}],
                                            "treatment": {"models": {"l1_family": "dhen"},
                                                          "index": {"nprobe": 8}}}}) == [
        "days=0.5", "index.factory='IVF64,Flat'", "progress='off'", "cache.dir=null",
        "latency.enabled=false", "experiment.arms=['control','treatment']",
        "experiment.ramp=[{day:0,share:0.5}]",
        "experiment.treatment.models.l1_family='dhen'",  # typed like any key: no `+`
        "experiment.treatment.index.nprobe=8"]
    with pytest.raises(ConfigError, match="not a config value"):
        override_strings({"days": object()})


def test_simulate_is_the_cli_world_and_returns_a_run(tiny_run: Path, tmp_path: Path) -> None:
    run = sim.simulate("default", seed=0, run_dir=tmp_path / "api", **tiny_kwargs())
    # the same composition as the CLI's: the same config gives the same metrics.json
    assert run.metrics == read_json(tiny_run / "metrics.json")
    assert run.manifest["status"] == "complete" and run.manifest["scenario"] == "default"
    assert (run.run_dir / ".hydra" / "config.yaml").exists()  # re-runnable, reportable
    logs = run.logs
    assert set(logs) == {p.stem for p in (run.run_dir / "logs").glob("*.parquet")}
    assert all(isinstance(f, pl.LazyFrame) for f in logs.values())
    assert logs["impressions"].collect().equals(pl.read_parquet(run.run_dir / "logs" / "impressions.parquet"))
    assert [v.key for v in run.verdicts] == [r.__name__ for r in RULES]
    report = run.report()
    assert report.path == run.run_dir / "report.md" and report.text.startswith("# Online/offline")
    assert "(plots/gap.png)" in report.text and "data:image/png;base64," in report._repr_markdown_()
    assert isinstance(run.plot("gap"), Figure)
    with pytest.raises(ReportError, match="unknown plot"):
        run.plot("nope")
    again = sim.load(run.run_dir)
    assert again.metrics == run.metrics and "status='complete'" in repr(again)


def test_bad_overrides_raise_config_errors_and_write_nothing(tmp_path: Path) -> None:
    d = tmp_path / "never"
    with pytest.raises(ConfigError, match=r"world\.n_userz"):
        sim.simulate("baseline", run_dir=d, world={"n_userz": 3})
    with pytest.raises(ConfigError, match=r"world\.n_users.*'many'"):
        sim.simulate("baseline", run_dir=d, **{"world.n_users": "many"})
    with pytest.raises(ConfigError, match=r"`days` must be > 0, got -1"):
        sim.simulate("baseline", run_dir=d, days=-1)
    with pytest.raises(ConfigError, match=r"`experiment.treatment`: `serving.query_dtype`"):
        sim.simulate("baseline", run_dir=d, experiment={"treatment": {"serving": {"query_dtype": "x"}}})
    with pytest.raises(ConfigError, match=r"experiment.treatment.serving.query_dtyp\b"):
        sim.simulate("baseline", run_dir=d, experiment={"treatment": {"serving": {"query_dtyp": "x"}}})
    with pytest.raises(ConfigError, match="scenario/nope"):
        sim.simulate("nope", run_dir=d)
    assert not d.exists()


def test_load_refuses_what_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="not a run directory"):
        sim.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="no logs/"):
        sim.logs.load(tmp_path)


def test_a_nested_override_adds_to_the_treatment_overlay(tmp_path: Path) -> None:
    run = sim.simulate("baseline", seed=0, run_dir=tmp_path, **{**tiny_kwargs(), "days": 0.1},
                       experiment={"treatment": {"index": {"factory": "SQ8"}}})
    arms = run.metrics["arms"]
    assert arms["treatment"]["serving_path"]["index_factory"] == "SQ8"
    assert arms["control"]["serving_path"]["index_factory"] == "Flat"
    assert arms["treatment"]["l1_score_error"] > 0 == arms["control"]["l1_score_error"]


def test_progress_is_on_in_a_terminal_or_a_notebook_and_off_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import types

    from sim.progress import wants_progress

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    log = io.StringIO()
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    assert wants_progress("auto", Tty()) and not wants_progress("auto", log)
    assert wants_progress("on", log) and not wants_progress("off", Tty())
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    assert wants_progress("auto", log)  # a notebook's output stream is no tty
    monkeypatch.setenv("CI", "true")
    assert not wants_progress("auto", log)  # ... unless CI executes the notebook
