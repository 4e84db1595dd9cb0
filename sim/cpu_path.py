"""The CPU code path of the numeric libraries, pinned so that a world gives the same bits on any
x86-64 machine with AVX2, not only on the one its figures were measured on.

MKL (torch's matrix products), ATen (torch's other kernels), oneDNN, OpenBLAS (numpy's and
faiss's matrix products), numpy's own loops and faiss's distance kernels each choose their kernels
by the CPU they find: AVX-512 here, AVX2 there, AMX on a third. The kernels agree to a few ulps,
and a world amplifies a last-bit difference (a fit's next minibatch, an auction's tie, a budget
that runs out one request later) to several percent in a single seed's CPA. A lesson's printed
figure is then only good on the machine it was written on.

**The portable path** (the default, ``ADSIM_CPU_PATH=portable``) holds every one of them to kernels that
every x86-64 CPU with AVX2 (x86-64-v3: nearly every server and laptop since 2015) runs the same
way, Intel's or AMD's:

============================  ==============================  =========================
library                        how                             read
============================  ==============================  =========================
MKL (torch's products)         ``MKL_CBWR=COMPATIBLE,STRICT``  at its first call
ATen (torch's kernels)         ``ATEN_CPU_CAPABILITY=avx2``    when torch loads
oneDNN                         ``ONEDNN_MAX_CPU_ISA=AVX2``     at its first call
OpenBLAS (numpy's, faiss's)    ``OPENBLAS_CORETYPE=Haswell``   when the library loads
numpy's loops                  ``NPY_DISABLE_CPU_FEATURES``    when numpy loads
faiss's distance kernels       ``faiss.SIMDConfig.set_level``  per run (:func:`settle`)
============================  ==============================  =========================

Each library reads its variable once, when it loads, so :func:`pin` runs first thing in
``sim/__init__``, before numpy, torch or faiss is imported, and sets them in the process's
environment (which the workers of a sweep inherit). It overrides a value the caller had set:
the point is that the caller's machine and environment do not choose the path. The thread
counts are the other half of a world's bits: on this path ``threads=auto`` resolves as on a 2-core
machine (:data:`sim.threads.PORTABLE_CORES`).

MKL is held to its ``COMPATIBLE`` branch (SSE2 without the approximate reciprocals), not to
``AVX2``: MKL runs its ISA branches only on Intel CPUs and falls back to ``AUTO`` on others, so an
AMD and an Intel CPU asked for ``AVX2`` run different kernels; ``COMPATIBLE`` is the one branch
MKL defines the same on both. It is the pin's only cost worth measuring: the headline world at
seed 0 took 121 s against 103 s with MKL on ``AVX2`` (which on this AMD CPU is ``AUTO``) and 101 s
on the native path.

**What it cannot do.** A library imported before ``sim`` (a notebook that imports numpy or torch
first, a Ray worker that loaded numpy at start-up) has already chosen its path; the run then says
so (``manifest.cpu_path.complete`` false, ``too_late`` naming the libraries) and its figures may
differ from the lessons' in their last bits, and then by more. A CPU without AVX2 cannot take the
path at all, and a CPU of another architecture (ARM) has other kernels entirely: the same
conclusions across seeds, other single-seed figures.

**The native path** (``ADSIM_CPU_PATH=native``) leaves every library to choose:
it is faster, and its figures are that machine's. The choice is an environment variable, not a
config key, because it must be made before the libraries load, which is before Hydra reads a
config.

What a run really got is in ``manifest.cpu_path`` (:func:`observed`): the path asked for, the
variables set and the values they replaced, and what each library reports it runs.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

ENV = "ADSIM_CPU_PATH"
DEFAULT = "portable"
PATHS: dict[str, dict[str, str]] = {
    "portable": {
        "MKL_CBWR": "COMPATIBLE,STRICT",
        "ATEN_CPU_CAPABILITY": "avx2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "OPENBLAS_CORETYPE": "Haswell",
        # numpy 2.x's names for the AVX-512 groups it dispatches to (numpy.show_runtime())
        "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
    },
    "native": {},
}
FAISS_LEVEL = {"portable": "AVX2"}  # faiss.SIMDLevel_* per pinned path
LIBRARIES = ("numpy", "scipy", "torch", "faiss")  # those whose path is chosen when they load


@dataclass(frozen=True, kw_only=True)
class Pin:
    """What :func:`pin` did in this process."""

    path: str  # portable | native
    set: dict[str, str] = field(default_factory=dict)  # variables set
    replaced: dict[str, str] = field(default_factory=dict)  # the caller's values they overrode
    too_late: tuple[str, ...] = ()  # libraries loaded before the pin: their path is their own


_pin: Pin | None = None


def pin() -> Pin:
    """Set the environment of the path named by ``ADSIM_CPU_PATH`` (default ``portable``), once per
    process; a second call returns the first's result. Raises ``ValueError`` naming the variable
    and its value when the path is unknown, before anything is set."""
    global _pin
    if _pin is not None:
        return _pin
    path = os.environ.get(ENV, DEFAULT)
    if path not in PATHS:
        raise ValueError(f"{ENV}={path!r}: the CPU code path is one of {sorted(PATHS)}")
    wanted = PATHS[path]
    replaced = {k: os.environ[k] for k, v in wanted.items() if k in os.environ and os.environ[k] != v}
    os.environ.update(wanted)
    too_late = tuple(lib for lib in LIBRARIES if lib in sys.modules) if wanted else ()
    _pin = Pin(path=path, set=dict(wanted), replaced=replaced, too_late=too_late)
    return _pin


def settle() -> None:
    """Hold faiss's distance kernels to the pinned path (faiss picks its SIMD level at run time,
    not from the environment). Called when a run sets its threads (:func:`sim.threads.apply`)."""
    faiss = sys.modules.get("faiss")
    level = FAISS_LEVEL.get(pin().path)
    if faiss is not None and level is not None and faiss.SIMDConfig.has_dynamic_dispatch():
        faiss.SIMDConfig.set_level(getattr(faiss, f"SIMDLevel_{level}"))


def observed() -> dict[str, object]:
    """The path this process asked for and what each loaded library reports it runs, for the
    manifest. ``complete``: every pinned library loaded after the pin and reports the pinned
    level (always true on the native path)."""
    p = pin()
    torch = sys.modules.get("torch")
    faiss = sys.modules.get("faiss")
    np_core = sys.modules.get("numpy._core._multiarray_umath")
    libraries: dict[str, object] = {}
    numpy_features: list[str] = []
    if torch is not None:
        libraries["torch"] = torch.backends.cpu.get_cpu_capability()
    if np_core is not None:
        features = np_core.__cpu_features__
        numpy_features = [f for f in np_core.__cpu_dispatch__ if features.get(f)]
        libraries["numpy"] = numpy_features
    if faiss is not None and faiss.SIMDConfig.has_dynamic_dispatch():
        libraries["faiss"] = faiss.SIMDConfig.get_level_name()
    complete = True
    if p.path != "native":
        complete = (not p.too_late and libraries.get("torch") == "AVX2"
                    and libraries.get("faiss", "AVX2") == FAISS_LEVEL[p.path]
                    and not set(numpy_features) - {"X86_V3"})
    return {"path": p.path, "complete": complete, "set": p.set, "replaced": p.replaced,
            "too_late": list(p.too_late), "libraries": libraries}
