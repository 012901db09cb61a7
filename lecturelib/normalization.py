"""Normalization layers: batch, layer, instance and group normalization, twice over.

The lecture's comparison slide says these layers differ only in *which axes are averaged*. Both
halves of this module say it once, in a shared core, and let the layers be thin:

- NumPy forward/backward pairs with hand-written gradients (the CS231n exercise):
  ``normalize_forward`` / ``normalize_backward`` standardize over given axes;
  ``batchnorm_*`` (``(N, D)`` or spatial ``(N, C, H, W)``, train and test mode, running averages),
  ``layernorm_*``, ``groupnorm_*`` and ``instancenorm_*`` (= group norm with one channel per group)
  call them with their own axes.
- PyTorch modules built on ``normalize`` (autograd does the backward pass): ``BatchNorm``,
  ``LayerNorm``, ``InstanceNorm``, ``GroupNorm``, interchangeable with ``torch.nn.BatchNorm1d/2d``,
  ``LayerNorm``, ``InstanceNorm2d(affine=True)`` and ``GroupNorm``.

Running statistics follow PyTorch's convention: ``running = (1 - momentum) * running +
momentum * batch``, with the *unbiased* batch variance, while the batch itself is normalized with
the biased one.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

Tensor = torch.Tensor

# ============================================================================ NumPy, by hand


def normalize_forward(x: np.ndarray, axes: tuple[int, ...], eps: float = 1e-5):
    """Standardize ``x`` over ``axes``: ``xhat = (x - mean) / sqrt(var + eps)``.

    Returns ``(xhat, mean, var, cache)``; ``mean`` and ``var`` (biased) keep the reduced axes as
    size 1, so they broadcast against ``x``.
    """
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    inv_std = 1.0 / np.sqrt(var + eps)
    xhat = (x - mean) * inv_std
    return xhat, mean, var, (xhat, inv_std, axes)


def normalize_backward(dxhat: np.ndarray, cache) -> np.ndarray:
    """Gradient through ``normalize_forward``: given ``dL/dxhat``, return ``dL/dx``.

    With ``m`` the number of averaged entries, the chain rule through mean and variance gives
    ``dx = inv_std * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))``, the means over ``axes``.
    """
    xhat, inv_std, axes = cache
    return inv_std * (dxhat - dxhat.mean(axis=axes, keepdims=True)
                      - xhat * (dxhat * xhat).mean(axis=axes, keepdims=True))


def _channel_shape(x: np.ndarray) -> tuple[int, ...]:
    """Shape that broadcasts a per-channel vector against ``x`` of shape ``(N, C, ...)``."""
    return (1, x.shape[1]) + (1,) * (x.ndim - 2)


def _check_affine(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, name: str, shape) -> None:
    if gamma.shape != tuple(shape) or beta.shape != tuple(shape):
        raise ValueError(f"{name}: gamma and beta must have shape {tuple(shape)} for input "
                         f"{x.shape}, got {gamma.shape} and {beta.shape}")


def _check_channels_input(x: np.ndarray, name: str, ndims: Sequence[int]) -> None:
    if not isinstance(x, np.ndarray) or x.ndim not in ndims:
        got = x.shape if isinstance(x, np.ndarray) else type(x).__name__
        raise ValueError(f"{name} expects an array with {' or '.join(map(str, ndims))} dimensions "
                         f"((N, D) or (N, C, H, W)), got {got}")


def batchnorm_forward(
    x: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    running_mean: np.ndarray,
    running_var: np.ndarray,
    *,
    mode: str = "train",
    momentum: float = 0.1,
    eps: float = 1e-5,
):
    """Batch normalization of ``x: (N, D)``, or spatial batch norm of ``x: (N, C, H, W)``.

    Statistics per feature / channel, over the batch (and the spatial positions). ``gamma``,
    ``beta``, ``running_mean``, ``running_var``: ``(D,)`` or ``(C,)``.

    ``mode="train"`` normalizes with the batch statistics and returns updated running averages;
    ``mode="test"`` normalizes with the running averages and returns them unchanged.

    Returns ``(out, running_mean, running_var, cache)``; the inputs are not modified.
    """
    _check_channels_input(x, "batchnorm_forward", (2, 4))
    c = x.shape[1]
    _check_affine(x, gamma, beta, "batchnorm_forward", (c,))
    if running_mean.shape != (c,) or running_var.shape != (c,):
        raise ValueError(f"running_mean and running_var must have shape ({c},), "
                         f"got {running_mean.shape} and {running_var.shape}")
    if mode not in ("train", "test"):
        raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
    shape = _channel_shape(x)
    if mode == "train":
        axes = (0,) + tuple(range(2, x.ndim))
        m = x.size // c
        if m < 2:
            raise ValueError(f"batch norm in train mode needs more than 1 value per channel, got input {x.shape}")
        xhat, mean, var, core = normalize_forward(x, axes, eps)
        running_mean = (1 - momentum) * running_mean + momentum * mean.reshape(c)
        running_var = (1 - momentum) * running_var + momentum * var.reshape(c) * m / (m - 1)
    else:
        inv_std = 1.0 / np.sqrt(running_var.reshape(shape) + eps)
        xhat = (x - running_mean.reshape(shape)) * inv_std
        core = inv_std
    out = gamma.reshape(shape) * xhat + beta.reshape(shape)
    return out, running_mean, running_var, (mode, xhat, gamma, core)


def _affine_backward(dout: np.ndarray, xhat: np.ndarray, param_axes: tuple[int, ...], shape):
    dgamma = (dout * xhat).sum(axis=param_axes).reshape(shape)
    dbeta = dout.sum(axis=param_axes).reshape(shape)
    return dgamma, dbeta


def batchnorm_backward(dout: np.ndarray, cache):
    """Backward pass of ``batchnorm_forward`` (either mode): returns ``(dx, dgamma, dbeta)``."""
    mode, xhat, gamma, core = cache
    shape = _channel_shape(xhat)
    axes = (0,) + tuple(range(2, xhat.ndim))
    dgamma, dbeta = _affine_backward(dout, xhat, axes, gamma.shape)
    dxhat = dout * gamma.reshape(shape)
    if mode == "test":  # running statistics are constants: the layer is affine in x
        return dxhat * core, dgamma, dbeta
    return normalize_backward(dxhat, core), dgamma, dbeta


def layernorm_forward(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, *, eps: float = 1e-5):
    """Layer normalization of ``x: (N, D)`` (or ``(N, *feature_shape)``): statistics per example
    over all its features; ``gamma``, ``beta``: ``x.shape[1:]``. Same in train and test mode.

    Returns ``(out, cache)``.
    """
    if not isinstance(x, np.ndarray) or x.ndim < 2:
        raise ValueError(f"layernorm_forward expects (N, D) or (N, ...), got "
                         f"{x.shape if isinstance(x, np.ndarray) else type(x).__name__}")
    _check_affine(x, gamma, beta, "layernorm_forward", x.shape[1:])
    xhat, _, _, core = normalize_forward(x, tuple(range(1, x.ndim)), eps)
    return gamma * xhat + beta, (xhat, gamma, core)


def layernorm_backward(dout: np.ndarray, cache):
    """Backward pass of ``layernorm_forward``: returns ``(dx, dgamma, dbeta)``."""
    xhat, gamma, core = cache
    dgamma, dbeta = (dout * xhat).sum(axis=0), dout.sum(axis=0)
    return normalize_backward(dout * gamma, core), dgamma, dbeta


def groupnorm_forward(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, num_groups: int, *,
                      eps: float = 1e-5):
    """Group normalization of ``x: (N, C, H, W)``: the channels are split into ``num_groups``
    groups of ``C // num_groups``; statistics per example and group, over its channels and all
    positions. ``gamma``, ``beta``: ``(C,)``. ``num_groups=1`` is layer norm over (C, H, W);
    ``num_groups=C`` is instance norm.

    Returns ``(out, cache)``.
    """
    _check_channels_input(x, "groupnorm_forward", (4,))
    n, c, h, w = x.shape
    _check_group_count(num_groups, c)
    _check_affine(x, gamma, beta, "groupnorm_forward", (c,))
    grouped = x.reshape(n, num_groups, c // num_groups, h, w)
    xhat, _, _, core = normalize_forward(grouped, (2, 3, 4), eps)
    xhat = xhat.reshape(x.shape)
    shape = _channel_shape(x)
    return gamma.reshape(shape) * xhat + beta.reshape(shape), (xhat, gamma, core)


def groupnorm_backward(dout: np.ndarray, cache):
    """Backward pass of ``groupnorm_forward``: returns ``(dx, dgamma, dbeta)``."""
    xhat, gamma, core = cache
    n, c, h, w = xhat.shape
    dgamma, dbeta = _affine_backward(dout, xhat, (0, 2, 3), (c,))
    dxhat = dout * gamma.reshape(1, c, 1, 1)
    grouped_shape = core[0].shape  # (N, G, C // G, H, W)
    dx = normalize_backward(dxhat.reshape(grouped_shape), core)
    return dx.reshape(n, c, h, w), dgamma, dbeta


def instancenorm_forward(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, *, eps: float = 1e-5):
    """Instance normalization of ``x: (N, C, H, W)``: statistics per example and channel over the
    positions. It is group norm with one channel per group. Returns ``(out, cache)``."""
    _check_channels_input(x, "instancenorm_forward", (4,))
    return groupnorm_forward(x, gamma, beta, x.shape[1], eps=eps)


def instancenorm_backward(dout: np.ndarray, cache):
    """Backward pass of ``instancenorm_forward``: returns ``(dx, dgamma, dbeta)``."""
    return groupnorm_backward(dout, cache)


def _check_group_count(num_groups: int, num_channels: int) -> None:
    if not isinstance(num_groups, int) or num_groups < 1:
        raise ValueError(f"num_groups must be a positive int, got {num_groups!r}")
    if num_channels % num_groups:
        raise ValueError(f"the number of channels ({num_channels}) must be divisible by "
                         f"num_groups ({num_groups})")


# ============================================================================ PyTorch modules


def normalize(x: Tensor, dims: Sequence[int], eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """The one core every layer below shares: standardize ``x`` over ``dims``.

    Returns ``(xhat, mean, var)`` with ``mean``/``var`` (biased) keeping ``dims`` as size 1.
    """
    var, mean = torch.var_mean(x, dim=tuple(dims), unbiased=False, keepdim=True)
    return (x - mean) * torch.rsqrt(var + eps), mean, var


class _ChannelAffine(nn.Module):
    """Per-channel ``weight`` (gamma, ones) and ``bias`` (beta, zeros) for ``(N, C, ...)`` input."""

    def __init__(self, num_channels: int, eps: float):
        super().__init__()
        if not isinstance(num_channels, int) or num_channels < 1:
            raise ValueError(f"the number of channels must be a positive int, got {num_channels!r}")
        if not eps > 0:
            raise ValueError(f"eps must be positive, got {eps!r}")
        self.num_channels = num_channels
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def _check_input(self, x: Tensor, min_dim: int, what: str) -> None:
        if x.dim() < min_dim or x.shape[1] != self.num_channels:
            raise ValueError(f"{type(self).__name__}({self.num_channels}) expects input {what} with "
                             f"C={self.num_channels}, got shape {tuple(x.shape)}")

    def _affine(self, xhat: Tensor) -> Tensor:
        shape = (1, -1) + (1,) * (xhat.dim() - 2)
        return xhat * self.weight.view(shape) + self.bias.view(shape)


class BatchNorm(_ChannelAffine):
    """Batch normalization (Ioffe & Szegedy 2015) of ``(N, C)``, ``(N, C, L)`` or ``(N, C, H, W)``.

    Train mode: statistics of the batch per channel, over N (and the positions), and an update
    of the buffers ``running_mean`` / ``running_var``. Eval mode: the running averages.
    ``momentum=None`` gives the cumulative average, as in PyTorch.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1):
        super().__init__(num_features, eps)
        if momentum is not None and not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1] or None, got {momentum!r}")
        self.momentum = momentum
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() not in (2, 3, 4):
            raise ValueError(f"BatchNorm expects (N, C), (N, C, L) or (N, C, H, W) input, got shape {tuple(x.shape)}")
        self._check_input(x, 2, "(N, C, ...)")
        dims = (0,) + tuple(range(2, x.dim()))
        if not self.training:
            shape = (1, -1) + (1,) * (x.dim() - 2)
            xhat = (x - self.running_mean.view(shape)) * torch.rsqrt(self.running_var.view(shape) + self.eps)
            return self._affine(xhat)
        m = x.numel() // self.num_channels
        if m < 2:
            raise ValueError(f"BatchNorm in train mode needs more than 1 value per channel, got input "
                             f"shape {tuple(x.shape)}; use eval mode for single examples")
        xhat, mean, var = normalize(x, dims, self.eps)
        with torch.no_grad():
            self.num_batches_tracked += 1
            rate = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            self.running_mean.lerp_(mean.flatten().to(self.running_mean.dtype), rate)
            self.running_var.lerp_((var.flatten() * (m / (m - 1))).to(self.running_var.dtype), rate)
        return self._affine(xhat)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}, momentum={self.momentum}"


