"""Batch-norm folding: the deploy form of a model, where every BN is merged into the conv in front of it.

In eval mode a BN is a per-channel affine map ``y = γ (x − μ) / √(σ² + ε) + β``. Applied right after a conv
``x = W * u + b`` it is the same as a conv with weights ``W · s`` and bias ``(b − μ) · s + β`` where
``s = γ / √(σ² + ε)``, so the folded model computes the same function with one layer fewer per block and no
per-channel multiply at run time. Every conv of the package sits in a :class:`~mobilenet.layers.ConvBNAct`
(children ``conv``, ``bn``, ``act``), so folding only has to understand that one module.

A BN with no conv in front of it (MobileNetV4's norm before attention) cannot merge into the convs after it, whose
zero padding would see the shifted border; it becomes a 1×1 depthwise conv with bias, the same per-channel affine map.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..layers import ConvBNAct

_BATCH_NORMS = (nn.BatchNorm2d,)


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new conv computing ``bn(conv(x))`` with ``bn`` in eval mode (its running statistics).

    The arithmetic runs in float64 so the folded weights differ from the exact product only by the final rounding
    to the conv's dtype.
    """
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm without running statistics (track_running_stats=False)")
    w = conv.weight.detach().double()
    mean, var = bn.running_mean.double(), bn.running_var.double()
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(mean)
    bias = conv.bias.detach().double() if conv.bias is not None else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + bn.eps)
    fused = nn.Conv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
        conv.groups, bias=True, padding_mode=conv.padding_mode,
        device=conv.weight.device, dtype=conv.weight.dtype,
    )
    fused.weight.copy_((w * scale.reshape(-1, 1, 1, 1)).to(conv.weight.dtype))
    fused.bias.copy_(((bias - mean) * scale + beta).to(conv.weight.dtype))
    return fused


def fold_bn(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Returns the model with every ``ConvBNAct``'s BN folded into its conv (the BN becomes ``nn.Identity``).

    The result is in eval mode and matches the unfolded model in eval mode to float32 round-off. Works for every
    registered model (fresh or trained) because they build all their convs from ``ConvBNAct``; a BN anywhere else
    is left in place and reported by :func:`count_batch_norms`.

    Args:
        model: the model; it is deep-copied first unless ``inplace=True``.
        inplace: fold into ``model`` itself.
    """
    model = model if inplace else copy.deepcopy(model)
    model.eval()
    for module in model.modules():
        if isinstance(module, ConvBNAct) and isinstance(getattr(module, "bn", None), _BATCH_NORMS):
            module.conv = fold_conv_bn(module.conv, module.bn)
            module.bn = nn.Identity()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, _BATCH_NORMS):
                setattr(parent, name, _affine_conv(child))
    return model


def _affine_conv(bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A lone BN as a 1×1 depthwise conv with bias (an identity conv folded with the BN)."""
    c = bn.num_features
    identity = nn.Conv2d(c, c, 1, groups=c, bias=False, device=bn.running_mean.device, dtype=bn.running_mean.dtype)
    nn.init.ones_(identity.weight)
    return fold_conv_bn(identity, bn)


def count_batch_norms(model: nn.Module) -> int:
    """The number of BN layers left in a model (0 after :func:`fold_bn` on any registered model)."""
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
