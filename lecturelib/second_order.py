"""Second-order optimization from scratch: Newton, BFGS and L-BFGS with a Wolfe line search,
plus Hessian tools for PyTorch models.

The optimizers work on 1-D float64 NumPy arrays. The objective is ``fun(x) -> (value, gradient)``
(value a float, gradient shaped like ``x``), the convention of ``scipy.optimize.minimize(jac=True)``.
Each optimizer returns an :class:`OptimizeResult` whose ``status`` says why it stopped:

=======================  =====================================================================
``"converged"``          ``max |gradient| <= gtol``
``"maxiter"``            the iteration budget ran out
``"nonfinite"``          the objective or its gradient was NaN / inf at an accepted point
``"not_descent"``        the search direction was not a descent direction (``g @ d >= 0``)
``"line_search_failed"`` no step along the direction met the Wolfe conditions
=======================  =====================================================================

References: Nocedal & Wright, *Numerical Optimization* (2nd ed., 2006), Algorithms 3.5-3.6
(line search), 6.1 (BFGS), 7.4-7.5 (L-BFGS); Liu & Nocedal 1989 (L-BFGS); Pearlmutter 1994
(Hessian-vector products).
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

Objective = Callable[[np.ndarray], tuple[float, np.ndarray]]
HessianFn = Callable[[np.ndarray], np.ndarray]

STATUSES = ("converged", "maxiter", "nonfinite", "not_descent", "line_search_failed")


@dataclass
class OptimizeResult:
    """What an optimizer returns.

    Attributes:
        x: the last accepted iterate, shape ``(n,)``.
        fun: objective value at ``x``.
        grad: gradient at ``x``.
        nit: iterations taken (accepted steps).
        nfev: objective evaluations (each returns value and gradient).
        status: one of ``STATUSES``; ``success`` is ``status == "converged"``.
        message: the reason in words.
        trace: objective value at the start and after every iteration (length ``nit + 1``).
        times: seconds since the start at each ``trace`` entry.
    """

    x: np.ndarray
    fun: float
    grad: np.ndarray
    nit: int
    nfev: int
    status: str
    message: str
    trace: list[float] = field(default_factory=list)
    times: list[float] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return self.status == "converged"


class _Counted:
    """Wrap ``fun`` to count evaluations and check what it returns."""

    def __init__(self, fun: Objective, n: int):
        self.fun, self.n, self.nfev = fun, n, 0

    def __call__(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        self.nfev += 1
        out = self.fun(x)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise TypeError("fun(x) must return a (value, gradient) tuple")
        value, grad = float(out[0]), np.asarray(out[1], dtype=np.float64)
        if grad.shape != (self.n,):
            raise ValueError(f"fun(x) returned a gradient of shape {grad.shape}, expected ({self.n},)")
        return value, grad


def _check_x0(x0) -> np.ndarray:
    x = np.asarray(x0)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"x0 must be a non-empty 1-D array, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number):
        raise TypeError(f"x0 must be numeric, got dtype {x.dtype}")
    x = x.astype(np.float64, copy=True)
    if not np.all(np.isfinite(x)):
        raise ValueError("x0 must be finite")
    return x


def _check_options(maxiter: int, gtol: float) -> None:
    if not isinstance(maxiter, (int, np.integer)) or maxiter < 0:
        raise ValueError(f"maxiter must be a non-negative int, got {maxiter!r}")
    if not gtol > 0:
        raise ValueError(f"gtol must be positive, got {gtol!r}")


def _finite(value: float, grad: np.ndarray) -> bool:
    return math.isfinite(value) and bool(np.all(np.isfinite(grad)))


# --------------------------------------------------------------------------- line search

@dataclass
class LineSearchResult:
    """``alpha`` (None when the search failed), the value and gradient there, and evaluations used."""

    alpha: float | None
    fun: float
    grad: np.ndarray | None
    nfev: int


def _cubic_min(a, fa, ga, b, fb, gb) -> float | None:
    """Minimizer of the cubic interpolating f and f' at a and b (Nocedal & Wright eq. 3.59)."""
    d1 = ga + gb - 3 * (fa - fb) / (a - b)
    disc = d1 * d1 - ga * gb
    if disc < 0:
        return None
    d2 = math.copysign(math.sqrt(disc), b - a)
    denom = gb - ga + 2 * d2
    if denom == 0:
        return None
    return b - (b - a) * (gb + d2 - d1) / denom