class InstanceNorm(_ChannelAffine):
    """Instance normalization (Ulyanov et al. 2016) of ``(N, C, *positions)``: statistics per
    example and channel over the positions; the same in train and eval mode.
    Equals ``torch.nn.InstanceNorm2d(C, affine=True)`` on ``(N, C, H, W)``."""

    def __init__(self, num_channels: int, eps: float = 1e-5):
        super().__init__(num_channels, eps)

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x, 3, "(N, C, *positions)")
        return self._affine(normalize(x, range(2, x.dim()), self.eps)[0])

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}"


class GroupNorm(_ChannelAffine):
    """Group normalization (Wu & He 2018) of ``(N, C, *positions)``: channels split into
    ``num_groups`` groups; statistics per example and group. ``num_groups=1`` normalizes each
    example over (C, H, W) (a layer norm); ``num_groups=C`` is instance norm."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5):
        super().__init__(num_channels, eps)
        _check_group_count(num_groups, num_channels)
        self.num_groups = num_groups

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x, 2, "(N, C, *positions)")
        n = x.shape[0]
        grouped = x.reshape(n, self.num_groups, -1)  # (N, G, C/G * positions)
        xhat = normalize(grouped, (2,), self.eps)[0].reshape(x.shape)
        return self._affine(xhat)

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}"


class LayerNorm(nn.Module):
    """Layer normalization (Ba, Kiros & Hinton 2016): statistics per example over the trailing
    dimensions ``normalized_shape``; ``weight``/``bias`` of that shape; the same in train and eval.
    Equals ``torch.nn.LayerNorm(normalized_shape)``."""

    def __init__(self, normalized_shape: int | Sequence[int], eps: float = 1e-5):
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        if not shape or not all(isinstance(s, int) and s > 0 for s in shape):
            raise ValueError(f"normalized_shape must be a positive int or a tuple of them, got {normalized_shape!r}")
        if not eps > 0:
            raise ValueError(f"eps must be positive, got {eps!r}")
        self.normalized_shape = shape
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(shape))
        self.bias = nn.Parameter(torch.zeros(shape))

    def forward(self, x: Tensor) -> Tensor:
        k = len(self.normalized_shape)
        if x.dim() < k or tuple(x.shape[-k:]) != self.normalized_shape:
            raise ValueError(f"LayerNorm{self.normalized_shape} expects input whose last {k} "
                             f"dimension(s) are {self.normalized_shape}, got shape {tuple(x.shape)}")
        xhat = normalize(x, range(x.dim() - k, x.dim()), self.eps)[0]
        return xhat * self.weight + self.bias

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}"


class PerWorkerBatchNorm(BatchNorm):
    """Batch norm as data-parallel training computes it without synchronization: the batch is
    split into chunks of ``images_per_worker`` (one per "GPU") and each chunk is normalized with
    its own statistics. This is the "batch size" of Wu & He's figure (images per worker, the
    optimizer still averaging gradients over the whole batch). Running averages are updated with
    the mean of the workers' statistics. Eval mode is plain ``BatchNorm``.

    Input ``(N, C, ...)`` with ``N`` a multiple of ``images_per_worker``.
    """

    def __init__(self, num_features: int, images_per_worker: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__(num_features, eps, momentum)
        if not isinstance(images_per_worker, int) or images_per_worker < 1:
            raise ValueError(f"images_per_worker must be a positive int, got {images_per_worker!r}")
        if momentum is None:
            raise ValueError("PerWorkerBatchNorm needs a float momentum")
        self.images_per_worker = images_per_worker

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return super().forward(x)
        self._check_input(x, 2, "(N, C, ...)")
        n, b = x.shape[0], self.images_per_worker
        if n % b:
            raise ValueError(f"batch of {n} does not split into workers of {b} images")
        m = x.numel() // self.num_channels // (n // b)
        if m < 2:
            raise ValueError(f"each worker needs more than 1 value per channel, got {b} images of shape {tuple(x.shape[1:])}")
        workers = x.reshape(n // b, b, *x.shape[1:])          # (workers, b, C, ...)
        xhat, mean, var = normalize(workers, (1,) + tuple(range(3, workers.dim())), self.eps)
        with torch.no_grad():
            self.num_batches_tracked += 1
            self.running_mean.lerp_(mean.mean(0).flatten(), self.momentum)
            self.running_var.lerp_((var * (m / (m - 1))).mean(0).flatten(), self.momentum)
        return self._affine(xhat.reshape(x.shape))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", images_per_worker={self.images_per_worker}"


# ============================================================================ helpers for the chapter


def deep_mlp(depth: int, width: int, *, batchnorm: bool, activation: type[nn.Module] = nn.Sigmoid,
             in_features: int = 784, num_classes: int = 10) -> nn.Sequential:
    """``Flatten -> depth x [Linear -> (BatchNorm) -> activation] -> Linear``, PyTorch's default
    initialization. Without BN the linear layers keep their bias; with BN the bias is BN's beta."""
    if depth < 1 or width < 1:
        raise ValueError(f"depth and width must be >= 1, got {depth}, {width}")
    layers: list[nn.Module] = [nn.Flatten()]
    d = in_features
    for _ in range(depth):
        layers.append(nn.Linear(d, width, bias=not batchnorm))
        if batchnorm:
            layers.append(BatchNorm(width))
        layers.append(activation())
        d = width
    layers.append(nn.Linear(d, num_classes))
    return nn.Sequential(*layers)


