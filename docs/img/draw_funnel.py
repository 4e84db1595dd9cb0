"""Draw docs/img/funnel.png, the request path and the lifecycle beside it (the docs' diagram).

    .venv/bin/python docs/img/draw_funnel.py
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

BLUE, ORANGE, GREEN = ("#eef4fb", "#3b6ea5"), ("#fdf3e6", "#c07a1c"), ("#edf7ee", "#3c8a46")

# (x, y of the top, width, height, colours, title, lines): coordinates in points of a 960 x 560 page
BOXES = {
    "req": (15, 45, 130, 95, BLUE, "Requests", ["users × surfaces,", "hourly traffic,",
                                                 "an arm each (split)"]),
    "ret": (165, 45, 140, 95, BLUE, "Retrieval", ["faiss: query vector ·", "item vectors of the",
                                                   "deployed tiers → K_r"]),
    "l1": (325, 45, 140, 95, BLUE, "L1", ["two-tower pCVR", "(simple, dhen, yours)",
                                          "keeps K_1"]),
    "l2": (485, 45, 140, 95, BLUE, "L2", ["ranker: pCTR, pCVR", "(the teacher L1 is",
                                          "distilled from) → K_2"]),
    "auc": (645, 45, 145, 95, BLUE, "Auction", ["bids: CPC, CPM, oCPM", "(autobidder), pacing,",
                                                "GSP or VCG, 3 slots"]),
    "out": (810, 45, 135, 95, GREEN, "Outcomes", ["impressions, clicks,", "delayed conversions,",
                                                  "spend"]),
    "rel": (20, 235, 205, 112, ORANGE, "Model releases", [
        "daily (or as set): L1 and L2 trained", "on the logged rows whose labels have",
        "arrived, evaluated offline; the query", "tower rolls out later"]),
    "emb": (245, 235, 205, 112, ORANGE, "Embedding snapshots", [
        "ads re-embedded with the newest", "item tower: streaming every",
        "10 min, snapshots hourly"]),
    "idx": (470, 235, 205, 112, ORANGE, "Index builds", [
        "a fresh tier hourly; a large tier", "daily that takes a day to deploy:",
        "item vectors of mixed versions", "(version skew)"]),
    "feat": (695, 235, 250, 112, ORANGE, "Features, budgets, experiment", [
        "feature families onboarded per artifact", "(a gap is zero-filled: parity); daily",
        "budgets and pacing; a treatment's", "traffic ramp (e.g. 20% → 70%)"]),
    "met": (20, 410, 280, 112, GREEN, "metrics.json", [
        "CPA and its lift with intervals,", "calibration, recall, latency, offline",
        "log_mae per log source, each beside", "its ground truth   (python -m sim)"]),
    "rep": (330, 410, 280, 112, GREEN, "report.md + plots/", [
        "the gap: offline win, online loss;", "then the three layers, each hypothesis",
        "with its evidence and a verdict", "(python -m sim.report RUN_DIR)"]),
    "more": (640, 410, 305, 112, GREEN, "Attribution, sweeps, benchmark", [
        "re-runs with hazards off (--attribute);", "a knob against an outcome over seeds (-m);",
        "the verdicts scored on worlds with", "known causes (python -m sim.diagnosis_bench)"]),
}
LANES = [(20, 28, "Data plane: every request, in vectorised batches, one SimPy tick at a time"),
         (20, 218, "Control plane: the few slow events, as SimPy processes"),
         (20, 393, "After the run (never inside the loop)")]
FLOW = [("req", "ret"), ("ret", "l1"), ("l1", "l2"), ("l2", "auc"), ("auc", "out"), ("met", "rep"),
        ("rep", "more")]
FEEDS = [("rel", "l1"), ("emb", "ret"), ("idx", "ret"), ("feat", "auc")]


def draw(path: Path) -> None:
    fig = plt.figure(figsize=(9.6, 5.7), dpi=120)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 960)
    ax.set_ylim(570, 0)
    ax.axis("off")
    for x, y, text in LANES:
        ax.text(x, y, text, fontsize=10.5, fontweight="bold", color="#555", va="center")
    for x, y, w, h, (fill, edge), title, lines in BOXES.values():
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0,rounding_size=6",
                                    facecolor=fill, edgecolor=edge, linewidth=1.4))
        ax.text(x + w / 2, y + 17, title, ha="center", va="center", fontsize=10, fontweight="bold")
        for i, line in enumerate(lines):
            ax.text(x + w / 2, y + 38 + 15 * i, line, ha="center", va="center", fontsize=7.9,
                    color="#333")
    for a, b in FLOW:
        xa, ya, wa, ha = BOXES[a][:4]
        xb, yb = BOXES[b][:2]
        ax.add_patch(FancyArrowPatch((xa + wa, ya + ha / 2), (xb, ya + ha / 2),
                                     arrowstyle="-|>", mutation_scale=12, color="#444", lw=1.3))
    for a, b in FEEDS:
        xa, ya, wa, _ = BOXES[a][:4]
        xb, yb, wb, hb = BOXES[b][:4]
        ax.add_patch(FancyArrowPatch((xa + wa / 2, ya), (xb + wb / 2, yb + hb),
                                     arrowstyle="-|>", mutation_scale=11, color=ORANGE[1], lw=1.1,
                                     linestyle=(0, (4, 3)), connectionstyle="arc3,rad=0.08"))
    ax.text(20, 545, "Each stage logs what it saw (candidates, scores, latency, the versions it served) "
            "beside the world's ground truth; a stage past its SLA falls back.", fontsize=8.2,
            color="#333", va="center")
    ax.text(20, 370, "Dashed: what each control-plane event changes on the request path "
            "(a new model version, new item vectors, a new index, a feature or budget change).",
            fontsize=8.2, color="#333", va="center")
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    draw(Path(__file__).with_name("funnel.png"))
