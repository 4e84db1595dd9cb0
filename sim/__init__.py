"""adsim: a discrete-event simulator of an online-ads funnel (retrieval -> L1 -> L2 -> auction).

Importing ``sim`` asks Intel MKL (torch's CPU BLAS) for its strict conditional numerical
reproducibility mode, ``MKL_CBWR=AUTO,STRICT``, unless the environment already names a mode: a
matrix product then gives the same bits at any thread count, so a run's results do not depend on
how many threads it got (see :mod:`sim.threads`). MKL reads the setting once, at its first call,
so it takes effect only if ``sim`` is imported before the process's first torch matrix product;
``manifest.threads.blas`` records the mode a run really had.
"""

import os

os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

__version__ = "0.1.0"