def small_cnn(norm: str, *, width: int = 8, images_per_worker: int | None = None,
              groups: int = 4, in_channels: int = 1, num_classes: int = 10) -> nn.Sequential:
    """Three 3x3 conv layers (``width``, ``2 width``, ``2 width`` channels), each followed by a
    normalization (``make_norm(norm, ...)``) and ReLU; a 2x2 max pool after the first, global
    average pooling and a linear classifier. ``images_per_worker`` turns batch norm into
    ``PerWorkerBatchNorm``."""
    def norm_layer(c: int) -> nn.Module:
        if norm == "batch" and images_per_worker is not None:
            return PerWorkerBatchNorm(c, images_per_worker)
        return make_norm(norm, c, groups=groups)

    w = width
    return nn.Sequential(
        nn.Conv2d(in_channels, w, 3, padding=1, bias=False), norm_layer(w), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(w, 2 * w, 3, padding=1, bias=False), norm_layer(2 * w), nn.ReLU(),
        nn.Conv2d(2 * w, 2 * w, 3, padding=1, bias=False), norm_layer(2 * w), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * w, num_classes),
    )


class PreactivationRecorder:
    """``fit`` callback: every ``every`` steps, test accuracy and the 15th/50th/85th percentiles of
    one unit's input to the last hidden activation (``unit``), measured on ``(x, y)`` in eval mode
    (Ioffe & Szegedy's Figure 1). Results in ``steps``, ``accuracy``, ``percentiles``."""

    def __init__(self, x: Tensor, y: Tensor, *, every: int, unit: int = 0, qs=(15, 50, 85)):
        self.x, self.y, self.every, self.unit, self.qs = x, y, every, unit, tuple(qs)
        self.steps: list[int] = []
        self.accuracy: list[float] = []
        self.percentiles: list[list[float]] = []

    def _record(self, state) -> None:
        from .training import evaluate

        model = state.model
        activations = [m for m in model.modules() if isinstance(m, (nn.Sigmoid, nn.ReLU, nn.Tanh))]
        if not activations:
            raise ValueError("PreactivationRecorder needs a model with a Sigmoid/ReLU/Tanh activation")
        seen: list[Tensor] = []
        handle = activations[-1].register_forward_hook(lambda mod, inp, out: seen.append(inp[0][:, self.unit]))
        try:
            _, acc = evaluate(model, self.x, self.y, batch_size=len(self.x))
        finally:
            handle.remove()
        self.steps.append(state.step)
        self.accuracy.append(acc)
        self.percentiles.append(percentiles(torch.cat(seen), self.qs))

    def on_train_begin(self, state) -> None:
        self._record(state)

    def on_step_end(self, state) -> None:
        if state.step % self.every == 0:
            self._record(state)


