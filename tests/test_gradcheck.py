import numpy as np
import pytest

from lecturelib.gradcheck import numerical_gradient, numerical_gradient_array, rel_error


def test_scalar_gradient_of_a_known_function():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 4))
    f = lambda v: np.sum(np.sin(v) * v**2)
    exact = np.cos(x) * x**2 + 2 * x * np.sin(x)
    assert rel_error(numerical_gradient(f, x), exact) < 1e-8


def test_array_gradient_with_upstream_gradient():
    rng = np.random.default_rng(1)
    x, w = rng.normal(size=(5, 3)), rng.normal(size=(3, 4))
    dout = rng.normal(size=(5, 4))
    before = x.copy()
    num = numerical_gradient_array(lambda v: v @ w, x, dout)
    assert rel_error(num, dout @ w.T) < 1e-9
    assert np.array_equal(x, before)  # perturbations were undone


def test_a_wrong_gradient_is_detected():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4,))
    num = numerical_gradient(lambda v: np.sum(v**3), x)
    assert rel_error(num, 3 * x**2) < 1e-8
    assert rel_error(num, 2 * x**2) > 0.1  # off by a constant factor: caught


def test_rel_error_properties_and_errors():
    a = np.array([1.0, -2.0, 3.0])
    assert rel_error(a, a) == 0.0
    assert rel_error(a, -a) == pytest.approx(1.0)
    assert rel_error(np.zeros(3), np.zeros(3)) == 0.0
    with pytest.raises(ValueError, match="equal shapes"):
        rel_error(a, a[:2])
    with pytest.raises(TypeError, match="float64"):
        numerical_gradient(np.sum, np.ones(3, dtype=np.float32))
    with pytest.raises(TypeError, match="floating-point"):
        numerical_gradient(np.sum, np.ones(3, dtype=np.int64))
