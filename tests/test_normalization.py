"""Normalization layers: NumPy backward passes against finite differences, the torch modules
against torch.nn, and clear errors for bad input."""

import numpy as np
import pytest
import torch
from torch import nn

from lecturelib.gradcheck import numerical_gradient_array, rel_error
from lecturelib.normalization import (
    BatchNorm, GroupNorm, InstanceNorm, LayerNorm, batchnorm_backward, batchnorm_forward,
    groupnorm_backward, groupnorm_forward, instancenorm_backward, instancenorm_forward,
    layernorm_backward, layernorm_forward, make_norm, normalize_backward, normalize_forward,
    shared_statistics_mask,
)

GRAD_TOL = 1e-7


def _rng(seed=0):
    return np.random.default_rng(seed)


def _affine(rng, shape):
    return rng.normal(1.0, 0.5, size=shape), rng.normal(0.0, 0.5, size=shape)


def _check_layer_grads(forward, backward, x, gamma, beta, rng):
    """Analytic (dx, dgamma, dbeta) against centred differences of sum(out * dout)."""
    out = forward(x, gamma, beta)[0]
    dout = rng.normal(size=out.shape)
    dx, dgamma, dbeta = backward(dout, forward(x, gamma, beta)[-1])
    num_dx = numerical_gradient_array(lambda v: forward(v, gamma, beta)[0], x, dout)
    num_dgamma = numerical_gradient_array(lambda g: forward(x, g, beta)[0], gamma, dout)
    num_dbeta = numerical_gradient_array(lambda b: forward(x, gamma, b)[0], beta, dout)
    assert rel_error(dx, num_dx) < GRAD_TOL
    assert rel_error(dgamma, num_dgamma) < GRAD_TOL
    assert rel_error(dbeta, num_dbeta) < GRAD_TOL


# ----------------------------------------------------------------------------- NumPy core

@pytest.mark.parametrize("axes", [(0,), (1,), (0, 2, 3), (2, 3), (1, 2, 3)])
def test_normalize_core_gradient(axes):
    rng = _rng(1)
    x = rng.normal(2.0, 3.0, size=(4, 3, 2, 3))
    dxhat = rng.normal(size=x.shape)
    xhat, mean, var, cache = normalize_forward(x, axes)
    assert np.allclose(xhat.mean(axis=axes), 0, atol=1e-12)
    assert np.allclose(xhat.var(axis=axes), var.squeeze() / (var.squeeze() + 1e-5) * np.ones(1), atol=1e-9)
    num = numerical_gradient_array(lambda v: normalize_forward(v, axes)[0], x, dxhat)
    assert rel_error(normalize_backward(dxhat, cache), num) < GRAD_TOL


@pytest.mark.parametrize("shape", [(5, 4), (4, 3, 3, 2)])
@pytest.mark.parametrize("mode", ["train", "test"])
def test_batchnorm_gradients(shape, mode):
    rng = _rng(2)
    x = rng.normal(5.0, 4.0, size=shape)
    gamma, beta = _affine(rng, (shape[1],))
    rm, rv = rng.normal(size=shape[1]), rng.uniform(0.5, 2.0, size=shape[1])

    def forward(v, g, b):
        out, _, _, cache = batchnorm_forward(v, g, b, rm, rv, mode=mode)
        return out, cache

    _check_layer_grads(forward, batchnorm_backward, x, gamma, beta, rng)


def test_batchnorm_train_output_is_standardized():
    rng = _rng(3)
    x = rng.normal(5.0, 4.0, size=(200, 3))
    gamma, beta = np.array([1.0, 2.0, 0.5]), np.array([0.0, -1.0, 3.0])
    out, _, _, _ = batchnorm_forward(x, gamma, beta, np.zeros(3), np.ones(3))
    assert np.allclose(out.mean(axis=0), beta, atol=1e-10)
    assert np.allclose(out.std(axis=0), gamma, atol=1e-4)


