"""``python -m sim.bench``: the data plane's throughput against its kernel floor, as one JSON object.

Every figure is measured in this process and run, as the median of ``--reps`` repetitions after
one warm-up. The shape: a world of ``--ads`` ads (20,000), batches of ``--batch``
requests (2,048) split between two arms (50% each, by the users' assignment hash),
K_r = 200, K_1 = 50, K_2 = 10, 3 slots.

* ``requests_per_s``: the whole data plane of one tick — for each arm the funnel (query tower,
  faiss retrieval over the deployed tiers, L1, L2, auction, response draws), the budget booking,
  the log rows and their sampling, the training log, version and coverage telemetry — over
  ``--batches`` batches.
* ``kernel_floor_requests_per_s``: the same batches through the raw kernels only, per arm: one
  faiss search of the ``large`` tier for top-K_r, the query-tower forward, the L2 forward over the
  (requests x K_1) pairs, and one numpy partition over (requests x K_2) bids. ``ratio`` is the
  first figure over this one (1 = the simulator's bookkeeping costs nothing), as the median of
  the ratios of back-to-back pairs of repetitions (this machine's speed drifts by 10-20%
  between minutes; a pair shares it).
* ``retrieval_recall_vs_exact``: the share of the exact top-K_r that the deployed ``large`` tier
  returns for the batches' queries: 1 for the default ``Flat`` index, below 1 for an approximate
  one (``--factory IVF1024,Flat --nprobe 16``), the price of its speed.
* ``batch1_requests_per_s``: the same data plane fed one request at a time (as a design with one
  SimPy process per request would run it), on ``--batch1-requests`` requests.
* ``scaling``: ``requests_per_s`` for 1x and 4x the batches, and for each world size in
  ``--scale-ads`` (the world is rebuilt for each).
* ``default_scenario_s``: wall time of ``python -m sim`` in a subprocess (``--skip-default``).
* ``headline_s``, ``attribution_worlds_s``, ``attribution_over_headline``: wall time of
  ``python -m sim scenario=l1_cvr_discrepancy`` and of ``python -m sim.report RUN_DIR --attribute
  --hazards parity_gap,version_skew`` on it (three more worlds), each in a subprocess
  (``--skip-headline``); ``headline_parts_s``: the headline's ``setup_s``, ``opening_s``,
  ``releases_s``, ``data_plane_s``, ``evaluation_s`` (its manifest) and ``other_s``, the rest of
  its wall time.
* ``peak_rss_mb``: this process's peak resident memory (``ru_maxrss``), which includes every world
  built for ``scaling``.

The worlds are built with a short warm-up (``training.exploration_requests``) so that set-up does
not dominate, and with budgets too large to cap, so that every repetition does the same work
(pacing does not run between repetitions); set-up is not timed. Logs go to a temporary directory
that is removed.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch

from sim.config import load_config
from sim.config.schema import Config
from sim.logs.writer import LogWriter
from sim.models.inputs import query_inputs
from sim.serving.funnel import l2_predict
from sim.serving.index import search
from sim.simulation import Simulation
from sim.world.traffic import RequestBatch, draw_audience

SHAPE = {"funnel.k_retrieval": 200, "funnel.k_l1": 50, "funnel.k_l2": 10, "auction.n_slots": 3}
BENCH_TIME_S = 3600.0  # simulated time the benchmark batches carry (after the initial deploy)


def bench_config(n_ads: int, threads: int, factory: str = "Flat", nprobe: int = 1) -> Config:
    """The benchmark world: ``n_ads`` ads (10 per advertiser), two arms: the shape the cost
    target was set on."""
    return load_config("default", [
        f"world.n_advertisers={max(1, n_ads // 10)}", "world.ads_per_advertiser=10",
        "world.daily_budget_mean=1e9",  # no budget caps: every repetition does the same work
        *(f"{k}={v}" for k, v in SHAPE.items()), "experiment.arms=[control,treatment]",
        "training.exploration_requests=20000", "training.epochs=1", f"threads.torch={threads}",
        f"threads.faiss={threads}", "progress=off", f"index.factory='{factory}'",
        f"index.nprobe={nprobe}"])


def make_batches(sim: Simulation, n_batches: int, size: int, seed: int = 0) -> list[RequestBatch]:
    rng = np.random.default_rng(seed)
    out, first = [], 1 << 50  # request ids far above the run's own
    for _ in range(n_batches):
        user, surface = draw_audience(rng, size, sim.market.users, sim.market.surface_mix)
        out.append(RequestBatch(request_id=first + np.arange(size, dtype=np.int64),
                                time=np.full(size, BENCH_TIME_S), user=user,
                                segment=sim.market.users.segment[user], surface=surface))
        first += size
    return out


def data_plane(sim: Simulation, batches: list[RequestBatch]) -> None:
    """What the traffic process does for each tick's batch (``Simulation.serve_tick``)."""
    for batch in batches:
        sim.serve_tick(batch, sim.cfg.traffic.tick_s)


