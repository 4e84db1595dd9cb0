"""The model-versioning bug: a serving pointer that lags the releases (``releases.pointer_lag``).

Serving loads the version k releases behind the newest, on both towers, while the offline
evaluation scores the newest; the served versions are logged on every impression and candidate,
and the report's ``model_version`` verdict compares them with the release log.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from sim.report import verdicts as V
from sim.summary import served_versions

from conftest import read_log, run_tiny


def _verdict(m: dict, key: str) -> V.Verdict:
    return next(v for v in V.verdicts(m) if v.key == key)


@pytest.fixture(scope="module")
def lagged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    d = tmp_path_factory.mktemp("lag")
    return d, run_tiny(d, "releases.pointer_lag=1")


def test_a_lagging_pointer_serves_the_version_one_release_behind(lagged: tuple[Path, dict]) -> None:
    d, m = lagged
    releases = read_log(d, "model_releases").filter(pl.col("lineage") == "control/l1")
    rollouts = read_log(d, "rollouts").filter(pl.col("lineage") == "control/l1")
    newest = releases["version"].max()
    assert newest >= 3  # the tiny world releases every 2 h over 6 h
    # each release's rollouts (item at once, query after the delay) name the version before it
    for side in ("item", "query"):
        rolled = rollouts.filter(pl.col("side") == side)["version"].to_list()
        assert rolled == sorted(rolled) and max(rolled) == newest - 1, (side, rolled)
    imps = read_log(d, "impressions").filter(pl.col("arm") == "control")
    assert imps["query_version"].max() == newest - 1
    cands = read_log(d, "candidates").filter(pl.col("arm") == "control")
    assert cands["item_version"].max() <= newest - 1  # the index holds no vector of the newest
    sv = m["arms"]["control"]["served_versions"]
    assert sv["served_last"] == newest - 1 and sv["released_last"] == newest
    assert sv["behind_share"] > 0.3 and sv["mean_lag"] == pytest.approx(sv["behind_share"])
    model = m["offline"]["models"]["control"]
    assert model["version"] == newest and model["served"]["version"] == newest - 1
    assert set(model["served"]["sources"]) == set(model["sources"])
    v = _verdict(m, "model_version")
    assert v.status == V.CAUSE and v.arms == ("control",), v


def test_a_slow_rollout_is_not_a_versioning_bug(tmp_path: Path) -> None:
    """The near miss: the query tower goes live 100 minutes after each release (not 20), so
    for most of the run it serves an older version than the newest; the release log allows for
    that delay, so nothing is served behind it, and the newest version serves at the end."""
    m = run_tiny(tmp_path, "releases.query_rollout_delay_s=6000")
    sv = m["arms"]["control"]["served_versions"]
    assert sv["behind_share"] == 0.0 and sv["served_last"] == sv["released_last"]
    assert "served" not in m["offline"]["models"]["control"]
    assert _verdict(m, "model_version").status == V.RULED_OUT


def test_served_versions_by_hand() -> None:
    """Ticks of 100 s; a tick is served by the version live at its start. Version 2 is released
    at 100 and rolled out 20 s later, so it is due from the tick starting at 200 (at 120 the
    tick of 100 is already being served); version 3, released at 200, from the tick of 300."""
    imps = pl.DataFrame({"arm": ["a"] * 6, "time": [10.0, 150.0, 190.0, 230.0, 260.0, 310.0],
                         "query_version": [1, 1, 1, 2, 2, 2]})
    releases = pl.DataFrame({"lineage": ["a/l1"] * 3, "time": [0.0, 100.0, 200.0],
                             "version": [1, 2, 3]})
    sv = served_versions(imps, releases, "a", 20.0, 100.0)
    assert sv == {"behind_share": pytest.approx(1 / 6), "mean_lag": pytest.approx(1 / 6),
                  "served_last": 2, "released_last": 3}
    no_delay = served_versions(imps, releases, "a", 0.0, 100.0)  # v2 due from the tick of 100,
    assert no_delay["behind_share"] == pytest.approx(5 / 6)  # v3 from the tick of 200
    assert served_versions(imps, releases, "b", 20.0, 100.0) == {}


def test_a_rollout_that_lands_inside_a_tick_is_not_a_bug(tmp_path: Path) -> None:
    """A query rollout 25 minutes after each release, with 10-minute ticks: the new version
    serves from the next tick's start, which is what the release log allows."""
    m = run_tiny(tmp_path, "releases.query_rollout_delay_s=1500")
    assert m["arms"]["control"]["served_versions"]["behind_share"] == 0.0
