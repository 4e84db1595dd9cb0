"""Feature families, the feature registry, coverage, the parity audit and scheduled changes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.clock import DAY_S
from sim.config import ConfigError
from sim.config.schema import ARTIFACTS, FEATURE_FAMILIES, FeatureChange, FeaturesConfig
from sim.features.coverage import CoverageCounts, count_coverage, coverage_shares
from sim.features.registry import FeatureRegistry, bits, fill_default, has_family, resolve
from sim.logs.writer import LogWriter
from sim.parity_audit import parity_audit
from sim.serving.pipeline import EmbeddingTable, embed, stale_slots
from sim.simulation import Simulation
from sim.world.catalog import family_slices
from sim.world.offsite import OffsiteCounter

from conftest import read_json, read_log, run_tiny, tiny_config

GAP = ("features.onboarding.offsite_conversions=[training_logs,l2_feature_store]",)
onboarding_tables = st.dictionaries(st.sampled_from(FEATURE_FAMILIES),
                                    st.lists(st.sampled_from(ARTIFACTS), unique=True))


@settings(max_examples=100, deadline=None)
@given(table=onboarding_tables)
def test_registry_semantics_with_and_without_l2_implies_l1(table: dict[str, list[str]]) -> None:
    off, on = resolve(table, False), resolve(table, True)
    for artifact in ARTIFACTS:  # without the flag: exactly the table
        assert off[artifact] == {f for f, arts in table.items() if artifact in arts}
    assert on["training_logs"] == off["training_logs"]
    assert on["l2_feature_store"] == off["l2_feature_store"]
    assert on["l1_embedding"] == off["l1_embedding"] | off["l2_feature_store"]  # the tooling fix


def test_registry_changes_report_what_they_altered() -> None:
    reg = FeatureRegistry.from_config(FeaturesConfig(onboarding={
        "base": list(ARTIFACTS), "offsite_conversions": ["training_logs", "l2_feature_store"]}))
    assert "offsite_conversions" not in reg.families("l1_embedding")
    assert reg.apply(FeatureChange(day=1.0, l2_implies_l1=True), 5.0) == ["l1_embedding"]
    assert "offsite_conversions" in reg.families("l1_embedding")
    assert reg.changed_at == {"l1_embedding": 5.0}
    assert reg.apply(FeatureChange(day=2.0, onboard={"base": ["l1_embedding"]}), 9.0) == []
    with pytest.raises(ValueError, match="`artifact` must be one of"):
        reg.families("index")


def test_bad_onboarding_is_rejected_with_key_and_value() -> None:
    with pytest.raises(ConfigError, match=r"features.onboarding.base.*'l3_cache'"):
        tiny_config("features.onboarding.base=[l3_cache]")
    with pytest.raises(ConfigError, match=r"features.changes\[0\].onboard.*'colour'"):
        tiny_config("features.changes=[{day:1,onboard:{colour:[l1_embedding]}}]")


def test_fill_default_zeroes_exactly_the_families_not_onboarded() -> None:
    slices = family_slices(8)
    x = np.random.default_rng(0).normal(size=(5, max(s.stop for s in slices.values())))
    kept = {"base", "annotations"}
    y = fill_default(x.astype(np.float32), kept, slices)
    for family, sl in slices.items():
        if family in kept:
            np.testing.assert_array_equal(y[:, sl], x[:, sl].astype(np.float32))
        else:
            assert not y[:, sl].any()
    assert has_family(np.array([bits(kept)]), "base")[0]
    assert not has_family(np.array([bits(kept)]), "targeting")[0]


def test_coverage_counts_on_a_hand_checked_batch() -> None:
    """Two requests x three retrieved candidates; one candidate not live, one request's L2 timed
    out; four rows logged for training, one of them without offsite counts."""
    full, no_offsite = bits(set(FEATURE_FAMILIES)), bits(set(FEATURE_FAMILIES) - {"offsite_conversions"})
    item_families = np.array([[full, no_offsite, full], [no_offsite, full, full]], np.uint8)
    live = np.array([[True, True, False], [True, True, True]])
    ok1 = np.array([[True, True], [True, False]])
    l2_ok = np.array([True, False])
    reg = FeatureRegistry.from_config(FeaturesConfig(onboarding={
        f: list(ARTIFACTS) for f in FEATURE_FAMILIES if f != "annotations"}))
    counts = CoverageCounts()
    logged = np.array([full, full, full, no_offsite], np.uint8)
    count_coverage(counts, 7, item_families[live], int((ok1 & l2_ok[:, None]).sum()),
                   reg.families("l2_feature_store"), logged)
    assert counts.hourly[(7, "l1_embedding", "offsite_conversions")] == [5, 3]
    assert counts.hourly[(7, "l1_embedding", "base")] == [5, 5]
    assert counts.hourly[(7, "l2_feature_store", "base")] == [2, 2]  # request 2 fell back to L1
    assert counts.hourly[(7, "l2_feature_store", "annotations")] == [2, 0]
    assert counts.hourly[(7, "training_logs", "offsite_conversions")] == [4, 3]
    shares = coverage_shares(counts.total)
    assert shares["offsite_conversions"]["l1_embedding"] == pytest.approx(0.6)
    audit = parity_audit("control", shares, {f: {"log_loss_increase": 0.0, "log_mae_increase": 0.0}
                                             for f in FEATURE_FAMILIES})
    # offsite is in only 3/4 of the training rows, so it is not "present offline"; the logged
    # rows all hold annotations, which the L2 store lacks
    assert [(r["family"], r["artifact"]) for r in audit] == [("annotations", "l2_feature_store")]


def test_offsite_counters_count_the_worlds_own_conversions() -> None:
    c = OffsiteCounter.empty(3)
    rng = np.random.default_rng(0)
    c.new_ads(np.arange(3), np.array([10, 11, 12]), np.zeros(3), 0.0, 0.0, np.zeros(3), rng)
    day = DAY_S
    c.record(np.array([0, 0, 1, 2]), np.array([10, 10, 11, 99]),
             np.array([0.5 * day, 1.5 * day, 5.5 * day, 0.2 * day]))  # ad 99 left slot 2
    counts = c.counts(2 * day, rng)  # complete days 0 and 1
    np.testing.assert_array_equal(counts[:, 0], [1, 0, 0])  # last 1 day: day 1
    np.testing.assert_array_equal(counts[:, 1], [2, 0, 0])  # last 7 days
    assert c.pending[0][0].tolist() == [1]  # day 5 waits until it is over
    counts = c.counts(40 * day, rng)
    np.testing.assert_array_equal(counts[:, 1], [0, 0, 0])  # days 33..39: nothing
    np.testing.assert_array_equal(counts[:, 3], [2, 1, 0])  # 90 days: everything


def _gap_sim(tmp_path: Path, *extra: str) -> Simulation:
    cfg = tiny_config(*GAP, *extra)
    return Simulation.from_config(cfg, LogWriter(tmp_path / "logs", 10_000))


def test_the_index_embeds_zeros_where_a_family_is_not_onboarded(tmp_path: Path) -> None:
    sim = _gap_sim(tmp_path)
    arm, pipe, cat = sim.arms[0], sim.serving.pipelines[0], sim.market.catalog
    model = sim.world.registry.latest(arm.l1_lineage).model
    sl = family_slices(sim.cfg.world.latent_dim)["offsite_conversions"]
    assert cat.features[:, sl].any()  # the world has the counts
    zeroed = cat.features.copy()
    zeroed[:, sl] = 0.0
    np.testing.assert_array_equal(pipe.table.vectors, embed(model, zeroed))
    assert not np.allclose(pipe.table.vectors, embed(model, cat.features))
    assert not has_family(arm.tiers["large"].families, "offsite_conversions").any()
    assert has_family(arm.tiers["large"].families, "base").all()


def test_a_family_outside_the_model_view_does_not_matter(tmp_path: Path) -> None:
    sim = _gap_sim(tmp_path, "models.l1_features=[base,targeting,annotations,image_embedding]")
    model = sim.world.registry.latest(sim.arms[0].l1_lineage).model
    x = torch.from_numpy(sim.market.catalog.features.copy())
    sl = family_slices(sim.cfg.world.latent_dim)["offsite_conversions"]
    y = x.clone()
    y[:, sl] = 0.0
    with torch.inference_mode():
        assert torch.equal(model.item_vectors(x), model.item_vectors(y))
    assert sim.world.registry.latest("control/l1").feature_view == (
        "base", "targeting", "annotations", "image_embedding")


def test_scheduled_onboarding_reaches_serving_only_after_the_rebuild(tmp_path: Path) -> None:
    change = 10800.0  # day 0.125, hour 3
    run_tiny(tmp_path, *GAP, "features.changes=[{day:0.125,onboard:{offsite_conversions:[l1_embedding]}}]",
             "index.fresh_deploy_s=1800")
    changes = read_log(tmp_path, "feature_changes")
    assert changes["time"].to_list() == [change]
    assert changes["changed_artifacts"].to_list() == ["l1_embedding"]
    builds = read_log(tmp_path, "index_builds")
    deploy = builds.filter(pl.col("time") >= change)["deploy_time"].min()
    assert deploy == change + 1800.0  # the first build after the change, deployed 30 min later
    cov = (read_log(tmp_path, "feature_coverage")
           .filter((pl.col("artifact") == "l1_embedding") & (pl.col("family") == "offsite_conversions"))
           .with_columns((pl.col("present") / pl.col("rows")).alias("share")).sort("hour"))
    share = dict(zip(cov["hour"].to_list(), cov["share"].to_list(), strict=True))
    assert all(share[h] == 0.0 for h in share if h < 3)  # before the change
    assert 0.0 < share[3] < 1.0  # the change at 3:00, the rebuilt fresh tier live from 3:30
    assert all(share[h] == 1.0 for h in share if h > 3)
    m = read_json(tmp_path / "metrics.json")
    cov_m = m["arms"]["control"]["feature_coverage"]["offsite_conversions"]
    assert cov_m["training_logs"] == 1.0 and cov_m["l2_feature_store"] == 1.0
    assert 0.0 < cov_m["l1_embedding"] < 1.0


def test_parity_audit_names_the_missing_family(tmp_path: Path) -> None:
    m = run_tiny(tmp_path, *GAP)
    audit = m["arms"]["control"]["parity_audit"]
    assert [(r["family"], r["artifact"]) for r in audit] == [("offsite_conversions", "l1_embedding")]
    assert audit[0]["online_coverage"] == 0.0 and audit[0]["offline_coverage"] == 1.0
    imp = m["offline"]["importance"]["control"]["offsite_conversions"]
    assert audit[0]["log_loss_increase"] == pytest.approx(imp["log_loss_increase"])
    assert read_log(tmp_path, "parity_audit").height == 1


def test_l2_implies_l1_closes_the_gap_end_to_end(tmp_path: Path) -> None:
    m = run_tiny(tmp_path, *GAP, "features.l2_implies_l1=true")
    cov = m["arms"]["control"]["feature_coverage"]["offsite_conversions"]
    assert cov == {"training_logs": 1.0, "l2_feature_store": 1.0, "l1_embedding": 1.0}
    assert m["arms"]["control"]["parity_audit"] == []


def test_ads_embedded_from_other_families_are_stale() -> None:
    """Staleness follows the families an ad was embedded from, so a change at any time (also at
    time 0, the instant of the initial embedding) re-embeds exactly the ads it affects."""
    table = EmbeddingTable.empty(3, 2)
    table.ad_id[:] = [5, 6, 7]
    table.embedded_at[:] = 0.0
    table.families[:] = [bits({"base"}), bits({"base", "offsite_conversions"}), bits({"base"})]
    changed = np.zeros(3)
    assert stale_slots(table, table.ad_id, changed).tolist() == []
    assert stale_slots(table, table.ad_id, changed, bits({"base"})).tolist() == [1]
    assert stale_slots(table, table.ad_id, changed,
                       bits({"base", "offsite_conversions"})).tolist() == [0, 2]
