"""Optimizers, learning-rate schedules and the weight EMA used by the training loop.

The MobileNet papers train with RMSprop (V1, V2: decay and momentum 0.9) and put "very little or no weight decay
(l2 regularization) on the depthwise filters since there are so few parameters in them" (V1 §3.2); this module
makes that the default: decay applies to full and pointwise conv and linear weights only, never to depthwise
filters, normalisation parameters or biases.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from .errors import MobileNetError
from .layers import is_depthwise

OPTIMIZERS = ("sgd", "rmsprop", "lars", "adamw")
SCHEDULES = ("cosine", "step", "constant")
# Torch's RMSprop adds eps outside the square root, TensorFlow's inside: sqrt(1e-3) outside is the usual
# TF-equivalent setting for the papers' RMSprop (TF epsilon 1e-3 with decay 0.9, momentum 0.9).
RMSPROP_EPS = math.sqrt(1e-3)
_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def param_groups(model: nn.Module, weight_decay: float, decay_all: bool = False) -> list[dict]:
    """Splits parameters into a decayed group and an undecayed one (depthwise filters, norms, biases).

    Args:
        model: the model to optimise.
        weight_decay: L2 factor of the decayed group.
        decay_all: decay every parameter instead (the plain PyTorch behaviour).
    """
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            exempt = name == "bias" or isinstance(module, _NORMS) or is_depthwise(module)
            (decay if decay_all or not exempt else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def make_optimizer(model: nn.Module, name: str, lr: float, momentum: float, weight_decay: float,
                   decay_all: bool = False) -> torch.optim.Optimizer:
    """SGD with momentum, or RMSprop with the papers' decay 0.9 and TF-equivalent epsilon."""
    groups = param_groups(model, weight_decay, decay_all)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, alpha=0.9, eps=RMSPROP_EPS, momentum=momentum)
    if name == "lars":
        return LARS(groups, lr=lr, momentum=momentum)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(momentum, 0.999))
    raise MobileNetError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")


class LARS(torch.optim.SGD):
    """SGD with momentum on layer-wise normalised gradients: each tensor's gradient (with its weight decay) is
    rescaled to the tensor's own norm, so ``lr`` is the relative change of every tensor per step (before momentum).

    Plain SGD moves a tensor by ``lr · |g| / |w|`` of its size, and in MobileNets that ratio spans two orders of
    magnitude (a depthwise filter's is 10-100 times a late pointwise layer's; full convolutions have the smallest).
    The trust ratio of LARS (You et al. 2017, arXiv 1708.03888; here with coefficient 1 and applied to every
    tensor) removes that spread. A tensor that is still zero (a BN shift at initialisation) takes a plain SGD step.
    """

    def __init__(self, params, lr: float, momentum: float):
        super().__init__(params, lr=lr, momentum=momentum)
        for group in self.param_groups:
            # Kept in the group (so a checkpoint restores it) and added to the gradient before the rescaling in
            # step(); SGD itself must not add it a second time.
            group["decay"], group["weight_decay"] = group["weight_decay"], 0.0

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:  # the gradients must exist before they are rescaled
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if group["decay"]:
                torch._foreach_add_(grads, params, alpha=group["decay"])
            # One batched norm per list (not a Python loop over tensors): the step stays as cheap as SGD's.
            w = torch.stack(torch._foreach_norm(params))
            g = torch.stack(torch._foreach_norm(grads))
            ratio = torch.where((w > 0) & (g > 0), w / g.clamp_min(1e-30), torch.ones_like(w))
            torch._foreach_mul_(grads, list(ratio.unbind()))
        super().step()
        return loss


class LRFactor:
    """The learning-rate multiplier at an optimizer step: linear warm-up, then cosine, step or constant.

    A class rather than a closure so that ``LambdaLR.state_dict`` records its settings.

    Args:
        total_steps: steps of the whole run (epochs × steps per epoch).
        warmup_steps: steps of linear warm-up from ``1/warmup_steps`` to 1.
        schedule: ``"cosine"`` (to 0 at ``total_steps``), ``"step"`` (× ``gamma`` every ``step_every`` steps) or
            ``"constant"``.
    """

    def __init__(self, total_steps: int, warmup_steps: int, schedule: str, step_every: int = 1,
                 gamma: float = 0.1):
        if schedule not in SCHEDULES:
            raise MobileNetError(f"unknown schedule {schedule!r}; expected one of {', '.join(SCHEDULES)}")
        self.total_steps, self.warmup_steps = max(1, total_steps), max(0, warmup_steps)
        self.schedule, self.step_every, self.gamma = schedule, max(1, step_every), gamma

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.schedule == "cosine":
            span = max(1, self.total_steps - self.warmup_steps)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - self.warmup_steps) / span)))
        if self.schedule == "step":
            return self.gamma ** (step // self.step_every)
        return 1.0


class ModelEMA:
    """An exponential moving average of a model's weights, evaluated instead of the raw weights when enabled.

    The decay ramps up as ``min(decay, (1 + step) / (10 + step))`` so early averages are not dominated by the
    random initialisation (the TensorFlow ExponentialMovingAverage ``num_updates`` rule).
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for ema, cur in zip(self.module.state_dict().values(), model.state_dict().values()):
            if ema.dtype.is_floating_point:
                ema.mul_(d).add_(cur.detach(), alpha=1 - d)
            else:
                ema.copy_(cur)


def training_loss(net: nn.Module, x: torch.Tensor, y: torch.Tensor, amp: bool = False,
                  label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The forward half of a training step: ``(loss, logits)``, the forward pass under bf16 autocast when ``amp``
    and the cross-entropy in fp32. Training, ``bench-train`` and the reproduction's speed estimate all step here."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        logits = net(x)
    return F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing), logits


def descend(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """The backward half: gradients of ``loss`` replace the old ones, then one optimizer step."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
