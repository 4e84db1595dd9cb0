"""Results that do not depend on the thread count (``sim.threads``): at 1 and 2 threads a whole
world gives the same bits; the pieces are checked one by one, each of which failed before its fix
(the fused LayerNorm backward at 2 threads, MKL's default mode at 4)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import faiss
import numpy as np
import polars as pl
import pytest
import torch
from torch import nn

from sim.models.dhen import AffineLayerNorm
from sim.models.families import item_slices, make_l1, query_slices
from sim.models.training import distill_two_tower
from sim.threads import blas_mode

from conftest import run_tiny, tiny_config


@pytest.fixture
def restore_threads():  # type: ignore[no-untyped-def]
    torch_threads = torch.get_num_threads()
    yield
    torch.set_num_threads(torch_threads)
    faiss.omp_set_num_threads(1)


def test_importing_sim_asks_mkl_for_its_strict_mode() -> None:
    assert blas_mode() == "AUTO,STRICT"


def test_affine_layer_norm_is_layer_norm() -> None:
    x = torch.randn(64, 5, 16, generator=torch.Generator().manual_seed(0))
    ours, torchs = AffineLayerNorm(16), nn.LayerNorm(16)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
        ours.bias.uniform_(-0.5, 0.5)
    torchs.load_state_dict(ours.state_dict())
    torch.testing.assert_close(ours(x), torchs(x))


def _fit(family: str, threads: int) -> tuple[float, dict[str, torch.Tensor]]:
    """A start-up distillation of ``family`` (two epochs of random rows) at ``threads``."""
    torch.set_num_threads(threads)
    cfg = tiny_config()
    torch.manual_seed(0)
    model = make_l1(family, cfg)
    g = torch.Generator().manual_seed(1)
    n = 6000
    qx = torch.randn(n, query_slices(cfg)[-1].stop, generator=g)
    ix = torch.randn(n, item_slices(cfg)[-1].stop, generator=g)
    teacher, has_label = torch.rand(n, generator=g), torch.rand(n, generator=g) < 0.2
    label = (torch.rand(n, generator=g) < 0.1).float()
    tcfg = dataclasses.replace(cfg.training, epochs=2, batch_size=1024)
    report = distill_two_tower(model, qx, ix, teacher, label, has_label, tcfg, g)
    return report.loss, model.state_dict()


@pytest.mark.parametrize(("family", "threads"), [("simple", 2), ("simple", 4), ("dhen", 2)])
@pytest.mark.usefixtures("restore_threads")
def test_training_gives_the_same_bits_at_any_thread_count(family: str, threads: int) -> None:
    loss_1, state_1 = _fit(family, 1)
    loss_n, state_n = _fit(family, threads)
    assert loss_1 == loss_n
    assert [k for k in state_1 if not torch.equal(state_1[k], state_n[k])] == []


@pytest.mark.parametrize("family", ["simple", "dhen"])
@pytest.mark.usefixtures("restore_threads")
def test_tower_vectors_of_any_batch_size_are_the_same_at_one_and_two_threads(family: str) -> None:
    """MKL's kernels for 4 to 16 rows into 16 or 17 outputs give other bits on 2 threads, even in
    strict mode: small batches run on one thread (``sim.threads.few_rows_on_one_thread``)."""
    cfg = tiny_config()
    torch.manual_seed(0)
    model = make_l1(family, cfg).eval()
    g = torch.Generator().manual_seed(2)
    for rows in range(1, 80, 3):
        qx = torch.randn(rows, query_slices(cfg)[-1].stop, generator=g)
        ix = torch.randn(rows, item_slices(cfg)[-1].stop, generator=g)
        out = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            with torch.inference_mode():
                out.append((model.query_vectors(qx), model.item_vectors(ix)))
        assert torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1]), rows


@pytest.mark.usefixtures("restore_threads")
def test_exact_search_gives_the_same_bits_at_any_thread_count() -> None:
    rng = np.random.default_rng(0)
    items = rng.standard_normal((5000, 17)).astype(np.float32)
    queries = rng.standard_normal((300, 17)).astype(np.float32)
    index = faiss.IndexFlatIP(17)
    index.add(items)
    results = []
    for threads in (1, 2, 4):
        faiss.omp_set_num_threads(threads)
        results.append(index.search(queries, 50))
    for scores, ids in results[1:]:
        assert np.array_equal(scores, results[0][0]) and np.array_equal(ids, results[0][1])


@pytest.mark.usefixtures("restore_threads")
def test_a_world_gives_the_same_results_at_one_and_two_threads(tmp_path: Path) -> None:
    """A tiny A/B world with a ``dhen`` treatment: metrics and every log table equal."""
    arms = ("experiment.arms=[control,treatment]", "+experiment.treatment.models.l1_family=dhen")
    run_tiny(tmp_path / "one", *arms, "threads.torch=1", "threads.faiss=1")
    run_tiny(tmp_path / "two", *arms, "threads.torch=2", "threads.faiss=2")
    assert (tmp_path / "one" / "metrics.json").read_text() == (tmp_path / "two" / "metrics.json").read_text()
    tables = sorted(p.name for p in (tmp_path / "one" / "logs").glob("*.parquet"))
    assert tables == sorted(p.name for p in (tmp_path / "two" / "logs").glob("*.parquet"))
    assert len(tables) > 10
    for table in tables:
        one, two = (pl.read_parquet(tmp_path / r / "logs" / table) for r in ("one", "two"))
        if "build_s" in one.columns:  # wall time
            one, two = one.drop("build_s"), two.drop("build_s")
        assert one.equals(two), table
