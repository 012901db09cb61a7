"""Hidden tests for the update rules: several steps against torch.optim on a fixed gradient sequence."""

import pytest
import torch

from lecturelib import optim as lo


def _grads(n=5, steps=6, seed=3):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(n, generator=gen, dtype=torch.float64) for _ in range(steps)]


def _torch_path(make, grads, x0):
    p = torch.nn.Parameter(x0.clone())
    opt = make([p])
    out = []
    for g in grads:
        p.grad = g.clone()
        opt.step()
        out.append(p.detach().clone())
    return out


def _ours(update, grads, x0, n_state, **kw):
    x = x0.clone()
    state = [torch.zeros_like(x) for _ in range(n_state)]
    out = []
    for t, g in enumerate(grads, start=1):
        update(x, *state, g, t, **kw) if "beta1" in kw else update(x, *state, g, **kw)
        out.append(x.clone())
    return out


X0 = torch.linspace(-1, 2, 5, dtype=torch.float64)


def _close(a, b):
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v, rtol=1e-10, atol=1e-12)


def test_sgd_update_matches_torch():
    g = _grads()
    _close(_ours(lo.sgd_update, g, X0, 0, lr=0.3), _torch_path(lambda p: torch.optim.SGD(p, lr=0.3), g, X0))


def test_sgd_momentum_update_matches_torch():
    g = _grads()
    _close(_ours(lo.sgd_momentum_update, g, X0, 1, lr=0.1, rho=0.5),
           _torch_path(lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.5), g, X0))


def test_sgd_nesterov_update_matches_torch():
    g = _grads()
    _close(_ours(lo.sgd_nesterov_update, g, X0, 1, lr=0.1, rho=0.7),
           _torch_path(lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.7, nesterov=True), g, X0))


def test_adagrad_update_matches_torch():
    g = _grads()
    _close(_ours(lo.adagrad_update, g, X0, 1, lr=0.2, eps=1e-3),
           _torch_path(lambda p: torch.optim.Adagrad(p, lr=0.2, eps=1e-3), g, X0))


def test_rmsprop_update_matches_torch():
    g = _grads()
    _close(_ours(lo.rmsprop_update, g, X0, 1, lr=0.01, alpha=0.8, eps=1e-4),
           _torch_path(lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.8, eps=1e-4), g, X0))


@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.5, 0.9)])
def test_adam_update_matches_torch(betas):
    g = _grads()
    _close(_ours(lo.adam_update, g, X0, 2, lr=0.05, beta1=betas[0], beta2=betas[1], eps=1e-6),
           _torch_path(lambda p: torch.optim.Adam(p, lr=0.05, betas=betas, eps=1e-6), g, X0))
