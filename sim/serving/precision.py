"""The towers as serving runs them: fp32, bf16, fp16 or int8, beside the fp32 checkpoint.

Offline evaluation scores the registry's fp32 checkpoint. Serving may run a copy in reduced
precision (``serving.query_dtype``, ``serving.item_dtype``), and then the served query and item
vectors differ from the checkpoint's by what the arithmetic loses, nothing else:

* ``fp32``: the checkpoint itself (no copy; bit for bit the offline model);
* ``bf16`` / ``fp16``: a copy with every parameter and buffer cast, fed inputs cast to the dtype,
  its output cast back to fp32 (torch runs both on CPU);
* ``int8``: dynamic quantisation of every ``nn.Linear`` (:class:`Int8Linear`): weights rounded
  once to int8 per output channel, each row of activations rounded to int8 at call time, the
  integer products summed exactly and scaled back. The standardisation, layer norms and
  attention softmax stay fp32, as in a dynamically quantised model.

``torch.ao.quantization.quantize_dynamic`` does the same with per-tensor activation scales, but
torch 2.13 marks it deprecated (a warning on every call, to move to torchao, which targets GPUs);
the twenty lines of :class:`Int8Linear` are the arithmetic it would run, with no dependency.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from sim.models.towers import TwoTowerBase

TORCH_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
INT8_MAX = 127.0


def _int8_scale(x: torch.Tensor) -> torch.Tensor:
    """Symmetric int8 scale of each row of ``x`` (absmax / 127; 1 for an all-zero row)."""
    amax = x.abs().amax(dim=-1, keepdim=True)
    return torch.where(amax > 0, amax / INT8_MAX, torch.ones_like(amax))


class Int8Linear(nn.Module):
    """``nn.Linear`` with int8 weights (per output channel) and int8 activations (per row).

    The products of two int8 numbers summed over ``in_features`` are integers below 2**24 for
    ``in_features`` up to 1040, so the fp32 matmul of the rounded values is the int32
    accumulation exactly."""

    weight_q: torch.Tensor
    weight_scale: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        w = linear.weight.detach().float()
        scale = _int8_scale(w)  # (out, 1)
        self.register_buffer("weight_q", torch.round(w / scale).clamp(-INT8_MAX, INT8_MAX))
        self.register_buffer("weight_scale", scale.squeeze(1))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = _int8_scale(x)
        xq = torch.round(x / s).clamp(-INT8_MAX, INT8_MAX)
        y = (xq @ self.weight_q.T) * s * self.weight_scale
        return y if self.bias is None else y + self.bias


def _quantise_linears(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.Linear):
            setattr(module, name, Int8Linear(child))
        else:
            _quantise_linears(child)


@dataclass(frozen=True)
class ServedTower:
    """The towers of one checkpoint as serving runs them in ``dtype``; ``checkpoint`` is the
    fp32 model offline evaluation scores (and the serving-path probe's reference)."""

    checkpoint: TwoTowerBase
    dtype: str
    model: TwoTowerBase  # the checkpoint itself for fp32, else a converted copy

    def query_vectors(self, query_x: torch.Tensor) -> torch.Tensor:
        """(B, D+1) float32 query vectors computed in ``dtype``."""
        return self.model.query_vectors(self._cast(query_x)).float()

    def item_vectors(self, item_x: torch.Tensor) -> torch.Tensor:
        """(N, D+1) float32 item vectors computed in ``dtype``."""
        return self.model.item_vectors(self._cast(item_x)).float()

    def query_mflops(self) -> float:
        return self.checkpoint.query_mflops()

    def _cast(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(TORCH_DTYPES[self.dtype]) if self.dtype in TORCH_DTYPES else x


def serve_as(checkpoint: TwoTowerBase, dtype: str) -> ServedTower:
    """``checkpoint`` as serving runs it in ``dtype`` (one of ``fp32``, ``bf16``, ``fp16``,
    ``int8``); the checkpoint is never modified."""
    if dtype == "fp32":
        return ServedTower(checkpoint, dtype, checkpoint)
    model = copy.deepcopy(checkpoint).eval()
    if dtype in TORCH_DTYPES:
        model = model.to(TORCH_DTYPES[dtype])
    elif dtype == "int8":
        _quantise_linears(model)
    else:
        raise ValueError(f"`dtype` must be one of fp32, bf16, fp16, int8; got {dtype!r}")
    return ServedTower(checkpoint, dtype, model)
