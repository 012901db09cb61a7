"""Two-dimensional test problems for optimizers: where each method's path can be drawn.

A ``Problem2D`` holds a function ``f(x)`` of a point ``x`` (a tensor of shape ``(2,)``), its
gradient written out by hand, its minimum, a start point and the window to draw. The problems:

- ``quadratic(kappa)``: ``f = 1/2 x^T H x`` with Hessian eigenvalues ``1`` and ``kappa``
  (condition number ``kappa``), optionally rotated;
- ``saddle()``: a saddle at the origin between two minima at ``(0, +-1)``;
- ``local_minimum()``: a tilted double well, a shallow local minimum beside the global one;
- ``rosenbrock()``: the curved valley ``(a - x)^2 + b (y - x^2)^2``.

``record_path`` runs any ``torch.optim.Optimizer`` on a problem (with optional Gaussian gradient
noise from a ``torch.Generator``) and returns the iterates; ``plot_paths`` draws them over the
contour lines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

Tensor = torch.Tensor


@dataclass(frozen=True)
class Problem2D:
    """A 2-D objective with its hand-written gradient. ``f`` / ``grad`` take points ``(..., 2)``."""

    name: str
    f: Callable[[Tensor], Tensor]
    grad: Callable[[Tensor], Tensor]
    minimum: tuple[float, float]
    start: tuple[float, float]
    xlim: tuple[float, float]
    ylim: tuple[float, float]

    @property
    def f_min(self) -> float:
        return float(self.f(torch.tensor(self.minimum, dtype=torch.float64)))

    def hessian(self, x) -> Tensor:
        """The ``(2, 2)`` Hessian at ``x`` by automatic differentiation (float64)."""
        point = torch.as_tensor(x, dtype=torch.float64)
        return torch.autograd.functional.hessian(self.f, point)


def _point(x: Tensor) -> Tensor:
    if not isinstance(x, Tensor) or x.ndim < 1 or x.shape[-1] != 2:
        raise ValueError(f"expected points: a tensor of shape (..., 2), got {getattr(x, 'shape', type(x))}")
    return x


def quadratic(kappa: float, angle: float = 0.0) -> Problem2D:
    """``f(x) = 1/2 x^T H x`` with ``H = R diag(1, kappa) R^T``, ``R`` a rotation by ``angle`` radians.

    The condition number of ``H`` is ``kappa``; the minimum is the origin.
    """
    if not (isinstance(kappa, (int, float)) and math.isfinite(kappa) and kappa >= 1):
        raise ValueError(f"kappa (condition number) must be a finite number >= 1, got {kappa!r}")
    c, s = math.cos(angle), math.sin(angle)
    rot = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    h = rot @ torch.diag(torch.tensor([1.0, float(kappa)], dtype=torch.float64)) @ rot.T

    def f(x):
        x = _point(x)
        return 0.5 * ((x @ h.to(x.dtype)) * x).sum(-1)

    def grad(x):
        return _point(x) @ h.to(x.dtype)  # H is symmetric

    return Problem2D(f"quadratic, kappa={kappa:g}", f, grad, (0.0, 0.0), (1.0, 1.0), (-1.5, 1.5), (-1.5, 1.5))


def saddle() -> Problem2D:
    """``f(x, y) = x^2/2 + y^4/4 - y^2/2``: a saddle at the origin (Hessian ``diag(1, -1)``) and
    two minima at ``(0, +-1)`` with ``f = -1/4``. Started on the line ``y = 0``, gradient descent
    converges to the saddle."""

    def f(x):
        x = _point(x)
        return 0.5 * x[..., 0] ** 2 + 0.25 * x[..., 1] ** 4 - 0.5 * x[..., 1] ** 2

    def grad(x):
        x = _point(x)
        return torch.stack([x[..., 0], x[..., 1] ** 3 - x[..., 1]], dim=-1)

    return Problem2D("saddle", f, grad, (0.0, 1.0), (1.5, 1e-6), (-1.6, 1.6), (-1.6, 1.6))


def local_minimum(tilt: float = 0.5) -> Problem2D:
    """A tilted double well ``f(x, y) = (x^2 - 1)^2 + tilt * x + y^2``: the global minimum near
    ``x = -1`` and a shallower local minimum near ``x = +1``, separated by a ridge near ``x = 0``."""
    if not (isinstance(tilt, (int, float)) and 0 < tilt < 1.5):
        raise ValueError(f"tilt must be in (0, 1.5) so that two minima exist, got {tilt!r}")
    # stationary points: 4x^3 - 4x + tilt = 0; the global minimum is the most negative root
    roots = _double_well_roots(tilt)

    def f(x):
        x = _point(x)
        return (x[..., 0] ** 2 - 1) ** 2 + tilt * x[..., 0] + x[..., 1] ** 2

    def grad(x):
        x = _point(x)
        return torch.stack([4 * x[..., 0] ** 3 - 4 * x[..., 0] + tilt, 2 * x[..., 1]], dim=-1)

    return Problem2D("local minimum", f, grad, (roots[0], 0.0), (2.0, 1.0), (-2.0, 2.2), (-1.5, 1.5))


def _double_well_roots(tilt: float) -> list[float]:
    """Stationary x of the double well, 4x^3 - 4x + tilt = 0, ascending: global min, ridge, local min."""
    return sorted(float(r.real) for r in np.roots([4.0, 0.0, -4.0, tilt]))


def local_minimum_point(tilt: float = 0.5) -> tuple[float, float]:
    """The local (not global) minimum of ``local_minimum(tilt)``."""
    return (_double_well_roots(tilt)[2], 0.0)


def rosenbrock(a: float = 1.0, b: float = 100.0) -> Problem2D:
    """``f(x, y) = (a - x)^2 + b (y - x^2)^2``, minimum ``(a, a^2)`` at the end of a curved valley."""

    def f(x):
        x = _point(x)
        return (a - x[..., 0]) ** 2 + b * (x[..., 1] - x[..., 0] ** 2) ** 2

    def grad(x):
        x = _point(x)
        r = x[..., 1] - x[..., 0] ** 2
        return torch.stack([-2 * (a - x[..., 0]) - 4 * b * x[..., 0] * r, 2 * b * r], dim=-1)

    return Problem2D("Rosenbrock", f, grad, (a, a * a), (-1.2, 1.0), (-2.0, 2.0), (-1.0, 3.0))


def record_path(
    problem: Problem2D,
    make_optimizer: Callable[[list[Tensor]], torch.optim.Optimizer],
    steps: int,
    *,
    start=None,
    noise: float = 0.0,
    generator: torch.Generator | None = None,
    until: float | None = None,
) -> Tensor:
    """Run ``make_optimizer([x])`` for ``steps`` steps on ``problem`` from ``start``.

    The gradient is the problem's hand-written one, plus ``noise * N(0, I)`` drawn from
    ``generator`` when ``noise > 0`` (a stand-in for minibatch noise). Returns the iterates as a
    float64 tensor of shape ``(steps + 1, 2)``, the start included. A diverging run stops early:
    the path then ends at the last finite point. With ``until``, the run stops as soon as
    ``f(x) - f_min <= until``.
    """
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative int, got {steps!r}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise!r}")
    if noise > 0 and generator is None:
        raise ValueError("noise > 0 needs a torch.Generator (generator=...) so paths are reproducible")
    x = torch.tensor(problem.start if start is None else start, dtype=torch.float64, requires_grad=True)
    _point(x.detach())
    opt = make_optimizer([x])
    path = [x.detach().clone()]
    f_min = problem.f_min if until is not None else None
    for _ in range(steps):
        with torch.no_grad():
            g = problem.grad(x)
            if noise > 0:
                g = g + noise * torch.randn(2, dtype=torch.float64, generator=generator)
        x.grad = g
        opt.step()
        point = x.detach().clone()
        if not torch.isfinite(point).all() or point.abs().max() > 1e8:
            break
        path.append(point)
        if until is not None and float(problem.f(point)) - f_min <= until:
            break
    return torch.stack(path)


def steps_to_reach(path: Tensor, problem: Problem2D, tol: float) -> int | None:
    """First index ``t`` with ``f(path[t]) - f_min <= tol``, or ``None`` if never reached."""
    reached = torch.nonzero(problem.f(path) - problem.f_min <= tol)
    return int(reached[0, 0]) if len(reached) else None


def plot_paths(problem: Problem2D, paths: dict[str, Tensor], ax=None, *, levels: int = 15,
               title: str | None = None, markers: bool = False):
    """Contour lines of ``problem`` with each path drawn over them. Returns the axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 4.5))
    xs = torch.linspace(*problem.xlim, 200, dtype=torch.float64)
    ys = torch.linspace(*problem.ylim, 200, dtype=torch.float64)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")
    pts = torch.stack([gx.flatten(), gy.flatten()], dim=1)
    z = problem.f(pts).view(gx.shape).numpy()
    z = z - z.min()
    ax.contour(gx.numpy(), gy.numpy(), np.log1p(z), levels=levels, cmap="Greys", linewidths=0.6, alpha=0.7)
    for label, path in paths.items():
        p = path.detach().numpy()
        ax.plot(p[:, 0], p[:, 1], "-o" if markers else "-", ms=2, lw=1.4, label=label)
    ax.plot(*problem.start, "ks", ms=5, label="start")
    ax.plot(*problem.minimum, "r*", ms=11, label="minimum")
    ax.set(xlim=problem.xlim, ylim=problem.ylim, xlabel="$x_1$", ylabel="$x_2$",
           title=title or problem.name)
    ax.legend(fontsize="small", loc="best")
    return ax