@torch.no_grad()
def population_statistics(model: nn.Module, x: Tensor, *, batch_size: int = 1024) -> list[tuple[Tensor, Tensor]]:
    """Mean and (unbiased) variance of every ``BatchNorm`` layer's input over all of ``x``, with
    the model's current weights (eval mode): what the running averages estimate."""
    layers = [m for m in model.modules() if isinstance(m, BatchNorm)]
    sums = [None] * len(layers)

    def hook(i):
        def record(mod, inp, out):
            v = inp[0].transpose(0, 1).reshape(mod.num_channels, -1).double()
            s = torch.stack([v.sum(1), (v * v).sum(1), torch.full((mod.num_channels,), v.shape[1], dtype=torch.float64)])
            sums[i] = s if sums[i] is None else sums[i] + s
        return record

    handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(layers)]
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(x), batch_size):
            model(x[i: i + batch_size])
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    stats = []
    for s in sums:
        total, total_sq, count = s
        mean = total / count
        var = (total_sq - count * mean ** 2) / (count - 1)
        stats.append((mean.float(), var.float()))
    return stats


def make_norm(kind: str, num_channels: int, *, groups: int = 4) -> nn.Module:
    """A normalization layer for ``(N, C, H, W)`` feature maps by name:
    ``"batch"``, ``"group"`` (``groups`` groups), ``"layer"`` (group norm with one group: all of
    (C, H, W), as Wu & He use it), ``"instance"`` or ``"none"`` (identity)."""
    if kind == "batch":
        return BatchNorm(num_channels)
    if kind == "group":
        return GroupNorm(min(groups, num_channels), num_channels)
    if kind == "layer":
        return GroupNorm(1, num_channels)
    if kind == "instance":
        return InstanceNorm(num_channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"kind must be one of 'batch', 'group', 'layer', 'instance', 'none'; got {kind!r}")