def wolfe_line_search(
    fun: Objective,
    x: np.ndarray,
    d: np.ndarray,
    f0: float,
    g0: np.ndarray,
    *,
    alpha0: float = 1.0,
    c1: float = 1e-4,
    c2: float = 0.9,
    max_evals: int = 30,
    alpha_max: float = 1e10,
) -> LineSearchResult:
    """Find a step ``alpha`` along descent direction ``d`` meeting the strong Wolfe conditions

    $f(x + a d) <= f(x) + c_1 a g_0^T d$ (sufficient decrease) and
    $|g(x + a d)^T d| <= c_2 |g_0^T d|$ (curvature), with $0 < c_1 < c_2 < 1$.

    Bracketing then zoom with cubic interpolation (Nocedal & Wright, Algorithms 3.5 and 3.6).
    A trial point with a non-finite value counts as "too far": the step is shrunk.
    """
    if not 0 < c1 < c2 < 1:
        raise ValueError(f"need 0 < c1 < c2 < 1, got c1={c1}, c2={c2}")
    dg0 = float(g0 @ d)
    if not dg0 < 0:
        raise ValueError(f"d must be a descent direction (g @ d < 0), got g @ d = {dg0}")
    nfev = 0

    def phi(a: float) -> tuple[float, float, np.ndarray]:
        nonlocal nfev
        nfev += 1
        f, g = fun(x + a * d)
        if not _finite(f, g):
            return math.inf, math.nan, g
        return f, float(g @ d), g

    def zoom(lo, f_lo, dg_lo, hi, f_hi, dg_hi) -> LineSearchResult:
        while nfev < max_evals:
            a = None
            if math.isfinite(f_hi) and math.isfinite(dg_hi):
                a = _cubic_min(lo, f_lo, dg_lo, hi, f_hi, dg_hi)
            left, right = min(lo, hi), max(lo, hi)
            margin = 0.1 * (right - left)
            if a is None or not (left + margin <= a <= right - margin):
                a = 0.5 * (lo + hi)  # bisection keeps the interval shrinking
            f, dg, g = phi(a)
            if f > f0 + c1 * a * dg0 or f >= f_lo:
                hi, f_hi, dg_hi = a, f, dg
            else:
                if abs(dg) <= -c2 * dg0:
                    return LineSearchResult(a, f, g, nfev)
                if dg * (hi - lo) >= 0:
                    hi, f_hi, dg_hi = lo, f_lo, dg_lo
                lo, f_lo, dg_lo = a, f, dg
            if abs(hi - lo) < 1e-16 * max(1.0, abs(lo)):
                break
        return LineSearchResult(None, f0, None, nfev)

    a_prev, f_prev, dg_prev = 0.0, f0, dg0
    a = float(alpha0)
    first = True
    while nfev < max_evals:
        f, dg, g = phi(a)
        if not math.isfinite(f):  # overflow: step back towards the last good point
            a = a_prev + 0.1 * (a - a_prev)
            continue
        if f > f0 + c1 * a * dg0 or (not first and f >= f_prev):
            return zoom(a_prev, f_prev, dg_prev, a, f, dg)
        if abs(dg) <= -c2 * dg0:
            return LineSearchResult(a, f, g, nfev)
        if dg >= 0:
            return zoom(a, f, dg, a_prev, f_prev, dg_prev)
        a_prev, f_prev, dg_prev = a, f, dg
        a = min(2.0 * a, alpha_max)
        first = False
    return LineSearchResult(None, f0, None, nfev)


# --------------------------------------------------------------------------- the optimizers

