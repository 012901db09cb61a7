"""First-order optimizers from scratch: SGD (+ momentum, Nesterov), AdaGrad, RMSProp, Adam, and
learning-rate schedules.

Each update rule is a small pure function over tensors, written the way the lecture writes it
(``sgd_momentum_update`` is ``v = rho v + dx; x -= lr v``). Each optimizer class subclasses
``torch.optim.Optimizer``: it validates its hyperparameters, keeps the per-parameter state and
calls the update function, nothing else. With the same hyperparameters their iterates equal
``torch.optim.SGD`` / ``Adagrad`` / ``RMSprop`` / ``Adam`` (checked in ``tests/test_optim.py``).

Weight decay is the classic L2 form every one of those torch optimizers uses: ``dx += wd * x``
before the update (for Adam that is *not* AdamW's decoupled decay).

The schedules ``step_lr``, ``cosine_lr`` and ``warmup_lr`` are plain functions of the step number
and equal ``torch.optim.lr_scheduler.StepLR`` / ``CosineAnnealingLR`` / ``LinearLR``;
``lambda_scheduler`` turns any of them into a scheduler ``fit`` can step.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Callable, Iterable

import torch

Tensor = torch.Tensor

__all__ = [
    "sgd_update", "sgd_momentum_update", "sgd_nesterov_update", "nesterov_lookahead_update",
    "adagrad_update", "rmsprop_update", "adam_update",
    "SGD", "AdaGrad", "RMSProp", "Adam",
    "step_lr", "cosine_lr", "warmup_lr", "lambda_scheduler", "minibatch_gradient_noise",
]


# ---------------------------------------------------------------------------------------------
# Update rules: pure functions. ``x`` and the state tensors are updated in place.
# ---------------------------------------------------------------------------------------------

def sgd_update(x: Tensor, dx: Tensor, lr: float) -> None:
    """Vanilla gradient descent: ``x -= lr * dx``."""
    x.add_(dx, alpha=-lr)


def sgd_momentum_update(x: Tensor, v: Tensor, dx: Tensor, lr: float, rho: float) -> None:
    """SGD + momentum in the lecture's form: ``v = rho * v + dx; x -= lr * v``.

    ``v`` is a running sum of gradients (the "velocity"); with ``v = 0`` at the start this is
    exactly ``torch.optim.SGD(momentum=rho, dampening=0)``.
    """
    v.mul_(rho).add_(dx)
    x.add_(v, alpha=-lr)


def sgd_nesterov_update(x: Tensor, b: Tensor, dx: Tensor, lr: float, rho: float) -> None:
    """Nesterov momentum in the lecture's change-of-variables form, on ``x`` = the look-ahead point.

    The lecture keeps a velocity ``v`` in parameter units::

        old_v = v
        v = rho * v - lr * dx
        x += -rho * old_v + (1 + rho) * v

    Here the state ``b`` is that velocity in gradient units, ``v = -lr * b``, so that a learning
    rate that changes between steps (a schedule) rescales the whole step, as in
    ``torch.optim.SGD(nesterov=True)``. Substituting ``v = -lr * b`` into the three lines above
    gives exactly the two below.
    """
    old_b = b.clone()
    b.mul_(rho).add_(dx)                          # v = rho * v - lr * dx
    x.add_(lr * (rho * old_b - (1 + rho) * b))   # x += -rho * old_v + (1 + rho) * v


def nesterov_lookahead_update(
    x: Tensor, v: Tensor, grad_fn: Callable[[Tensor], Tensor], lr: float, rho: float
) -> None:
    """Nesterov momentum in its original "look-ahead" form (the lecture's first form)::

        v = rho * v - lr * grad_f(x + rho * v)
        x = x + v

    It needs the gradient at a point other than ``x``, hence ``grad_fn``; the change of
    variables ``x_tilde = x + rho * v`` turns it into ``sgd_nesterov_update``.
    """
    g = grad_fn(x + rho * v)
    v.mul_(rho).add_(g, alpha=-lr)
    x.add_(v)


def adagrad_update(x: Tensor, grad_squared: Tensor, dx: Tensor, lr: float, eps: float) -> None:
    """AdaGrad (Duchi et al. 2011)::

        grad_squared += dx * dx
        x -= lr * dx / (sqrt(grad_squared) + eps)
    """
    grad_squared.addcmul_(dx, dx)
    x.addcdiv_(dx, grad_squared.sqrt().add_(eps), value=-lr)


def rmsprop_update(
    x: Tensor, grad_squared: Tensor, dx: Tensor, lr: float, alpha: float, eps: float
) -> None:
    """RMSProp (Tieleman & Hinton 2012), AdaGrad with a leaky sum::

        grad_squared = alpha * grad_squared + (1 - alpha) * dx * dx
        x -= lr * dx / (sqrt(grad_squared) + eps)
    """
    grad_squared.mul_(alpha).addcmul_(dx, dx, value=1 - alpha)
    x.addcdiv_(dx, grad_squared.sqrt().add_(eps), value=-lr)


def adam_update(
    x: Tensor, m: Tensor, v: Tensor, dx: Tensor, t: int,
    lr: float, beta1: float, beta2: float, eps: float,
) -> None:
    """Adam (Kingma & Ba 2015) with bias correction; ``t`` counts steps from 1::

        m = beta1 * m + (1 - beta1) * dx           # first moment (momentum)
        v = beta2 * v + (1 - beta2) * dx * dx      # second moment (RMSProp)
        m_hat = m / (1 - beta1 ** t)               # bias correction
        v_hat = v / (1 - beta2 ** t)
        x -= lr * m_hat / (sqrt(v_hat) + eps)
    """
    if t < 1:
        raise ValueError(f"Adam's step counter t starts at 1, got {t}")
    m.mul_(beta1).add_(dx, alpha=1 - beta1)
    v.mul_(beta2).addcmul_(dx, dx, value=1 - beta2)
    m_hat = m / (1 - beta1 ** t)
    v_hat = v / (1 - beta2 ** t)
    x.addcdiv_(m_hat, v_hat.sqrt().add_(eps), value=-lr)


# ---------------------------------------------------------------------------------------------
# Optimizer classes: validate, keep state, call the update rule.
# ---------------------------------------------------------------------------------------------

def _check(name: str, value, low: float, high: float = math.inf, *, include_high: bool = False) -> float:
    """``value`` must be a real number in ``[low, high)`` (``[low, high]`` with include_high)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(f"Invalid {name}: expected a real number, got {value!r}")
    ok = math.isfinite(value) and low <= value and (value <= high if include_high else value < high)
    if not ok:
        bracket = "]" if include_high else ")"
        raise ValueError(f"Invalid {name}: {value!r} (expected a number in [{low}, {high}{bracket})")
    return float(value)


def _gradient(p: Tensor, weight_decay: float, who: str) -> Tensor:
    if p.grad.is_sparse:
        raise ValueError(f"{who} does not support sparse gradients")
    dx = p.grad
    return dx.add(p, alpha=weight_decay) if weight_decay != 0 else dx


class _Base(torch.optim.Optimizer):
    """Shared ``step``: closure handling and the loop over parameters that have gradients."""

    def _update(self, p: Tensor, dx: Tensor, state: dict, group: dict) -> None:  # pragma: no cover
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None):
        """One update of every parameter that has a gradient. Returns ``closure()``'s loss, if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                dx = _gradient(p, group["weight_decay"], type(self).__name__)
                self._update(p, dx, self.state[p], group)
        return loss


class SGD(_Base):
    r"""Stochastic gradient descent, optionally with momentum or Nesterov momentum.

    .. math::
        v_{t+1} = \rho v_t + \nabla f(x_t), \qquad x_{t+1} = x_t - \alpha v_{t+1}

    ``momentum=0`` is plain SGD; ``nesterov=True`` uses ``sgd_nesterov_update`` (the lecture's
    change-of-variables form). Same iterates as ``torch.optim.SGD(lr, momentum, nesterov=...,
    weight_decay=...)``.
    """

    def __init__(self, params: Iterable, lr: float, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0):
        lr = _check("learning rate lr", lr, 0.0)
        momentum = _check("momentum", momentum, 0.0, 1.0)
        weight_decay = _check("weight_decay", weight_decay, 0.0)
        if not isinstance(nesterov, bool):
            raise ValueError(f"Invalid nesterov: expected True or False, got {nesterov!r}")
        if nesterov and momentum == 0:
            raise ValueError(f"Invalid momentum: {momentum!r} (Nesterov momentum needs momentum > 0)")
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov,
                                      weight_decay=weight_decay))

    def _update(self, p, dx, state, group):
        lr, rho = group["lr"], group["momentum"]
        if rho == 0:
            sgd_update(p, dx, lr)
            return
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(p)
        update = sgd_nesterov_update if group["nesterov"] else sgd_momentum_update
        update(p, state["momentum_buffer"], dx, lr, rho)


class AdaGrad(_Base):
    r"""AdaGrad: per-parameter step sizes from the running sum of squared gradients.

    .. math::
        G_{t+1} = G_t + g_t^2, \qquad x_{t+1} = x_t - \alpha\, g_t / (\sqrt{G_{t+1}} + \epsilon)

    Same iterates as ``torch.optim.Adagrad(lr, eps=eps, weight_decay=...)``.
    """

    def __init__(self, params: Iterable, lr: float = 1e-2, eps: float = 1e-10, weight_decay: float = 0.0):
        lr = _check("learning rate lr", lr, 0.0)
        eps = _check("epsilon eps", eps, 0.0)
        weight_decay = _check("weight_decay", weight_decay, 0.0)
        super().__init__(params, dict(lr=lr, eps=eps, weight_decay=weight_decay))

    def _update(self, p, dx, state, group):
        if "sum" not in state:
            state["sum"] = torch.zeros_like(p)
        adagrad_update(p, state["sum"], dx, group["lr"], group["eps"])


class RMSProp(_Base):
    r"""RMSProp: AdaGrad with an exponentially decaying average of squared gradients.

    .. math::
        s_{t+1} = \alpha s_t + (1-\alpha) g_t^2, \qquad x_{t+1} = x_t - \eta\, g_t / (\sqrt{s_{t+1}} + \epsilon)

    Same iterates as ``torch.optim.RMSprop(lr, alpha, eps, weight_decay)``.
    """

    def __init__(self, params: Iterable, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0):
        lr = _check("learning rate lr", lr, 0.0)
        alpha = _check("decay rate alpha", alpha, 0.0, 1.0)
        eps = _check("epsilon eps", eps, 0.0)
        weight_decay = _check("weight_decay", weight_decay, 0.0)
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay))

    def _update(self, p, dx, state, group):
        if "square_avg" not in state:
            state["square_avg"] = torch.zeros_like(p)
        rmsprop_update(p, state["square_avg"], dx, group["lr"], group["alpha"], group["eps"])


class Adam(_Base):
    r"""Adam: momentum on the gradient plus RMSProp scaling, both bias-corrected.

    .. math::
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \quad
        x_t = x_{t-1} - \alpha \frac{m_t / (1-\beta_1^t)}{\sqrt{v_t / (1-\beta_2^t)} + \epsilon}

    Same iterates as ``torch.optim.Adam(lr, betas, eps, weight_decay)`` (L2 weight decay, not AdamW).
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0):
        lr = _check("learning rate lr", lr, 0.0)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"Invalid betas: expected a pair (beta1, beta2), got {betas!r}")
        betas = (_check("beta1 (betas[0])", betas[0], 0.0, 1.0), _check("beta2 (betas[1])", betas[1], 0.0, 1.0))
        eps = _check("epsilon eps", eps, 0.0)
        weight_decay = _check("weight_decay", weight_decay, 0.0)
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    def _update(self, p, dx, state, group):
        if "step" not in state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        state["step"] += 1
        beta1, beta2 = group["betas"]
        adam_update(p, state["exp_avg"], state["exp_avg_sq"], dx, state["step"],
                    group["lr"], beta1, beta2, group["eps"])