def kernels(sim: Simulation, batches: list[RequestBatch]) -> None:
    """The raw kernels of the same batches (see the module docstring)."""
    cfg = sim.cfg
    ns = len(cfg.world.surfaces)
    for batch in batches:
        for arm, idx in sim._assign(batch):  # the users' assignment at the 50% share
            rows = batch.take(idx)
            qx = query_inputs(sim.market.users, rows.user, rows.surface, ns)
            with torch.inference_mode():
                qv = arm.query_model.query_vectors(torch.from_numpy(qx)).numpy()
            _, found = search(arm.tiers["large"], qv, cfg.funnel.k_retrieval)
            slot = arm.tiers["large"].slot[np.maximum(found[:, :cfg.funnel.k_l1], 0)]
            pcvr = l2_predict(arm, sim.market, cfg, rows, slot).pcvr
            np.argpartition(-pcvr[:, :cfg.funnel.k_l2], cfg.auction.n_slots - 1, axis=1)


def timed(fn: Callable[[], None], reps: int) -> float:
    """Median wall seconds of ``reps`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def paired(fn: Callable[[], None], floor: Callable[[], None], reps: int
           ) -> tuple[float, float, float]:
    """Median wall seconds of ``fn`` and of ``floor`` over ``reps`` back-to-back pairs (after one
    warm-up of each), and the median of the per-pair ratios floor / fn: a pair shares the
    machine's speed of the moment, so the ratio is steadier than the ratio of two medians on a
    machine whose speed drifts."""
    fn()
    floor()
    a, b = [], []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        a.append(time.perf_counter() - t)
        t = time.perf_counter()
        floor()
        b.append(time.perf_counter() - t)
    return (statistics.median(a), statistics.median(b),
            statistics.median(y / x for x, y in zip(a, b, strict=True)))


def recall_vs_exact(sim: Simulation, batches: list[RequestBatch]) -> float:
    """Share of the exact top-K_r (an inner-product ``Flat`` index over the same vectors) that
    each arm's deployed ``large`` tier returns for the batches' queries (1 for a ``Flat`` tier)."""
    k, ns, found = sim.cfg.funnel.k_retrieval, len(sim.cfg.world.surfaces), []
    for batch in batches:
        for arm, idx in sim._assign(batch):
            tier = arm.tiers["large"]
            ivf = faiss.try_extract_index_ivf(tier.index)
            if ivf is not None:
                ivf.make_direct_map()
            vectors = tier.index.reconstruct_n(0, tier.index.ntotal)
            if tier.mips_norm2 is not None:
                vectors = np.ascontiguousarray(vectors[:, :-1])  # drop the norm padding
            exact = faiss.IndexFlatIP(vectors.shape[1])
            exact.add(vectors)
            rows = batch.take(idx)
            qx = query_inputs(sim.market.users, rows.user, rows.surface, ns)
            with torch.inference_mode():
                qv = np.ascontiguousarray(arm.query_model.query_vectors(torch.from_numpy(qx)).numpy())
            _, got = search(tier, qv, k)
            _, want = exact.search(qv, k)
            hit = (got[:, :, None] == want[:, None, :]) & (want[:, None, :] >= 0)
            found.append(hit.any(axis=1).sum(axis=1) / np.maximum((want >= 0).sum(axis=1), 1))
    return float(np.concatenate(found).mean())


def world(n_ads: int, threads: int, log_dir: Path, factory: str = "Flat", nprobe: int = 1
          ) -> Simulation:
    sim = Simulation.from_config(bench_config(n_ads, threads, factory, nprobe),
                                 LogWriter(log_dir, 250_000))
    sim.env.run(until=BENCH_TIME_S)  # past the initial deploy: pacing, enrichment, builds ran
    return sim


def measure(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"shape": {"ads": args.ads, "batch": args.batch, "batches": args.batches,
                                     "arms": 2, "factory": args.factory, "nprobe": args.nprobe,
                                     **SHAPE}, "reps": args.reps,
                           "threads": args.threads}
    with tempfile.TemporaryDirectory() as tmp:
        sim = world(args.ads, args.threads, Path(tmp) / "main", args.factory, args.nprobe)
        batches = make_batches(sim, args.batches, args.batch)
        n = args.batches * args.batch
        full, floor, ratios = paired(lambda: data_plane(sim, batches),
                                     lambda: kernels(sim, batches), args.reps)
        out["requests_per_s"] = n / full
        out["kernel_floor_requests_per_s"] = n / floor
        out["ratio"] = ratios
        out["retrieval_recall_vs_exact"] = recall_vs_exact(sim, batches)
        single = make_batches(sim, args.batch1_requests, 1, seed=1)
        out["batch1_requests_per_s"] = args.batch1_requests / timed(
            lambda: data_plane(sim, single), max(1, args.reps // 2))
        out["batched_over_batch1"] = out["requests_per_s"] / out["batch1_requests_per_s"]
        four = make_batches(sim, 4 * args.batches, args.batch, seed=2)
        scaling: dict[str, Any] = {"requests": {
            "1x": out["requests_per_s"],
            "4x": 4 * n / timed(lambda: data_plane(sim, four), args.reps)}, "ads": {}}
        for n_ads in args.scale_ads:
            s = sim if n_ads == args.ads else world(n_ads, args.threads, Path(tmp) / str(n_ads),
                                                    args.factory, args.nprobe)
            b = batches if s is sim else make_batches(s, args.batches, args.batch)
            scaling["ads"][str(n_ads)] = n / timed(functools.partial(data_plane, s, b), args.reps)
        out["scaling"] = scaling
    if not args.skip_default:
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "sim", "progress=off", f"hydra.run.dir={tmp}"],
                           check=True, capture_output=True)
            out["default_scenario_s"] = time.perf_counter() - t
    if not args.skip_headline:
        out |= headline_costs()
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    out["machine"] = {"cpus": os.cpu_count(), "torch": torch.__version__,
                      "faiss": faiss.__version__}
    return out


def headline_costs() -> dict[str, Any]:
    """Wall seconds of the headline world (``scenario=l1_cvr_discrepancy``, without its exposure
    twin: the world itself) and of its attribution over ``parity_gap,version_skew`` (three more
    worlds sharing their checkpoints), each a subprocess, one after the other; and the
    headline's parts by its manifest: set-up (the world and its start-up training), the
    market's opening (the first day's delivery forecast), releases,
    data plane, offline evaluation, and the rest (control plane, summary, logs)."""
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "headline"
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "sim", "scenario=l1_cvr_discrepancy", "progress=off",
                        "experiment.exposure_twin=false", f"hydra.run.dir={run_dir}"],
                       check=True, capture_output=True)
        world = time.perf_counter() - t
        manifest = json.loads((run_dir / "manifest.json").read_text())
        parts = {k: manifest[k] for k in ("setup_s", "opening_s", "releases_s", "data_plane_s",
                                          "evaluation_s")}
        parts["other_s"] = manifest["wall_s"] - sum(parts.values())
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "sim.report", str(run_dir), "--attribute",
                        "--hazards", "parity_gap,version_skew"], check=True, capture_output=True)
        worlds = time.perf_counter() - t
    return {"headline_s": world, "headline_parts_s": parts, "attribution_worlds_s": worlds,
            "attribution_over_headline": worlds / world}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m sim.bench", description=__doc__.split("\n")[0])
    p.add_argument("--ads", type=int, default=20_000)
    p.add_argument("--batch", type=int, default=2048)
    p.add_argument("--batches", type=int, default=4)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--batch1-requests", type=int, default=200)
    p.add_argument("--scale-ads", type=lambda s: [int(x) for x in s.split(",") if x],
                   default=[20_000, 100_000], help="comma-separated world sizes, e.g. 20000,1000000")
    p.add_argument("--threads", type=int, default=2, help="torch and faiss threads")
    p.add_argument("--factory", default="Flat",
                   help="faiss index factory of every benchmark world, e.g. IVF1024,Flat")
    p.add_argument("--nprobe", type=int, default=1, help="lists an IVF index searches")
    p.add_argument("--skip-default", action="store_true", help="do not time `python -m sim`")
    p.add_argument("--skip-headline", action="store_true",
                   help="do not time the headline world and its attribution (about 7 min here)")
    args = p.parse_args(argv)
    for name in ("ads", "batch", "batches", "reps", "batch1_requests", "threads", "nprobe"):
        if getattr(args, name) < 1:
            p.error(f"`--{name.replace('_', '-')}` must be >= 1, got {getattr(args, name)}")
    if args.ads < 2000:
        p.error(f"`--ads` must be >= 2000 (K_r = 200 candidates per request), got {args.ads}")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    out = measure(parse(argv))
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