def _minimize(fun: Objective, x0, direction, update, *, maxiter: int, gtol: float,
              first_step: Callable[[int, np.ndarray, np.ndarray], float] | None = None,
              c2: float = 0.9) -> OptimizeResult:
    """Shared loop: direction -> Wolfe line search -> accept -> update the curvature model."""
    x = _check_x0(x0)
    _check_options(maxiter, gtol)
    counted = _Counted(fun, x.size)
    start = time.perf_counter()
    f, g = counted(x)
    trace, times = [f], [0.0]

    def result(status: str, message: str, nit: int) -> OptimizeResult:
        return OptimizeResult(x=x, fun=f, grad=g, nit=nit, nfev=counted.nfev, status=status,
                              message=message, trace=trace, times=times)

    if not _finite(f, g):
        return result("nonfinite", "the objective or its gradient is not finite at x0", 0)
    for k in range(maxiter + 1):
        gnorm = float(np.max(np.abs(g)))
        if gnorm <= gtol:
            return result("converged", f"max |gradient| = {gnorm:.2e} <= gtol = {gtol:g}", k)
        if k == maxiter:
            break
        d = direction(x, g)
        if d is None or not np.all(np.isfinite(d)):
            return result("nonfinite", "the search direction is not finite", k)
        dg = float(g @ d)
        if not dg < 0:
            return result("not_descent", f"not a descent direction: g @ d = {dg:.3e} >= 0", k)
        alpha0 = first_step(k, g, d) if first_step is not None else 1.0
        ls = wolfe_line_search(counted, x, d, f, g, alpha0=alpha0, c2=c2)
        if ls.alpha is None:
            return result("line_search_failed", "no step met the Wolfe conditions "
                          f"(g @ d = {dg:.3e}, f = {f:.6g})", k)
        s = ls.alpha * d
        y = ls.grad - g
        x, f, g = x + s, ls.fun, ls.grad
        trace.append(f)
        times.append(time.perf_counter() - start)
        update(s, y)
    return result("maxiter", f"stopped after maxiter = {maxiter} iterations", maxiter)


def gradient_descent(fun: Objective, x0, *, lr: float, maxiter: int = 1000,
                     gtol: float = 1e-5) -> OptimizeResult:
    """Plain gradient descent $x_{k+1} = x_k - \\eta \\nabla f(x_k)$ with a fixed learning rate,
    for contrast with the second-order methods (no line search: ``nfev = nit + 1``)."""
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    x = _check_x0(x0)
    _check_options(maxiter, gtol)
    counted = _Counted(fun, x.size)
    start = time.perf_counter()
    f, g = counted(x)
    trace, times = [f], [0.0]
    status, message, nit = "maxiter", f"stopped after maxiter = {maxiter} iterations", maxiter
    for k in range(maxiter + 1):
        if not _finite(f, g):
            status, message, nit = "nonfinite", f"the objective became non-finite at iteration {k}", k
            break
        if float(np.max(np.abs(g))) <= gtol:
            status, message, nit = "converged", "max |gradient| <= gtol", k
            break
        if k == maxiter:
            break
        x = x - lr * g
        f, g = counted(x)
        trace.append(f)
        times.append(time.perf_counter() - start)
    return OptimizeResult(x=x, fun=f, grad=g, nit=nit, nfev=counted.nfev, status=status,
                          message=message, trace=trace, times=times)


def newton(fun: Objective, x0, *, hess: HessianFn, maxiter: int = 100, gtol: float = 1e-5,
           regularize: bool = True) -> OptimizeResult:
    """Newton's method: solve $H_k d = -g_k$, then a Wolfe line search that tries $\\alpha = 1$ first.

    On a strictly convex quadratic the unit step lands on the minimizer: one iteration, whatever
    the scaling, and no learning rate. Where $H_k$ is not positive definite, ``regularize=True``
    adds $\\tau I$ with $\\tau$ growing until a Cholesky factorization succeeds (Nocedal & Wright,
    Algorithm 3.3), so ``d`` is a descent direction; with ``regularize=False`` the raw Newton
    direction is used and a non-descent direction ends the run with ``status="not_descent"``.

    Args:
        hess: ``hess(x) -> (n, n)`` Hessian.
    """
    n = np.asarray(x0).size

    def direction(x: np.ndarray, g: np.ndarray) -> np.ndarray | None:
        H = np.asarray(hess(x), dtype=np.float64)
        if H.shape != (n, n):
            raise ValueError(f"hess(x) returned shape {H.shape}, expected ({n}, {n})")
        if not np.all(np.isfinite(H)):
            return None
        if not regularize:
            try:
                return -np.linalg.solve(H, g)
            except np.linalg.LinAlgError:
                return None
        diag_min = float(np.min(np.diag(H)))
        tau = 0.0 if diag_min > 0 else -diag_min + 1e-3
        for _ in range(60):
            try:
                L = np.linalg.cholesky(H + tau * np.eye(n))
                return -np.linalg.solve(L.T, np.linalg.solve(L, g))
            except np.linalg.LinAlgError:
                tau = max(2 * tau, 1e-3 * max(1.0, float(np.abs(H).max())))
        return None

    return _minimize(fun, x0, direction, lambda s, y: None, maxiter=maxiter, gtol=gtol)


