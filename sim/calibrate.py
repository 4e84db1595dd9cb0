"""Fit a world to a marketplace's statistics (:mod:`sim.market_stats`).

``python -m sim.calibrate TARGETS.yaml [key=value ...] --out DIR`` reads target statistics and
writes a config overlay (``DIR/calibrated.yaml``, a scenario file's body), ``DIR/fit.json`` and
``DIR/fit.md``. The targets file
names statistics of :mod:`sim.market_stats` with a value each (a number, or ``{value: v, sd: s}``
where an uncertainty is known), and the attribution window the delay shares were measured under::

    attribution_window_s: 2592000   # 30 days (the default)
    statistics:
      delay_within_1h: 0.35
      delay_within_24h: {value: 0.50, sd: 0.02}
      budget_target_corr: -0.97
      hour_share_0: 0.021   # ... one per hour, 0-23

**Direct knobs** are those a statistic reads without the simulator in between; they are fitted
(:mod:`sim.direct_fit`) in closed form or by a small least-squares problem, with no world run:

* the 24 ``hour_share_<h>`` → ``traffic.hourly_shares`` (normalised to sum to 1);
* ``budget_target_corr`` → ``world.budget_target_corr``: for the lognormal draws the log-log
  correlation *is* the knob, so the estimate is the value itself;
* the delay shares (``delay_within_1h``, ``_24h``, ``_7d``, ``_30d``: at least two at delays
  under the attribution window) → ``world.conversion_delay: lognormal`` with two components, a
  fast and a slow one, whose shapes are fixed (``FAST_SIGMA``, ``SLOW_SIGMA``), and
  ``world.attribution_window_s``: the shares are of attributed conversions, ``F(t) / F(W)``, under
  the window W the targets file gives (top-level ``attribution_window_s``, default 30 days). The
  slow component's weight and median are fitted; the fast one's median only when the 1-hour share
  is given beside two others, else held at ``FAST_MEDIAN_S`` and reported as not identifiable.

**Emergent statistics** (CTR, CVR and conversions per impression after selection, position CTR
decay, budget exhaustion) depend on the simulator's selection, not on one knob; they are fitted
through the simulator (:mod:`sim.emergent_fit`: Bayesian optimisation over the knobs they
identify, each trial a world per ``--fit-seeds`` seed run on the launcher; then ``--polish``
root steps from the best trial), on top of the direct
fits and of the ``key=value`` settings given after the targets file. The fitted world is then run
at ``--check-seeds`` fresh seeds, and ``fit.md`` puts every target beside the fitted world's
median and range (the fidelity table). ``--recover N`` runs the recovery test instead.

Cost: each trial is ``len(--fit-seeds)`` worlds of the size the settings give (a default world
takes about a minute), ``--jobs`` at a time out of the ``--batch`` x ``len(--fit-seeds)`` a round
holds (with one fit seed and ``--batch 1`` one world runs at a time): the base world, ``--trials``
- 1 of the GP, up to ``--polish`` rounds of one step (two at ``--batch`` 2 or more), and the
check's worlds; ``fit.md`` and ``fit.json``
record the number of worlds and the wall time.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml
from hydra.errors import HydraException
from omegaconf import OmegaConf

from sim.config import ConfigError, load_config
from sim.direct_fit import (
    REACH,
    WINDOW_S,
    Fit,
    finite_number,
    fit_direct,
    merged_overlay,
    target_values,
)
from sim.emergent_fit import (
    CONFOUNDED,
    EMERGENT,
    KNOBS,
    Search,
    search,
    world_overlay,
)
from sim.fit_check import Fidelity, check, fidelity, recovery, recovery_report
from sim.fit_targets import check_targets, relative, tolerance
from sim.launch import LAUNCHERS
from sim.logs.writer import write_json_atomic, write_text_atomic
from sim.market_stats import KNOWN


def report(values: dict[str, float], fits: list[Fit], found: Search | None = None,
           checked: dict[str, Fidelity] | None = None, cost: dict[str, Any] | None = None
           ) -> str:
    """``fit.md``: each direct target against the fitted world's closed-form value, the search's
    knobs, the fidelity table (every target against the fitted world at the check seeds), the
    knobs held (not identifiable from the statistics given) and the statistics not fitted."""
    lines = ["# Calibration", "", "## Direct fits (closed form, no world run)", "",
             "| statistic | target | the fitted knobs give | knobs |", "|---|---|---|---|"]
    done: set[str] = set()
    for f in fits:
        knobs = ", ".join(f"`{k}`" for k in f.fitted) if len(f.fitted) <= 3 else \
            f"{len(f.fitted)} values of `{next(iter(f.overlay))}`"
        for name in f.read:
            lines.append(f"| `{name}` | {values[name]:.6g} | {f.reproduced[name]:.6g} | {knobs} |")
            done.add(name)
    if not fits:
        lines.append("| (none) | | | |")
    missed = [n for f in fits if not f.reached for n in f.read]
    if missed:
        lines += ["", f"**Not reached** (off by more than {REACH}): "
                  + ", ".join(f"`{k}`" for k in missed) + ": the fitted family cannot pass "
                  "through these targets; read the fitted world's values above."]
    held = {k: v for f in fits for k, v in f.held.items()}
    if found is not None:
        done |= {n for n in values if n in EMERGENT}
        lines += ["", "## Searched through the simulator (optuna, GP sampler)", "",
                  f"{len(found.trials)} trials (the base world, {len(found.trials) - found.polished - 1} "
                  f"of the GP, {found.polished} root steps after it), {found.worlds} worlds; best "
                  f"loss (mean squared error in tolerances, at the fit seeds) {found.best_loss:.4g}.", "",
                  "| knob | fitted | first trial (the base world) |", "|---|---|---|"]
        first = found.trials[0].params if found.trials else {}
        for n, v in found.best.items():
            lines.append(f"| `{n}` | {v:.6g} | {first.get(n, float('nan')):.6g} |")
        held |= {f"world.{k}": float("nan") for k in CONFOUNDED}
    if checked:
        lines += _fidelity_table(checked, "the fitted world")
    if held:
        lines += ["", "Held (not identifiable from the statistics given): " + ", ".join(
            f"`{k}`" + ("" if math.isnan(v) else f" = {v:.6g}") for k, v in held.items()) + "."]
        if found is not None:
            lines.append("The affinity weights and quality spreads move the same rates as the base "
                         "logits; these statistics cannot tell them apart, so they keep the base "
                         "world's values.")
    rest = sorted(set(values) - done)
    if rest:
        lines += ["", "Not fitted (no knob fitted here reads them; the fidelity table shows the "
                  "fitted world's values): " + ", ".join(f"`{k}`" for k in rest) + "."]
    if cost:
        lines += ["", f"Cost: {cost['worlds']} worlds, {cost['wall_s']:.0f} s wall."]
    return "\n".join(lines) + "\n"


def _fidelity_table(checked: dict[str, Fidelity], what: str) -> list[str]:
    seeds = next(iter(checked.values())).seeds
    lines = ["", f"## Fidelity: {what} at {seeds} fresh seeds", "",
             "| statistic | target | tolerance | median | range | seeds within | median within |",
             "|---|---|---|---|---|---|---|"]
    for n, c in checked.items():
        tol = f"±{100 * c.tolerance:.3g}%" if relative(n) else f"±{c.tolerance:.3g}"
        med = "n/a" if c.median is None else f"{c.median:.4g}"
        rng = "n/a" if c.low is None or c.high is None else f"{c.low:.4g} … {c.high:.4g}"
        lines.append(f"| `{n}` | {c.target:.4g} | {tol} | {med} | {rng} | "
                     f"{c.within}/{c.seeds} | {'yes' if c.median_within else 'no'} |")
    return lines


FORBIDDEN = ("seed", "scenario", "hydra", "index", "auction", "serving")


def split_overrides(items: list[str]) -> dict[str, Any]:
    """The ``key=value`` settings the fit runs under, as a nested overlay (config-group choices,
    ``seed``, ``scenario`` and ``hydra.*`` are refused: the fit sets seeds and scenarios itself,
    and a group choice belongs in the scenario the fit starts from)."""
    for item in items:
        key = item.split("=", 1)[0]
        if ("=" not in item or key in FORBIDDEN or key.startswith(("+", "~"))
                or key.split(".")[0].split("/")[0] == "hydra"):
            raise ValueError(f"setting `{item}`: give plain key=value settings (not {', '.join(FORBIDDEN)}, "
                             "hydra.*, + or ~; put a group choice in the scenario the fit starts from)")
    return OmegaConf.to_container(OmegaConf.from_dotlist(items))  # type: ignore[return-value]


def _seeds(text: str) -> list[int]:
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"comma-separated integers, got {text!r}") from None
    if any(s < 0 for s in out) or len(set(out)) != len(out):
        raise argparse.ArgumentTypeError(f"distinct seeds >= 0, got {text!r}")
    return out


def load_targets(path: Path) -> tuple[dict[str, float], dict[str, float | None], float]:
    """A targets file's values, sds (None where not given) and attribution window; refuses
    unknown statistics and keys and malformed values."""
    doc = yaml.safe_load(path.read_text())
    stats = (doc or {}).get("statistics") if isinstance(doc, dict) else None
    if not isinstance(stats, dict) or not stats:
        raise ValueError("the targets file needs a non-empty `statistics` mapping")
    if unknown := sorted(set(stats) - set(KNOWN)):
        raise ValueError(f"unknown statistics {unknown}; known: {sorted(KNOWN)}")
    window = doc.get("attribution_window_s", WINDOW_S)
    if not finite_number(window) or window <= 0:
        raise ValueError(f"`attribution_window_s` must be a positive number, got {window!r}")
    if unknown_keys := sorted(set(doc) - {"statistics", "attribution_window_s"}):
        raise ValueError(f"unknown keys {unknown_keys} in the targets file")
    values = target_values(stats)
    sds = {n: (float(t["sd"]) if isinstance(t, dict) and "sd" in t else None) for n, t in stats.items()}
    return values, sds, float(window)


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None  # fit.json stays strict JSON: a failed trial is null


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sim.calibrate", description=__doc__.split("\n")[0])
    p.add_argument("targets", nargs="?", help="YAML with a `statistics` mapping")
    p.add_argument("settings", nargs="*", help="key=value settings every world runs under")
    p.add_argument("--out", type=Path, required=True, help="a new directory for the fit")
    p.add_argument("--scenario", default="default", help="the scenario the fit starts from")
    p.add_argument("--trials", type=int, default=24,
                   help="the search's trials: the base world and the GP's (0: no search)")
    p.add_argument("--polish", type=int, default=3,
                   help="root-step rounds after the GP's trials, from its best (0: none)")
    p.add_argument("--fit-seeds", type=_seeds, default=[0], help="world seeds of every trial")
    p.add_argument("--check-seeds", type=_seeds, default=[100, 101, 102, 103, 104],
                   help="fresh world seeds of the fidelity check (empty: no check)")
    p.add_argument("--jobs", type=int, default=1, help="worlds at a time")
    p.add_argument("--batch", type=int, default=1,
                   help="trials the GP proposes before it is told the previous ones' (the "
                        "search's proposals depend on it, not on --jobs; with one fit seed, give "
                        "--batch 2 to keep two jobs busy)")
    p.add_argument("--launcher", default="joblib", choices=LAUNCHERS)
    p.add_argument("--recover", type=int, default=0, metavar="N",
                   help="instead of a targets file: the recovery test on N random knob draws")
    p.add_argument("--keep-runs", action="store_true", help="keep every world's logs")
    args = p.parse_intermixed_args(argv)
    t0 = time.perf_counter()
    try:
        if args.recover and args.targets is not None and "=" in args.targets:
            args.settings.insert(0, args.targets)  # --recover takes no targets file
            args.targets = None
        if (args.targets is None) == (args.recover == 0):
            raise ValueError("give a targets file or --recover N (not both)")
        for flag, value, least in (("--trials", args.trials, 0), ("--polish", args.polish, 0),
                                   ("--jobs", args.jobs, 1), ("--batch", args.batch, 1),
                                   ("--recover", args.recover, 0)):
            if value < least:
                raise ValueError(f"{flag} must be >= {least}, got {value}")
        if args.recover and args.trials < 2:
            raise ValueError("the recovery test needs --trials >= 2")
        if not args.fit_seeds:
            raise ValueError("--fit-seeds needs at least one seed")
        if both := set(args.fit_seeds) & set(args.check_seeds):
            raise ValueError(f"the check's seeds must be fresh: {sorted(both)} are fit seeds too")
        if args.out.exists() and any(args.out.iterdir()):
            raise ValueError(f"--out {args.out} is not empty: give a new directory")
        settings = split_overrides(list(args.settings))
        base = load_config(args.scenario, list(args.settings))
        if not args.recover:
            values, sds, window = load_targets(Path(args.targets))
            check_targets(values)
            fits = fit_direct(values, window)
    except (OSError, ValueError, ConfigError, HydraException, yaml.YAMLError) as exc:
        p.error(str(exc).strip() + (f" ({str(exc.__cause__).strip()})" if exc.__cause__ else ""))
    if args.recover:
        return _recover(args, base, settings, t0)
    direct = merged_overlay(fits)
    under: dict[str, Any] = OmegaConf.to_container(  # type: ignore[assignment]
        OmegaConf.merge(OmegaConf.create(settings), direct))
    emergent = {n: v for n, v in values.items() if n in EMERGENT}
    tols = {n: tolerance(n, v, sds[n]) for n, v in values.items()}
    found = None
    overlay: dict[str, Any] = under
    if emergent and args.trials:
        found = search(emergent, tols, base=base, under=under, scenario=args.scenario,
                       root=args.out / "search", trials=args.trials, fit_seeds=args.fit_seeds,
                       launcher=args.launcher, jobs=args.jobs, polish=args.polish,
                       keep=args.keep_runs, log=print, batch=args.batch)
        overlay = OmegaConf.to_container(OmegaConf.merge(  # type: ignore[assignment]
            OmegaConf.create(under), world_overlay(found.best, base.world)))
    per_seed = (check(overlay, scenario=args.scenario, root=args.out / "check",
                      seeds=args.check_seeds, launcher=args.launcher, jobs=args.jobs,
                      keep=args.keep_runs) if args.check_seeds else [])
    checked = fidelity(values, tols, per_seed) if per_seed else None
    worlds = (found.worlds if found else 0) + len(per_seed)
    cost = {"worlds": worlds, "wall_s": time.perf_counter() - t0, "jobs": args.jobs,
            "batch": found.batch if found else None}
    head = {"defaults": [args.scenario, "_self_"]} if args.scenario != "default" else {}
    write_text_atomic(args.out / "calibrated.yaml",
                      "# @package _global_\n" + yaml.safe_dump({**head, **overlay}, sort_keys=False))
    write_json_atomic(args.out / "fit.json", {
        "targets": values, "sd": sds, "tolerance": tols, "scenario": args.scenario,
        "settings": list(args.settings), "overlay": overlay,
        "fits": [{"read": list(f.read), "fitted": f.fitted, "held": f.held,
                  "reproduced": f.reproduced, "reached": f.reached} for f in fits],
        "search": None if found is None else {
            "knobs": found.knobs, "best": found.best, "best_loss": _finite(found.best_loss),
            "trials": [{**asdict(t), "loss": _finite(t.loss)} for t in found.trials],
            "refused": found.refused, "polished": found.polished, "box": found.box,
            "fit_seeds": args.fit_seeds},
        "check": {"seeds": args.check_seeds, "statistics": per_seed,
                  "fidelity": None if checked is None else {n: asdict(c) for n, c in checked.items()}},
        "cost": cost})
    write_text_atomic(args.out / "fit.md", report(values, fits, found, checked, cost))
    print(f"calibrate: {args.out / 'calibrated.yaml'} ({len(fits)} direct fits, "
          f"{worlds} worlds, {cost['wall_s']:.0f} s)")
    return 0


def _recover(args: argparse.Namespace, base: Any, settings: dict[str, Any], t0: float) -> int:
    """``--recover N``: the recovery test (:func:`sim.fit_check.recovery`) into ``--out``."""
    draws = recovery(args.recover, base=base, under=settings, scenario=args.scenario,
                     root=args.out, trials=args.trials, polish=args.polish, launcher=args.launcher,
                     jobs=args.jobs, log=print, batch=args.batch)
    wall = time.perf_counter() - t0
    rows = [{**asdict(d), "loss": None if d.loss is None else _finite(d.loss)} for d in draws]
    write_json_atomic(args.out / "recovery.json", {"draws": rows, "settings": list(args.settings),
                                                   "trials": args.trials, "polish": args.polish,
                                                   "batch": args.batch,
                                                   "wall_s": wall,
                                                   "tolerance": {n: k.tolerance for n, k in KNOBS.items()}})
    write_text_atomic(args.out / "recovery.md", recovery_report(draws, wall))
    print(f"calibrate: {args.out / 'recovery.md'} ({len(draws)} draws, {wall:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
