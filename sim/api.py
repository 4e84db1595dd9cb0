"""Running a scenario from Python (a notebook, a script) and reading what it wrote.

    from sim import simulate, load
    run = simulate("baseline", seed=1, days=0.1)
    run.metrics["lift"]["cpa"]                  # metrics.json
    run.logs["impressions"].collect()           # polars LazyFrames of logs/*.parquet
    run.report()                                # report.md and plots/, shown inline in Jupyter
    run.plot("cpa_daily")                       # one of the report's plots, a matplotlib Figure
    again = load(run.run_dir)                   # any finished run directory

:func:`simulate` composes the config exactly as ``python -m sim scenario=NAME key=value ...``
does (:func:`sim.config.load_config`: the same Hydra composition, the same validation, the same
errors naming the key, raised as :class:`sim.config.ConfigError` before anything runs) and writes
the same run directory (``.hydra/config.yaml``, ``manifest.json``, ``metrics.json``, ``logs/``).
Overrides are keyword arguments: a top-level key (``days=0.1``), a dotted key as a dict entry
(``**{"world.n_users": 400}``) or a nested dict, which stands for its dotted leaves
(``world={"n_users": 400}``, ``experiment={"treatment": {"models": {"l1_family": "dhen"}}}``).
A key the schema does not have fails as on the command line. The treatment's keys are typed by
the schema like any other (``experiment={"treatment": {"funnel": {"k_l1": 50}}}``).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
from hydra.errors import HydraException

from sim.clock import DAY_S
from sim.config import ConfigError, load_config
from sim.config.schema import Config
from sim.logs.reader import load as load_logs
from sim.progress import progress_bar, wants_progress
from sim.report.attribution import save_config
from sim.report.run_report import ReportError, draw_plots, make_report, read_run
from sim.report.verdicts import Verdict, verdicts
from sim.run import run as run_world

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _render(value: Any) -> str:
    """``value`` in Hydra's override grammar (strings always quoted, so ``'IVF64,Flat'`` and
    ``'0'`` stay strings)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_render(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{_render(v)}" for k, v in value.items()) + "}"
    raise ConfigError(f"override value {value!r} of type {type(value).__name__} is not a config "
                      "value (use numbers, strings, booleans, None, lists and dicts)")


def _leaves(key: str, value: Any) -> list[tuple[str, Any]]:
    """A nested dict of overrides as dotted leaf keys (lists and empty dicts are leaves)."""
    if isinstance(value, Mapping) and value:
        return [leaf for k, v in value.items() for leaf in _leaves(f"{key}.{k}", v)]
    return [(key, value)]


def override_strings(overrides: Mapping[str, Any]) -> list[str]:
    """Hydra override strings (``key=value``) for keyword overrides: nested dicts become dotted
    leaf keys."""
    return [f"{k}={_render(v)}" for key, value in overrides.items() for k, v in _leaves(key, value)]


def _default_dir(scenario: str) -> Path:
    """``outputs/DATE/TIME_SCENARIO`` under the working directory, as the CLI's run directory,
    with ``-2``, ``-3`` ... appended when a run of the same second has it."""
    now = datetime.now()
    base = Path("outputs") / now.strftime("%Y-%m-%d") / f"{now.strftime('%H-%M-%S')}_{scenario}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


@dataclass(frozen=True)
class Report:
    """A written ``report.md``; in Jupyter it shows as Markdown with its plots inline."""

    path: Path
    text: str

    def _repr_markdown_(self) -> str:
        def inline(m: re.Match[str]) -> str:
            png = self.path.parent / m.group(2)
            if not png.exists():
                return m.group(0)
            data = base64.b64encode(png.read_bytes()).decode()
            return f"![{m.group(1)}](data:image/png;base64,{data})"
        return re.sub(r"!\[([^\]]*)\]\((plots/[^)]+\.png)\)", inline, self.text)

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Run:
    """A finished run directory and what it holds; every property reads the files again, so a
    report or an attribution written since is seen."""

    run_dir: Path

    @property
    def manifest(self) -> dict[str, Any]:
        return json.loads((self.run_dir / "manifest.json").read_text())

    @property
    def metrics(self) -> dict[str, Any]:
        """``metrics.json``; raises ReportError if the run did not complete."""
        return read_run(self.run_dir)[1]

    @property
    def logs(self) -> dict[str, pl.LazyFrame]:
        """Every log table, lazily (:func:`sim.logs.load`)."""
        return load_logs(self.run_dir)

    @property
    def verdicts(self) -> list[Verdict]:
        """The report's verdicts on this run, in layer order."""
        return verdicts(self.metrics)

    def report(self) -> Report:
        """Write ``report.md`` and ``plots/`` (as ``python -m sim.report RUN_DIR``)."""
        path = make_report(self.run_dir)
        return Report(path=path, text=path.read_text())

    def plot(self, name: str) -> Figure:
        """One of the report's plots (``gap``, ``cpa_daily``, ``latency``, ``serving_path`` ...),
        drawn from the run's files and not written anywhere."""
        fig = draw_plots(self.run_dir, None, [name])[name]
        if fig is None:
            raise ReportError(f"{self.run_dir}: nothing to draw for plot {name!r} in this run")
        return fig

    def __repr__(self) -> str:
        m = self.manifest
        return (f"Run({str(self.run_dir)!r}, scenario={m.get('scenario')!r}, seed={m.get('seed')}, "
                f"status={m.get('status')!r})")


def simulate(scenario: str = "default", *, seed: int = 0, run_dir: str | Path | None = None,
             **overrides: Any) -> Run:
    """Run ``scenario`` (a name in ``scenarios/``) at ``seed`` with ``overrides`` into
    ``run_dir`` (default ``outputs/DATE/TIME_SCENARIO``) and return the finished :class:`Run`.
    Bad config raises :class:`ConfigError` before anything is written; a run that fails records
    ``failed`` in its manifest and re-raises."""
    try:
        cfg = load_config(scenario, override_strings({"seed": seed, **overrides}))
    except HydraException as exc:  # an unknown key, a bad value for Hydra's grammar
        cause = f" ({str(exc.__cause__).strip()})" if exc.__cause__ else ""  # what the CLI prints too
        raise ConfigError(str(exc).strip() + cause) from None
    return simulate_config(cfg, scenario, _default_dir(scenario) if run_dir is None else Path(run_dir))


def simulate_config(cfg: Config, scenario: str, run_dir: Path) -> Run:
    """Run a composed, validated ``cfg`` (:func:`sim.config.load_config`) into ``run_dir``."""
    save_config(cfg, run_dir)
    bar = progress_bar(cfg.days * DAY_S) if wants_progress(cfg.progress) else None
    run_world(cfg, run_dir, scenario=scenario, progress=bar)
    return Run(run_dir)


def load(run_dir: str | Path) -> Run:
    """Reopen a run directory (this session's or an earlier one)."""
    d = Path(run_dir)
    if not (d / "manifest.json").exists():
        raise ReportError(f"{d} is not a run directory (no manifest.json)")
    return Run(d)
