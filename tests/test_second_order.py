"""Newton / BFGS / L-BFGS against scipy.optimize, the Wolfe line search, and the torch Hessian tools
against torch.autograd.functional.hessian and finite differences."""

import math

import numpy as np
import pytest
import scipy.optimize as so
import torch
from torch import nn
from torch.func import functional_call

from lecturelib.gradcheck import numerical_gradient, numerical_gradient_array, rel_error
from lecturelib.second_order import (
    STATUSES, bfgs, condition_number, gradient_descent, hessian_vector_product, lanczos_extreme_eigenvalues,
    lbfgs, lbfgs_direction, logistic_regression, model_hessian, newton, num_params, quadratic, rosenbrock,
    rosenbrock_hessian, train_with_closure, wolfe_line_search, flat_gradient,
)


def _spd(n, cond, seed=0):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return (Q * np.geomspace(1.0, cond, n)) @ Q.T


@pytest.fixture(scope="module")
def logreg():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 20))
    X = np.hstack([X, np.ones((300, 1))])
    w_true = rng.standard_normal(21)
    y = (rng.random(300) < 1 / (1 + np.exp(-X @ w_true))).astype(float)
    return logistic_regression(X, y, 1e-2)


# ---------------------------------------------------------------- test problems match scipy / finite differences

def test_rosenbrock_matches_scipy():
    x = np.random.default_rng(1).standard_normal(7)
    f, g = rosenbrock(x)
    assert f == pytest.approx(so.rosen(x), rel=1e-14)
    assert rel_error(g, so.rosen_der(x)) < 1e-12
    assert rel_error(rosenbrock_hessian(x), so.rosen_hess(x)) < 1e-12


def test_logistic_gradient_and_hessian_finite_differences(logreg):
    fun, hess = logreg
    w = np.random.default_rng(2).standard_normal(21) * 0.3
    assert rel_error(fun(w)[1], numerical_gradient(lambda v: fun(v)[0], w.copy())) < 1e-6
    num_h = np.stack([numerical_gradient(lambda v, i=i: fun(v)[1][i], w.copy()) for i in range(21)])
    assert rel_error(hess(w), num_h) < 1e-5


# ---------------------------------------------------------------- line search

def test_wolfe_line_search_meets_strong_wolfe():
    x0 = np.array([-1.2, 1.0, -0.5, 0.8])
    f0, g0 = rosenbrock(x0)
    for d in (-g0, -g0 / np.linalg.norm(g0), np.linalg.solve(rosenbrock_hessian(x0), -g0)):
        c1, c2 = 1e-4, 0.9
        ls = wolfe_line_search(rosenbrock, x0, d, f0, g0, c1=c1, c2=c2)
        assert ls.alpha is not None and ls.alpha > 0
        f, g = rosenbrock(x0 + ls.alpha * d)
        assert f == pytest.approx(ls.fun)
        assert f <= f0 + c1 * ls.alpha * (g0 @ d)
        assert abs(g @ d) <= c2 * abs(g0 @ d)


def test_line_search_rejects_ascent_direction():
    x0 = np.array([0.0, 0.0])
    f0, g0 = rosenbrock(x0)
    with pytest.raises(ValueError, match="descent direction"):
        wolfe_line_search(rosenbrock, x0, g0, f0, g0)


# ---------------------------------------------------------------- the optimizers against scipy

@pytest.mark.parametrize("n", [2, 5, 10])
def test_rosenbrock_same_minimizer_as_scipy(n):
    x0 = np.zeros(n)
    ours = {"BFGS": bfgs(rosenbrock, x0), "L-BFGS-B": lbfgs(rosenbrock, x0),
            "Newton-CG": newton(rosenbrock, x0, hess=rosenbrock_hessian)}
    for method, res in ours.items():
        ref = so.minimize(rosenbrock, x0, jac=True, method=method,
                          hess=rosenbrock_hessian if method == "Newton-CG" else None)
        assert res.status == "converged", (method, res.message)
        assert np.allclose(res.x, np.ones(n), atol=1e-4) and np.allclose(ref.x, np.ones(n), atol=1e-2)
        # comparable iteration counts: within a factor 2 of scipy (Newton: at most scipy's Newton-CG)
        assert res.nit <= 2 * ref.nit + 5, (method, res.nit, ref.nit)
        assert len(res.trace) == res.nit + 1 and res.trace[-1] == pytest.approx(res.fun)
        assert res.nfev >= res.nit + 1


