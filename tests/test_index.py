"""The ANN index: an IVF factory searches maximum inner product through norm-padded L2."""

from __future__ import annotations

import numpy as np

from sim.serving.index import build_index, search


def _build(vectors: np.ndarray, factory: str, nprobe: int = 1):  # type: ignore[no-untyped-def]
    n = vectors.shape[0]
    ids = np.arange(n)
    return build_index(vectors, ids, ids, np.zeros(n), np.zeros(n), np.zeros(n), factory, 0.0,
                       nprobe=nprobe)


def test_ivf_with_every_list_probed_is_the_exact_inner_product_search() -> None:
    rng = np.random.default_rng(0)
    # unequal norms and a constant bias slot in the queries, as the L1 vectors have
    items = (rng.standard_normal((3000, 9)) * rng.uniform(0.1, 3.0, (3000, 1))).astype(np.float32)
    queries = np.hstack([rng.standard_normal((200, 8)), np.ones((200, 1))]).astype(np.float32)
    flat, ivf = _build(items, "Flat"), _build(items, "IVF32,Flat", nprobe=32)
    assert ivf.mips_norm2 is not None and flat.mips_norm2 is None
    s_flat, r_flat = search(flat, queries, 50)
    s_ivf, r_ivf = search(ivf, queries, 50)
    assert np.mean(r_flat == r_ivf) > 0.99  # the same rows (rare near-ties may swap)
    np.testing.assert_allclose(np.sort(s_ivf, 1), np.sort(s_flat, 1), atol=1e-3)
    fewer = search(_build(items, "IVF32,Flat", nprobe=2), queries, 50)[1]
    hits = np.mean([np.isin(a, b).mean() for a, b in zip(fewer, r_flat, strict=True)])
    assert 0.0 < hits < 1.0  # probing 2 of 32 lists trades recall for speed


def test_a_build_smaller_than_the_lists_falls_back_to_flat() -> None:
    items = np.random.default_rng(1).standard_normal((10, 5)).astype(np.float32)
    small = _build(items, "IVF32,Flat", nprobe=4)
    assert small.mips_norm2 is None and small.index.ntotal == 10
