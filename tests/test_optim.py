"""lecturelib.optim against torch.optim, lecturelib.problems2d against autograd / finite differences."""

import math

import pytest
import torch
from torch import nn

from lecturelib import optim as lo
from lecturelib import problems2d as p2
from lecturelib.gradcheck import numerical_gradient, rel_error


@pytest.fixture(autouse=True)
def _one_thread():
    """The models here are tiny: one intra-op thread is fastest, and avoids thread contention
    on a loaded machine (it made these tests 50x slower on a shared 2-core CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3)).to(dtype)


def _data(seed=1, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(300, 6, generator=gen, dtype=dtype)
    y = torch.randint(0, 3, (300,), generator=gen)
    return x, y


def _trajectory(make_opt, steps=200, seed=0, scheduler=None, dtype=torch.float64):
    """Train the same model on the same minibatches; return the parameters after every step."""
    model = _model(seed, dtype)
    x, y = _data(dtype=dtype)
    opt = make_opt(model.parameters())
    sched = scheduler(opt) if scheduler else None
    gen = torch.Generator().manual_seed(2)
    snapshots = []
    for _ in range(steps):
        idx = torch.randint(0, len(x), (32,), generator=gen)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
        if sched:
            sched.step()
        snapshots.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    return torch.stack(snapshots)


CASES = [
    ("sgd", lambda p: lo.SGD(p, lr=0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
    ("sgd_wd", lambda p: lo.SGD(p, lr=0.1, weight_decay=1e-2),
     lambda p: torch.optim.SGD(p, lr=0.1, weight_decay=1e-2)),
    ("momentum", lambda p: lo.SGD(p, lr=0.05, momentum=0.9),
     lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)),
    ("nesterov", lambda p: lo.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
     lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    ("adagrad", lambda p: lo.AdaGrad(p, lr=0.05), lambda p: torch.optim.Adagrad(p, lr=0.05)),
    ("adagrad_wd", lambda p: lo.AdaGrad(p, lr=0.05, eps=1e-6, weight_decay=1e-2),
     lambda p: torch.optim.Adagrad(p, lr=0.05, eps=1e-6, weight_decay=1e-2)),
    ("rmsprop", lambda p: lo.RMSProp(p, lr=1e-3), lambda p: torch.optim.RMSprop(p, lr=1e-3)),
    ("rmsprop_wd", lambda p: lo.RMSProp(p, lr=1e-3, alpha=0.9, eps=1e-6, weight_decay=1e-2),
     lambda p: torch.optim.RMSprop(p, lr=1e-3, alpha=0.9, eps=1e-6, weight_decay=1e-2)),
    ("adam", lambda p: lo.Adam(p), lambda p: torch.optim.Adam(p)),
    ("adam_wd", lambda p: lo.Adam(p, lr=3e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=1e-2),
     lambda p: torch.optim.Adam(p, lr=3e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=1e-2)),
]


@pytest.mark.parametrize("name,ours,theirs", CASES, ids=[c[0] for c in CASES])
def test_trajectory_equals_torch(name, ours, theirs):
    a, b = _trajectory(ours), _trajectory(theirs)
    assert torch.isfinite(a).all()
    assert (a[-1] - a[0]).abs().max() > 1e-3, "the parameters should move"
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_trajectory_float32_matches_torch():
    a = _trajectory(lambda p: lo.Adam(p, lr=1e-2), steps=200, dtype=torch.float32)
    b = _trajectory(lambda p: torch.optim.Adam(p, lr=1e-2), steps=200, dtype=torch.float32)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_different_hyperparameters_give_different_trajectories():
    """The comparison above can fail: a wrong momentum is detected."""
    a = _trajectory(lambda p: lo.SGD(p, lr=0.05, momentum=0.9), steps=50)
    b = _trajectory(lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.8), steps=50)
    assert (a - b).abs().max() > 1e-4


@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_with_schedule_equals_torch(nesterov):
    sched = lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=50, gamma=0.3)
    a = _trajectory(lambda p: lo.SGD(p, lr=0.1, momentum=0.9, nesterov=nesterov), 200, scheduler=sched)
    b = _trajectory(lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=nesterov), 200, scheduler=sched)
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_param_groups_and_missing_grads():
    torch.manual_seed(0)
    w1, w2, w3 = (torch.randn(4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    w3_before = w3.detach().clone()
    opt = lo.Adam([{"params": [w1]}, {"params": [w2, w3], "lr": 0.1}], lr=0.01)
    ref = [w.detach().clone().requires_grad_() for w in (w1, w2)]
    ref_opt = torch.optim.Adam([{"params": [ref[0]]}, {"params": [ref[1]], "lr": 0.1}], lr=0.01)
    for _ in range(20):
        for params, o in (((w1, w2), opt), (ref, ref_opt)):
            o.zero_grad()
            (params[0] ** 2).sum().add((params[1] ** 3).sum()).backward()
            o.step()
    torch.testing.assert_close(w1, ref[0])
    torch.testing.assert_close(w2, ref[1])
    assert torch.equal(w3.detach(), w3_before)  # no gradient: untouched


def test_step_closure_returns_loss():
    w = torch.ones(3, requires_grad=True)
    opt = lo.SGD([w], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (w ** 2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss.item() == pytest.approx(3.0)
    torch.testing.assert_close(w.detach(), torch.full((3,), 0.8))


def test_adam_first_step_is_lr_times_sign():
    """Bias correction: Adam's first step has size lr in every coordinate (up to eps)."""
    x = torch.zeros(5, dtype=torch.float64)
    m, v = torch.zeros_like(x), torch.zeros_like(x)
    g = torch.tensor([3.0, -0.01, 100.0, -7.0, 0.5], dtype=torch.float64)
    lo.adam_update(x, m, v, g, 1, lr=0.1, beta1=0.9, beta2=0.999, eps=1e-12)
    torch.testing.assert_close(x, -0.1 * g.sign())
    with pytest.raises(ValueError, match="starts at 1"):
        lo.adam_update(x, m, v, g, 0, lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8)


