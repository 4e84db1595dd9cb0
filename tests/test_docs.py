"""The documentation: the site in docs/ builds with mkdocs in strict mode (a broken link or anchor,
or a page left out of the nav, fails it), the README's links resolve, and the reference names
every config group, every log table and every metrics.json section a run writes."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sim.config.schema import Config
from sim.logs import SCHEMAS

ROOT = Path(__file__).resolve().parents[1]


def build(root: Path, site: Path) -> subprocess.CompletedProcess[str]:
    """``mkdocs build --strict`` (not ``-q``: quiet mode drops the warnings strict mode counts)."""
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict",
                           "-f", str(root / "mkdocs.yml"), "-d", str(site)],
                          capture_output=True, text=True, cwd=root, timeout=120)


def test_the_site_builds_in_strict_mode(tmp_path: Path) -> None:
    done = build(ROOT, tmp_path / "site")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "site" / "readiness" / "index.html").exists()
    assert (tmp_path / "site" / "lessons" / "version_skew" / "index.html").exists()


@pytest.mark.parametrize(("broken", "message"), [
    ("[gone](no_such_page.md)", "no_such_page.md"),
    ("[gone](outputs.md#no-such-anchor)", "no-such-anchor"),
])
def test_a_broken_link_fails_the_build(tmp_path: Path, broken: str, message: str) -> None:
    copy = tmp_path / "repo"
    copy.mkdir()
    for name in ("mkdocs.yml", "ARCHITECTURE.md"):
        shutil.copy(ROOT / name, copy / name)
    shutil.copytree(ROOT / "scenarios", copy / "scenarios")
    shutil.copytree(ROOT / "docs", copy / "docs", symlinks=True)
    index = copy / "docs" / "index.md"
    index.write_text(index.read_text() + f"\nSee {broken}.\n")
    done = build(copy, tmp_path / "site")
    assert done.returncode != 0 and message in done.stderr


def test_the_readme_links_resolve_and_its_quickstart_is_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    targets = [t for t in re.findall(r"\]\(([^)]+)\)", text) if not t.startswith("http")]
    assert targets and [t for t in targets if not (ROOT / t.split("#")[0]).exists()] == []
    block = text.split("## Quickstart", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    assert len(block.strip().splitlines()) == 2


def test_the_reference_names_every_group_table_and_metrics_section(tiny_run: Path) -> None:
    config = (ROOT / "docs" / "configuration.md").read_text()
    groups = [f.name for f in dataclasses.fields(Config)
              if dataclasses.is_dataclass(f.type) or f.name not in ("seed", "days", "progress")]
    assert [g for g in groups if f"| `{g}` |" not in config] == []
    outputs = (ROOT / "docs" / "outputs.md").read_text()
    assert [t for t in SCHEMAS if f"| `{t}` |" not in outputs] == []
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert [k for k in metrics if f"`{k}" not in outputs] == []
    assert [k for k in metrics["arms"]["control"] if f"`arms.<arm>.{k}" not in outputs
            and f", `{k}`" not in outputs] == []
