"""Bad input stops the program before the simulation starts, naming the key and the value."""

from __future__ import annotations

import pickle
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from sim.config import ConfigError, load_config
from sim.config.overlay import arm_config
from sim.config.schema import ArmOverlay, Config, set_keys
from sim.config.store import (
    CONF_DIR,
    SCENARIO_DIR,
    check_launcher,
    check_quoted_number,
    check_scenario,
)

from conftest import read_json


@pytest.mark.parametrize(("override", "key", "value"), [
    ("world.n_users=-3", "world.n_users", "-3"),
    ("funnel.k_l1=-1", "funnel.k_l1", "-1"),
    ("logs.full_request_rate=1.5", "logs.full_request_rate", "1.5"),
    ("logs.partial_request_rate=-0.1", "logs.partial_request_rate", "-0.1"),
    ("traffic.diurnal_amplitude=2", "traffic.diurnal_amplitude", "2"),
    ("world.daily_budget_mean=0", "world.daily_budget_mean", "0"),
    ("world.daily_budget_mean=-5", "world.daily_budget_mean", "-5"),
    ("threads.torch=0", "threads.torch", "0"),
    ("threads.faiss=two", "threads.faiss", "two"),
    ("auction.rule=dutch", "auction.rule", "dutch"),
    ("world.surface_mix=[0.5,0.6,0.2]", "world.surface_mix", "0.6"),
    ("world.objective_mix.ocpm=0.9", "world.objective_mix", "1.4"),
    ("funnel.k_l2=100", "funnel.k_l2", "100"),
    ("auction.slot_ctr=[0.5,1.0,0.3]", "auction.slot_ctr", "0.5"),
    ("experiment.ramp=[{day:0,share:1.5}]", "experiment.ramp[0].share", "1.5"),
    ("features.changes=[{day:-1}]", "features.changes[0].day", "-1"),
    ("index.factory=Bogus", "index.factory", "Bogus"),
    # a product quantizer whose sub-vectors do not divide the 17 dimensions (16 + the bias slot)
    ("index.factory=PQ4", "index.factory", "17-dimensional"),
    ("index.nprobe=0", "index.nprobe", "0"),
    ("pacing.interval_s=450", "pacing.interval_s", "450"),
    ("world.market_seed=-1", "world.market_seed", "-1"),
    ("training.startup_seed=-2", "training.startup_seed", "-2"),
    ("experiment.treatment.world.n_users=5", "experiment.treatment", "n_users"),
    ("experiment.treatment.models.l1_family=dhen", "experiment.treatment", "dhen"),
    ("training.exploration_negative_rate=0", "training.exploration_negative_rate", "0"),
    ("training.exploration_negative_rate=1.5", "training.exploration_negative_rate", "1.5"),
])
def test_out_of_range_values_name_key_and_value(override: str, key: str, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config("default", [override])
    assert key in str(err.value) and value in str(err.value)


@pytest.mark.parametrize(("override", "key"), [
    ("world.n_userz=10", "world.n_userz"),
    ("world.n_users=abc", "world.n_users"),
    ("world.market_seed=abc", "world.market_seed"),
    ("world.market_seed=1.5", "world.market_seed"),
    ("training.startup_seed=1.5", "training.startup_seed"),
    ("days=soon", "days"),
    ("pacing.enabled=maybe", "pacing.enabled"),
    ("world.objective_mix={ocpm:0.5,cpc:0.3,cpm:0.2,cpa:0.0}", "world.objective_mix"),
])
def test_unknown_keys_and_wrong_types_fail_at_composition(override: str, key: str) -> None:
    with pytest.raises(ConfigCompositionException) as err:
        load_config("default", [override])
    text = str(err.value) + str(err.value.__cause__)
    assert key in text


def test_defaults_compose_and_validate() -> None:
    cfg = load_config("default")
    assert cfg.auction.rule == "gsp"
    assert load_config("default", ["auction=vcg"]).auction.rule == "vcg"
    ivf = load_config("default", ["serving=ivf_pq"])
    assert (ivf.index.factory, ivf.index.nprobe) == ("IVF64,PQ6", 8)


def _leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> value of every leaf of a nested dict (lists are leaves)."""
    if isinstance(node, dict) and node:
        out: dict[str, Any] = {}
        for k, v in node.items():
            out |= _leaves(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    return {prefix: node}


def _matches(got: Any, want: Any) -> bool:
    """``got`` holds what ``want`` states (a structured list item also holds its defaults)."""
    if isinstance(want, dict):
        return isinstance(got, dict) and all(k in got and _matches(got[k], v) for k, v in want.items())
    if isinstance(want, list):
        return (isinstance(got, list) and len(got) == len(want)
                and all(_matches(g, w) for g, w in zip(got, want, strict=True)))
    return bool(got == want)


def _as_dict(cfg: Config) -> dict[str, Any]:
    out = OmegaConf.to_container(OmegaConf.structured(cfg))
    assert isinstance(out, dict)
    return out


@pytest.mark.parametrize("scenario", sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml")))
def test_every_scenario_changes_exactly_what_it_states(scenario: str) -> None:
    """A scenario is an overlay: each key it states takes its value, every other key keeps the
    default (so a key the schema renamed cannot be silently ignored)."""
    stated = _stated(scenario)
    got, default = _leaves(_as_dict(load_config(scenario))), _leaves(_as_dict(load_config("default")))
    for key, value in stated.items():
        if key.startswith("experiment.treatment"):
            continue  # the overlay is one dict-valued key, compared whole below
        assert _matches(got[key], value), key
    changed = {k for k in got if got[k] != default.get(k)}
    assert changed <= set(stated) | {k for k in got if k.startswith("experiment.treatment")}, scenario
    want = {k: v for k, v in stated.items() if k.startswith("experiment.treatment") and v != {}}
    assert _leaves(set_keys(load_config(scenario).experiment.treatment) or {},
                   "experiment.treatment") == (want or {"experiment.treatment": {}})


def _stated(scenario: str) -> dict[str, Any]:
    """Dotted key -> value of what a scenario states: its own keys over those of the scenarios
    its defaults list takes (in order; ``_self_`` last, as the files write it)."""
    node = OmegaConf.to_container(OmegaConf.load(SCENARIO_DIR / f"{scenario}.yaml")) or {}
    assert isinstance(node, dict)
    out: dict[str, Any] = {}
    for parent in node.pop("defaults", []):
        if parent != "_self_":
            out |= _stated(parent)
    own = _leaves(node)
    own.pop("", None)  # an empty overlay
    return out | own


def test_a_scenario_can_extend_another() -> None:
    """``l1_cvr_fixed`` takes the headline through its defaults list and states two keys: it is
    the headline's config but for those two."""
    fixed, headline = _as_dict(load_config("l1_cvr_fixed")), _as_dict(load_config("l1_cvr_discrepancy"))
    differ = {k for k, v in _leaves(fixed).items() if _leaves(headline).get(k) != v}
    assert differ == {"features.l2_implies_l1", "index.build_mode"}


def test_every_config_group_option_sets_its_values() -> None:
    for group in sorted(p for p in CONF_DIR.iterdir() if p.is_dir()):
        for option in sorted(group.glob("*.yaml")):
            cfg = _leaves(_as_dict(load_config("default", [f"{group.name}={option.stem}"])))
            # an option under `# @package _global_` (the serving presets) states full keys
            glob = option.read_text().startswith("# @package _global_")
            stated = _leaves(OmegaConf.to_container(OmegaConf.load(option)) or {},
                             "" if glob else group.name)
            stated = {k: v for k, v in stated.items() if k != group.name}  # an empty option: {}
            for key, value in stated.items():
                assert _matches(cfg[key], value), (option, key)
    assert load_config("default", ["index=batch"]).index.build_mode == "batch"
    assert load_config("default", ["auction=vcg"]).auction.rule == "vcg"


def test_moved_keys_fail_with_their_new_name() -> None:
    with pytest.raises(ConfigError, match=r"`models.epochs` moved to `training.epochs`"):
        load_config("default", ["models.epochs=2"])
    with pytest.raises(ConfigError, match=r"moved to `experiment.treatment.releases.interval_s`"):
        load_config("default", ["experiment.treatment.models.release_interval_s=3600"])
    with pytest.raises(ConfigError, match=r"`experiment.treatment.models.skew_max_distance` moved "
                                          r"to `readiness.max_distance`, which both arms share"):
        load_config("default", ["experiment.arms=[control,treatment]",
                                "experiment.treatment.models.skew_max_distance=3"])
    with pytest.raises(ConfigError, match="both arms share"):
        load_config("default", ["experiment.arms=[control,treatment]",
                                "experiment.treatment.threads.torch=1"])


def test_scenario_with_unknown_key_fails(tmp_path: Path) -> None:
    from sim.config.store import register_configs

    (tmp_path / "bad.yaml").write_text("# @package _global_\nworld:\n  n_userz: 3\n")
    register_configs(tmp_path)
    with pytest.raises(ConfigCompositionException) as err:
        load_config("bad")
    assert "n_userz" in str(err.value) + str(err.value.__cause__)


def test_cli_rejects_bad_value_before_simulating(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sim", "world.n_users=-3", f"hydra.run.dir={tmp_path}"],
        capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "world.n_users" in out.stderr and "-3" in out.stderr
    manifest = read_json(tmp_path / "manifest.json")
    assert manifest["status"] == "failed" and "world.n_users" in manifest["error"]
    assert not (tmp_path / "logs").exists() and not (tmp_path / "metrics.json").exists()


def test_cli_rejects_unknown_key(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sim", "world.n_userz=3", f"hydra.run.dir={tmp_path}"],
        capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "world.n_userz" in out.stderr
    assert not (tmp_path / "manifest.json").exists()


def test_bad_treatment_overlay_fails_at_load() -> None:
    # one exploration log for both arms: the treatment cannot draw its own
    for key, value in (("exploration_negative_rate", "0.1"), ("exploration_requests", "9"),
                       ("startup_seed", "4")):
        with pytest.raises(ConfigError, match=rf"experiment.treatment.training.{key}.*{value}"):
            load_config("default", ["experiment.arms=[control,treatment]",
                                    f"experiment.treatment.training.{key}={value}"])
    with pytest.raises(ConfigError, match="l1_famly"):
        load_config("default", ["experiment.arms=[control,treatment]",
                                "experiment.treatment.models.l1_famly=dhen"])
    with pytest.raises(ConfigError, match="world"):
        load_config("default", ["experiment.arms=[control,treatment]",
                                "experiment.treatment.world.n_users=5"])


def test_cli_rejects_bad_treatment_overlay_before_simulating(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sim", "experiment.arms=[control,treatment]",
         "experiment.treatment.funnel.k_l1=100000", f"hydra.run.dir={tmp_path}"],
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "funnel.k_l1" in out.stderr
    assert read_json(tmp_path / "manifest.json")["status"] == "failed"
    assert not (tmp_path / "logs").exists()


@pytest.mark.parametrize("address", [None, "null", ""])
def test_ray_cluster_launcher_needs_the_heads_address(address: str | None) -> None:
    overrides = ["-m", "seed=0,1", "hydra/launcher=ray_cluster"]
    if address is not None:
        overrides.append(f"hydra.launcher.ray.init.address={address}")
    with pytest.raises(ConfigError, match=r"hydra\.launcher\.ray\.init\.address"):
        check_launcher(overrides)
    check_launcher([*overrides, "hydra.launcher.ray.init.address=10.0.0.1:6379"])  # named: fine
    check_launcher(["-m", "seed=0,1", "hydra/launcher=ray"])  # a local instance needs none


def test_a_scenario_file_that_changed_is_registered_again(tmp_path: Path) -> None:
    import os

    from sim.config.store import register_configs

    path = tmp_path / "mine.yaml"
    path.write_text("# @package _global_\ndays: 2\n")
    assert register_configs(tmp_path) == ["mine"]
    path.write_text("# @package _global_\ndays: 3\n")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    register_configs(tmp_path)  # the same directory, a file changed: stored again
    assert load_config("mine").days == 3


def test_an_index_factory_that_passes_validation_builds_at_the_real_dimension() -> None:
    # what validation accepts for a width, build_index builds: PQ4 fails at 17 dims, not at 16
    import numpy as np

    from sim.serving.index import build_index

    with pytest.raises(ConfigError, match="PQ4"):
        load_config("default", ["index.factory=PQ4"])
    with pytest.raises(ConfigError, match=r"`experiment.treatment`: `index.factory` 'PQ4' cannot "):
        load_config("default", ["experiment.arms=[control,treatment]",
                                "experiment.treatment.index.factory=PQ4"])
    cfg = load_config("default", ["models.embedding_dim=15", "index.factory=PQ4"])
    n, d = 300, cfg.models.embedding_dim + 1
    vectors = np.random.default_rng(0).normal(size=(n, d)).astype(np.float32)
    ids = np.arange(n)
    ix = build_index(vectors, ids, ids, np.zeros(n), np.zeros(n), np.zeros(n), cfg.index.factory,
                     0.0)
    assert ix.n == n



def test_the_treatments_keys_are_typed_like_any_other() -> None:
    """``experiment.treatment`` is in the schema: a key is set without Hydra's ``+`` and checked
    for its type when composed; a key both arms share is not there to set; the old ``+`` form
    stops with what to do."""
    two = ["experiment.arms=[control,treatment]"]
    cfg = load_config("default", [*two, "experiment.treatment.funnel.k_l1=50",
                                  "experiment.treatment.latency.sla_ms.query_tower=12"])
    assert cfg.experiment.treatment.funnel.k_l1 == 50 and cfg.experiment.treatment.funnel.k_l2 is None
    arm = arm_config(cfg, cfg.experiment.treatment)
    assert (arm.funnel.k_l1, arm.funnel.k_l2, cfg.funnel.k_l1) == (50, cfg.funnel.k_l2, cfg.funnel.k_l1)
    assert arm.latency.sla_ms == {**cfg.latency.sla_ms, "query_tower": 12.0}
    with pytest.raises(ConfigCompositionException) as err:
        load_config("default", [*two, "experiment.treatment.funnel.k_l1=many"])
    assert "experiment.treatment.funnel.k_l1" in str(err.value) + str(err.value.__cause__)
    with pytest.raises(ConfigError, match="both arms share `world`"):
        load_config("default", [*two, "experiment.treatment.world.n_users=5"])
    with pytest.raises(ConfigError, match="drop the `\\+`"):
        load_config("default", [*two, "+experiment.treatment.funnel.k_l1=50"])
    assert set_keys(load_config("default").experiment.treatment) == {}  # nothing set: an A/A test


def test_a_bad_treatment_key_is_named_wherever_it_is_given(tmp_path: Path) -> None:
    """In a scenario file, as a whole dict on the command line, deleted, or misspelt: each stops
    before composition with the key and what to do."""
    (tmp_path / "bad.yaml").write_text("# @package _global_\nexperiment:\n  arms: [control, "
                                       "treatment]\n  treatment:\n    models:\n"
                                       "      release_epochs: 2\n")
    with pytest.raises(ConfigError, match=r"moved to `experiment.treatment.releases.epochs` "
                                          r"\(in scenarios/bad.yaml\)"):
        check_scenario("bad", tmp_path)
    (tmp_path / "shared.yaml").write_text("experiment:\n  treatment:\n    world:\n      n_users: 3\n")
    with pytest.raises(ConfigError, match="both arms share `world`"):
        check_scenario("shared", tmp_path)
    two = "experiment.arms=[control,treatment]"
    with pytest.raises(ConfigError, match="both arms share `world`"):
        load_config("default", [two, "experiment.treatment={world:{n_users:3}}"])
    with pytest.raises(ConfigError, match="there is no group `funnle`"):
        load_config("default", [two, "experiment.treatment.funnle.k_l1=3"])
    with pytest.raises(ConfigError, match="not a key of an arm's `funnel`"):
        load_config("default", [two, "experiment.treatment.funnel.k_l9=3"])
    with pytest.raises(ConfigError, match="cannot be deleted; set one to null"):
        load_config("timeouts", ["~experiment.treatment.models"])
    cfg = load_config("default", [two, "experiment.treatment={funnel:{k_l1:50}}"])
    assert cfg.experiment.treatment.funnel.k_l1 == 50
    with pytest.raises(ConfigError, match="set each of those keys to null"):
        load_config("timeouts", ["experiment.arms=[control]"])
    solo = load_config("timeouts", ["experiment.arms=[control]",
                                    "experiment.treatment.models.l1_family=null",
                                    "experiment.treatment.models.dhen_layers=null",
                                    "experiment.treatment.models.dhen_heads=null"])
    assert set_keys(solo.experiment.treatment) == {}


def test_a_config_with_a_treatment_crosses_to_another_process() -> None:
    """A sweep's workers (joblib's loky, Ray) receive the config pickled, loky with cloudpickle,
    which copies a class it cannot find by name. The overlay classes are found by name, so a
    worker's config holds its own schema's classes (a copied class failed the worker's type check:
    "ArmOverlay is not a subclass of ArmOverlay")."""
    from joblib.externals import cloudpickle

    cfg = load_config("serving_precision", [])
    assert set_keys(cfg.experiment.treatment)  # the treatment sets keys
    back = pickle.loads(pickle.dumps(cfg))
    assert back == cfg and type(back.experiment.treatment) is ArmOverlay
    check = ("import pickle, sys; from sim.config.schema import ArmOverlay; "
             "cfg = pickle.loads(sys.stdin.buffer.read()); "
             "assert type(cfg.experiment.treatment) is ArmOverlay; "
             "print(cfg.experiment.treatment.index.factory)")
    out = subprocess.run([sys.executable, "-c", check], input=cloudpickle.dumps(cfg),
                         capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    assert out.stdout.decode().strip() == cfg.experiment.treatment.index.factory


@pytest.mark.parametrize("override, key, got", [
    ("world.n_users='1000'", "world.n_users", "'1000'"),
    ("seed='7'", "seed", "'7'"),
    ("pacing.enabled='true'", "pacing.enabled", "'true'"),  # a bool: OmegaConf casts 'true' too
    ("world.market_seed='3'", "world.market_seed", "'3'"),  # int | None
    ("world.position_ctr=[1.0,'0.8',0.6]", "world.position_ctr.1", "'0.8'"),  # a list's element
    ("world.objective_mix={ocpm: '1.0', cpc: 0.0, cpm: 0.0}", "world.objective_mix.ocpm", "'1.0'"),
    ("experiment.treatment.funnel.k_l1='50'", "experiment.treatment.funnel.k_l1", "'50'"),
    ("experiment.ramp=[{day: '1', share: 0.5}]", "experiment.ramp.0.day", "'1'"),  # a list's dataclass
    ("experiment.ramp.0.day='1'", "experiment.ramp.0.day", "'1'"),  # a list position
    ("pacing.enabled='y'", "pacing.enabled", "'y'"),
    ("pacing.enabled=1", "pacing.enabled", "1"),  # a number for a bool: OmegaConf casts it to True
])
def test_a_quoted_number_is_refused_not_cast(override: str, key: str, got: str) -> None:
    """OmegaConf casts the string '1000' to the int field's 1000 without a word: refused, named."""
    with pytest.raises(ConfigError, match=rf"`{re.escape(key)}` is a (number|bool), got the "
                                          rf"(string|number) {got}"):
        load_config("default", ["experiment.arms=[control,treatment]", override])


def test_a_sweep_s_quoted_number_is_refused_and_strings_that_look_like_numbers_are_kept() -> None:
    with pytest.raises(ConfigError, match=r"`world.n_users` is a number, got the string '1000'"):
        check_quoted_number("world.n_users='1000',2000")  # each value of a sweep
    check_quoted_number("seed=0,1,2")
    cfg = load_config("default", ["experiment.salt='123'", "cache.dir='2024'", "progress='off'"])
    assert (cfg.experiment.salt, cfg.cache.dir, cfg.progress) == ("123", "2024", "off")  # string fields


def test_a_scenario_file_s_quoted_number_is_named_with_its_file(tmp_path: Path) -> None:
    (tmp_path / "quoted.yaml").write_text("# @package _global_\nworld:\n  n_users: '1000'\n")
    with pytest.raises(ConfigError, match=r"`world.n_users` is a number, got the string '1000' "
                                          r"\(in scenarios/quoted.yaml\)"):
        check_scenario("quoted", tmp_path)
