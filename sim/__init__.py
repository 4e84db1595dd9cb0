"""adsim: a discrete-event simulator of an online-ads funnel (retrieval -> L1 -> L2 -> auction).

Importing ``sim`` first pins the numeric libraries' CPU code path (:mod:`sim.cpu_path`: each
library reads it from the environment when it loads, so before any of them is imported), then
imports torch, before any of its modules imports faiss. Each library brings its own OpenMP
runtime (faiss-cpu's wheel bundles a ``libgomp``); with faiss's loaded first the process ran one
more OpenMP worker thread (5 against 4 after a torch product and a faiss search at 2 threads
each) and the data plane ran slower on this 2-core machine (docs/performance.md). Results are the
same bits either way. Code of your own should import ``sim`` before numpy, torch or faiss.
"""

from sim.cpu_path import pin as _pin

_pin()  # before numpy, torch and faiss load: see sim/cpu_path.py

import torch  # noqa: E402, F401  (before faiss: see above)

__version__ = "0.1.0"

from sim.api import Run, load, simulate  # noqa: E402  (the notebook API; after torch, see above)

__all__ = ["Run", "load", "simulate", "__version__"]
