"""``python -m sim [scenario=NAME] [key=value ...] [-m] [replicates=N]``: run a scenario (or a Hydra
sweep; ``replicates=N`` sweeps seeds 0..N-1, see :func:`sim.config.store.expand_replicates`).

The last line printed is ``run_dir: PATH``. Bad config stops the program before the simulation
starts, with the key and the value in the message.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from sim.clock import DAY_S
from sim.config import CONF_DIR, ConfigError, register_configs
from sim.config.store import (
    check_launcher,
    check_overrides,
    check_scenario,
    expand_replicates,
    to_config,
)
from sim.logs.writer import write_json_atomic
from sim.progress import progress_bar, wants_progress
from sim.run import run
from sim.threads import resolve as resolve_threads

register_configs()


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def main(dcfg: DictConfig) -> None:
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    try:
        check_overrides(list(hc.overrides.task))  # this job's own values (a sweep's, one each)
        cfg = to_config(dcfg)
        resolve_threads(cfg)  # deterministic mode needs MKL's strict mode in this process
    except ConfigError as exc:
        write_json_atomic(run_dir / "manifest.json", {
            "status": "failed", "error": f"ConfigError: {exc}", "stage": "config"})
        print(f"config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    bar = progress_bar(cfg.days * DAY_S) if wants_progress(cfg.progress) else None
    run(cfg, run_dir, scenario=hc.runtime.choices.get("scenario", "default"), progress=bar)
    print(f"run_dir: {run_dir}", flush=True)


if __name__ == "__main__":
    try:
        sys.argv[1:] = expand_replicates(sys.argv[1:])
        check_overrides(sys.argv[1:])
        for arg in sys.argv[1:]:
            if arg.startswith("scenario="):  # each of a sweep's scenarios too
                for name in arg.split("=", 1)[1].split(","):
                    check_scenario(name.strip())
        check_launcher(sys.argv[1:])
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    main()