def bfgs(fun: Objective, x0, *, maxiter: int = 1000, gtol: float = 1e-5, rescale: bool = False) -> OptimizeResult:
    """BFGS: keep a dense inverse-Hessian estimate $B_k$ and update it after every step with
    $s = x_{k+1} - x_k$, $y = g_{k+1} - g_k$, $\\rho = 1 / y^T s$:

    $$B_{k+1} = (I - \\rho s y^T) B_k (I - \\rho y s^T) + \\rho s s^T.$$

    $B_0 = I$ (as in scipy); ``rescale=True`` replaces it by $(y^T s / y^T y) I$ before the first
    update (Nocedal & Wright eq. 6.20), which on ill-conditioned problems can shrink every later
    step to the scale of the largest curvature (3x more iterations on the chapter's logistic regression).
    The Wolfe conditions guarantee $y^T s > 0$, so $B$ stays positive definite; pairs with
    $y^T s \\le 0$ (rounding) are skipped. $O(n^2)$ memory and time per step.
    """
    n = np.asarray(x0).size
    B = np.eye(n)
    first = [True]

    def direction(x: np.ndarray, g: np.ndarray) -> np.ndarray:
        return -B @ g

    def update(s: np.ndarray, y: np.ndarray) -> None:
        nonlocal B
        ys = float(y @ s)
        if not ys > 1e-10 * np.linalg.norm(y) * np.linalg.norm(s):
            return
        if first[0] and rescale:
            B = (ys / float(y @ y)) * np.eye(n)
        first[0] = False
        rho = 1.0 / ys
        By = B @ y
        # Expanded form of the update: O(n^2), no n x n products.
        B = B + (rho * rho * float(y @ By) + rho) * np.outer(s, s) - rho * (np.outer(By, s) + np.outer(s, By))

    def first_step(k: int, g: np.ndarray, d: np.ndarray) -> float:
        # Before any curvature is known, make the first trial step of length ~1 (as scipy does).
        return min(1.0, 1.0 / max(float(np.linalg.norm(g)), 1e-12)) if k == 0 else 1.0

    return _minimize(fun, x0, direction, update, maxiter=maxiter, gtol=gtol, first_step=first_step)


def lbfgs_direction(g: np.ndarray, s_list: Sequence[np.ndarray], y_list: Sequence[np.ndarray]) -> np.ndarray:
    """The L-BFGS two-loop recursion: return $d = -H_k g$ without forming $H_k$.

    ``s_list``, ``y_list``: the stored pairs, oldest first, each shaped like ``g``. The initial
    matrix is $H^0 = \\gamma I$ with $\\gamma = s^T y / y^T y$ of the newest pair (Nocedal & Wright,
    Algorithm 7.4). Cost $O(mn)$ for $m$ pairs.
    """
    if len(s_list) != len(y_list):
        raise ValueError(f"need as many s as y vectors, got {len(s_list)} and {len(y_list)}")
    q = np.array(g, dtype=np.float64, copy=True)
    rhos = [1.0 / float(y @ s) for s, y in zip(s_list, y_list)]
    alphas = []
    for s, y, rho in zip(reversed(s_list), reversed(y_list), reversed(rhos)):  # newest to oldest
        a = rho * float(s @ q)
        q -= a * y
        alphas.append(a)
    if s_list:
        s, y = s_list[-1], y_list[-1]
        q *= float(s @ y) / float(y @ y)
    for s, y, rho, a in zip(s_list, y_list, rhos, reversed(alphas)):  # oldest to newest
        b = rho * float(y @ q)
        q += (a - b) * s
    return -q


