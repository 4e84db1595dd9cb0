"""Which random draws set a world's rates: vary one group of named streams, hold the others.

    python examples/markets/spread.py GROUP SEED [key=value ...]

runs the ``market_feed`` scenario with every named random stream (:class:`sim.rng.Streams`) at
``--base`` (105) except those of GROUP, which take SEED, and prints the world's statistics
(:func:`sim.market_stats.statistics`) and its start-up log's counts (``metrics.json``'s
``warmup``) as one JSON line. GROUP is one of

* ``market``: advertisers, catalogue, feature maps, response constants, offsite history;
* ``users``: the users;
* ``models``: the exploration serving, parameter initialisation, training batches and releases;
* ``run``: traffic, churn (replacement ads, feature refreshes), the L1 prior's reference
  contexts, offline evaluation, and every keyed draw (clicks and conversions, the exploration
  log's labels among them; participation, log sampling, latency): the config's ``seed``
  (the arm assignment is keyed by the experiment's salt, not the seed).

and three parts of ``run`` (the config's seed held at the base):

* ``run_streams``: its named streams only (traffic, churn, contexts, offline evaluation, the
  opening forecast's sample);
* ``exploration_labels``: the keyed draws of the exploration log's requests (its clicks and
  conversions, and in a downsampled log which rows it keeps);
* ``live_draws``: the keyed draws of live requests (clicks, conversions and their delays,
  participation, log sampling, latency; the opening forecast's requests too; not the arm
  assignment, which is keyed by its salt).

Under a pinned marketplace (``world.market_seed``, as in ``market_feed`` today: ``--first``
not given) the marketplace's streams keep that seed, so ``market`` and ``users`` are refused.
Under a pinned start-up (``training.startup_seed``, as in ``market_feed`` today) the start-up's
streams and its log's keyed draws keep that seed, so ``models``, ``exploration_labels`` and
``startup`` are refused (``training.startup_seed=null`` gives each run its own start-up again),
and the releases' own draws, which then change with the run's seed, belong to ``run``,
``run_streams`` and ``live``: ``live`` is then all of a run that its seed draws.
Two more groups (with or without a pinned marketplace):

* ``startup``: ``models`` and ``exploration_labels`` together: the start-up log (which users
  and ads fill it, and which of its impressions click and convert) and every model's own draws
  (initialisation, training batches, the releases' too);
* ``live``: ``run_streams`` and ``live_draws`` together: the run's named streams and the live
  requests' keyed draws.

``startup`` and ``live`` split a run's draws in two: each stream and keyed draw is in exactly one
(a release's own training draws are in ``startup``; what it trains on comes from both).

Not part of the package: it replaces :class:`sim.rng.Streams`'s methods in this process (the
world runs in-process, one torch and one faiss thread). The first table of docs/calibration.md
("Why one world's rates are not another's") is this script with ``--first`` and no settings,
SEED 106-109 for each group; the world at SEED 105 (any group) is the fifth of every row. That
table was measured on the feed preset's first version (its first knobs, the default exploration
log, no ``market_seed``: :data:`FIRST_FEED`, settings given after it win). Its second table is
the preset as it was before it pinned its start-up (marketplace 0; ``training.startup_seed=null``
and that version's logits), ``startup`` and ``live`` at SEED 110-114 (base 105).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

import sim.rng as rng

GROUPS = {
    "market": {"advertisers", "catalog", "feature_maps", "truth", "offsite"},
    "users": {"users"},
    "models": {"exploration", "training/1", "init"},  # and every release/... stream
    "run": {"traffic", "churn", "contexts", "offline_eval", "opening"},
}
# the run's three parts, and two splits of a whole run: startup (models + exploration_labels)
# against live (run_streams + live_draws)
RUN_PARTS = ("run_streams", "exploration_labels", "live_draws")
SPLITS = ("startup", "live")


# the feed preset as the docs' table measured it: the preset has since pinned its marketplace
# and its start-up, lengthened its exploration log and refitted its logits (scenarios/market_feed.yaml)
FIRST_FEED = ["world.market_seed=null", "training.startup_seed=null",
              "training.exploration_requests=60000",
              "training.exploration_negative_rate=1.0", "world.base_ctr_logit=-4.155348",
              "world.base_cvr_logit=-6.721028"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("group", choices=sorted([*GROUPS, *RUN_PARTS, *SPLITS]))
    p.add_argument("seed", type=int)
    p.add_argument("overrides", nargs="*", help="key=value settings of the world")
    p.add_argument("--base", type=int, default=105, help="the seed of every other stream")
    p.add_argument("--scenario", default="market_feed")
    p.add_argument("--first", action="store_true",
                   help="market_feed as the first table measured it (FIRST_FEED)")
    a = p.parse_intermixed_args()
    if a.first and a.scenario != "market_feed":
        p.error("--first: the first version of market_feed only")
    market_seed: int | None = None  # set below, once the config is read
    startup_seed: int | None = None

    def varied(name: str) -> bool:
        known = any(name in g for g in GROUPS.values()) or name.startswith("release")
        if not known:  # a stream added to the simulator since: say which group it belongs to
            raise SystemExit(f"spread.py: stream {name!r} is in no group; add it to GROUPS")
        if startup_seed is not None and name.startswith("release"):
            # a pinned start-up: the releases' own draws change with the run's seed, so they go
            # with the run's streams (the start-up's are not varied at all)
            return a.group in ("run", "run_streams", "live")
        if a.group in ("run_streams", "live"):
            return name in GROUPS["run"]
        group = "models" if a.group == "startup" else a.group
        return name in GROUPS.get(group, ()) or (group == "models" and name.startswith("release"))

    def seq(self: rng.Streams, name: str) -> np.random.SeedSequence:
        # under "run" the config's seed is SEED (the keyed draws read it) and the streams
        # outside the group are held at the base; otherwise the config's seed is the base and
        # the keyed draws of the group's requests take SEED (_key_by_request)
        if self.seed in (market_seed, startup_seed):  # a pinned marketplace's or start-up's own
            # streams: as they are
            return np.random.SeedSequence(entropy=self.seed, spawn_key=(rng._name_key(name),))
        seed = a.seed if varied(name) else a.base
        return np.random.SeedSequence(entropy=seed, spawn_key=(rng._name_key(name),))

    def get(self: rng.Streams, name: str) -> np.random.Generator:
        if name not in self._cache:
            self._cache[name] = np.random.Generator(np.random.Philox(seq(self, name)))
        return self._cache[name]

    rng.Streams.get = get  # type: ignore[method-assign]
    rng.Streams.fresh = lambda self, name: np.random.Generator(np.random.Philox(seq(self, name)))  # type: ignore[method-assign]
    rng.Streams.torch_seed = lambda self, name: int(  # type: ignore[method-assign]
        seq(self, name).generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))

    if a.group in ("exploration_labels", "live_draws", "startup", "live"):
        _key_by_request(a.group in ("exploration_labels", "startup"), a.base, a.seed)

    from hydra.errors import HydraException

    from sim.api import simulate_config
    from sim.config import ConfigError, load_config
    from sim.market_stats import read_logs, statistics

    seed = a.seed if a.group == "run" else a.base
    first = FIRST_FEED if a.first else []
    try:  # bad settings stop here, before the world is built
        cfg = load_config(a.scenario, ["threads.torch=1", "threads.faiss=1", *first,
                                       *a.overrides, f"seed={seed}"])
    except (ConfigError, HydraException) as exc:
        p.error(str(exc).strip())
    market_seed, startup_seed = cfg.world.market_seed, cfg.training.startup_seed
    if startup_seed is not None:
        if a.group in ("models", "exploration_labels", "startup"):
            p.error(f"{a.group}: the start-up is pinned (training.startup_seed={startup_seed}); "
                    "add training.startup_seed=null")
        if startup_seed in (a.seed, a.base):
            p.error(f"SEED and --base must differ from training.startup_seed ({startup_seed})")
    if market_seed is not None:
        if a.group in ("market", "users"):
            p.error(f"{a.group}: the marketplace is pinned (world.market_seed={market_seed})")
        if market_seed in (a.seed, a.base):
            p.error(f"SEED and --base must differ from world.market_seed ({market_seed})")
    run_dir = Path(tempfile.mkdtemp()) / "world"
    try:
        simulate_config(cfg, a.scenario, run_dir)
        stats = statistics(read_logs(run_dir))
        # the start-up log's counts: which draws made it shows here, not in the statistics
        warmup = json.loads((run_dir / "metrics.json").read_text())["warmup"]
    finally:
        shutil.rmtree(run_dir.parent, ignore_errors=True)
    print(json.dumps({"group": a.group, "seed": a.seed, **stats, "warmup": warmup}))


def _key_by_request(exploration: bool, base: int, seed: int) -> None:
    """Keyed draws at the run's seed (the base) take ``seed`` for the exploration log's requests
    (or for live ones): every module's reference to :func:`sim.rng.keyed_uniform` is replaced."""
    import sys

    from sim.models.bootstrap import EXPLORATION_ID_BASE
    from sim.opening import OPENING_ID_BASE

    original = rng.keyed_uniform

    def keyed(s: int, request_id: np.ndarray, ad_id: np.ndarray | int, event: int) -> np.ndarray:
        if s != base:  # another key (an assignment salt): as it was
            return original(s, request_id, ad_id, event)
        held, moved = original(base, request_id, ad_id, event), original(seed, request_id, ad_id, event)
        ids = np.asarray(request_id)  # the opening forecast's requests count as live ones
        mine = ((ids >= EXPLORATION_ID_BASE) & (ids < OPENING_ID_BASE)) == exploration
        return np.where(np.broadcast_to(mine, held.shape), moved, held)

    for module in list(sys.modules.values()):
        if getattr(module, "keyed_uniform", None) is original:
            module.keyed_uniform = keyed  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
