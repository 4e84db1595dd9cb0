"""adsim: a discrete-event simulator of an online-ads funnel (retrieval -> L1 -> L2 -> auction)."""

__version__ = "0.1.0"