def lbfgs(fun: Objective, x0, *, history: int = 10, maxiter: int = 1000, gtol: float = 1e-5) -> OptimizeResult:
    """Limited-memory BFGS: the BFGS direction computed from only the last ``history`` pairs
    $(s_i, y_i)$ by :func:`lbfgs_direction`; memory $O(mn)$ instead of $O(n^2)$."""
    if not isinstance(history, (int, np.integer)) or history < 1:
        raise ValueError(f"history must be a positive int, got {history!r}")
    s_list: deque[np.ndarray] = deque(maxlen=history)
    y_list: deque[np.ndarray] = deque(maxlen=history)

    def direction(x: np.ndarray, g: np.ndarray) -> np.ndarray:
        return lbfgs_direction(g, list(s_list), list(y_list))

    def update(s: np.ndarray, y: np.ndarray) -> None:
        if float(y @ s) > 1e-10 * np.linalg.norm(y) * np.linalg.norm(s):
            s_list.append(s)
            y_list.append(y)

    def first_step(k: int, g: np.ndarray, d: np.ndarray) -> float:
        return min(1.0, 1.0 / max(float(np.linalg.norm(g)), 1e-12)) if not s_list else 1.0

    res = _minimize(fun, x0, direction, update, maxiter=maxiter, gtol=gtol, first_step=first_step)
    res.pairs = len(s_list)  # type: ignore[attr-defined]  # for the test that only `history` are kept
    return res


# --------------------------------------------------------------------------- test problems

