"""Hidden tests for dropout (torch and NumPy)."""

import numpy as np
import pytest
import torch

from lecturelib import regularization as rg
from lecturelib.gradcheck import numerical_gradient_array, rel_error


def test_dropout_hidden_same_mask_as_torch_3d():
    x = torch.randn(4, 5, 6, generator=torch.Generator().manual_seed(1))
    ours = rg.dropout(x, 0.3, training=True, generator=torch.Generator().manual_seed(5))
    torch.manual_seed(5)
    theirs = torch.nn.functional.dropout(x, 0.3, training=True)
    torch.testing.assert_close(ours, theirs)
    assert torch.equal(rg.dropout(x, 0.3, training=False), x)


def test_dropout_hidden_rejects_bad_p():
    with pytest.raises(ValueError):
        rg.dropout(torch.ones(3), 1.5, training=True)


def test_dropout_forward_keeps_mean_and_scales_survivors():
    x = np.ones((200, 100))
    out, (mask, p, training) = rg.dropout_forward(x, 0.25, training=True, rng=np.random.default_rng(0))
    kept = out[out != 0]
    assert np.allclose(kept, 1 / 0.75) and abs(out.mean() - 1) < 0.03 and abs((out == 0).mean() - 0.25) < 0.02
    out_eval, (m_eval, _, _) = rg.dropout_forward(x, 0.25, training=False)
    assert m_eval is None and np.array_equal(out_eval, x) and out_eval is not x


def test_dropout_backward_gradcheck_4d():
    x = np.random.default_rng(1).standard_normal((2, 3, 2, 2))
    dout = np.random.default_rng(2).standard_normal(x.shape)
    _, cache = rg.dropout_forward(x, 0.4, training=True, rng=np.random.default_rng(3))
    f = lambda v: rg.dropout_forward(v, 0.4, training=True, rng=np.random.default_rng(3))[0]  # noqa: E731
    assert rel_error(rg.dropout_backward(dout, cache), numerical_gradient_array(f, x, dout)) < 1e-8
    with pytest.raises(ValueError):
        rg.dropout_backward(dout[:1], cache)