# ---------------------------------------------------------------------------------------------
# Learning-rate schedules: the learning rate as a function of the step (or epoch) number.
# ---------------------------------------------------------------------------------------------

def _check_step(step) -> int:
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"Invalid step: expected a non-negative int, got {step!r}")
    return step


def _check_count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Invalid {name}: expected a positive int, got {value!r}")
    return value


def step_lr(step: int, base_lr: float, step_size: int, gamma: float = 0.1) -> float:
    """Step decay: ``base_lr * gamma ** (step // step_size)`` (= ``lr_scheduler.StepLR``)."""
    _check_step(step)
    _check("base_lr", base_lr, 0.0)
    _check_count("step_size", step_size)
    _check("gamma", gamma, 0.0)
    return base_lr * gamma ** (step // step_size)


def cosine_lr(step: int, base_lr: float, total_steps: int, min_lr: float = 0.0) -> float:
    """Cosine decay (Loshchilov & Hutter 2017, without restarts)::

        min_lr + (base_lr - min_lr) * (1 + cos(pi * step / total_steps)) / 2

    (= ``lr_scheduler.CosineAnnealingLR(T_max=total_steps, eta_min=min_lr)``).
    """
    _check_step(step)
    _check("base_lr", base_lr, 0.0)
    _check_count("total_steps", total_steps)
    _check("min_lr", min_lr, 0.0)
    return min_lr + (base_lr - min_lr) * (1 + math.cos(math.pi * step / total_steps)) / 2


def warmup_lr(step: int, base_lr: float, warmup_steps: int, start_factor: float = 1 / 3) -> float:
    """Linear warm-up from ``start_factor * base_lr`` to ``base_lr`` over ``warmup_steps``, then
    constant (= ``lr_scheduler.LinearLR(start_factor, end_factor=1, total_iters=warmup_steps)``).
    """
    _check_step(step)
    _check("base_lr", base_lr, 0.0)
    _check_count("warmup_steps", warmup_steps)
    _check("start_factor", start_factor, 0.0, 1.0, include_high=True)
    if start_factor == 0:  # LinearLR refuses 0; keep the same contract
        raise ValueError(f"Invalid start_factor: {start_factor!r} (expected a number in (0, 1])")
    factor = start_factor + (1 - start_factor) * min(step, warmup_steps) / warmup_steps
    return base_lr * factor


def lambda_scheduler(optimizer: torch.optim.Optimizer, schedule: Callable[[int], float]):
    """A ``LambdaLR`` whose learning rate at step ``s`` is ``schedule(s)`` (an absolute rate).

    Example: ``lambda_scheduler(opt, lambda s: cosine_lr(s, 0.1, total_steps=1000))``. The
    optimizer's learning rate must be ``schedule(0)`` and non-zero (LambdaLR multiplies it).
    """
    base = optimizer.param_groups[0]["lr"]
    if base <= 0 or not math.isclose(base, schedule(0), rel_tol=1e-12):
        raise ValueError(f"optimizer lr must equal schedule(0) = {schedule(0)!r} and be > 0, got {base!r}")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: schedule(s) / base)


