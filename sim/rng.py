"""Random streams: one root seed, one named numpy Generator per component, and keyed draws.

Two kinds of randomness live in the simulator:

* **Streams** for things a component draws in sequence (the catalog, traffic, training batches).
  ``Streams(seed).get("traffic")`` derives a child :class:`numpy.random.SeedSequence` from the
  root seed and a stable hash of the name, so adding a component never shifts another's stream.
* **Keyed draws** for responses: ``keyed_uniform(seed, request_id, ad_id, event)`` is a pure
  function of its arguments (a counter-based generator: SplitMix64 finalisers chained over the
  keys), so two worlds that show the same ad to the same request draw the same outcome. This is
  the common-random-numbers device that makes a true global treatment effect computable.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

# Event codes for keyed draws. Values are part of the contract: changing one changes every run.
CLICK = 1
CONVERSION = 2
CONVERSION_DELAY = 3
LOG_FULL_REQUEST = 4
LOG_PARTIAL_REQUEST = 5
LOG_PARTIAL_CANDIDATE = 6
ASSIGNMENT = 7  # a user's arm (sim.experiment)
LATENCY = 8  # a request's latency at a stage (sim.serving.latency; the stage index as the id)
PARTICIPATION = 9  # whether a throttled advertiser takes part in a request (sim.bidding)
EXPLORATION_KEEP = 10  # whether an exploration row is kept (sim.models.bootstrap; column as the id)
TRAINING_LOG_KEEP = 11  # whether a logged row stays in a thinned training log (sim.models.training_log)

# the 64-bit golden-ratio constant: SplitMix64's increment, and the multiplier that spreads an
# integer column over 64 bits in the per-row keys of sim.models.training_log and label_join
GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _name_key(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=4).digest(), "little")


@dataclass
class Streams:
    """Named child generators of one root seed."""

    seed: int
    _cache: dict[str, np.random.Generator] = field(default_factory=dict)

    def get(self, name: str) -> np.random.Generator:
        """The generator for component ``name`` (created on first use, then reused)."""
        if name not in self._cache:
            ss = np.random.SeedSequence(entropy=self.seed, spawn_key=(_name_key(name),))
            self._cache[name] = np.random.Generator(np.random.Philox(ss))
        return self._cache[name]

    def fresh(self, name: str) -> np.random.Generator:
        """A new generator for ``name`` at the start of its stream (not cached): two callers
        asking for the same name draw the same numbers."""
        ss = np.random.SeedSequence(entropy=self.seed, spawn_key=(_name_key(name),))
        return np.random.Generator(np.random.Philox(ss))

    def torch_seed(self, name: str) -> int:
        """A 63-bit integer seed for a torch Generator owned by component ``name``."""
        ss = np.random.SeedSequence(entropy=self.seed, spawn_key=(_name_key(name),))
        return int(ss.generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    x = x + GOLDEN
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def keyed_uniform(
    seed: int, request_id: np.ndarray, ad_id: np.ndarray | int, event: int
) -> np.ndarray:
    """Uniform draws in [0, 1), one per element, a pure function of ``(seed, request_id, ad_id, event)``.

    ``request_id`` and ``ad_id`` broadcast against each other (int64 arrays of ids); the result has
    their broadcast shape and dtype float64.
    """
    with np.errstate(over="ignore"):
        r = np.asarray(request_id).astype(np.uint64)
        a = np.asarray(ad_id).astype(np.uint64)
        h = _mix(np.asarray(np.uint64(seed)) ^ _mix(np.asarray(np.uint64(event))))
        h = _mix(h ^ r)
        h = _mix(h ^ (a * _M1))
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)

