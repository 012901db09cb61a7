"""Hidden tests for the L-BFGS two-loop recursion."""

import numpy as np

from lecturelib.gradcheck import rel_error
from lecturelib.second_order import lbfgs_direction


def test_lbfgs_direction_hidden_one_pair_closed_form():
    rng = np.random.default_rng(11)
    n = 6
    s, y, g = rng.standard_normal(n), rng.standard_normal(n), rng.standard_normal(n)
    y = y + 3 * s  # keep s.y > 0
    rho, gamma = 1 / (y @ s), (s @ y) / (y @ y)
    V = np.eye(n) - rho * np.outer(y, s)
    H = V.T @ (gamma * np.eye(n)) @ V + rho * np.outer(s, s)
    assert rel_error(lbfgs_direction(g, [s], [y]), -H @ g) < 1e-10


def test_lbfgs_direction_hidden_secant_condition():
    """With the newest pair (s, y), the implied H maps y to s: direction(-y) = s... i.e. -H(y) = -s."""
    rng = np.random.default_rng(12)
    A = rng.standard_normal((5, 5))
    A = A @ A.T + 5 * np.eye(5)
    s_list = [rng.standard_normal(5) for _ in range(3)]
    y_list = [A @ s for s in s_list]
    assert rel_error(lbfgs_direction(y_list[-1], s_list, y_list), -s_list[-1]) < 1e-10
    g = rng.standard_normal(5)
    assert np.array_equal(lbfgs_direction(g, [], []), -g) and g is not None