# ---------------------------------------------------------------------------------------------
# Minibatch gradient noise
# ---------------------------------------------------------------------------------------------

def _flat_grad(model: torch.nn.Module, loss: Tensor) -> Tensor:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)])


def minibatch_gradient_noise(
    model: torch.nn.Module, x: Tensor, y: Tensor, batch_sizes: Iterable[int], draws: int,
    generator: torch.Generator, loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> dict[str, object]:
    """How far minibatch gradients stray from the full-batch gradient, measured and predicted.

    ``x: (N, ...)``, ``y: (N,)`` is the pool the minibatches are drawn from (with replacement,
    ``draws`` per batch size, indices from ``generator``). Returns a dict with

    - ``"measured"``: ``{B: mean over draws of ||g_B - g||^2}``, ``g`` the gradient on the pool;
    - ``"predicted"``: ``{B: tr(Sigma) / B}``, ``tr(Sigma) = mean_i ||g_i - g||^2`` from the
      per-example gradients ``g_i`` (the exact expectation for sampling with replacement);
    - ``"grad_norm_sq"``: ``||g||^2``, the signal the noise is compared with.

    The model is put in eval mode (no dropout / batch-statistics noise); its parameters are not
    changed.
    """
    import torch.nn.functional as F
    from torch.func import functional_call, grad, vmap

    loss_fn = loss_fn or F.cross_entropy
    batch_sizes = [_check_count("batch size", b) for b in batch_sizes]
    _check_count("draws", draws)
    n = len(x)
    if len(y) != n:
        raise ValueError(f"x has {n} examples but y has {len(y)}")
    model.eval()
    full = _flat_grad(model, loss_fn(model(x), y))

    names = [name for name, p in model.named_parameters() if p.requires_grad]
    params = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}

    def example_loss(p, xi, yi):
        return loss_fn(functional_call(model, p, (xi.unsqueeze(0),)), yi.unsqueeze(0))

    per_example = vmap(grad(example_loss), in_dims=(None, 0, 0))
    trace = 0.0
    for start in range(0, n, 256):  # chunks keep memory at 256 x (number of parameters)
        g = per_example(params, x[start:start + 256], y[start:start + 256])
        flat = torch.cat([g[name].flatten(1) for name in names], dim=1)
        trace += float(((flat - full) ** 2).sum())
    trace /= n

    measured = {}
    for b in batch_sizes:
        total = 0.0
        for _ in range(draws):
            idx = torch.randint(0, n, (b,), generator=generator).to(x.device)
            total += float(((_flat_grad(model, loss_fn(model(x[idx]), y[idx])) - full) ** 2).sum())
        measured[b] = total / draws
    return {"measured": measured, "predicted": {b: trace / b for b in batch_sizes},
            "grad_norm_sq": float((full ** 2).sum())}
