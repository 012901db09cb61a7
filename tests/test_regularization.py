import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lecturelib.gradcheck import numerical_gradient_array, rel_error
from lecturelib.regularization import (
    DropConnectLinear, Dropout, dropout, dropout_backward, dropout_forward, dropout_scale_at_test,
    elastic_net_penalty, l1_penalty, l2_penalty, mc_predict, stochastic_modules, weight_parameters,
)


# ----------------------------------------------------------------------------- penalties

def _params():
    g = torch.Generator().manual_seed(0)
    return [torch.randn(3, 4, generator=g, dtype=torch.float64), torch.randn(5, generator=g, dtype=torch.float64)]


def test_penalties_match_torch_norms():
    ps = _params()
    flat = torch.cat([p.flatten() for p in ps])
    assert torch.allclose(l2_penalty(ps), torch.linalg.vector_norm(flat, 2) ** 2)
    assert torch.allclose(l1_penalty(ps), torch.linalg.vector_norm(flat, 1))
    assert torch.allclose(elastic_net_penalty(ps, 0.3), 0.3 * flat.pow(2).sum() + flat.abs().sum())
    assert torch.allclose(elastic_net_penalty(ps, 0.0), l1_penalty(ps))
    assert torch.allclose(l2_penalty(ps[0]), (ps[0] ** 2).sum())  # a single tensor is accepted


def test_penalty_gradients():
    ps = [p.clone().requires_grad_() for p in _params()]
    (l2_penalty(ps) + 0.5 * l1_penalty(ps)).backward()
    for p in ps:
        assert torch.allclose(p.grad, 2 * p.detach() + 0.5 * p.detach().sign())


def test_penalty_bad_input():
    with pytest.raises(ValueError, match="at least one"):
        l2_penalty([])
    with pytest.raises(TypeError, match="torch.Tensor"):
        l1_penalty([np.ones(3)])
    with pytest.raises(ValueError, match="beta"):
        elastic_net_penalty(_params(), -1.0)


def test_weight_parameters_skips_biases():
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))
    ws = weight_parameters(model)
    assert len(ws) == 2 and all(w.dim() == 2 for w in ws)


def test_l2_in_loss_equals_sgd_weight_decay():
    torch.manual_seed(0)
    x, y = torch.randn(64, 5), torch.randint(0, 3, (64,))
    lam = 0.01
    a = nn.Linear(5, 3)
    b = nn.Linear(5, 3)
    b.load_state_dict(a.state_dict())
    opt_a = torch.optim.SGD(a.parameters(), lr=0.1)
    opt_b = torch.optim.SGD(b.parameters(), lr=0.1, weight_decay=2 * lam)
    for _ in range(20):
        opt_a.zero_grad()
        (F.cross_entropy(a(x), y) + lam * l2_penalty(a.parameters())).backward()
        opt_a.step()
        opt_b.zero_grad()
        F.cross_entropy(b(x), y).backward()
        opt_b.step()
    assert torch.allclose(a.weight, b.weight, atol=1e-6)
    assert not torch.allclose(a.weight, nn.Linear(5, 3).weight)


# ----------------------------------------------------------------------------- dropout (torch)

def test_dropout_same_mask_as_torch():
    x = torch.randn(8, 300)
    for p in (0.1, 0.5, 0.8):
        torch.manual_seed(3)
        ref = F.dropout(x, p, training=True)
        ours = dropout(x, p, training=True, generator=torch.Generator().manual_seed(3))
        assert torch.equal((ours != 0), (ref != 0))
        assert torch.allclose(ours, ref, rtol=1e-6, atol=1e-7)


def test_dropout_statistics_match_torch():
    x = torch.ones(200_000)
    p = 0.3
    torch.manual_seed(0)
    ref = F.dropout(x, p, training=True)
    ours = dropout(x, p, training=True, generator=torch.Generator().manual_seed(1))
    se = (p * (1 - p) / x.numel()) ** 0.5
    for out in (ours, ref):
        assert abs((out == 0).float().mean().item() - p) < 5 * se
        assert abs(out.mean().item() - 1.0) < 5 * se / (1 - p)  # inverted: E[out] = x
        assert torch.allclose(out[out != 0], torch.full_like(out[out != 0], 1 / (1 - p)))


