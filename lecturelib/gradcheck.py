"""Centred finite differences, the check every hand-written backward pass in this book passes.

``numerical_gradient(f, x)`` for a scalar function, ``numerical_gradient_array(f, x, dout)`` for an
array function with an upstream gradient ``dout`` (the gradient of ``sum(f(x) * dout)``), and
``rel_error``. Use float64: with ``h = 1e-5`` the centred difference is accurate to about 1e-10.
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def rel_error(a, b) -> float:
    """max |a - b| / max(1e-8, |a| + |b|), elementwise: 0 for equal arrays, ~1 for unrelated ones."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"rel_error needs equal shapes, got {a.shape} and {b.shape}")
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b))))


def numerical_gradient(f: Callable[[np.ndarray], float], x: np.ndarray, h: float = 1e-5) -> np.ndarray:
    """Gradient of scalar ``f`` at ``x`` by centred differences, (f(x+h) - f(x-h)) / 2h per entry.

    ``x`` is perturbed in place and restored, so ``f`` may close over it (as layer tests do).
    """
    return numerical_gradient_array(lambda v: np.asarray(f(v), dtype=np.float64), x, np.array(1.0), h)


def numerical_gradient_array(
    f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, dout: np.ndarray, h: float = 1e-5
) -> np.ndarray:
    """Gradient of ``sum(f(x) * dout)`` with respect to ``x`` by centred differences.

    Shapes: ``x`` any, ``dout`` the shape of ``f(x)``; returns an array shaped like ``x``.
    """
    if not isinstance(x, np.ndarray) or not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"x must be a floating-point NumPy array, got {type(x).__name__}")
    if x.dtype != np.float64:
        raise TypeError(f"gradient checks need float64 for accuracy, got {x.dtype}")
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"], op_flags=["readwrite"])
    while not it.finished:
        i = it.multi_index
        old = x[i]
        x[i] = old + h
        plus = np.array(f(x), dtype=np.float64, copy=True)
        x[i] = old - h
        minus = np.array(f(x), dtype=np.float64, copy=True)
        x[i] = old
        grad[i] = np.sum((plus - minus) * dout) / (2 * h)
        it.iternext()
    return grad
