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


def lookup(metrics: dict[str, Any], key: str, *, undefined_ok: bool = False) -> Any:
    """The value at a dotted key; a number indexes a list (``arms.treatment.daily.1.cpa``).

    ``undefined_ok``: a node that is None (a metric the run could not define, e.g. the CPA lift
    of a tiny world where one arm has no oCPM conversion) ends the lookup with None."""
    node: Any = metrics
    for part in key.split("."):
        if node is None and undefined_ok:
            return None
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise KeyError(f"`{key}`: no `{part}`")
    return node


LESSONS = {p.stem: expect_blocks(p) for p in sorted(SCENARIO_DIR.glob("*.md"))}
CHECKED = [(lesson, i) for lesson, blocks in LESSONS.items() for i in range(len(blocks))]


def test_expect_blocks_are_well_formed() -> None:
    assert CHECKED, "no lesson marks its figures"
    for lesson, i in CHECKED:
        block = LESSONS[lesson][i]
        assert {"scenario", "seed", "tolerance", "metrics"} <= set(block) <= {
            "scenario", "seed", "tolerance", "metrics", "overrides"}, (lesson, set(block))
        assert all(isinstance(o, str) and "=" in o for o in block.get("overrides", [])), lesson
        assert (SCENARIO_DIR / f"{block['scenario']}.yaml").exists(), lesson
        assert 0 < block["tolerance"] < 1 and block["metrics"], lesson
        assert all(isinstance(v, int | float) for v in block["metrics"].values()), lesson


def test_lookup_names_the_missing_part() -> None:
    assert lookup({"a": {"b": 1.5}}, "a.b") == 1.5
    assert lookup({"a": [{"b": 1}, {"b": 2}]}, "a.1.b") == 2
    with pytest.raises(KeyError, match="no `c`"):
        lookup({"a": {"b": 1.5}}, "a.c")
    with pytest.raises(KeyError, match="no `2`"):
        lookup({"a": [{"b": 1}, {"b": 2}]}, "a.2.b")
    with pytest.raises(KeyError, match="no `c`"):
        lookup({"a": None}, "a.c")
    assert lookup({"a": None}, "a.c", undefined_ok=True) is None
    with pytest.raises(KeyError, match="no `x`"):
        lookup({"a": None}, "x.c", undefined_ok=True)


def keys_of(scenario: str) -> list[str]:
    """Every metric key the lessons state for ``scenario`` with no overrides, cut before its first
    number: a tiny run has fewer days, ramp steps and skew distances than the full one."""
    out = []
    for blocks in LESSONS.values():
        for b in blocks:
            if b["scenario"] == scenario and not b.get("overrides"):
                for key in b["metrics"]:
                    parts = key.split(".")
                    cut = next((i for i, q in enumerate(parts) if q.isdigit()), len(parts))
                    out.append(".".join(parts[:cut]))
    return out


@pytest.mark.lessons
@pytest.mark.parametrize(("lesson", "i"), CHECKED)
def test_lesson_numbers_at_full_size(lesson: str, i: int, tmp_path: Path) -> None:
    block = LESSONS[lesson][i]
    cfg = load_config(block["scenario"], [*block.get("overrides", []), f"seed={block['seed']}",
                                          "progress=off"])
    metrics = run(cfg, tmp_path, scenario=block["scenario"])
    got = {k: lookup(metrics, k) for k in block["metrics"]}
    report = {k: {"stated": v, "measured": got[k]} for k, v in block["metrics"].items()}
    print(json.dumps({lesson: {"overrides": block.get("overrides", []), "seed": block["seed"],
                               **report}}, indent=1))
    off = {k: r for k, r in report.items()
           if r["measured"] != pytest.approx(r["stated"], rel=block["tolerance"], abs=1e-9)}
    assert off == {}, f"{lesson}: stated figures no longer measured (tolerance {block['tolerance']})"
