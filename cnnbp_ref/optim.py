"""Optimisers that update a list of parameter arrays in place, with ``torch.optim``'s formulas.

Both follow the single-tensor path of ``torch.optim.SGD`` / ``torch.optim.Adam`` with
``maximize=False``. For a parameter ``p`` with gradient ``g`` at step ``t = 1, 2, ...``:

SGD (``torch.optim.SGD``)::

    d = g + weight_decay * p
    if momentum != 0:
        buf = d                                           (t = 1)
        buf = momentum * buf + (1 - dampening) * d        (t > 1)
        d = d + momentum * buf   if nesterov   else   buf
    p = p - lr * d

Adam (``torch.optim.Adam``; weight decay is an L2 term added to the gradient, not AdamW)::

    g = g + weight_decay * p
    m = beta1 * m + (1 - beta1) * g                       (m = 0 before step 1)
    v = beta2 * v + (1 - beta2) * g * g                   (v = 0 before step 1)
    if amsgrad:
        v_max = max(v_max, v); use v_max in place of v    (v_max = 0 before step 1)
    denom = sqrt(v) / sqrt(1 - beta2**t) + eps
    p = p - lr / (1 - beta1**t) * m / denom

The parameters are arrays from any array-API library (NumPy, CuPy, ``array_api_strict``);
``opt.step(grads)`` changes them in place (the same objects, float32/float64 preserved) and
never modifies ``grads``. A gradient that is ``None`` (a layer that has not run backward yet)
skips its parameter, as ``torch.optim`` skips a tensor whose ``.grad`` is ``None``: the parameter,
its momentum buffer or moments and, for Adam, its step count ``t`` stay as they were.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import array_api_compat

from cnnbp_ref._backend import check_float_array, check_same_dtype, namespace
from cnnbp_ref._checks import boolean, real_number

__all__ = ["SGD", "Adam"]


class _Optimizer:
    """The parameter list and the gradient checks shared by :class:`SGD` and :class:`Adam`."""

    def __init__(self, params: Sequence[Any]) -> None:
        if not isinstance(params, (list, tuple)):
            raise TypeError(f"params must be a list of arrays, got {type(params).__name__}")
        if len(params) == 0:
            raise ValueError("params must be a non-empty list of arrays, got an empty list")
        for index, param in enumerate(params):
            name = f"params[{index}]"
            check_float_array(namespace(**{name: param}), name, param)
        self.params = list(params)

    def _zeros_like_params(self) -> list[Any]:
        """One zero array per parameter, on its device and with its dtype (state before step 1)."""
        zeros = []
        for param in self.params:
            xp = namespace(param=param)
            zeros.append(xp.zeros(param.shape, dtype=param.dtype, device=array_api_compat.device(param)))
        return zeros

    def _checked_grads(self, grads: Sequence[Any]) -> list[Any]:
        """Check that ``grads`` matches ``params`` one to one in library, shape and dtype (or is ``None``)."""
        if not isinstance(grads, (list, tuple)):
            raise TypeError(f"grads must be a list of arrays, got {type(grads).__name__}")
        if len(grads) != len(self.params):
            raise ValueError(
                f"grads must have one array per parameter ({len(self.params)}), got {len(grads)}"
            )
        for index, (param, grad) in enumerate(zip(self.params, grads, strict=True)):
            if grad is None:
                continue
            namespace(**{f"params[{index}]": param, f"grads[{index}]": grad})
            if tuple(grad.shape) != tuple(param.shape):
                raise ValueError(
                    f"grads[{index}] must have the shape of params[{index}] {tuple(param.shape)}, "
                    f"got {tuple(grad.shape)}"
                )
            check_same_dtype(f"grads[{index}]", grad, f"params[{index}]", param)
        return list(grads)


class SGD(_Optimizer):
    """Stochastic gradient descent with optional momentum, dampening, Nesterov and L2 weight decay.

    Matches ``torch.optim.SGD(params, lr, momentum, dampening, weight_decay, nesterov)``;
    the update is given in the module docstring.

    Parameters
    ----------
    params : list of arrays
        The parameters, updated in place by :meth:`step`.
    lr : float
        Learning rate, finite and ``>= 0``.
    momentum : float
        Momentum factor ``mu >= 0`` (finite); 0 disables the momentum buffer.
    dampening : float
        Finite; the momentum buffer adds ``(1 - dampening) * d`` from the second step on.
    weight_decay : float
        L2 penalty, finite and ``>= 0``: ``weight_decay * p`` is added to the gradient.
    nesterov : bool
        Nesterov momentum; requires ``momentum > 0`` and ``dampening == 0``.
    """

    def __init__(
        self,
        params: Sequence[Any],
        lr: float,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
    ) -> None:
        self.lr = real_number("lr", lr, low=0.0)
        self.momentum = real_number("momentum", momentum, low=0.0)
        self.dampening = real_number("dampening", dampening)
        self.weight_decay = real_number("weight_decay", weight_decay, low=0.0)
        boolean("nesterov", nesterov)
        if nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError(
                "nesterov=True requires momentum > 0 and dampening == 0, "
                f"got momentum={self.momentum}, dampening={self.dampening}"
            )
        self.nesterov = nesterov
        super().__init__(params)
        # One buffer per parameter; None until the first step (torch's momentum_buffer).
        self.momentum_buffers: list[Any | None] = [None] * len(self.params)

    def step(self, grads: Sequence[Any]) -> None:
        """Update every parameter in place from its gradient ``grads[i]`` (same shape and dtype).

        A ``None`` gradient leaves its parameter and momentum buffer untouched.
        """
        grads = self._checked_grads(grads)
        for index, (param, grad) in enumerate(zip(self.params, grads, strict=True)):
            if grad is None:
                continue
            direction = grad
            if self.weight_decay != 0:
                direction = direction + self.weight_decay * param
            if self.momentum != 0:
                buffer = self.momentum_buffers[index]
                if buffer is None:
                    xp = namespace(grad=grad)
                    buffer = xp.asarray(direction, copy=True)  # never alias the caller's gradient
                else:
                    buffer = self.momentum * buffer + (1 - self.dampening) * direction
                self.momentum_buffers[index] = buffer
                direction = direction + self.momentum * buffer if self.nesterov else buffer
            param -= self.lr * direction


class Adam(_Optimizer):
    """Adam (Kingma & Ba) with bias correction, optional AMSGrad and L2 weight decay.

    Matches ``torch.optim.Adam(params, lr, betas, eps, weight_decay, amsgrad)`` (not AdamW:
    the weight decay is added to the gradient); the update is given in the module docstring.

    Parameters
    ----------
    params : list of arrays
        The parameters, updated in place by :meth:`step`.
    lr : float
        Learning rate, finite and ``>= 0``.
    betas : pair of floats
        Decay rates ``(beta1, beta2)`` of the first and second moment averages, each in ``[0, 1)``.
    eps : float
        Added to the denominator, finite and ``>= 0``.
    weight_decay : float
        L2 penalty, finite and ``>= 0``: ``weight_decay * p`` is added to the gradient.
    amsgrad : bool
        Normalise by the running maximum of the second moment (AMSGrad).
    """

    def __init__(
        self,
        params: Sequence[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
    ) -> None:
        self.lr = real_number("lr", lr, low=0.0)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas must be a pair of floats (beta1, beta2), got {betas!r}")
        self.betas = (
            real_number("betas[0]", betas[0], low=0.0, high=1.0, high_open=True),
            real_number("betas[1]", betas[1], low=0.0, high=1.0, high_open=True),
        )
        self.eps = real_number("eps", eps, low=0.0)
        self.weight_decay = real_number("weight_decay", weight_decay, low=0.0)
        self.amsgrad = boolean("amsgrad", amsgrad)
        super().__init__(params)
        # One step count t per parameter, as torch keeps state["step"]: a skipped parameter does not count.
        self.step_counts = [0] * len(self.params)
        self.exp_avgs = self._zeros_like_params()  # m: first moment averages
        self.exp_avg_sqs = self._zeros_like_params()  # v: second moment averages
        self.max_exp_avg_sqs = self._zeros_like_params() if amsgrad else []  # v_max (AMSGrad only)

    @property
    def step_count(self) -> int:
        """The number of steps taken: the largest per-parameter count (all equal without ``None`` gradients)."""
        return max(self.step_counts)

    def step(self, grads: Sequence[Any]) -> None:
        """Update every parameter in place from its gradient ``grads[i]`` (same shape and dtype).

        A ``None`` gradient leaves its parameter, its moments and its step count untouched.
        """
        grads = self._checked_grads(grads)
        beta1, beta2 = self.betas
        for index, (param, grad) in enumerate(zip(self.params, grads, strict=True)):
            if grad is None:
                continue
            self.step_counts[index] += 1
            step = self.step_counts[index]
            step_size = self.lr / (1 - beta1**step)
            bias_correction2_sqrt = (1 - beta2**step) ** 0.5
            xp = namespace(param=param)
            if self.weight_decay != 0:
                grad = grad + self.weight_decay * param
            exp_avg = beta1 * self.exp_avgs[index] + (1 - beta1) * grad
            exp_avg_sq = beta2 * self.exp_avg_sqs[index] + (1 - beta2) * (grad * grad)
            self.exp_avgs[index] = exp_avg
            self.exp_avg_sqs[index] = exp_avg_sq
            if self.amsgrad:
                exp_avg_sq = xp.maximum(self.max_exp_avg_sqs[index], exp_avg_sq)
                self.max_exp_avg_sqs[index] = exp_avg_sq
            denom = xp.sqrt(exp_avg_sq) / bias_correction2_sqrt + self.eps
            param -= step_size * (exp_avg / denom)
