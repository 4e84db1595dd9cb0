"""The lessons' stated numbers. Each lesson (``scenarios/NAME.md``) marks the figures it states in
a fenced ``expect`` block (YAML: the scenario, the seed, a relative tolerance and the dotted
``metrics.json`` keys with their values). Every block is checked here for form, and every key for
existence in the metrics of the scenario's tiny run (``test_simulation.py`` runs each scenario on
a tiny horizon). ``pytest -m lessons`` runs each block's scenario at full size, one world at a
time, and compares every value within the block's tolerance (a few minutes per lesson)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from sim.config import load_config
from sim.config.store import SCENARIO_DIR
from sim.run import run

BLOCK = re.compile(r"^```expect\n(.*?)^```", re.MULTILINE | re.DOTALL)


def expect_blocks(path: Path) -> list[dict[str, Any]]:
    """The ``expect`` blocks of a lesson, parsed."""
    return [yaml.safe_load(text) for text in BLOCK.findall(path.read_text())]


def lookup(metrics: dict[str, Any], key: str) -> Any:
    node: Any = metrics
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(f"`{key}`: no `{part}`")
        node = node[part]
    return node


LESSONS = {p.stem: expect_blocks(p) for p in sorted(SCENARIO_DIR.glob("*.md"))}
CHECKED = [(lesson, i) for lesson, blocks in LESSONS.items() for i in range(len(blocks))]


def test_expect_blocks_are_well_formed() -> None:
    assert CHECKED, "no lesson marks its figures"
    for lesson, i in CHECKED:
        block = LESSONS[lesson][i]
        assert set(block) == {"scenario", "seed", "tolerance", "metrics"}, (lesson, set(block))
        assert (SCENARIO_DIR / f"{block['scenario']}.yaml").exists(), lesson
        assert 0 < block["tolerance"] < 1 and block["metrics"], lesson
        assert all(isinstance(v, int | float) for v in block["metrics"].values()), lesson


def test_lookup_names_the_missing_part() -> None:
    assert lookup({"a": {"b": 1.5}}, "a.b") == 1.5
    with pytest.raises(KeyError, match="no `c`"):
        lookup({"a": {"b": 1.5}}, "a.c")


def keys_of(scenario: str) -> list[str]:
    """Every metric key the lessons state for ``scenario`` (checked on its tiny run)."""
    return [k for blocks in LESSONS.values() for b in blocks if b["scenario"] == scenario
            for k in b["metrics"]]


@pytest.mark.lessons
@pytest.mark.parametrize(("lesson", "i"), CHECKED)
def test_lesson_numbers_at_full_size(lesson: str, i: int, tmp_path: Path) -> None:
    block = LESSONS[lesson][i]
    cfg = load_config(block["scenario"], [f"seed={block['seed']}", "progress=off"])
    metrics = run(cfg, tmp_path, scenario=block["scenario"])
    got = {k: lookup(metrics, k) for k in block["metrics"]}
    report = {k: {"stated": v, "measured": got[k]} for k, v in block["metrics"].items()}
    print(json.dumps({lesson: report}, indent=1))
    off = {k: r for k, r in report.items()
           if r["measured"] != pytest.approx(r["stated"], rel=block["tolerance"], abs=1e-9)}
    assert off == {}, f"{lesson}: stated figures no longer measured (tolerance {block['tolerance']})"