def test_nesterov_two_forms_agree():
    """The look-ahead form on x and the change-of-variables form on x + rho v give the same iterates."""
    problem = p2.rosenbrock()
    lr, rho = 1e-3, 0.9
    x = torch.tensor([-1.2, 1.0], dtype=torch.float64)
    v = torch.zeros(2, dtype=torch.float64)
    xt = x.clone()  # x_tilde = x + rho v, and v = 0 at the start
    b = torch.zeros(2, dtype=torch.float64)
    for _ in range(300):
        lo.nesterov_lookahead_update(x, v, problem.grad, lr, rho)
        lo.sgd_nesterov_update(xt, b, problem.grad(xt), lr, rho)
        torch.testing.assert_close(xt, x + rho * v, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(-lr * b, v, rtol=1e-10, atol=1e-12)  # the lecture's velocity
    assert float(problem.f(x)) < float(problem.f(torch.tensor([-1.2, 1.0], dtype=torch.float64)))


BAD = [
    (lambda p: lo.SGD(p, lr=-0.1), "-0.1"),
    (lambda p: lo.SGD(p, lr=float("nan")), "nan"),
    (lambda p: lo.SGD(p, lr="0.1"), "'0.1'"),
    (lambda p: lo.SGD(p, lr=0.1, momentum=1.5), "1.5"),
    (lambda p: lo.SGD(p, lr=0.1, momentum=-0.5), "-0.5"),
    (lambda p: lo.SGD(p, lr=0.1, nesterov=True), "Nesterov"),
    (lambda p: lo.SGD(p, lr=0.1, weight_decay=-1e-4), "-0.0001"),
    (lambda p: lo.AdaGrad(p, lr=-1.0), "-1.0"),
    (lambda p: lo.AdaGrad(p, eps=-1e-10), "-1e-10"),
    (lambda p: lo.RMSProp(p, alpha=1.2), "1.2"),
    (lambda p: lo.RMSProp(p, eps=-1.0), "-1.0"),
    (lambda p: lo.Adam(p, betas=(0.9, 1.0)), "1.0"),
    (lambda p: lo.Adam(p, betas=(-0.1, 0.999)), "-0.1"),
    (lambda p: lo.Adam(p, betas=0.9), "0.9"),
    (lambda p: lo.Adam(p, weight_decay=-0.5), "-0.5"),
    (lambda p: lo.Adam(p, lr=math.inf), "inf"),
]


@pytest.mark.parametrize("make,text", BAD)
def test_invalid_hyperparameters(make, text):
    with pytest.raises(ValueError) as info:
        make([torch.zeros(2, requires_grad=True)])
    assert text in str(info.value)


def test_sparse_gradient_rejected():
    w = torch.zeros(3, requires_grad=True)
    w.grad = torch.zeros(3).to_sparse()
    with pytest.raises(ValueError, match="sparse"):
        lo.Adam([w]).step()


# --- schedules -----------------------------------------------------------------------------------

def _torch_lrs(make_sched, steps, base_lr=0.5):
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base_lr)
    sched = make_sched(opt)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


