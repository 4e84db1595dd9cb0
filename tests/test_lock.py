"""``requirements.lock``: the exact versions the Quickstart installs. Every distribution the
project declares (its dependencies and its ``test`` and ``ray`` extras) is pinned there with
``==``, at a version its own requirement admits, and torch at the CPU wheel's 2.13.0."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).parent.parent


def pins() -> dict[str, str]:
    out = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            out[re.sub(r"[-_.]+", "-", name).lower()] = version
    return out


def test_the_lock_pins_every_declared_distribution_within_its_range() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [*project["dependencies"], *project["optional-dependencies"]["test"],
                *project["optional-dependencies"]["ray"]]
    locked = pins()
    for text in declared:
        req = Requirement(text)
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        assert name in locked, f"{req.name} is not in requirements.lock"
        assert req.specifier.contains(locked[name], prereleases=True), (text, locked[name])
    assert locked["torch"] == "2.13.0"


def test_the_quickstart_installs_from_the_lock() -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Quickstart", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    setup = block.strip().splitlines()[0]
    assert setup.count("-c requirements.lock") == 2, setup