def test_dropout_eval_and_edges():
    x = torch.randn(4, 5)
    assert torch.equal(dropout(x, 0.5, training=False), x)
    assert torch.equal(dropout(x, 0.0, training=True), x)
    assert torch.equal(dropout(x, 1.0, training=True), F.dropout(x, 1.0, training=True))
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    assert torch.equal(dropout(x, 0.5, training=True, generator=g1), dropout(x, 0.5, training=True, generator=g2))
    with pytest.raises(ValueError, match="probability of dropping"):
        dropout(x, 1.5, training=True)
    with pytest.raises(TypeError, match="floating-point"):
        dropout(torch.ones(3, dtype=torch.long), 0.5, training=True)


def test_dropout_gradient_matches_torch():
    x = torch.randn(6, 7, dtype=torch.float64)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    torch.manual_seed(11)
    F.dropout(xb, 0.4, training=True).sum().backward()
    dropout(xa, 0.4, training=True, generator=torch.Generator().manual_seed(11)).sum().backward()
    assert torch.allclose(xa.grad, xb.grad)


def test_dropout_module_matches_nn_dropout():
    x = torch.randn(10, 20)
    layer, ref = Dropout(0.25, generator=torch.Generator().manual_seed(2)), nn.Dropout(0.25)
    torch.manual_seed(2)
    assert torch.allclose(layer(x), ref(x))
    layer.eval(); ref.eval()
    assert torch.equal(layer(x), ref(x))


def test_scale_at_test_equals_inverted_in_expectation():
    x = torch.randn(50, dtype=torch.float64)
    p, n = 0.4, 20_000
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([dropout_scale_at_test(x, p, training=True, generator=g) for _ in range(n)])
    test_out = dropout_scale_at_test(x, p, training=False)
    assert torch.allclose(test_out, (1 - p) * x)
    se = x.abs().max() * ((p * (1 - p)) / n) ** 0.5
    assert (draws.mean(0) - test_out).abs().max() < 5 * se
    # the same mask: slide variant = (1 - p) * inverted dropout
    a = dropout_scale_at_test(x, p, training=True, generator=torch.Generator().manual_seed(5))
    b = dropout(x, p, training=True, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(a, (1 - p) * b)


# ----------------------------------------------------------------------------- dropout (NumPy)

def test_numpy_dropout_forward_statistics_and_cache():
    rng = np.random.default_rng(0)
    x = np.ones((500, 400))
    out, (mask, p, training) = dropout_forward(x, 0.3, training=True, rng=rng)
    assert training and p == 0.3
    assert abs((out == 0).mean() - 0.3) < 0.01 and abs(out.mean() - 1.0) < 0.02
    assert np.array_equal(out, x * mask)
    assert set(np.unique(mask)) == {0.0, 1 / 0.7}
    out_eval, cache = dropout_forward(x, 0.3, training=False)
    assert np.array_equal(out_eval, x) and cache[0] is None
    out2, _ = dropout_forward(x, 0.3, training=True, rng=np.random.default_rng(0))
    assert np.array_equal(out, out2)


def test_numpy_dropout_backward_gradcheck():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 6))
    dout = rng.standard_normal((5, 6))
    for training in (True, False):
        _, cache = dropout_forward(x, 0.4, training=training, rng=np.random.default_rng(2))
        dx = dropout_backward(dout, cache)
        # the same mask in every call of f: re-seed the generator each time
        f = lambda v: dropout_forward(v, 0.4, training=training, rng=np.random.default_rng(2))[0]
        assert rel_error(dx, numerical_gradient_array(f, x, dout)) < 1e-8


def test_numpy_dropout_matches_torch_with_the_same_mask():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 9))
    out, (mask, p, _) = dropout_forward(x, 0.5, training=True, rng=rng)
    keep = torch.from_numpy(mask != 0)
    xt = torch.from_numpy(x).requires_grad_()
    ref = xt * keep / (1 - p)  # torch's dropout formula with this mask
    dout = rng.standard_normal(x.shape)
    ref.backward(torch.from_numpy(dout))
    assert np.allclose(out, ref.detach().numpy())
    assert np.allclose(dropout_backward(dout, (mask, p, True)), xt.grad.numpy())


def test_numpy_dropout_bad_input():
    with pytest.raises(TypeError, match="floating-point NumPy"):
        dropout_forward(np.arange(3), 0.5, training=True)
    with pytest.raises(ValueError, match="probability of dropping"):
        dropout_forward(np.ones(3), -0.1, training=True)
    _, cache = dropout_forward(np.ones((2, 3)), 0.5, training=True, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="shape"):
        dropout_backward(np.ones((3, 2)), cache)


# ----------------------------------------------------------------------------- DropConnect