@pytest.mark.parametrize("step_size,gamma", [(7, 0.1), (30, 0.5)])
def test_step_lr_equals_torch(step_size, gamma):
    ours = [lo.step_lr(s, 0.5, step_size, gamma) for s in range(100)]
    theirs = _torch_lrs(lambda o: torch.optim.lr_scheduler.StepLR(o, step_size, gamma), 100)
    assert ours == pytest.approx(theirs, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("min_lr", [0.0, 0.01])
def test_cosine_lr_equals_torch(min_lr):
    ours = [lo.cosine_lr(s, 0.5, 60, min_lr) for s in range(150)]  # beyond T_max too
    theirs = _torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=60, eta_min=min_lr), 150)
    assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-12)
    assert ours[60] == pytest.approx(min_lr, abs=1e-15)


@pytest.mark.parametrize("start_factor", [1 / 3, 0.01, 1.0])
def test_warmup_lr_equals_torch(start_factor):
    ours = [lo.warmup_lr(s, 0.5, 25, start_factor) for s in range(80)]
    theirs = _torch_lrs(lambda o: torch.optim.lr_scheduler.LinearLR(o, start_factor, 1.0, total_iters=25), 80)
    assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-12)
    assert ours[0] == pytest.approx(0.5 * start_factor) and ours[-1] == pytest.approx(0.5)


def test_lambda_scheduler_follows_schedule():
    fn = lambda s: lo.cosine_lr(s, 0.2, 40)
    lrs = _torch_lrs(lambda o: lo.lambda_scheduler(o, fn), 40, base_lr=0.2)
    assert lrs == pytest.approx([fn(s) for s in range(40)], rel=1e-12, abs=1e-15)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.3)
    with pytest.raises(ValueError, match="schedule"):
        lo.lambda_scheduler(opt, fn)


@pytest.mark.parametrize("call,text", [
    (lambda: lo.step_lr(-1, 0.1, 10), "-1"),
    (lambda: lo.step_lr(0, 0.1, 0), "step_size"),
    (lambda: lo.cosine_lr(3, -0.1, 10), "-0.1"),
    (lambda: lo.cosine_lr(3, 0.1, 0), "total_steps"),
    (lambda: lo.warmup_lr(3, 0.1, 10, start_factor=0.0), "start_factor"),
    (lambda: lo.warmup_lr(3, 0.1, 10, start_factor=1.5), "1.5"),
])
def test_schedule_bad_input(call, text):
    with pytest.raises(ValueError, match=text):
        call()


# --- 2-D problems ------------------------------------------------------------------------------------

