"""Pure per-tensor update rules (the math). Nothing here mutates its inputs.

Each rule follows the operation order of torch.optim's single-tensor implementation so that results
agree with torch to rounding, in any dtype and on any device.
"""

from __future__ import annotations

import torch
from torch import Tensor


def sgd_update(
    param: Tensor,
    grad: Tensor,
    buf: Tensor | None,
    *,
    first: bool,
    lr: float,
    momentum: float,
    dampening: float,
    nesterov: bool,
    weight_decay: float,
) -> tuple[Tensor, Tensor | None]:
    """One SGD step: returns ``(new_param, new_momentum_buffer)`` (buffer ``None`` without momentum).

    ``first`` marks the first step of this parameter: the buffer then starts as the gradient itself
    (no dampening), like torch.
    """
    if weight_decay != 0:
        grad = grad.add(param, alpha=weight_decay)
    new_buf = None
    if momentum != 0:
        new_buf = grad.clone() if first or buf is None else buf.mul(momentum).add_(grad, alpha=1 - dampening)
        grad = grad.add(new_buf, alpha=momentum) if nesterov else new_buf
    return param.add(grad, alpha=-lr), new_buf


def adam_update(
    param: Tensor,
    grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    max_exp_avg_sq: Tensor | None,
    *,
    step: float,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decoupled: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """One Adam / AdamW step. ``step`` is the step count *after* this step (1 on the first).

    Returns ``(new_param, new_exp_avg, new_exp_avg_sq, new_max_exp_avg_sq)``; pass
    ``max_exp_avg_sq=None`` for plain Adam (no AMSGrad). ``decoupled`` selects AdamW weight decay
    (shrink the parameter) instead of L2 (add to the gradient).
    """
    if weight_decay != 0:
        if decoupled:
            param = param.mul(1 - lr * weight_decay)
        else:
            grad = grad.add(param, alpha=weight_decay)
    new_avg = exp_avg.lerp(grad, 1 - beta1)
    new_sq = exp_avg_sq.mul(beta2).addcmul_(grad, grad, value=1 - beta2)
    bias_correction1 = 1 - beta1**step
    bias_correction2_sqrt = (1 - beta2**step) ** 0.5
    step_size = lr / bias_correction1
    new_max = None
    second = new_sq
    if max_exp_avg_sq is not None:
        new_max = torch.maximum(max_exp_avg_sq, new_sq)
        second = new_max
    denom = (second.sqrt() / bias_correction2_sqrt).add_(eps)
    return param.addcdiv(new_avg, denom, value=-step_size), new_avg, new_sq, new_max
