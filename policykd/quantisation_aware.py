"""Quantisation-aware distillation: the student's action path computed the way the c-int8 export computes it.

Fake quantisation (Jacob et al. 2018) with the c-int8 scheme of policykd/c_codegen.py: each weight row symmetric to
int8 (scale max|W_r| / 127), each layer input per sample to int8 on its largest magnitude, rounded. Rounding passes
gradients straight through (the straight-through estimator); the scales are treated as constants. The log_std and
value heads stay float (no export computes them) and read the fake-quantised trunk.

Training the last rounds this way (recipe key quantise_aware_rounds) lets the student settle on weights whose int8
rounding costs little; the saved weights stay float, and `policykd export --format c-int8` quantises them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

INT8_MAX = 127.0


def fake_quantise(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """round(x / scale) * scale in the forward pass, the identity in the backward pass. x [..., n], scale broadcastable."""
    return x + (torch.round(x / scale) * scale - x).detach()


def quantised_linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """x [B, in] -> [B, out]: int8 rows of layer.weight times x rounded to int8 per sample, plus the float bias."""
    weight = layer.weight
    weight_scale = (weight.abs().amax(dim=1, keepdim=True) / INT8_MAX).clamp_min(1e-12).detach()
    input_scale = (x.abs().amax(dim=-1, keepdim=True) / INT8_MAX).clamp_min(1e-12).detach()
    return F.linear(fake_quantise(x, input_scale), fake_quantise(weight, weight_scale), layer.bias)


def quantised_trunk(trunk: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """The MLP trunk (Linear, activation, Linear, activation, ...) on normalised obs x [B, obs_dim] -> [B, hidden[-1]]."""
    for module in trunk:
        x = quantised_linear(module, x) if isinstance(module, nn.Linear) else module(x)
    return x
