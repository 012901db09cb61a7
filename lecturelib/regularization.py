"""Regularization: weight penalties, dropout (inverted and the slide's test-time scaling),
DropConnect, and Monte-Carlo averaging over dropout masks.

Convention: ``p`` is the probability of DROPPING a unit or weight everywhere in this module, as
in ``torch.nn.functional.dropout``. The lecture's NumPy code uses ``p`` for the probability of
KEEPING a unit (``H1 *= np.random.rand(*H1.shape) < p``): its ``p = 0.5`` is our ``p = 0.5`` but
its ``p = 0.8`` is our ``p = 0.2``.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "l2_penalty", "l1_penalty", "elastic_net_penalty", "weight_parameters",
    "dropout", "dropout_scale_at_test", "Dropout",
    "dropout_forward", "dropout_backward",
    "DropConnectLinear", "mc_predict", "stochastic_modules",
]


# --------------------------------------------------------------------------- weight penalties

def _param_list(params: Iterable[Tensor] | Tensor) -> list[Tensor]:
    if isinstance(params, Tensor):
        params = [params]
    out = list(params)
    if not out:
        raise ValueError("the penalty needs at least one parameter tensor, got an empty iterable")
    for i, t in enumerate(out):
        if not isinstance(t, Tensor):
            raise TypeError(f"parameter {i} must be a torch.Tensor, got {type(t).__name__}")
    return out


def l2_penalty(params: Iterable[Tensor] | Tensor) -> Tensor:
    """R(W) = sum_k sum_l W_kl^2 over every tensor in ``params`` (a scalar tensor).

    The slide's L2 term without the 1/2: its gradient is 2W, so ``loss + lam * l2_penalty(w)``
    under plain SGD equals ``torch.optim.SGD(weight_decay=2 * lam)``.
    """
    return sum(t.pow(2).sum() for t in _param_list(params))


def l1_penalty(params: Iterable[Tensor] | Tensor) -> Tensor:
    """R(W) = sum_k sum_l |W_kl| over every tensor in ``params`` (a scalar tensor)."""
    return sum(t.abs().sum() for t in _param_list(params))


def elastic_net_penalty(params: Iterable[Tensor] | Tensor, beta: float) -> Tensor:
    """R(W) = sum_k sum_l beta W_kl^2 + |W_kl| (the slide's elastic net, L1 + beta L2)."""
    if not beta >= 0:
        raise ValueError(f"beta must be a non-negative float, got {beta!r}")
    return sum(beta * t.pow(2).sum() + t.abs().sum() for t in _param_list(params))


def weight_parameters(model: nn.Module) -> list[Tensor]:
    """The tensors a penalty usually covers: weights of dimension >= 2 (biases and norm scales left out)."""
    return [p for p in model.parameters() if p.dim() >= 2]


# --------------------------------------------------------------------------- dropout in torch

def _check_p(p: float, name: str = "p") -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} is the probability of dropping and must be a float in [0, 1], got {p!r}")
    return float(p)


def _keep_mask(shape: torch.Size, keep: float, like: Tensor, generator: torch.Generator | None) -> Tensor:
    """A 0/1 mask of ``like``'s dtype and device with P(1) = keep.

    ``empty(...).bernoulli_(keep)`` is how ``torch.nn.functional.dropout`` draws its mask on the
    CPU, so the same seed gives the same mask as torch.
    """
    if generator is not None and generator.device != like.device:
        mask = torch.empty(shape, dtype=like.dtype, device=generator.device).bernoulli_(keep, generator=generator)
        return mask.to(like.device)
    return torch.empty(shape, dtype=like.dtype, device=like.device).bernoulli_(keep, generator=generator)


def dropout(x: Tensor, p: float, *, training: bool, generator: torch.Generator | None = None) -> Tensor:
    """Inverted dropout: zero each entry with probability ``p``, scale survivors by 1 / (1 - p).

    Training: ``x * m / (1 - p)`` with ``m ~ Bernoulli(1 - p)`` per entry, so E[output] = x.
    Eval (``training=False``): the identity, nothing to rescale at test time.
    ``p`` is the DROP probability (torch's convention, not the slide's keep probability).
    Shapes: any; the output has ``x``'s shape.
    """
    p = _check_p(p)
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point torch.Tensor, got {type(x).__name__}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    mask = _keep_mask(x.shape, 1.0 - p, x, generator)
    return x * (mask * (1.0 / (1.0 - p)))


def dropout_scale_at_test(x: Tensor, p: float, *, training: bool,
                          generator: torch.Generator | None = None) -> Tensor:
    """The slide's original dropout: drop without rescaling in training, multiply by (1 - p) at test.

    Training: ``x * m`` with ``m ~ Bernoulli(1 - p)``, so E[output] = (1 - p) x.
    Eval: ``(1 - p) x``, the expected training output. (The slide writes ``* p`` with p = keep.)
    It is ``(1 - p) * dropout(x, p, ...)`` in both modes: the two differ only by where the
    constant goes, which is why modern code scales during training and leaves test time alone.
    """
    p = _check_p(p)
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point torch.Tensor, got {type(x).__name__}")
    if not training:
        return x * (1.0 - p)
    return x * _keep_mask(x.shape, 1.0 - p, x, generator)


