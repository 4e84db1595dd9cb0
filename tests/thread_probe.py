"""Run by ``test_threads.py`` in a process started with ``MKL_CBWR=AUTO,STRICT`` (MKL reads its mode
once, at its first call, so the test process itself cannot switch): compares 1 and 2 threads (and
4) piece by piece and for a whole world, and prints one JSON line of findings."""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
from pathlib import Path

import faiss
import numpy as np
import polars as pl
import torch

from sim.models.families import item_slices, make_l1, query_slices
from sim.models.training import distill_two_tower
from sim.threads import Threads, apply, blas_mode

from conftest import run_tiny, tiny_config


def _mode(threads: int, deterministic: bool) -> None:
    apply(Threads(torch=threads, faiss=threads, deterministic=deterministic))


def _fit(family: str, threads: int, deterministic: bool = True) -> tuple[float, dict[str, torch.Tensor]]:
    """A start-up distillation of ``family`` (two epochs of random rows, a small last batch)."""
    _mode(threads, deterministic)
    cfg = tiny_config()
    torch.manual_seed(0)
    model = make_l1(family, cfg)
    g = torch.Generator().manual_seed(1)
    n = 6000 + 9  # the last batch of each epoch has 9 rows
    qx = torch.randn(n, query_slices(cfg)[-1].stop, generator=g)
    ix = torch.randn(n, item_slices(cfg)[-1].stop, generator=g)
    teacher, has_label = torch.rand(n, generator=g), torch.rand(n, generator=g) < 0.2
    label = (torch.rand(n, generator=g) < 0.1).float()
    tcfg = dataclasses.replace(cfg.training, epochs=2, batch_size=1000)
    report = distill_two_tower(model, qx, ix, teacher, label, has_label, tcfg, g)
    return report.loss, model.state_dict()


def same_fit(family: str, threads: int, deterministic: bool = True) -> bool:
    (loss_1, s1), (loss_n, sn) = _fit(family, 1, deterministic), _fit(family, threads, deterministic)
    return loss_1 == loss_n and all(torch.equal(s1[k], sn[k]) for k in s1)


def same_vectors(family: str) -> bool:
    """Query and item vectors of batches of 1 to 79 rows."""
    cfg = tiny_config()
    torch.manual_seed(0)
    model = make_l1(family, cfg).eval()
    g = torch.Generator().manual_seed(2)
    for rows in range(1, 80, 3):
        qx = torch.randn(rows, query_slices(cfg)[-1].stop, generator=g)
        ix = torch.randn(rows, item_slices(cfg)[-1].stop, generator=g)
        out = []
        for threads in (1, 2):
            _mode(threads, True)
            with torch.inference_mode():
                out.append((model.query_vectors(qx), model.item_vectors(ix)))
        if not (torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1])):
            return False
    return True


def same_search() -> bool:
    rng = np.random.default_rng(0)
    items = rng.standard_normal((5000, 17)).astype(np.float32)
    queries = rng.standard_normal((300, 17)).astype(np.float32)
    index = faiss.IndexFlatIP(17)
    index.add(items)
    results = []
    for threads in (1, 2, 4):
        faiss.omp_set_num_threads(threads)
        results.append(index.search(queries, 50))
    return all(np.array_equal(s, results[0][0]) and np.array_equal(i, results[0][1])
               for s, i in results[1:])


def same_world(tmp: Path) -> list[str]:
    """A tiny A/B world with a ``dhen`` treatment at 1 and 2 threads: what differs (metrics.json,
    log tables; the wall-time column ``build_s`` left out)."""
    arms = ("experiment.arms=[control,treatment]", "experiment.treatment.models.l1_family=dhen",
            "threads.deterministic=true")
    for t in (1, 2):
        run_tiny(tmp / str(t), *arms, f"threads.torch={t}", f"threads.faiss={t}")
    differ = []
    if (tmp / "1" / "metrics.json").read_text() != (tmp / "2" / "metrics.json").read_text():
        differ.append("metrics.json")
    tables = sorted(p.name for p in (tmp / "1" / "logs").glob("*.parquet"))
    for table in tables:
        one, two = (pl.read_parquet(tmp / r / "logs" / table) for r in ("1", "2"))
        one, two = (f.drop([c for c in ("build_s",) if c in f.columns]) for f in (one, two))
        if not one.equals(two):
            differ.append(table)
    return differ if len(tables) > 10 else ["too few tables"]


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        findings = {
            "blas": blas_mode(),
            "simple_2": same_fit("simple", 2), "simple_4": same_fit("simple", 4),
            "dhen_2": same_fit("dhen", 2),
            "dhen_2_not_deterministic": same_fit("dhen", 2, deterministic=False),
            "vectors_simple": same_vectors("simple"), "vectors_dhen": same_vectors("dhen"),
            "search": same_search(), "world_differs": same_world(Path(tmp)),
        }
    print(json.dumps(findings))
    sys.exit(0)
