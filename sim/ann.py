"""A faiss ``index_factory`` string made into an empty index at the width its vectors will have.

The L1 item vectors are ``D + 1`` wide (the towers' output plus the bias slot) and searched by
inner product. An IVF index cannot assign vectors of unequal norms to lists by inner product
(the largest inner product with a centroid says little), so an IVF index is built one wider, on
L2, over vectors padded to one norm (:func:`sim.serving.index.build_index`). Which of the two a
factory string is must be decided without building it at the wrong width: ``IVF64,PQ17`` exists
at 34 dimensions and not at 33. This module is the one place that decides, for the index builds
and for config validation alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss


@dataclass(frozen=True, kw_only=True)
class EmptyIndex:
    """An untrained faiss index and how its vectors are laid out."""

    index: faiss.Index
    width: int  # dimensions of the vectors it stores: D + 1, or D + 2 for an IVF index
    padded: bool  # an IVF index over norm-padded vectors, searched by L2


def empty_index(factory: str, width: int) -> EmptyIndex:
    """The index ``factory`` describes for ``width``-dimensional inner-product vectors.

    A non-IVF factory is built at ``width`` with the inner-product metric; an IVF factory at
    ``width + 1`` with L2. Raises faiss's ``RuntimeError`` when neither exists (a product quantizer
    whose sub-vectors do not divide the width, say): the error of the inner-product build, or of
    the L2 build when only that one is an IVF index."""
    try:
        probe = faiss.index_factory(width, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as first:
        try:
            padded = faiss.index_factory(width + 1, factory, faiss.METRIC_L2)
        except RuntimeError:
            raise first from None
        if faiss.try_extract_index_ivf(padded) is None:
            raise first from None
        return EmptyIndex(index=padded, width=width + 1, padded=True)
    if faiss.try_extract_index_ivf(probe) is None:
        return EmptyIndex(index=probe, width=width, padded=False)
    return EmptyIndex(index=faiss.index_factory(width + 1, factory, faiss.METRIC_L2),
                      width=width + 1, padded=True)


def min_train_points(index: faiss.Index) -> int:
    """The fewest vectors ``index`` can be trained on: an IVF index's ``nlist`` lists, a product
    quantizer's ``2 ** nbits`` centroids per sub-quantizer (whichever is larger); 0 when it needs
    no training or any number will do (flat and scalar-quantised storage)."""
    need = 0
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        need = int(ivf.nlist)
    pq = product_quantizer(index)
    if pq is not None:
        need = max(need, int(pq.ksub))
    return need


def product_quantizer(index: faiss.Index) -> faiss.ProductQuantizer | None:
    """The product quantizer of an ``IndexPQ`` or ``IndexIVFPQ`` (under a pre-transform too)."""
    index = faiss.downcast_index(index)
    while isinstance(index, faiss.IndexPreTransform):
        index = faiss.downcast_index(index.index)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        index = faiss.downcast_index(ivf)
    return getattr(index, "pq", None)


def hnsw_graph(index: faiss.Index) -> faiss.HNSW | None:
    """The HNSW graph of an ``IndexHNSW*`` (possibly under a pre-transform), else None."""
    index = faiss.downcast_index(index)
    while isinstance(index, faiss.IndexPreTransform):
        index = faiss.downcast_index(index.index)
    return getattr(index, "hnsw", None)


def quiet_clustering(index: faiss.Index) -> None:
    """Let k-means train on as few points as it is given without printing faiss's warning (it
    asks for 39 points per centroid; a small catalog's build trains on what there is)."""
    index = faiss.downcast_index(index)
    while isinstance(index, faiss.IndexPreTransform):
        index = faiss.downcast_index(index.index)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.cp.min_points_per_centroid = 1
    pq = product_quantizer(index)
    if pq is not None:
        pq.cp.min_points_per_centroid = 1