class Dropout(nn.Module):
    """``dropout`` as a layer (like ``nn.Dropout``), with an optional ``torch.Generator``."""

    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None):
        super().__init__()
        self.p = _check_p(p)
        self.generator = generator

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, training=self.training, generator=self.generator)

    def extra_repr(self) -> str:
        return f"p={self.p}"


# --------------------------------------------------------------------------- dropout in NumPy

def dropout_forward(x: np.ndarray, p: float, *, training: bool,
                    rng: np.random.Generator | None = None) -> tuple[np.ndarray, tuple]:
    """Inverted dropout forward pass in NumPy. ``x``: any shape; ``p``: drop probability.

    Returns ``(out, cache)`` with ``cache = (mask, p, training)``; in training ``mask`` holds
    0 or 1 / (1 - p) per entry and ``out = x * mask``; in eval ``mask`` is None and ``out = x``.
    """
    p = _check_p(p)
    if not isinstance(x, np.ndarray) or not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"x must be a floating-point NumPy array, got {type(x).__name__}")
    if not training or p == 0.0:
        return x.copy(), (None, p, training)
    rng = np.random.default_rng() if rng is None else rng
    keep = 1.0 - p
    mask = (rng.random(x.shape) < keep).astype(x.dtype)
    if keep > 0:
        mask /= keep
    return x * mask, (mask, p, training)


def dropout_backward(dout: np.ndarray, cache: tuple) -> np.ndarray:
    """Gradient of inverted dropout: ``dx = dout * mask`` in training, ``dout`` in eval."""
    mask, _, training = cache
    if mask is None:
        return dout.copy()
    if dout.shape != mask.shape:
        raise ValueError(f"dout must have the forward input's shape {mask.shape}, got {dout.shape}")
    return dout * mask


# --------------------------------------------------------------------------- DropConnect

class DropConnectLinear(nn.Module):
    """A linear layer whose WEIGHTS are dropped at random in training (Wan et al. 2013).

    Training: ``y = x (W * M / (1 - p))^T + b`` with a fresh ``M ~ Bernoulli(1 - p)`` of shape
    ``(out_features, in_features)`` at every forward call (one mask per mini-batch, the cheap
    variant; the paper draws one per example). Biases are not dropped.
    Eval: ``y = x W^T + b``, the expected weights E[W * M / (1 - p)] = W, i.e. ``nn.Linear``.
    Shapes: ``x (N, in_features)`` -> ``(N, out_features)``.
    """

    def __init__(self, in_features: int, out_features: int, p: float = 0.5, bias: bool = True,
                 generator: torch.Generator | None = None):
        super().__init__()
        for name, v in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        self.p = _check_p(p)
        if self.p == 1.0:
            raise ValueError("p = 1 drops every weight; DropConnectLinear needs p in [0, 1)")
        self.in_features, self.out_features = in_features, out_features
        self.generator = generator
        ref = nn.Linear(in_features, out_features, bias=bias)  # same initialization as nn.Linear
        self.weight = nn.Parameter(ref.weight.detach().clone())
        self.bias = nn.Parameter(ref.bias.detach().clone()) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"expected input with last dimension {self.in_features}, got shape {tuple(x.shape)}")
        weight = self.weight
        if self.training and self.p > 0:
            mask = _keep_mask(weight.shape, 1.0 - self.p, weight, self.generator)
            weight = weight * (mask * (1.0 / (1.0 - self.p)))
        return F.linear(x, weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, p={self.p}, bias={self.bias is not None}"


# --------------------------------------------------------------------------- Monte-Carlo averaging

_STOCHASTIC = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, Dropout, DropConnectLinear)


def stochastic_modules(model: nn.Module) -> list[nn.Module]:
    """The dropout / DropConnect layers of ``model`` (what Monte-Carlo averaging switches on)."""
    return [m for m in model.modules() if isinstance(m, _STOCHASTIC)]


@torch.no_grad()
def mc_predict(model: nn.Module, x: Tensor, n_samples: int, *, batch_size: int = 1024,
               return_samples: bool = False) -> Tensor:
    """Monte-Carlo estimate of E_z[softmax(f(x, z))]: average over ``n_samples`` random masks.

    Only the dropout / DropConnect layers run in training mode; everything else (batch norm
    included) stays in eval mode. Randomness comes from each layer's generator, or torch's
    global one (seed it for repeatable numbers).
    Returns ``(N, C)`` mean class probabilities, or ``(n_samples, N, C)`` per-mask probabilities
    with ``return_samples=True``. Modes are restored afterwards.
    """
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive int, got {n_samples!r}")
    layers = stochastic_modules(model)
    if not layers:
        raise ValueError("mc_predict needs a model with dropout or DropConnect layers; found none")
    modes = {m: m.training for m in model.modules()}
    model.eval()
    for m in layers:
        m.train()
    try:
        device = next(model.parameters()).device
        total, samples = None, []
        for _ in range(n_samples):
            probs = torch.cat([model(x[i: i + batch_size].to(device)).softmax(dim=-1)
                               for i in range(0, len(x), batch_size)])
            if return_samples:
                samples.append(probs)
            total = probs if total is None else total + probs
    finally:
        for m, mode in modes.items():
            m.training = mode
    return torch.stack(samples) if return_samples else total / n_samples
