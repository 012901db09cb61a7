"""Hidden tests for the normalization exercises: shapes and values the public tests do not use."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lecturelib import normalization as nm
from lecturelib.gradcheck import numerical_gradient_array, rel_error


def _rng(seed=7):
    return np.random.default_rng(seed)


def test_normalize_forward_odd_axes_and_offsets():
    x = 3.0 + 5.0 * _rng().standard_normal((3, 4, 5))
    xhat, mean, var, _ = nm.normalize_forward(x, (0, 2), eps=1e-5)
    assert mean.shape == var.shape == (1, 4, 1)
    assert rel_error(mean, x.mean(axis=(0, 2), keepdims=True)) < 1e-12
    assert rel_error(var, x.var(axis=(0, 2), keepdims=True)) < 1e-12
    assert rel_error(xhat, (x - mean) / np.sqrt(var + 1e-5)) < 1e-10


def test_normalize_backward_gradcheck_3d():
    x = _rng(1).standard_normal((2, 3, 4))
    dout = _rng(2).standard_normal(x.shape)
    _, _, _, cache = nm.normalize_forward(x, (1,), 1e-5)
    num = numerical_gradient_array(lambda v: nm.normalize_forward(v, (1,), 1e-5)[0], x, dout)
    assert rel_error(nm.normalize_backward(dout, cache), num) < 1e-7


def test_batchnorm_forward_matches_torch_and_running_stats():
    rng = _rng(3)
    x = rng.standard_normal((6, 3, 2, 5)) * 2 + 1
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
    rm, rv = np.zeros(3), np.ones(3)
    out, rm2, rv2, _ = nm.batchnorm_forward(x, gamma, beta, rm, rv, mode="train", momentum=0.3)
    trm, trv = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    ref = F.batch_norm(torch.from_numpy(x), trm, trv, torch.from_numpy(gamma), torch.from_numpy(beta),
                       training=True, momentum=0.3)
    assert rel_error(out, ref.numpy()) < 1e-8
    assert rel_error(rm2, trm.numpy()) < 1e-10 and rel_error(rv2, trv.numpy()) < 1e-10
    assert np.all(rm == 0) and np.all(rv == 1)  # inputs not modified
    out_t, *_ = nm.batchnorm_forward(x, gamma, beta, rm2, rv2, mode="test")
    ref_t = F.batch_norm(torch.from_numpy(x), trm, trv, torch.from_numpy(gamma), torch.from_numpy(beta),
                         training=False)
    assert rel_error(out_t, ref_t.numpy()) < 1e-8


def test_batchnorm_forward_rejects_bad_mode():
    x = np.ones((4, 3))
    with pytest.raises(ValueError):
        nm.batchnorm_forward(x, np.ones(3), np.zeros(3), np.zeros(3), np.ones(3), mode="eval")


@pytest.mark.parametrize("mode", ["train", "test"])
def test_batchnorm_backward_gradcheck_2d(mode):
    rng = _rng(4)
    x = rng.standard_normal((5, 4))
    gamma, beta = rng.standard_normal(4), rng.standard_normal(4)
    rm, rv = rng.standard_normal(4), rng.random(4) + 0.5
    dout = rng.standard_normal(x.shape)

    def f(v):
        return nm.batchnorm_forward(v, gamma, beta, rm, rv, mode=mode)[0]

    _, _, _, cache = nm.batchnorm_forward(x, gamma, beta, rm, rv, mode=mode)
    dx, dgamma, dbeta = nm.batchnorm_backward(dout, cache)
    assert rel_error(dx, numerical_gradient_array(f, x, dout)) < 1e-6
    g = gamma.copy()
    num_g = numerical_gradient_array(lambda v: nm.batchnorm_forward(x, v, beta, rm, rv, mode=mode)[0], g, dout)
    assert rel_error(dgamma, num_g) < 1e-6 and rel_error(dbeta, dout.sum(axis=0)) < 1e-12


def test_layernorm_forward_matches_torch_4d():
    rng = _rng(5)
    x = rng.standard_normal((3, 2, 3, 4))
    gamma, beta = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 3, 4))
    out, _ = nm.layernorm_forward(x, gamma, beta)
    ref = F.layer_norm(torch.from_numpy(x), (2, 3, 4), torch.from_numpy(gamma), torch.from_numpy(beta))
    assert rel_error(out, ref.numpy()) < 1e-8


def test_layernorm_backward_gradcheck():
    rng = _rng(6)
    x, gamma, beta = rng.standard_normal((4, 6)), rng.standard_normal(6), rng.standard_normal(6)
    dout = rng.standard_normal(x.shape)
    _, cache = nm.layernorm_forward(x, gamma, beta)
    dx, dgamma, dbeta = nm.layernorm_backward(dout, cache)
    assert rel_error(dx, numerical_gradient_array(lambda v: nm.layernorm_forward(v, gamma, beta)[0], x, dout)) < 1e-6
    num_g = numerical_gradient_array(lambda v: nm.layernorm_forward(x, v, beta)[0], gamma.copy(), dout)
    assert rel_error(dgamma, num_g) < 1e-6 and rel_error(dbeta, dout.sum(axis=0)) < 1e-12


@pytest.mark.parametrize("groups", [2, 6])
def test_groupnorm_forward_matches_torch(groups):
    rng = _rng(8)
    x = rng.standard_normal((2, 6, 3, 2)) * 3
    gamma, beta = rng.standard_normal(6), rng.standard_normal(6)
    out, _ = nm.groupnorm_forward(x, gamma, beta, groups)
    ref = F.group_norm(torch.from_numpy(x), groups, torch.from_numpy(gamma), torch.from_numpy(beta))
    assert rel_error(out, ref.numpy()) < 1e-8


def test_groupnorm_backward_gradcheck():
    rng = _rng(9)
    x = rng.standard_normal((2, 4, 2, 3))
    gamma, beta = rng.standard_normal(4), rng.standard_normal(4)
    dout = rng.standard_normal(x.shape)
    _, cache = nm.groupnorm_forward(x, gamma, beta, 2)
    dx, dgamma, dbeta = nm.groupnorm_backward(dout, cache)
    num = numerical_gradient_array(lambda v: nm.groupnorm_forward(v, gamma, beta, 2)[0], x, dout)
    assert rel_error(dx, num) < 1e-6
    assert rel_error(dbeta, dout.sum(axis=(0, 2, 3))) < 1e-12