def quadratic(A: np.ndarray, b: np.ndarray) -> tuple[Objective, HessianFn]:
    """$f(x) = \\tfrac12 x^T A x - b^T x$ with symmetric ``A (n, n)``, ``b (n,)``: returns ``(fun, hess)``.
    The minimizer (for positive definite ``A``) is $A^{-1} b$."""
    A = np.asarray(A, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if A.ndim != 2 or A.shape[0] != A.shape[1] or b.shape != (A.shape[0],):
        raise ValueError(f"need A (n, n) and b (n,), got {A.shape} and {b.shape}")
    if not np.allclose(A, A.T):
        raise ValueError("A must be symmetric")

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        Ax = A @ x
        return 0.5 * float(x @ Ax) - float(b @ x), Ax - b

    return fun, lambda x: A


def rosenbrock(x: np.ndarray) -> tuple[float, np.ndarray]:
    """The n-dimensional Rosenbrock function $\\sum_i 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2$ and its
    gradient (same as ``scipy.optimize.rosen`` / ``rosen_der``); minimum 0 at ``x = 1``."""
    x = np.asarray(x, dtype=np.float64)
    a, b = x[:-1], x[1:]
    r = b - a * a
    value = float(np.sum(100.0 * r * r + (1.0 - a) ** 2))
    grad = np.zeros_like(x)
    grad[:-1] = -400.0 * a * r - 2.0 * (1.0 - a)
    grad[1:] += 200.0 * r
    return value, grad


def rosenbrock_hessian(x: np.ndarray) -> np.ndarray:
    """Hessian ``(n, n)`` of :func:`rosenbrock` (tridiagonal)."""
    x = np.asarray(x, dtype=np.float64)
    n = x.size
    H = np.zeros((n, n))
    a, b = x[:-1], x[1:]
    diag = np.zeros(n)
    diag[:-1] += 1200.0 * a * a - 400.0 * b + 2.0
    diag[1:] += 200.0
    off = -400.0 * a
    H[np.arange(n), np.arange(n)] = diag
    H[np.arange(n - 1), np.arange(1, n)] = off
    H[np.arange(1, n), np.arange(n - 1)] = off
    return H


def logistic_regression(X: np.ndarray, y: np.ndarray, l2: float) -> tuple[Objective, HessianFn]:
    """L2-regularized binary logistic regression on features ``X (N, D)`` and labels ``y (N,)`` in {0, 1}:

    $$f(w) = \\frac1N \\sum_i \\big[\\log(1 + e^{z_i}) - y_i z_i\\big] + \\frac{\\lambda}{2}\\|w\\|^2,
    \\quad z_i = x_i^T w,$$

    gradient $X^T(\\sigma(z) - y)/N + \\lambda w$, Hessian $X^T \\mathrm{diag}(\\sigma(1-\\sigma)) X / N + \\lambda I$.
    Append a column of ones to ``X`` for a bias. Returns ``(fun, hess)``.
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if X.ndim != 2 or y.shape != (X.shape[0],):
        raise ValueError(f"need X (N, D) and y (N,), got {X.shape} and {y.shape}")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("labels y must be 0 or 1")
    if not l2 >= 0:
        raise ValueError(f"l2 must be >= 0, got {l2!r}")
    N, D = X.shape

    def fun(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = X @ w
        value = float(np.mean(np.logaddexp(0.0, z) - y * z)) + 0.5 * l2 * float(w @ w)
        p = 0.5 * (1.0 + np.tanh(0.5 * z))  # stable sigmoid
        return value, X.T @ (p - y) / N + l2 * w

    def hess(w: np.ndarray) -> np.ndarray:
        p = 0.5 * (1.0 + np.tanh(0.5 * (X @ w)))
        return (X.T * (p * (1 - p))) @ X / N + l2 * np.eye(D)

    return fun, hess


# --------------------------------------------------------------------------- Hessians of torch models

def _params(model: nn.Module) -> list[Tensor]:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    return params


def num_params(model: nn.Module) -> int:
    """Number of trainable parameters (the Hessian is ``num_params x num_params``)."""
    return sum(p.numel() for p in _params(model))


def _flat_grad(model: nn.Module, loss_fn, x: Tensor, y: Tensor, create_graph: bool) -> Tensor:
    params = _params(model)
    loss = loss_fn(model(x), y)
    grads = torch.autograd.grad(loss, params, create_graph=create_graph)
    return torch.cat([g.reshape(-1) for g in grads])


def flat_gradient(model: nn.Module, loss_fn, x: Tensor, y: Tensor) -> Tensor:
    """Gradient of ``loss_fn(model(x), y)`` with respect to all trainable parameters, flattened ``(P,)``."""
    return _flat_grad(model, loss_fn, x, y, create_graph=False).detach()


def hessian_vector_product(model: nn.Module, loss_fn, x: Tensor, y: Tensor, v: Tensor) -> Tensor:
    """$Hv$ for the Hessian of ``loss_fn(model(x), y)`` in the flattened parameters, by double
    backpropagation (Pearlmutter 1994): $Hv = \\nabla_\\theta (\\nabla_\\theta L \\cdot v)$; cost of
    about two gradients, no $P \\times P$ matrix. ``v``: ``(P,)``; returns ``(P,)``."""
    P = num_params(model)
    if v.shape != (P,):
        raise ValueError(f"v must have shape ({P},) (the number of parameters), got {tuple(v.shape)}")
    g = _flat_grad(model, loss_fn, x, y, create_graph=True)
    params = _params(model)
    hv = torch.autograd.grad(g @ v.to(g.dtype), params)
    return torch.cat([h.reshape(-1) for h in hv]).detach()


def model_hessian(model: nn.Module, loss_fn, x: Tensor, y: Tensor) -> Tensor:
    """The exact ``(P, P)`` Hessian of ``loss_fn(model(x), y)`` in the flattened parameters, one
    row per backward pass through the gradient: $O(P)$ passes and $O(P^2)$ memory, so only for
    small models (a few thousand parameters)."""
    params = _params(model)
    g = _flat_grad(model, loss_fn, x, y, create_graph=True)
    P = g.numel()
    if P > 20_000:
        raise ValueError(f"the model has {P} parameters: a dense Hessian would need {P * P * 8 / 1e9:.1f} GB; "
                         "use hessian_vector_product instead")
    rows = []
    for i in range(P):
        r = torch.autograd.grad(g[i], params, retain_graph=True, allow_unused=True)
        rows.append(torch.cat([(ri if ri is not None else torch.zeros_like(p)).reshape(-1)
                               for ri, p in zip(r, params)]))
    H = torch.stack(rows).detach()
    return 0.5 * (H + H.T)  # symmetric up to rounding


def lanczos_extreme_eigenvalues(
    hvp: Callable[[Tensor], Tensor], dim: int, *, steps: int = 30, generator: torch.Generator,
    dtype: torch.dtype = torch.float64,
) -> tuple[float, float]:
    """Smallest and largest eigenvalue of a symmetric operator given only ``hvp(v) -> Hv``.

    Lanczos with full reorthogonalization for ``steps`` iterations from a random start drawn with
    ``generator``: the extreme Ritz values of the tridiagonal matrix converge to the extreme
    eigenvalues first. Returns ``(lambda_min, lambda_max)``.
    """
    if dim < 1 or steps < 1:
        raise ValueError(f"dim and steps must be >= 1, got dim={dim}, steps={steps}")
    steps = min(steps, dim)
    q = torch.randn(dim, generator=generator, dtype=dtype)
    q /= q.norm()
    Q = [q]
    alphas, betas = [], []
    for j in range(steps):
        w = hvp(Q[-1]).to(dtype)
        alphas.append(float(w @ Q[-1]))
        Qm = torch.stack(Q)
        w = w - Qm.T @ (Qm @ w)
        w = w - Qm.T @ (Qm @ w)  # twice is enough (Kahan)
        beta = float(w.norm())
        if j == steps - 1 or beta < 1e-10:
            break
        betas.append(beta)
        Q.append(w / beta)
    k = len(alphas)
    T = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if k > 1:
        off = torch.tensor(betas[: k - 1], dtype=torch.float64)
        T += torch.diag(off, 1) + torch.diag(off, -1)
    ev = torch.linalg.eigvalsh(T)
    return float(ev[0]), float(ev[-1])


def condition_number(H: Tensor | np.ndarray) -> float:
    """Ratio of the largest to the smallest singular value of a symmetric matrix (``inf`` if singular)."""
    ev = np.abs(np.linalg.eigvalsh(np.asarray(H, dtype=np.float64)))
    return float(ev.max() / ev.min()) if ev.min() > 0 else math.inf


# --------------------------------------------------------------------------- training with a closure

@dataclass
class ClosureRun:
    """Full-data training loss after every pass over the data, gradient evaluations so far, wall time."""

    loss: list[float]
    grad_evals: list[int]
    times: list[float]
    diverged: bool = False


def train_with_closure(
    model: nn.Module, x: Tensor, y: Tensor, optimizer: torch.optim.Optimizer, *,
    batch_size: int | None, epochs: int, generator: torch.Generator, loss_fn=None,
) -> ClosureRun:
    """Train with any optimizer through ``optimizer.step(closure)`` (which L-BFGS needs and
    ``lecturelib.training.fit`` does not provide).

    ``batch_size=None`` is full batch: one ``step`` per epoch. The full-data loss is recorded
    after every epoch (``loss[0]`` before training); a non-finite loss stops the run with
    ``diverged=True``.
    """
    loss_fn = loss_fn or nn.functional.cross_entropy
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    n = len(x)
    bs = n if batch_size is None else int(batch_size)
    if not 1 <= bs <= n:
        raise ValueError(f"batch_size must be in 1..{n} or None, got {batch_size!r}")
    evals = 0

    def full_loss() -> float:
        with torch.no_grad():
            return float(loss_fn(model(x), y))

    run = ClosureRun(loss=[full_loss()], grad_evals=[0], times=[0.0])
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator) if bs < n else torch.arange(n)
        for b in range(0, n, bs):
            idx = order[b: b + bs]
            xb, yb = x[idx], y[idx]

            def closure() -> Tensor:
                nonlocal evals
                evals += 1
                optimizer.zero_grad()
                loss = loss_fn(model(xb), yb)
                loss.backward()
                return loss

            optimizer.step(closure)
        value = full_loss()
        run.loss.append(value)
        run.grad_evals.append(evals)
        run.times.append(time.perf_counter() - start)
        if not math.isfinite(value):
            run.diverged = True
            break
    return run