def test_dropconnect_eval_equals_nn_linear():
    torch.manual_seed(0)
    layer = DropConnectLinear(7, 4, p=0.5)
    ref = nn.Linear(7, 4)
    ref.load_state_dict(layer.state_dict())
    x = torch.randn(10, 7)
    layer.eval()
    assert torch.allclose(layer(x), ref(x))
    assert layer.weight.shape == ref.weight.shape and layer.bias.shape == ref.bias.shape


def test_dropconnect_init_matches_nn_linear():
    torch.manual_seed(4)
    a = DropConnectLinear(30, 20, p=0.5)
    torch.manual_seed(4)
    b = nn.Linear(30, 20)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)


def test_dropconnect_training_masks_weights():
    layer = DropConnectLinear(6, 3, p=0.5, generator=torch.Generator().manual_seed(0))
    x = torch.eye(6)  # row i of the output is column i of the effective weight + bias
    w_eff = (layer(x) - layer.bias).T.detach()
    dropped = w_eff == 0
    assert 0 < dropped.sum() < w_eff.numel()
    assert torch.allclose(w_eff[~dropped], 2 * layer.weight.detach()[~dropped])
    # expectation over masks is the eval-mode layer
    g = torch.Generator().manual_seed(1)
    layer.generator = g
    xs = torch.randn(3, 6, dtype=torch.float32)
    mean = torch.stack([layer(xs) for _ in range(20_000)]).mean(0).detach()
    layer.eval()
    assert torch.allclose(mean, layer(xs).detach(), atol=0.05)


def test_dropconnect_gradient_only_through_kept_weights():
    layer = DropConnectLinear(5, 2, p=0.5, generator=torch.Generator().manual_seed(3))
    x = torch.randn(4, 5)
    layer(x).sum().backward()
    g = torch.Generator().manual_seed(3)
    mask = torch.empty(2, 5).bernoulli_(0.5, generator=g)
    expected = 2 * mask * x.sum(0)
    assert torch.allclose(layer.weight.grad, expected, atol=1e-6)


def test_dropconnect_bad_input():
    with pytest.raises(ValueError, match="in_features"):
        DropConnectLinear(0, 3)
    with pytest.raises(ValueError, match="probability"):
        DropConnectLinear(3, 3, p=2.0)
    with pytest.raises(ValueError, match="p in"):
        DropConnectLinear(3, 3, p=1.0)
    with pytest.raises(ValueError, match="last dimension 3"):
        DropConnectLinear(3, 2)(torch.randn(4, 5))


# ----------------------------------------------------------------------------- Monte-Carlo

def _net(layer):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), layer, nn.Linear(16, 3))


def test_mc_predict_is_the_mean_of_masked_passes():
    model = _net(nn.Dropout(0.5))
    x = torch.randn(12, 8)
    torch.manual_seed(5)
    probs = mc_predict(model, x, 30)
    torch.manual_seed(5)
    model.train()
    manual = torch.stack([model(x).softmax(-1) for _ in range(30)]).mean(0).detach()
    assert torch.allclose(probs, manual, atol=1e-6)
    assert torch.allclose(probs.sum(-1), torch.ones(12))
    torch.manual_seed(5)
    samples = mc_predict(model, x, 30, return_samples=True)
    assert samples.shape == (30, 12, 3) and torch.allclose(samples.mean(0), probs, atol=1e-6)


def test_mc_predict_linear_net_converges_to_scaled_output():
    # with no nonlinearity after the mask, E_z[logits] is exactly the eval-mode logits
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), Dropout(0.5), nn.Linear(16, 3))
    x = torch.randn(5, 8)
    model.train()
    logits = torch.stack([model(x) for _ in range(20_000)]).mean(0).detach()
    model.eval()
    assert torch.allclose(logits, model(x).detach(), atol=0.05)


def test_mc_predict_keeps_modes_and_batchnorm_in_eval():
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), DropConnectLinear(16, 3, p=0.3))
    model.train()
    before = model[1].running_mean.clone()
    mc_predict(model, torch.randn(6, 8), 5)
    assert torch.equal(model[1].running_mean, before)  # BN stayed in eval mode
    assert all(m.training for m in model.modules())
    assert len(stochastic_modules(model)) == 1


def test_mc_predict_bad_input():
    with pytest.raises(ValueError, match="n_samples"):
        mc_predict(_net(nn.Dropout(0.5)), torch.randn(2, 8), 0)
    with pytest.raises(ValueError, match="dropout or DropConnect"):
        mc_predict(_net(nn.Identity()), torch.randn(2, 8), 3)