def test_logistic_regression_same_minimizer_as_scipy(logreg):
    fun, hess = logreg
    w0 = np.zeros(21)
    ref = so.minimize(fun, w0, jac=True, hess=hess, method="Newton-CG", options={"xtol": 1e-12})
    for method, res in [("BFGS", bfgs(fun, w0, gtol=1e-8)), ("L-BFGS-B", lbfgs(fun, w0, gtol=1e-8)),
                        ("Newton-CG", newton(fun, w0, hess=hess, gtol=1e-8))]:
        assert res.success, res.message
        assert np.abs(res.x - ref.x).max() < 1e-5
        sp = so.minimize(fun, w0, jac=True, method=method, hess=hess if method == "Newton-CG" else None)
        assert res.nit <= 2 * sp.nit + 5, (method, res.nit, sp.nit)
    assert newton(fun, w0, hess=hess, gtol=1e-8).nit <= 10  # quadratic convergence


@pytest.mark.parametrize("cond", [1.0, 1e2, 1e6])
def test_newton_solves_quadratic_in_one_step(cond):
    A = _spd(8, cond)
    b = np.arange(1.0, 9.0)
    fun, hess = quadratic(A, b)
    res = newton(fun, np.zeros(8), hess=hess, gtol=1e-6 * max(1.0, cond))
    assert res.nit == 1 and res.success
    assert np.allclose(res.x, np.linalg.solve(A, b), rtol=1e-8)


def test_gradient_descent_slow_on_ill_conditioned_quadratic():
    fun, _ = quadratic(_spd(8, 1e3), np.ones(8))
    res = gradient_descent(fun, np.zeros(8), lr=1 / 1e3, maxiter=300, gtol=1e-8)
    assert res.status == "maxiter" and len(res.trace) == 301
    fast = gradient_descent(quadratic(np.eye(8), np.ones(8))[0], np.zeros(8), lr=1.0, gtol=1e-8)
    assert fast.nit == 1


def test_lbfgs_with_full_history_matches_bfgs_on_quadratic():
    fun, _ = quadratic(_spd(6, 50.0, seed=3), np.ones(6))
    a = lbfgs(fun, np.zeros(6), history=100, gtol=1e-7)
    b = bfgs(fun, np.zeros(6), gtol=1e-7)
    assert a.success and b.success and np.allclose(a.x, b.x, atol=1e-6)
    # exact line searches are not used, but quasi-Newton on an n-dim quadratic needs about n steps
    assert a.nit <= 3 * 6 and b.nit <= 3 * 6


def test_lbfgs_direction_two_loop_equals_dense_bfgs_matrix():
    rng = np.random.default_rng(4)
    n, m = 7, 4
    A = _spd(n, 20.0, seed=5)
    s_list = [rng.standard_normal(n) for _ in range(m)]
    y_list = [A @ s for s in s_list]
    g = rng.standard_normal(n)
    # dense: H0 = gamma I, then m BFGS updates of the inverse Hessian, oldest first
    gamma = s_list[-1] @ y_list[-1] / (y_list[-1] @ y_list[-1])
    H = gamma * np.eye(n)
    for s, y in zip(s_list, y_list):
        rho = 1 / (y @ s)
        V = np.eye(n) - rho * np.outer(y, s)
        H = V.T @ H @ V + rho * np.outer(s, s)
    assert rel_error(lbfgs_direction(g, s_list, y_list), -H @ g) < 1e-10
    assert np.allclose(lbfgs_direction(g, [], []), -g)
    with pytest.raises(ValueError, match="as many"):
        lbfgs_direction(g, s_list, y_list[:-1])


def test_lbfgs_keeps_only_history_pairs():
    res = lbfgs(rosenbrock, np.zeros(10), history=3)
    assert res.success and res.pairs == 3


def test_same_input_same_numbers():
    a, b = lbfgs(rosenbrock, np.zeros(5)), lbfgs(rosenbrock, np.zeros(5))
    assert np.array_equal(a.x, b.x) and a.trace == b.trace


# ---------------------------------------------------------------- failure modes end with a status

