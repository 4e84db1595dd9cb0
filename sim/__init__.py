"""adsim: a discrete-event simulator of an online-ads funnel (retrieval -> L1 -> L2 -> auction).

Importing ``sim`` imports torch first, before any of its modules imports faiss. Each library
brings its own OpenMP runtime (faiss-cpu's wheel bundles a ``libgomp``); with faiss's loaded first
the process ran one more OpenMP worker thread (5 against 4 after a torch product and a faiss
search at 2 threads each) and the data plane ran slower on this 2-core machine
(docs/performance.md). Results are the same bits either way. Code of your own that imports faiss
should import ``sim`` (or torch) before it.
"""

import torch  # noqa: F401  (before faiss: see above)

__version__ = "0.1.0"

from sim.api import Run, load, simulate  # noqa: E402  (the notebook API; after torch, see above)

__all__ = ["Run", "load", "simulate", "__version__"]
