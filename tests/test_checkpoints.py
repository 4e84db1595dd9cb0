"""The checkpoint cache: a model is trained once, and a loaded fit is bit for bit a trained one."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from sim.models.checkpoints import Checkpoints, Digest
from sim.models.training import FitReport

from conftest import read_json, run_tiny


def _fit(model: torch.nn.Module, gen: torch.Generator) -> FitReport:
    """A stand-in training step that depends on the model and draws from the generator."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen))
    model.eval()
    return FitReport(loss=float(sum(p.detach().sum() for p in model.parameters())), steps=3)


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Linear(4, 3)


def test_a_known_fit_loads_the_model_and_the_generator_state(tmp_path: Path) -> None:
    cache = Checkpoints(None, 1.0, threads=1)
    trained, g1 = _model(), torch.Generator().manual_seed(7)
    r1 = cache.fit("l2", trained, g1, {"rows": np.arange(5)}, lambda: _fit(trained, g1))
    loaded, g2 = _model(), torch.Generator().manual_seed(7)
    r2 = cache.fit("l2", loaded, g2, {"rows": np.arange(5)}, lambda: pytest.fail("trained twice"))
    assert r1 == r2 and not loaded.training
    for a, b in zip(trained.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(g1.get_state(), g2.get_state())  # what is drawn next is the same too
    assert cache.stats.trained == 1 and cache.stats.from_memory == 1
    other = _model()
    cache.fit("l2", other, torch.Generator().manual_seed(7), {"rows": np.arange(6)},
              lambda: _fit(other, torch.Generator().manual_seed(7)))
    assert cache.stats.trained == 2  # other rows: another key


def test_digest_tells_apart_values_with_the_same_bytes() -> None:
    a = np.zeros(4, np.int32)
    assert Digest().add(a).hexdigest() != Digest().add(a.view(np.float32)).hexdigest()
    assert Digest().add(a).hexdigest() != Digest().add(a.reshape(2, 2)).hexdigest()
    assert Digest().add([1, 2]).hexdigest() != Digest().add([[1, 2]]).hexdigest()
    assert Digest().add({"a": 1.0}).hexdigest() == Digest().add({"a": 1.0}).hexdigest()
    with pytest.raises(TypeError, match="cannot digest"):
        Digest().add(object())


def test_the_directory_is_shared_atomic_and_bounded(tmp_path: Path) -> None:
    d = tmp_path / "cache"
    first = Checkpoints(d, max_mb=1.0, threads=1)
    m, g = _model(), torch.Generator().manual_seed(1)
    first.fit("l1", m, g, {"x": 1}, lambda: _fit(m, g))
    assert len(list(d.glob("*.pt"))) == 1 and not list(d.glob("*.tmp"))
    second = Checkpoints(d, max_mb=1.0, threads=1)  # another run, another process
    m2 = _model()
    second.fit("l1", m2, torch.Generator().manual_seed(1), {"x": 1}, lambda: pytest.fail("retrained"))
    assert second.stats.from_disk == 1
    threads = Checkpoints(d, max_mb=1.0, threads=2)  # results depend on the thread count
    m3, g3 = _model(), torch.Generator().manual_seed(1)
    threads.fit("l1", m3, g3, {"x": 1}, lambda: _fit(m3, g3))
    assert threads.stats.trained == 1
    # bounded: a tiny limit keeps only the most recently used entries
    size = next(d.glob("*.pt")).stat().st_size
    small = Checkpoints(d, max_mb=1.5 * size / 1e6, threads=1)
    oldest = sorted(d.glob("*.pt"), key=lambda p: p.stat().st_mtime)[0]
    os.utime(oldest, (0, 0))
    m4, g4 = _model(), torch.Generator().manual_seed(2)
    small.fit("l1", m4, g4, {"x": 2}, lambda: _fit(m4, g4))
    left = list(d.glob("*.pt"))
    assert len(left) == 1 and oldest not in left


def test_metrics_are_identical_with_and_without_the_cache(tmp_path: Path) -> None:
    """The same tiny world three times: no cache directory, an empty one (everything trained and
    written), and again (every fit loaded from disk). ``metrics.json`` is bit for bit the same."""
    cache = tmp_path / "cache"
    run_tiny(tmp_path / "plain", "experiment.arms=[control,treatment]")
    run_tiny(tmp_path / "cold", "experiment.arms=[control,treatment]", f"cache.dir={cache}")
    run_tiny(tmp_path / "warm", "experiment.arms=[control,treatment]", f"cache.dir={cache}")
    texts = {(tmp_path / r / "metrics.json").read_text() for r in ("plain", "cold", "warm")}
    assert len(texts) == 1
    cold = read_json(tmp_path / "cold" / "manifest.json")["checkpoints"]
    warm = read_json(tmp_path / "warm" / "manifest.json")["checkpoints"]
    assert cold["trained"] > 0 and cold["from_memory"] > 0  # an A/A: the treatment's are loaded
    assert cold["written"] == cold["trained"]
    assert warm["trained"] == 0 and warm["from_disk"] == cold["trained"]
