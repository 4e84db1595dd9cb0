"""Trained checkpoints keyed by everything that determines them: a model is trained once.

A fit (:func:`sim.models.fitting.fit_l2`, :func:`~sim.models.fitting.fit_l1`) is a pure function
of its inputs: the model's parameters and buffers before the fit (a fresh initialisation or the
previous version), the training rows, the teacher (for L1), the conversion labels known at
``known_at``, the users' features, the training config, the state of the torch generator that
shuffles, the torch thread count (reductions differ in their last bits between thread counts),
the CPU code path and the training code itself. :class:`Checkpoints` hashes all of them
(blake2b) into a key and keeps what the fit produced under it: the trained state, the generator's
state after the fit and the fit report. A second fit with the same key loads them instead of
training, so the model, the generator and everything after them are bit for bit what training
would have produced.

Two levels:

* **in the run** (always): both arms of an experiment train the same L2 on the same pooled rows
  with the same seeds, release after release; the second is loaded;
* **on disk** (``cache.dir``): start-up checkpoints (and any release whose inputs match) are
  reused across runs: the ground-truth worlds, the attribution worlds, a sweep over serving knobs,
  a re-run. Entries are written to a temporary name and renamed (safe under parallel jobs); the
  directory is trimmed to ``cache.max_mb``, least recently used first.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sim.cpu_path import pin
from sim.models.training import FitReport

# the code that determines a trained model: every module of sim.models
CODE_DIR = Path(__file__).resolve().parent


def code_digest() -> str:
    """A digest of the training code (every ``sim/models/*.py``), the library versions and the CPU
    code path the libraries were pinned to (:mod:`sim.cpu_path`: another path trains other bits)."""
    h = hashlib.blake2b(digest_size=16)
    for path in sorted(CODE_DIR.glob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    h.update(f"torch {torch.__version__} numpy {np.__version__}".encode())
    h.update(f"cpu path {pin().path} {sorted(pin().set.items())}".encode())
    return h.hexdigest()


class Digest:
    """An incremental blake2b over arrays, tensors, configs and scalars, each tagged with its
    type, dtype and shape so that different values never feed the same bytes."""

    def __init__(self) -> None:
        self._h = hashlib.blake2b(digest_size=20)

    def add(self, value: Any) -> Digest:
        h = self._h
        if isinstance(value, torch.Tensor):
            t = value.detach().contiguous().cpu()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(value, np.ndarray):
            a = np.ascontiguousarray(value)
            h.update(f"A{a.dtype.str}{a.shape}".encode())
            h.update(a.tobytes())
        elif isinstance(value, dict):
            h.update(f"D{len(value)}".encode())
            for k in sorted(value, key=str):
                self.add(str(k)).add(value[k])
        elif isinstance(value, list | tuple):
            h.update(f"L{len(value)}".encode())
            for v in value:
                self.add(v)
        elif value is None or isinstance(value, bool | int | float | str | bytes):
            h.update(f"S{type(value).__name__}:{value!r}".encode())
        else:
            raise TypeError(f"cannot digest a {type(value).__name__}")
        return self

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def _to_bytes(payload: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


def _from_bytes(data: bytes) -> dict[str, Any]:
    out = torch.load(io.BytesIO(data), weights_only=True)
    assert isinstance(out, dict)
    return out


@dataclass
class CacheStats:
    """What the checkpoint cache did in a run (``manifest.checkpoints``)."""

    trained: int = 0
    from_memory: int = 0
    from_disk: int = 0
    written: int = 0
    by_kind: dict[str, list[int]] = field(default_factory=dict)  # kind -> [trained, loaded]


class Checkpoints:
    """The checkpoints of a run, and the shared directory if one is given."""

    def __init__(self, directory: Path | None, max_mb: float, threads: int | str) -> None:
        if directory is not None and max_mb <= 0:
            raise ValueError(f"`cache.max_mb` must be > 0, got {max_mb}")
        self.directory = directory
        self.max_bytes = int(max_mb * 1e6)
        self.threads = threads
        self.code = code_digest()
        self._memory: dict[str, bytes] = {}
        self.stats = CacheStats()

    def key(self, kind: str, model: nn.Module, gen: torch.Generator, inputs: dict[str, Any]) -> str:
        d = Digest().add(kind).add(self.code).add(self.threads)
        d.add(dict(model.state_dict())).add(gen.get_state()).add(inputs)
        return d.hexdigest()

    def fit(self, kind: str, model: nn.Module, gen: torch.Generator, inputs: dict[str, Any],
            train: Callable[[], FitReport]) -> FitReport:
        """``train()`` (which fits ``model`` in place, drawing from ``gen``) unless a fit with the
        same inputs is known; then the model and the generator are set to what it produced."""
        key = self.key(kind, model, gen, inputs)
        counts = self.stats.by_kind.setdefault(kind, [0, 0])
        data = self._memory.get(key)
        if data is not None:
            self.stats.from_memory += 1
        else:
            data = self._read(key)
            if data is not None:
                self.stats.from_disk += 1
                self._memory[key] = data
        if data is not None:
            payload = _from_bytes(data)
            model.load_state_dict(payload["state"])
            model.train(payload["training"])
            gen.set_state(payload["gen"])
            counts[1] += 1
            return FitReport(**payload["fit"])
        report = train()
        data = _to_bytes({"state": model.state_dict(), "training": model.training,
                          "gen": gen.get_state(), "fit": asdict(report)})
        self._memory[key] = data
        self._write(key, data)
        self.stats.trained += 1
        counts[0] += 1
        return report

    # -- the shared directory ---------------------------------------------------------------

    def _path(self, key: str) -> Path:
        assert self.directory is not None
        return self.directory / f"{key}.pt"

    def _read(self, key: str) -> bytes | None:
        if self.directory is None:
            return None
        path = self._path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        os.utime(path)  # recently used: trimmed last
        return data

    def _write(self, key: str, data: bytes) -> None:
        if self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{key}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, self._path(key))  # atomic: a reader sees all of an entry or none
        self.stats.written += 1
        self._trim()

    def _trim(self) -> None:
        """Remove the least recently used entries until the directory fits ``max_bytes``."""
        assert self.directory is not None
        entries = []
        for path in self.directory.glob("*.pt"):
            try:
                st = path.stat()
            except FileNotFoundError:  # removed by a parallel job
                continue
            entries.append((st.st_mtime, st.st_size, path))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size
