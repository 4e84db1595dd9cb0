"""L1 families of one's own: registered by import path, validated with the config, run in a
world, swept for skew and gated like the built-in ones."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from sim.config import ConfigError, load_config
from sim.config.schema import ModelsConfig
from sim.models.families import family_class
from sim.models.towers import Standardize, TwoTowerBase

from conftest import run_tiny

PATH = f"{__name__}:BilinearTwoTower"


class BilinearTwoTower(TwoTowerBase):
    """Linear towers: the pair score is a bilinear form of the standardised inputs."""

    family = "bilinear"

    def __init__(self, query_width: int, item_width: int, dim: int) -> None:
        super().__init__()
        self.query_norm = Standardize(query_width)
        self.item_norm = Standardize(item_width)
        self.register_buffer("item_view", torch.ones(item_width))
        self.query_tower = nn.Linear(query_width, dim)
        self.item_tower = nn.Linear(item_width, dim + 1)
        self._query_mflops = 2.0 * query_width * dim / 1e6

    @classmethod
    def from_config(cls, query_slices: list[slice], item_slices: list[slice],
                    models: ModelsConfig) -> BilinearTwoTower:
        return cls(query_slices[-1].stop, item_slices[-1].stop, models.embedding_dim)

    def query_mflops(self) -> float:
        return self._query_mflops


class NotAFamily:
    pass


def test_a_family_registered_by_path_serves_and_gets_a_skew_sweep_and_gate(tmp_path: Path) -> None:
    m = run_tiny(tmp_path, f"models.l1_family='{PATH}'", f"readiness.families=['{PATH}',simple]")
    sweep = m["offline"]["skew_sweep"]
    assert set(sweep) == {PATH, "simple"} and set(sweep[PATH]) >= {"0", "1"}
    assert m["offline"]["skew_gate"][PATH]["result"] in ("pass", "fail")
    assert m["offline"]["models"]["control"]["family"] == PATH
    work = BilinearTwoTower.from_config(*[[slice(0, 10)], [slice(0, 7)]],
                                        load_config("default").models).query_mflops()
    assert m["arms"]["control"]["latency_ms"]["query_tower"]["p50"] > 0 and work > 0


@pytest.mark.parametrize(("name", "message"), [
    ("bilinear", r"`models.l1_family` must be one of \['simple', 'dhen'\] or an import path"),
    ("no_such_module_xyz:Tower", r"cannot import module 'no_such_module_xyz'"),
    (f"{__name__}:Missing", r"has no 'Missing'"),
    (f"{__name__}:NotAFamily", r"is not an L1 family class"),
])
def test_a_bad_family_fails_before_the_run_naming_the_key(name: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config("default", [f"models.l1_family='{name}'"])
    with pytest.raises(ConfigError, match=r"`readiness.families\[1\]`"):
        load_config("default", [f"readiness.families=[simple,'{name}']"])


def test_builtin_families_are_two_implementations_of_the_protocol() -> None:
    for name in ("simple", "dhen"):
        assert issubclass(family_class(name), TwoTowerBase)
    assert family_class(PATH) is BilinearTwoTower


def test_the_example_family_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "examples"))
    cfg = load_config("default", ["models.l1_family='wide_tower:WideTwoTower'"])
    cls = family_class(cfg.models.l1_family)
    model = cls.from_config([slice(0, 8), slice(8, 16), slice(16, 19)], [slice(0, 30)], cfg.models)
    q = model.query_vectors(torch.zeros(4, 19))
    assert q.shape == (4, cfg.models.embedding_dim + 1) and (q[:, -1] == 1).all()
    sys.modules.pop("wide_tower", None)


def test_the_smallest_family_of_the_docs_is_the_example_and_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    """``docs/families.md`` shows ``examples/linear_tower.py`` word for word; it builds, its query
    vector carries the constant 1, its item vector the bias slot."""
    root = Path(__file__).resolve().parents[1]
    page = (root / "docs" / "families.md").read_text()
    shown = "from __future__" + page.split("```python\nfrom __future__")[1].split("```")[0]
    code = (root / "examples" / "linear_tower.py").read_text()
    assert code[code.index("from __future__"):] == shown
    monkeypatch.syspath_prepend(str(root / "examples"))
    cfg = load_config("default", ["models.l1_family='linear_tower:LinearTwoTower'"])
    model = family_class(cfg.models.l1_family).from_config(
        [slice(0, 8), slice(8, 16), slice(16, 19)], [slice(0, 30)], cfg.models)
    q = model.query_vectors(torch.zeros(4, 19))
    assert q.shape == (4, cfg.models.embedding_dim + 1) and (q[:, -1] == 1).all()
    assert model.item_tower(torch.zeros(2, 30)).shape == (2, cfg.models.embedding_dim + 1)
    scores = model(torch.randn(4, 19), torch.randn(4, 30))
    assert scores.shape == (4,) and torch.isfinite(scores).all()
    sys.modules.pop("linear_tower", None)