PROBLEMS = [p2.quadratic(10.0, angle=0.4), p2.saddle(), p2.local_minimum(), p2.rosenbrock()]


@pytest.mark.parametrize("problem", PROBLEMS, ids=[p.name for p in PROBLEMS])
def test_gradients_match_finite_differences_and_autograd(problem):
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        x = torch.randn(2, dtype=torch.float64, generator=gen)
        num = numerical_gradient(lambda v: float(problem.f(torch.from_numpy(v))), x.numpy().copy())
        assert rel_error(problem.grad(x).numpy(), num) < 1e-6
        xa = x.clone().requires_grad_()
        (auto,) = torch.autograd.grad(problem.f(xa), xa)
        torch.testing.assert_close(problem.grad(x), auto)
    # the minimum is a stationary point
    m = torch.tensor(problem.minimum, dtype=torch.float64)
    assert problem.grad(m).abs().max() < 1e-9


def test_quadratic_condition_number_and_saddle_hessian():
    for kappa in (1.0, 10.0, 1000.0):
        eig = torch.linalg.eigvalsh(p2.quadratic(kappa, angle=0.7).hessian((0.3, -0.2)))
        torch.testing.assert_close(eig, torch.tensor([1.0, kappa], dtype=torch.float64))
    eig = torch.linalg.eigvalsh(p2.saddle().hessian((0.0, 0.0)))
    torch.testing.assert_close(eig, torch.tensor([-1.0, 1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="kappa"):
        p2.quadratic(0.5)


def test_local_minimum_points():
    problem = p2.local_minimum(0.5)
    glob = torch.tensor(problem.minimum, dtype=torch.float64)
    loc = torch.tensor(p2.local_minimum_point(0.5), dtype=torch.float64)
    assert problem.f(glob) < problem.f(loc)
    for point in (glob, loc):
        assert problem.grad(point).abs().max() < 1e-9
        assert torch.linalg.eigvalsh(problem.hessian(point)).min() > 0


def test_record_path_matches_manual_loop_and_is_seeded():
    problem = p2.rosenbrock()
    path = p2.record_path(problem, lambda ps: lo.SGD(ps, lr=1e-3, momentum=0.9), 50)
    assert path.shape == (51, 2) and path.dtype == torch.float64
    x = torch.tensor(problem.start, dtype=torch.float64)
    v = torch.zeros(2, dtype=torch.float64)
    for t in range(50):
        lo.sgd_momentum_update(x, v, problem.grad(x), 1e-3, 0.9)
        torch.testing.assert_close(path[t + 1], x)
    noisy = [p2.record_path(problem, lambda ps: torch.optim.SGD(ps, lr=1e-3), 20, noise=0.5,
                            generator=torch.Generator().manual_seed(s)) for s in (0, 0, 1)]
    assert torch.equal(noisy[0], noisy[1]) and not torch.equal(noisy[0], noisy[2])
    with pytest.raises(ValueError, match="Generator"):
        p2.record_path(problem, lambda ps: lo.SGD(ps, lr=1e-3), 5, noise=0.1)


def test_record_path_until_and_steps_to_reach():
    problem = p2.quadratic(10.0)
    path = p2.record_path(problem, lambda ps: lo.SGD(ps, lr=2 / 11), 10_000, until=1e-8)
    assert len(path) < 200
    assert p2.steps_to_reach(path, problem, 1e-8) == len(path) - 1
    assert p2.steps_to_reach(path[:3], problem, 1e-8) is None


def test_saddle_traps_gradient_descent_but_not_momentum():
    problem = p2.saddle()
    gd = p2.record_path(problem, lambda ps: lo.SGD(ps, lr=0.05), 2000, until=1e-2)
    mom = p2.record_path(problem, lambda ps: lo.SGD(ps, lr=0.05, momentum=0.9), 2000, until=1e-2)
    assert len(gd) > 2 * len(mom)