@pytest.mark.parametrize("shape", [(6, 4), (4, 3, 5, 2)])
def test_batchnorm_numpy_matches_torch_in_train_and_eval(shape):
    rng = _rng(4)
    c = shape[1]
    gamma, beta = _affine(rng, (c,))
    ref = (nn.BatchNorm1d if len(shape) == 2 else nn.BatchNorm2d)(c, momentum=0.2).double()
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(gamma))
        ref.bias.copy_(torch.from_numpy(beta))
    rm, rv = np.zeros(c), np.ones(c)
    for step in range(3):
        x = rng.normal(step, 2.0, size=shape)
        out, rm, rv, _ = batchnorm_forward(x, gamma, beta, rm, rv, momentum=0.2)
        expected = ref.train()(torch.from_numpy(x)).detach().numpy()
        assert rel_error(out, expected) < 1e-9
        assert np.allclose(rm, ref.running_mean.numpy(), atol=1e-12)
        assert np.allclose(rv, ref.running_var.numpy(), atol=1e-12)
    x = rng.normal(size=shape)
    out, rm2, rv2, _ = batchnorm_forward(x, gamma, beta, rm, rv, mode="test")
    assert rm2 is rm and rv2 is rv
    assert np.allclose(out, ref.eval()(torch.from_numpy(x)).detach().numpy(), atol=1e-12)


def test_layernorm_gradients_and_match_torch():
    rng = _rng(5)
    x = rng.normal(3.0, 2.0, size=(4, 6))
    gamma, beta = _affine(rng, (6,))
    _check_layer_grads(lambda v, g, b: layernorm_forward(v, g, b), layernorm_backward, x, gamma, beta, rng)
    ref = nn.LayerNorm(6).double()
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(gamma))
        ref.bias.copy_(torch.from_numpy(beta))
    assert np.allclose(layernorm_forward(x, gamma, beta)[0], ref(torch.from_numpy(x)).detach().numpy(), atol=1e-12)


@pytest.mark.parametrize("groups", [1, 2, 6])
def test_groupnorm_gradients_and_match_torch(groups):
    rng = _rng(6)
    x = rng.normal(1.0, 2.0, size=(2, 6, 3, 2))
    gamma, beta = _affine(rng, (6,))
    _check_layer_grads(lambda v, g, b: groupnorm_forward(v, g, b, groups), groupnorm_backward,
                       x, gamma, beta, rng)
    ref = nn.GroupNorm(groups, 6).double()
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(gamma))
        ref.bias.copy_(torch.from_numpy(beta))
    expected = ref(torch.from_numpy(x)).detach().numpy()
    assert np.allclose(groupnorm_forward(x, gamma, beta, groups)[0], expected, atol=1e-12)


def test_instancenorm_gradients_and_match_torch():
    rng = _rng(7)
    x = rng.normal(1.0, 2.0, size=(2, 3, 3, 3))
    gamma, beta = _affine(rng, (3,))
    _check_layer_grads(lambda v, g, b: instancenorm_forward(v, g, b), instancenorm_backward,
                       x, gamma, beta, rng)
    ref = nn.InstanceNorm2d(3, affine=True).double()
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(gamma))
        ref.bias.copy_(torch.from_numpy(beta))
    assert np.allclose(instancenorm_forward(x, gamma, beta)[0], ref(torch.from_numpy(x)).detach().numpy(), atol=1e-12)


def test_numpy_bad_input_errors():
    x = np.zeros((2, 6, 3, 3))
    g, b = np.ones(6), np.zeros(6)
    with pytest.raises(ValueError, match="divisible by num_groups"):
        groupnorm_forward(x, g, b, 4)
    with pytest.raises(ValueError, match="gamma and beta must have shape"):
        groupnorm_forward(x, np.ones(5), np.zeros(5), 2)
    with pytest.raises(ValueError, match=r"\(N, D\) or \(N, C, H, W\)"):
        batchnorm_forward(np.zeros((2, 6, 3)), g, b, np.zeros(6), np.ones(6))
    with pytest.raises(ValueError, match="mode must be"):
        batchnorm_forward(np.zeros((2, 6)), g, b, np.zeros(6), np.ones(6), mode="eval")
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        batchnorm_forward(np.zeros((1, 6)), g, b, np.zeros(6), np.ones(6))