def test_nonfinite_start_ends_with_status():
    res = bfgs(lambda x: (float("nan"), np.zeros_like(x)), np.zeros(3))
    assert res.status == "nonfinite" and res.nit == 0 and "x0" in res.message


def test_nonfinite_region_is_survived_or_reported():
    def fun(x):  # log barrier: infinite for x <= 0; minimum at x = 1
        if np.any(x <= 0):
            return math.inf, np.full_like(x, np.nan)
        return float(np.sum(x - np.log(x))), 1 - 1 / x
    for opt in (bfgs, lbfgs):
        res = opt(fun, np.full(3, 5.0))
        assert res.status in STATUSES
        assert res.success and np.allclose(res.x, 1.0, atol=1e-4)
    res = newton(fun, np.full(3, 5.0), hess=lambda x: np.diag(1 / x ** 2))
    assert res.success


def test_non_descent_direction_ends_with_status():
    def fun(x):  # double well in x[0]: negative curvature near 0, minima at x[0] = +-1
        return float(x[0] ** 4 / 4 - x[0] ** 2 / 2 + x[1] ** 2 / 2), np.array([x[0] ** 3 - x[0], x[1]])

    def hess(x):
        return np.diag([3 * x[0] ** 2 - 1, 1.0])

    x0 = np.array([0.1, 0.0])
    res = newton(fun, x0, hess=hess, regularize=False)  # the raw Newton step climbs to the maximum
    assert res.status == "not_descent" and not res.success and "descent" in res.message
    reg = newton(fun, x0, hess=hess, regularize=True)
    assert reg.success and np.allclose(reg.x, [1.0, 0.0], atol=1e-5)


def test_nonfinite_hessian_ends_with_status():
    res = newton(rosenbrock, np.zeros(3), hess=lambda x: np.full((3, 3), np.nan))
    assert res.status == "nonfinite"


def test_maxiter_status():
    res = bfgs(rosenbrock, np.zeros(5), maxiter=3)
    assert res.status == "maxiter" and res.nit == 3 and len(res.trace) == 4


def test_bad_input_errors():
    with pytest.raises(ValueError, match="1-D"):
        bfgs(rosenbrock, np.zeros((2, 2)))
    with pytest.raises(ValueError, match="history"):
        lbfgs(rosenbrock, np.zeros(2), history=0)
    with pytest.raises(ValueError, match="maxiter"):
        newton(rosenbrock, np.zeros(2), hess=rosenbrock_hessian, maxiter=-1)
    with pytest.raises(ValueError, match="gradient of shape"):
        bfgs(lambda x: (0.0, np.zeros(5)), np.zeros(2))
    with pytest.raises(TypeError, match="tuple"):
        bfgs(lambda x: 0.0, np.zeros(2))
    with pytest.raises(ValueError, match="expected"):
        newton(rosenbrock, np.zeros(3), hess=lambda x: np.eye(2))
    with pytest.raises(ValueError, match="labels"):
        logistic_regression(np.zeros((3, 2)), np.array([0, 1, 2]), 0.1)
    with pytest.raises(ValueError, match="lr"):
        gradient_descent(rosenbrock, np.zeros(2), lr=0)


# ---------------------------------------------------------------- Hessian tools for torch models

def _tiny_model_and_data(seed=0):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    x = torch.randn(16, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (16,), generator=g)
    return model, x, y


def _functional_loss(model, x, y):
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]

    def loss(theta):
        chunks = torch.split(theta, sizes)
        params = {n: c.reshape(s) for n, c, s in zip(names, chunks, shapes)}
        return nn.functional.cross_entropy(functional_call(model, params, (x,)), y)

    theta0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    return loss, theta0


def test_model_hessian_matches_autograd_functional_hessian():
    model, x, y = _tiny_model_and_data()
    H = model_hessian(model, nn.functional.cross_entropy, x, y)
    loss, theta0 = _functional_loss(model, x, y)
    ref = torch.autograd.functional.hessian(loss, theta0)
    assert H.shape == (num_params(model), num_params(model)) == (43, 43)
    assert rel_error(H.numpy(), ref.numpy()) < 1e-10


