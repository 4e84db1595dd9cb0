"""Registering the schemas and the scenarios with Hydra, and composing a config without the CLI.

``conf/config.yaml`` is the primary config; its defaults list starts from the ``base_config``
schema (so every key is typed and unknown keys fail), then the groups with options (``index``,
``auction``, ``serving``), then the scenario. Scenarios live in ``scenarios/NAME.yaml`` at the
top of the repository and are registered here as the ``scenario`` group with package
``_global_``, so ``scenario=NAME`` on the command line applies ``scenarios/NAME.yaml`` as an
overlay that states only what it changes.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import QuotedString
from omegaconf import DictConfig, OmegaConf

from sim.config.overlay import arm_config
from sim.config.schema import ARM_GROUPS, MOVED_KEYS, ArmOverlay, Config
from sim.config.validate import ConfigError, validate

ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = ROOT / "conf"
SCENARIO_DIR = ROOT / "scenarios"


_REGISTERED: dict[Path, tuple[tuple[str, int], ...]] = {}


def register_configs(scenario_dir: Path = SCENARIO_DIR) -> list[str]:
    """Store the ``base_config`` schema and every ``scenarios/*.yaml``; return the scenario names.

    Storing is skipped when this directory's files (names and modification times) are what was
    stored last: composing many configs in one process (tests, notebooks) re-reads only what
    changed."""
    files = tuple((p.name, p.stat().st_mtime_ns) for p in sorted(scenario_dir.glob("*.yaml")))
    if _REGISTERED.get(scenario_dir) == files:
        return [Path(name).stem for name, _ in files]
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    names = []
    for path in sorted(scenario_dir.glob("*.yaml")):
        node = OmegaConf.load(path)
        cs.store(group="scenario", name=path.stem, node=node, package="_global_")
        names.append(path.stem)
    _REGISTERED.clear()  # the store holds one directory's scenarios at a time
    _REGISTERED[scenario_dir] = files
    return names


def check_overrides(overrides: list[str]) -> None:
    """Fail, before Hydra composes anything, on a command-line override of a key that moved to
    another group (``MOVED_KEYS``), naming its new home; on a treatment key an arm cannot set,
    given the old way or deleted (:func:`check_treatment_key`), including a whole
    ``experiment.treatment={...}``; and on a string given for a number
    (:func:`check_quoted_number`)."""
    for override in overrides:
        key, _, value = override.partition("=")
        key = key.lstrip("+~")
        for prefix in ("", "experiment.treatment."):
            old = key[len(prefix):] if key.startswith(prefix) else None
            if old in MOVED_KEYS:
                raise ConfigError(f"`{key}` moved to {_new_home(prefix, MOVED_KEYS[old])} "
                                  f"(got {override!r})")
        if key == "experiment.treatment" and value.strip().startswith("{"):
            parsed = OverridesParser.create().parse_override(override.lstrip("+~")).value()
            check_treatment_keys(parsed if isinstance(parsed, dict) else {}, repr(override))
        elif key.startswith("experiment.treatment."):
            check_treatment_key(key, repr(override))
        if key.startswith("experiment.treatment") and override.startswith("~"):
            raise ConfigError(f"{override!r}: the treatment's keys cannot be deleted; set one to "
                              "null for the control's value (`experiment.treatment.models."
                              "l1_family=null`)")
        if key.startswith("experiment.treatment") and override.startswith("+"):
            raise ConfigError(f"{override!r}: the treatment's keys are in the schema, typed like "
                              "any other; drop the `+`")
        check_quoted_number(override)


def _members(hint: Any) -> tuple[Any, ...]:
    """A union's members, ``None``'s type left out; any other annotation alone."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return tuple(a for a in typing.get_args(hint) if a is not type(None))
    return (hint,)


def schema_type(key: str) -> Any:
    """The schema's annotation of a dotted ``key`` (a dict's entry: the dict's value type; a list
    position, ``experiment.ramp.0``: the list's element type); None where the key is not in
    :class:`Config` (``hydra.*``, ``scenario``)."""
    hint: Any = Config
    for part in key.split("."):
        inner = _members(hint)[0]
        if dataclasses.is_dataclass(inner):
            hints = typing.get_type_hints(inner)
            if part not in hints:
                return None
            hint = hints[part]
        elif typing.get_origin(inner) is dict:
            hint = typing.get_args(inner)[1]
        elif typing.get_origin(inner) is list and part.isdigit():
            hint = typing.get_args(inner)[0]
        else:
            return None
    return hint


NUMBERS = (int, float, bool)
BOOL_WORDS = ("true", "false", "yes", "no", "on", "off", "y", "n")


def _castable(text: str, members: tuple[Any, ...]) -> bool:
    """Whether OmegaConf would turn the string ``text`` into one of ``members``' numbers (a string
    that is no number, ``abc``, fails on its own with OmegaConf's error)."""
    if bool in members and text.strip().lower() in BOOL_WORDS:
        return True
    try:
        float(text)
    except ValueError:
        return False
    return True


def check_quoted_number(override: str) -> None:
    """Fail on a string given for a number on the command line (``world.n_users='1000'``, each
    value of a sweep ``world.n_users='1000',2000``): OmegaConf would cast it to the number without
    a word, and a value is never silently cast (:func:`check_number`)."""
    key, sep, text = override.partition("=")
    key = key.lstrip("+~")
    if not sep or not text.strip() or schema_type(key) is None:
        return
    try:
        value = OverridesParser.create().parse_override(override.lstrip("+~")).value()
    except Exception:  # noqa: BLE001 - a malformed override: Hydra's own error says what is wrong
        return
    for v in getattr(value, "list", None) or [value]:  # a choice sweep: each of its values
        check_number(key, v.text if isinstance(v, QuotedString) else v, repr(override))


def check_number(key: str, value: Any, given: str, hint: Any = None) -> None:
    """Fail, naming ``key`` and where it was ``given``, where ``value`` holds a string at a place
    the schema (``hint``, else :func:`schema_type` of ``key``) types as a number: a leaf, a
    list's element (``world.position_ctr=[1.0,'0.8']``), a dict's entry
    (``world.objective_mix={ocpm: '1.0'}``) or a field of a list's dataclass
    (``experiment.ramp=[{day: '1', share: 0.5}]``)."""
    if hint is None and (hint := schema_type(key)) is None:
        return
    members = _members(hint)
    inner = members[0]
    if isinstance(value, dict):
        if dataclasses.is_dataclass(inner):
            hints = typing.get_type_hints(inner)
            for k, v in value.items():
                if k in hints:
                    check_number(f"{key}.{k}", v, given, hints[k])
        elif typing.get_origin(inner) is dict:
            for k, v in value.items():
                check_number(f"{key}.{k}", v, given, typing.get_args(inner)[1])
        return
    if isinstance(value, list):
        if typing.get_origin(inner) is list:
            for i, v in enumerate(value):
                check_number(f"{key}.{i}", v, given, typing.get_args(inner)[0])
        return
    if bool in members and int not in members and isinstance(value, int | float) \
            and not isinstance(value, bool):
        raise ConfigError(f"`{key}` is a bool, got the number {value!r} ({given}): write true or "
                          "false (a number is not cast)")
    if isinstance(value, str) and str not in members and any(m in NUMBERS for m in members) \
            and _castable(value, members):
        kind = "a bool" if bool in members else "a number"
        write = "true or false" if bool in members else "a number, unquoted"
        raise ConfigError(f"`{key}` is {kind}, got the string {value!r} ({given}): write "
                          f"{write} (a string is not cast)")


def check_treatment_key(key: str, given: str) -> None:
    """Fail, naming ``key`` (``experiment.treatment.GROUP...``) and where it was ``given``, on a
    key that moved, a group both arms share, no such group, or no such key in an arm's group."""
    rest = key.split(".")[2:]
    old = ".".join(rest)
    if old in MOVED_KEYS:
        raise ConfigError(f"`{key}` moved to {_new_home('experiment.treatment.', MOVED_KEYS[old])} "
                          f"({given})")
    group = rest[0]
    if group not in ARM_GROUPS:
        shared = group in {f.name for f in dataclasses.fields(Config)}
        why = f"both arms share `{group}`" if shared else f"there is no group `{group}`"
        raise ConfigError(f"`experiment.treatment.{group}` ({given}): {why}; an arm sets only "
                          f"{', '.join(ARM_GROUPS)}")
    missing = _missing(ArmOverlay(), rest)
    if missing:
        raise ConfigError(f"`experiment.treatment.{missing}` ({given}) is not a key of an arm's "
                          f"`{group}`")


def _new_home(prefix: str, new: str) -> str:
    """Where a moved key lives now, for a message: under the treatment only if an arm sets its
    group (a moved ``models.skew_*`` key went to ``readiness``, which both arms share)."""
    if prefix and new.split(".")[0] not in ARM_GROUPS:
        return f"`{new}`, which both arms share (set it for the run, not the treatment)"
    return f"`{prefix}{new}`"


def check_treatment_keys(overlay: dict[str, Any], given: str) -> None:
    """:func:`check_treatment_key` on every dotted leaf of an overlay given as a nested dict."""
    for key in _leaf_keys(overlay):
        check_treatment_key(f"experiment.treatment.{key}", given)


def _leaf_keys(node: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k, v in node.items():
        key = f"{prefix}{k}"
        out += _leaf_keys(v, key + ".") if isinstance(v, dict) and v else [key]
    return out


def check_scenario(name: str, scenario_dir: Path = SCENARIO_DIR) -> None:
    """The treatment keys a scenario file states (and the scenarios its defaults list takes),
    checked as a command line's are, and its numbers (no quoted string where the schema has a
    number: :func:`check_number`), so a bad one is named with its file before composition."""
    path = scenario_dir / f"{name}.yaml"
    if not path.exists():
        return  # Hydra says which scenarios there are
    node = OmegaConf.to_container(OmegaConf.load(path)) or {}
    assert isinstance(node, dict)
    for key, value in node.items():
        if key != "defaults":
            check_number(str(key), value, f"in scenarios/{name}.yaml")
    for parent in node.get("defaults") or []:
        if isinstance(parent, str) and parent != "_self_":
            check_scenario(parent, scenario_dir)
    treatment = (node.get("experiment") or {}).get("treatment")
    if isinstance(treatment, dict):
        check_treatment_keys(treatment, f"in scenarios/{name}.yaml")


def _missing(node: Any, path: list[str]) -> str | None:
    """The first part of ``path`` (dotted, up to it) that ``node`` does not have, or None."""
    for i, part in enumerate(path):
        if dataclasses.is_dataclass(node) and part in {f.name for f in dataclasses.fields(node)}:
            node = getattr(node, part)
        elif isinstance(node, dict) and part in node:
            node = node[part]
        elif node is None:  # a value (a list, a number): what follows is Hydra's to check
            return None
        else:
            return ".".join(path[:i + 1])
    return None


def expand_replicates(argv: list[str]) -> list[str]:
    """``replicates=N`` on the command line: the world at seeds 0..N-1, as the Hydra sweep
    ``-m seed=range(0,N)`` (on the configured launcher; ``python -m sim.report`` on the sweep
    directory then writes the cross-seed report). Other swept keys combine with it."""
    given = [a for a in argv if a.split("=", 1)[0] == "replicates"]
    if not given:
        return argv
    if len(given) > 1:
        raise ConfigError(f"`replicates` is given {len(given)} times ({given})")
    value = given[0].split("=", 1)[1]
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"`replicates` must be a whole number >= 1, got {value!r}")
    seeds = [a for a in argv if a.split("=", 1)[0].lstrip("+~") == "seed"]
    if seeds:
        raise ConfigError(f"`replicates={value}` runs seeds 0..{int(value) - 1}; drop {seeds[0]!r} "
                          "(or sweep the seeds yourself: -m seed=...)")
    out = [a for a in argv if a != given[0]] + [f"seed=range(0,{int(value)})"]
    return out if "-m" in out or "--multirun" in out else ["-m", *out]


def check_launcher(overrides: list[str]) -> None:
    """Fail on ``hydra/launcher=ray_cluster`` without the cluster's address: Hydra's Ray launcher
    would pass the unset value on and Ray would start a local instance instead."""
    if "hydra/launcher=ray_cluster" not in overrides:
        return
    address = [o.split("=", 1)[1] for o in overrides
               if o.split("=", 1)[0].lstrip("+") == "hydra.launcher.ray.init.address"]
    if not address or address[-1] in ("", "null", "???"):
        raise ConfigError("`hydra.launcher.ray.init.address` must name the cluster's head "
                          f"(HOST:PORT) with hydra/launcher=ray_cluster (got {address[-1:] or 'none'})")


def to_config(cfg: DictConfig) -> Config:
    """Turn a composed DictConfig into a validated :class:`Config` (raises ConfigError)."""
    obj = OmegaConf.to_object(cfg)
    if not isinstance(obj, Config):
        raise TypeError(f"expected a config built on the `base_config` schema, got {type(obj)}")
    validate(obj)
    if "treatment" in obj.experiment.arms:  # the overlay is checked now, not when the world is built
        arm_config(obj, obj.experiment.treatment)
    return obj


def load_config(scenario: str = "default", overrides: list[str] | None = None) -> Config:
    """Compose and validate a config the way ``python -m sim scenario=NAME ...`` does."""
    check_overrides(list(overrides or []))
    check_scenario(scenario)
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"scenario={scenario}", *(overrides or [])])
    return to_config(cfg)