def shared_statistics_mask(layer: nn.Module, shape: tuple[int, ...], index: tuple[int, ...], *,
                           seed: int = 0) -> np.ndarray:
    """Which input entries share normalization statistics with entry ``index``: a boolean array
    of ``shape``, found by autograd through ``layer`` in train mode (the entries whose value
    changes output ``index``). This is what the axes figure shades, measured, not drawn by hand.
    """
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen, dtype=torch.float64, requires_grad=True)
    layer = layer.double().train()
    out = layer(x)
    (grad,) = torch.autograd.grad(out[index], x)
    return (grad.abs() > 1e-12).numpy()


def plot_normalization_axes(masks: dict[str, np.ndarray], *, axes=None):
    """Draw the lecture's comparison figure: one ``N x C x (H*W)`` block per layer, with the set
    of entries normalized together (``masks`` from ``shared_statistics_mask``) shaded."""
    import matplotlib.pyplot as plt

    if axes is None:
        fig = plt.figure(figsize=(3.6 * len(masks), 3.6))
        axes = [fig.add_subplot(1, len(masks), i + 1, projection="3d") for i in range(len(masks))]
    for ax, (title, mask) in zip(axes, masks.items()):
        n, c = mask.shape[:2]
        block = mask.reshape(n, c, -1)  # (N, C, H*W): the positions flattened, as in Wu & He
        filled = np.ones(block.shape, dtype=bool)
        colors = np.where(block[..., None], np.array([0.12, 0.47, 0.71, 0.9]),
                          np.array([0.85, 0.85, 0.85, 0.25]))
        ax.voxels(filled, facecolors=colors, edgecolor=(0.3, 0.3, 0.3, 0.3), linewidth=0.3)
        ax.set(xlabel="N", ylabel="C", title=title, xticks=[], yticks=[], zticks=[])
        ax.set_zlabel("H·W", labelpad=-8)
        ax.view_init(elev=20, azim=-60)
    return axes


def percentiles(values: Tensor, qs: Sequence[float] = (15, 50, 85)) -> list[float]:
    """Percentiles (in %) of a 1-D tensor, as floats."""
    q = torch.tensor([v / 100 for v in qs], dtype=torch.float64)
    return torch.quantile(values.detach().double().flatten().cpu(), q).tolist()


__all__ = [
    "normalize_forward", "normalize_backward",
    "batchnorm_forward", "batchnorm_backward", "layernorm_forward", "layernorm_backward",
    "groupnorm_forward", "groupnorm_backward", "instancenorm_forward", "instancenorm_backward",
    "normalize", "BatchNorm", "LayerNorm", "InstanceNorm", "GroupNorm", "PerWorkerBatchNorm",
    "make_norm", "deep_mlp", "small_cnn", "PreactivationRecorder", "population_statistics", "shared_statistics_mask", "plot_normalization_axes", "percentiles",
]