def test_model_hessian_matches_finite_differences_of_gradient():
    model, x, y = _tiny_model_and_data(1)
    H = model_hessian(model, nn.functional.cross_entropy, x, y).numpy()
    loss, theta0 = _functional_loss(model, x, y)

    def grad_at(theta_np):
        t = torch.tensor(theta_np, requires_grad=True)
        return torch.autograd.grad(loss(t), t)[0].numpy()

    theta = theta0.numpy().copy()
    rng = np.random.default_rng(0)
    for _ in range(2):  # d/dtheta sum(grad(theta) * w) = H w: one centred-difference sweep per w
        w = rng.standard_normal(theta.size)
        num = numerical_gradient_array(grad_at, theta, w)
        assert rel_error(H @ w, num) < 1e-6


def test_hessian_vector_product_matches_dense_and_finite_differences():
    model, x, y = _tiny_model_and_data(2)
    H = model_hessian(model, nn.functional.cross_entropy, x, y)
    v = torch.randn(43, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    hv = hessian_vector_product(model, nn.functional.cross_entropy, x, y, v)
    assert rel_error(hv.numpy(), (H @ v).numpy()) < 1e-10
    loss, theta0 = _functional_loss(model, x, y)
    eps = 1e-5

    def grad_at(theta):
        t = theta.clone().requires_grad_(True)
        return torch.autograd.grad(loss(t), t)[0]

    fd = (grad_at(theta0 + eps * v) - grad_at(theta0 - eps * v)) / (2 * eps)
    assert rel_error(hv.numpy(), fd.numpy()) < 1e-6
    assert rel_error(flat_gradient(model, nn.functional.cross_entropy, x, y).numpy(), grad_at(theta0).numpy()) < 1e-12
    with pytest.raises(ValueError, match="number of parameters"):
        hessian_vector_product(model, nn.functional.cross_entropy, x, y, torch.zeros(5, dtype=torch.float64))


def test_lanczos_extreme_eigenvalues_match_eigvalsh():
    model, x, y = _tiny_model_and_data(3)
    H = model_hessian(model, nn.functional.cross_entropy, x, y)
    ev = torch.linalg.eigvalsh(H)
    lo, hi = lanczos_extreme_eigenvalues(
        lambda v: hessian_vector_product(model, nn.functional.cross_entropy, x, y, v), 43,
        steps=43, generator=torch.Generator().manual_seed(0))
    assert lo == pytest.approx(float(ev[0]), abs=1e-8) and hi == pytest.approx(float(ev[-1]), rel=1e-8)
    # a few steps already pin the largest eigenvalue of a matrix with a clear top
    A = torch.tensor(_spd(200, 1e3, seed=1))
    lo, hi = lanczos_extreme_eigenvalues(lambda v: A @ v, 200, steps=40, generator=torch.Generator().manual_seed(0))
    assert hi == pytest.approx(1e3, rel=1e-6)
    assert condition_number(A) == pytest.approx(1e3, rel=1e-8)
    assert condition_number(np.diag([1.0, 0.0])) == math.inf
    assert condition_number(np.diag([-4.0, 2.0])) == pytest.approx(2.0)


# ---------------------------------------------------------------- training loop with a closure

def test_train_with_closure_matches_manual_lbfgs_loop():
    torch.manual_seed(0)
    x = torch.randn(64, 5)
    y = torch.randint(0, 3, (64,))
    m1 = nn.Linear(5, 3)
    m2 = nn.Linear(5, 3)
    m2.load_state_dict(m1.state_dict())
    opt1 = torch.optim.LBFGS(m1.parameters(), max_iter=5, line_search_fn="strong_wolfe")
    run = train_with_closure(m1, x, y, opt1, batch_size=None, epochs=3, generator=torch.Generator().manual_seed(0))
    opt2 = torch.optim.LBFGS(m2.parameters(), max_iter=5, line_search_fn="strong_wolfe")
    for _ in range(3):
        def closure():
            opt2.zero_grad()
            loss = nn.functional.cross_entropy(m2(x), y)
            loss.backward()
            return loss
        opt2.step(closure)
    assert torch.allclose(m1.weight, m2.weight) and len(run.loss) == 4
    assert run.loss[-1] < run.loss[0] and run.grad_evals[-1] > 3
    with pytest.raises(ValueError, match="batch_size"):
        train_with_closure(m1, x, y, opt1, batch_size=1000, epochs=1, generator=torch.Generator())