# ----------------------------------------------------------------------------- torch modules

def _randomize_affine(ours, ref, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w = torch.randn(ours.weight.shape, generator=gen) * 0.5 + 1
        b = torch.randn(ours.bias.shape, generator=gen) * 0.5
        for m in (ours, ref):
            m.weight.copy_(w)
            m.bias.copy_(b)


def _compare(ours, ref, shape, *, steps=3, seed=0, scale=3.0, tol=1e-5):
    """Run both modules on the same inputs in train mode (several steps) then eval mode; compare
    outputs, input gradients, parameter gradients and buffers."""
    gen = torch.Generator().manual_seed(seed)
    _randomize_affine(ours, ref, seed + 1)
    for mode in ["train"] * steps + ["eval"]:
        ours.train(mode == "train")
        ref.train(mode == "train")
        x = (torch.randn(shape, generator=gen) * scale + 1.5)
        x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
        y1, y2 = ours(x1), ref(x2)
        torch.testing.assert_close(y1, y2, atol=1e-5, rtol=1e-5)
        dout = torch.randn(y1.shape, generator=gen)
        for m in (ours, ref):
            m.zero_grad()
        y1.backward(dout)
        y2.backward(dout)
        torch.testing.assert_close(x1.grad, x2.grad, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours.weight.grad, ref.weight.grad, atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(ours.bias.grad, ref.bias.grad, atol=1e-4, rtol=1e-5)
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            if hasattr(ref, name) and getattr(ref, name) is not None:
                torch.testing.assert_close(getattr(ours, name), getattr(ref, name), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shape,momentum,eps", [
    ((8, 5), 0.1, 1e-5), ((2, 3), 0.5, 1e-3), ((16, 7), None, 1e-5), ((4, 6, 9), 0.1, 1e-5),
])
def test_batchnorm_1d_matches_torch(shape, momentum, eps):
    _compare(BatchNorm(shape[1], eps=eps, momentum=momentum), nn.BatchNorm1d(shape[1], eps=eps, momentum=momentum), shape)


@pytest.mark.parametrize("shape,momentum,eps", [
    ((4, 3, 5, 5), 0.1, 1e-5), ((1, 2, 3, 4), 0.3, 1e-2), ((8, 16, 4, 2), None, 1e-5), ((2, 1, 7, 1), 1.0, 1e-5),
])
def test_batchnorm_2d_matches_torch(shape, momentum, eps):
    _compare(BatchNorm(shape[1], eps=eps, momentum=momentum), nn.BatchNorm2d(shape[1], eps=eps, momentum=momentum), shape)


@pytest.mark.parametrize("normalized_shape,shape,eps", [
    (10, (4, 10), 1e-5), ((3, 4), (2, 5, 3, 4), 1e-5), (7, (3, 2, 7), 1e-3), ((2, 3, 4), (2, 2, 3, 4), 1e-5),
])
def test_layernorm_matches_torch(normalized_shape, shape, eps):
    _compare(LayerNorm(normalized_shape, eps=eps), nn.LayerNorm(normalized_shape, eps=eps), shape)


@pytest.mark.parametrize("shape,eps", [((4, 3, 5, 5), 1e-5), ((1, 6, 2, 3), 1e-3), ((3, 1, 8, 8), 1e-5)])
def test_instancenorm_matches_torch(shape, eps):
    _compare(InstanceNorm(shape[1], eps=eps), nn.InstanceNorm2d(shape[1], eps=eps, affine=True), shape)


@pytest.mark.parametrize("groups,shape,eps", [
    (2, (4, 6, 5, 5), 1e-5), (1, (3, 4, 3, 3), 1e-5), (4, (2, 4, 3, 2), 1e-3), (3, (2, 12, 7), 1e-5),
    (8, (5, 32, 4, 4), 1e-5),
])
def test_groupnorm_matches_torch(groups, shape, eps):
    _compare(GroupNorm(groups, shape[1], eps=eps), nn.GroupNorm(groups, shape[1], eps=eps), shape)


def test_modules_use_no_fused_library_kernels(monkeypatch):
    import torch.nn.functional as F

    def forbidden(*args, **kwargs):
        raise AssertionError("a library normalization kernel was called")

    for name in ("batch_norm", "group_norm", "layer_norm", "instance_norm"):
        monkeypatch.setattr(F, name, forbidden)
        monkeypatch.setattr(torch, name, forbidden)
    x = torch.randn(4, 8, 3, 3)
    for layer in (BatchNorm(8), LayerNorm((8, 3, 3)), InstanceNorm(8), GroupNorm(2, 8)):
        layer(x).sum().backward()
        layer.eval()(x)


def test_parameter_and_buffer_names_match_torch():
    assert dict(BatchNorm(3).named_parameters()).keys() == dict(nn.BatchNorm2d(3).named_parameters()).keys()
    assert dict(BatchNorm(3).named_buffers()).keys() == dict(nn.BatchNorm2d(3).named_buffers()).keys()
    # a torch state dict loads into ours and vice versa
    BatchNorm(3).load_state_dict(nn.BatchNorm2d(3).state_dict())
    nn.GroupNorm(2, 4).load_state_dict(GroupNorm(2, 4).state_dict())
    nn.LayerNorm(5).load_state_dict(LayerNorm(5).state_dict())


def test_layer_and_instance_norm_are_the_same_in_train_and_eval():
    x = torch.randn(3, 4, 5, 5)
    for layer in (LayerNorm((4, 5, 5)), InstanceNorm(4), GroupNorm(2, 4)):
        torch.testing.assert_close(layer.train()(x), layer.eval()(x), rtol=0, atol=0)


def test_module_bad_input_errors():
    with pytest.raises(ValueError, match=r"divisible by num_groups \(4\)"):
        GroupNorm(4, 6)
    with pytest.raises(ValueError, match="C=3"):
        BatchNorm(3)(torch.randn(4, 5))
    with pytest.raises(ValueError, match=r"\(N, C\), \(N, C, L\) or \(N, C, H, W\)"):
        BatchNorm(3)(torch.randn(3))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        BatchNorm(3)(torch.randn(1, 3))
    with pytest.raises(ValueError, match="last 1 dimension"):
        LayerNorm(4)(torch.randn(2, 5))
    with pytest.raises(ValueError, match="C=4"):
        InstanceNorm(4)(torch.randn(2, 3, 5, 5))
    with pytest.raises(ValueError, match="C=4"):
        GroupNorm(2, 4)(torch.randn(2, 6, 5, 5))
    with pytest.raises(ValueError, match="momentum"):
        BatchNorm(3, momentum=1.5)
    with pytest.raises(ValueError, match="eps"):
        LayerNorm(3, eps=0)
    with pytest.raises(ValueError, match="kind must be"):
        make_norm("batchnorm", 4)
    BatchNorm(3).eval()(torch.randn(1, 3))  # a single example is fine in eval mode


def test_shared_statistics_masks_are_the_lecture_axes():
    shape = (3, 4, 2, 2)
    idx = (0, 0, 0, 0)
    bn = shared_statistics_mask(BatchNorm(4), shape, idx)
    ln = shared_statistics_mask(GroupNorm(1, 4), shape, idx)
    inorm = shared_statistics_mask(InstanceNorm(4), shape, idx)
    gn = shared_statistics_mask(GroupNorm(2, 4), shape, idx)
    expected_bn = np.zeros(shape, bool); expected_bn[:, 0] = True
    expected_ln = np.zeros(shape, bool); expected_ln[0] = True
    expected_in = np.zeros(shape, bool); expected_in[0, 0] = True
    expected_gn = np.zeros(shape, bool); expected_gn[0, :2] = True
    for got, want in [(bn, expected_bn), (ln, expected_ln), (inorm, expected_in), (gn, expected_gn)]:
        np.testing.assert_array_equal(got, want)


# ----------------------------------------------------------------------------- chapter helpers

def test_per_worker_batchnorm_equals_torch_batchnorm_per_chunk():
    from lecturelib.normalization import PerWorkerBatchNorm

    gen = torch.Generator().manual_seed(3)
    ours = PerWorkerBatchNorm(3, images_per_worker=2, momentum=0.2)
    refs = [nn.BatchNorm2d(3, momentum=0.2) for _ in range(4)]
    for _ in range(2):
        x = torch.randn(8, 3, 4, 4, generator=gen) * 2 + 1
        y = ours(x)
        expected = torch.cat([ref(chunk) for ref, chunk in zip(refs, x.split(2))])
        torch.testing.assert_close(y, expected, atol=1e-5, rtol=1e-5)
    # the running averages are the mean of the workers' (linear in the statistics)
    torch.testing.assert_close(ours.running_mean, torch.stack([r.running_mean for r in refs]).mean(0))
    torch.testing.assert_close(ours.running_var, torch.stack([r.running_var for r in refs]).mean(0))
    # one worker holding the whole batch is ordinary batch norm
    whole, plain = PerWorkerBatchNorm(3, images_per_worker=8), BatchNorm(3)
    torch.testing.assert_close(whole(x), plain(x))
    with pytest.raises(ValueError, match="does not split into workers of 3"):
        PerWorkerBatchNorm(3, images_per_worker=3)(x)


def test_population_statistics_match_direct_computation():
    from lecturelib.normalization import deep_mlp, population_statistics

    torch.manual_seed(0)
    model = deep_mlp(2, 5, batchnorm=True, in_features=6)
    x = torch.randn(50, 6)
    stats = population_statistics(model, x, batch_size=16)
    first_input = model[1](model[0](x))  # Flatten -> Linear: what the first BatchNorm sees
    torch.testing.assert_close(stats[0][0], first_input.mean(0), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(stats[0][1], first_input.var(0), atol=1e-5, rtol=1e-5)
    assert len(stats) == 2


def test_model_builders_and_recorder():
    from lecturelib.normalization import PreactivationRecorder, deep_mlp, small_cnn
    from lecturelib.training import fit

    assert sum(isinstance(m, BatchNorm) for m in deep_mlp(4, 8, batchnorm=True)) == 4
    assert not any(isinstance(m, BatchNorm) for m in deep_mlp(4, 8, batchnorm=False))
    for kind in ("batch", "group", "layer", "instance", "none"):
        assert small_cnn(kind)(torch.randn(4, 1, 14, 14)).shape == (4, 10)
    x, y = torch.randn(40, 1, 4, 4), torch.randint(0, 10, (40,))
    model = deep_mlp(2, 8, batchnorm=True, in_features=16)
    rec = PreactivationRecorder(x, y, every=2)
    fit(model, (x, y), optimizer=torch.optim.SGD(model.parameters(), lr=0.1), batch_size=10,
        epochs=1, progress=False, device="cpu")
    fit(model, (x, y), optimizer=torch.optim.SGD(model.parameters(), lr=0.1), batch_size=10,
        epochs=1, progress=False, device="cpu", callbacks=[rec])
    assert rec.steps == [0, 2, 4]
    assert all(p[0] <= p[1] <= p[2] for p in rec.percentiles)
