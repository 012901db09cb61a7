"""The one place that says which functions are homework exercises.

An exercise is a function (or method) named by its dotted path, e.g.
``lecturelib.optim.sgd_update`` or ``lecturelib.module.Class.method``. ``release`` keeps its
signature and docstring and replaces its body with ``raise NotImplementedError(<hint>)``; ``check``
and ``grade`` score it by the tests whose function names match ``tests`` (fnmatch patterns, without
the ``[parameters]`` suffix) in ``tests/test_<chapter>.py`` (public, shipped to students) and
``homework/hidden_tests/test_<chapter>_hidden.py`` (kept by the instructor).

A name that does not exist makes ``release`` fail with an error naming it, so this list only holds
functions that exist; the tests check that every exercise has public tests and that they all fail
on the untouched release.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Exercise:
    """One function students implement.

    ``name``: dotted path ``lecturelib.<chapter>.<function>`` or ``lecturelib.<chapter>.<Class>.<method>``.
    ``points``: what it is worth. ``hint``: shown in the ``NotImplementedError`` and by ``check``.
    ``tests``: patterns on test function names, ``*`` and ``?`` wildcards; a pattern with ``[``
    also matches the parametrize id, e.g. ``"test_trajectory_equals_torch[adam*]"``. Default
    ``("test_<function>*",)``.
    """

    name: str
    points: float
    hint: str
    tests: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        parts = self.name.split(".")
        if len(parts) < 3 or parts[0] != "lecturelib" or not all(p.isidentifier() for p in parts):
            raise ValueError(
                f"exercise name must look like 'lecturelib.<module>.<function>', got {self.name!r}"
            )
        if not self.points > 0:
            raise ValueError(f"exercise {self.name}: points must be > 0, got {self.points!r}")
        if not self.hint.strip():
            raise ValueError(f"exercise {self.name}: a hint is required")
        if isinstance(self.tests, str):
            raise TypeError(f"exercise {self.name}: tests must be a tuple of patterns, not a string")

    @property
    def module(self) -> str:
        """``lecturelib.optim``"""
        return ".".join(self.name.split(".")[:2])

    @property
    def chapter(self) -> str:
        """``optim``: the module's short name, also the test file's ``tests/test_<chapter>.py``."""
        return self.name.split(".")[1]

    @property
    def qualname(self) -> str:
        """``sgd_update`` or ``Class.method``"""
        return ".".join(self.name.split(".")[2:])

    @property
    def function(self) -> str:
        return self.name.split(".")[-1]

    @property
    def path(self) -> str:
        """Source file relative to the repository root, ``lecturelib/optim.py``."""
        return f"lecturelib/{self.chapter}.py"

    @property
    def test_patterns(self) -> tuple[str, ...]:
        return self.tests or (f"test_{self.function}*",)

    def covers(self, test_name: str) -> bool:
        """Whether the test function ``test_name`` (``[params]`` allowed) scores this exercise."""
        return any(match_test(p, test_name) for p in self.test_patterns)


def match_test(pattern: str, test_name: str) -> bool:
    """Whether ``test_name`` (maybe with ``[id]``) matches ``pattern`` (``*``/``?`` wildcards).

    Without ``[`` in the pattern only the function name counts, so all parametrizations match.
    """
    if "[" not in pattern:
        return fnmatch.fnmatchcase(test_name.split("[", 1)[0], pattern)
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, test_name) is not None


def public_test_file(chapter: str) -> str:
    return f"tests/test_{chapter}.py"


def hidden_test_file(chapter: str) -> str:
    return f"test_{chapter}_hidden.py"


def chapters(exercises: Sequence[Exercise]) -> list[str]:
    """Chapters in declaration order, each once."""
    return list(dict.fromkeys(e.chapter for e in exercises))


def select(exercises: Sequence[Exercise], chapter: str | None) -> list[Exercise]:
    """The exercises of one chapter or all of them. ``chapter``: the module (``optim``), the
    notebook (``02_optimization``, ``chapters/02_optimization.ipynb``), the test file
    (``test_optim``) or one exercise (``adam_update``); ``None`` or ``all``: every exercise."""
    if chapter is None or chapter in ("all", ""):
        return list(exercises)
    key = chapter.strip().removesuffix(".py").removesuffix(".ipynb").rsplit("/", 1)[-1]
    key = key.removeprefix("test_").lstrip("0123456789").lstrip("_")

    def fits(e: Exercise) -> bool:
        if chapter in (e.name, e.function, e.qualname) or key == e.chapter:
            return True
        return len(key) >= 4 and (key.startswith(e.chapter) or e.chapter.startswith(key))

    chosen = [e for e in exercises if chapter in (e.name, e.function, e.qualname)] or \
        [e for e in exercises if fits(e)]
    if not chosen:
        raise ValueError(
            f"no exercises in chapter {chapter!r}; chapters with exercises: {', '.join(chapters(exercises))}"
        )
    return chosen


def validate(exercises: Sequence[Exercise]) -> None:
    names = [e.name for e in exercises]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"exercises declared twice: {', '.join(dup)}")


def _ex(name: str, points: float, hint: str, *tests: str) -> Exercise:
    return Exercise(name, points, hint, tuple(tests))


EXERCISES: tuple[Exercise, ...] = (
    # --- 01 normalization: the NumPy forward/backward passes --------------------------------
    _ex("lecturelib.normalization.normalize_forward", 2,
        "mean and biased variance over `axes` with keepdims=True; xhat = (x - mean) / sqrt(var + eps); "
        "the cache holds what the backward pass needs: (xhat, inv_std, axes).",
        "test_normalize_core_gradient*", "test_normalize_forward_*"),
    _ex("lecturelib.normalization.normalize_backward", 3,
        "differentiate through the mean and the variance: dx = inv_std * (dxhat - mean(dxhat) - "
        "xhat * mean(dxhat * xhat)), means over the normalized axes.",
        "test_normalize_core_gradient*", "test_normalize_backward_*"),
    _ex("lecturelib.normalization.batchnorm_forward", 3,
        "validate shapes and mode; train: statistics over axes (0, 2, 3...) via normalize_forward, "
        "running averages with the unbiased variance m/(m-1); test: use the running averages.",
        "test_batchnorm_train_output_is_standardized", "test_batchnorm_numpy_matches_torch*",
        "test_batchnorm_forward_*"),
    _ex("lecturelib.normalization.batchnorm_backward", 3,
        "dgamma = sum(dout * xhat), dbeta = sum(dout) over all but the channel axis; dxhat = dout * gamma; "
        "train: normalize_backward, test: the layer is affine, dx = dxhat * inv_std.",
        "test_batchnorm_gradients*", "test_batchnorm_backward_*"),
    _ex("lecturelib.normalization.layernorm_forward", 2,
        "normalize each example over all its feature axes (1, ..., ndim-1), then gamma * xhat + beta.",
        "test_layernorm_gradients_and_match_torch", "test_layernorm_forward_*"),
    _ex("lecturelib.normalization.layernorm_backward", 2,
        "dgamma and dbeta sum over the batch axis; dx = normalize_backward(dout * gamma, core).",
        "test_layernorm_gradients_and_match_torch", "test_layernorm_backward_*"),
    _ex("lecturelib.normalization.groupnorm_forward", 2,
        "reshape (N, C, H, W) to (N, G, C // G, H, W), normalize over axes (2, 3, 4), reshape back, "
        "then the per-channel affine.",
        "test_groupnorm_gradients_and_match_torch*", "test_groupnorm_forward_*"),
    _ex("lecturelib.normalization.groupnorm_backward", 2,
        "per-channel dgamma, dbeta over axes (0, 2, 3); push dout * gamma through normalize_backward in "
        "the grouped shape stored in the cache, then reshape back.",
        "test_groupnorm_gradients_and_match_torch*", "test_groupnorm_backward_*"),
    # --- 02 optim: the update rules (in place on x and the state tensors) -------------------
    _ex("lecturelib.optim.sgd_update", 1, "x -= lr * dx, in place (x.add_).",
        "test_trajectory_equals_torch[sgd*]", "test_sgd_update_*"),
    _ex("lecturelib.optim.sgd_momentum_update", 1,
        "v = rho * v + dx, then x -= lr * v; both in place.",
        "test_trajectory_equals_torch[momentum]", "test_momentum_with_schedule_equals_torch[False]",
        "test_sgd_momentum_update_*"),
    _ex("lecturelib.optim.sgd_nesterov_update", 2,
        "keep old_b = b.clone(); b = rho * b + dx; x += lr * (rho * old_b - (1 + rho) * b).",
        "test_trajectory_equals_torch[nesterov]", "test_momentum_with_schedule_equals_torch[True]",
        "test_nesterov_two_forms_agree", "test_sgd_nesterov_update_*"),
    _ex("lecturelib.optim.adagrad_update", 1,
        "grad_squared += dx * dx; x -= lr * dx / (sqrt(grad_squared) + eps); in place.",
        "test_trajectory_equals_torch[adagrad*]", "test_adagrad_update_*"),
    _ex("lecturelib.optim.rmsprop_update", 1,
        "grad_squared = alpha * grad_squared + (1 - alpha) * dx * dx; x -= lr * dx / (sqrt(grad_squared) + eps).",
        "test_trajectory_equals_torch[rmsprop*]", "test_rmsprop_update_*"),
    _ex("lecturelib.optim.adam_update", 2,
        "first and second moments, bias-corrected by 1 - beta ** t (t starts at 1: reject t < 1 with "
        "ValueError), then x -= lr * m_hat / (sqrt(v_hat) + eps).",
        "test_trajectory_equals_torch[adam*]", "test_adam_first_step_is_lr_times_sign", "test_adam_update_*"),
    # --- 03 second order: L-BFGS --------------------------------------------------------------
    _ex("lecturelib.second_order.lbfgs_direction", 4,
        "two loops (Nocedal & Wright, Algorithm 7.4): newest to oldest compute alpha_i = rho_i s_i.q and "
        "q -= alpha_i y_i; scale by gamma = s.y / y.y of the newest pair; oldest to newest add "
        "(alpha_i - rho_i y_i.q) s_i; return -q. Unequal list lengths: ValueError 'as many'.",
        "test_lbfgs_direction*", "test_lbfgs_with_full_history_matches_bfgs_on_quadratic",
        "test_lbfgs_keeps_only_history_pairs"),
    # --- 05 regularization: dropout -------------------------------------------------------------
    _ex("lecturelib.regularization.dropout", 2,
        "validate p with _check_p; identity when not training; otherwise draw the mask with "
        "_keep_mask(x.shape, 1 - p, x, generator) (torch's way) and return x * mask / (1 - p).",
        "test_dropout_same_mask_as_torch", "test_dropout_statistics_match_torch", "test_dropout_eval_and_edges",
        "test_dropout_gradient_matches_torch", "test_dropout_hidden_*"),
    _ex("lecturelib.regularization.dropout_forward", 2,
        "inverted dropout in NumPy: mask = (rng.random(x.shape) < 1 - p) / (1 - p); out = x * mask; "
        "eval (or p == 0): a copy of x and mask None. Cache (mask, p, training).",
        "test_numpy_dropout_forward_statistics_and_cache", "test_numpy_dropout_bad_input",
        "test_dropout_forward_*"),
    _ex("lecturelib.regularization.dropout_backward", 1,
        "dx = dout * mask (a copy of dout when the mask is None); reject a dout of the wrong shape.",
        "test_numpy_dropout_backward_gradcheck", "test_numpy_dropout_matches_torch_with_the_same_mask",
        "test_dropout_backward_*"),
    # --- 06 augmentation: PCA colour jitter and ten-crop -------------------------------------------
    _ex("lecturelib.augmentation.fit_pca_color", 2,
        "pixels as a (3, P) float64 matrix, centred; unbiased covariance; torch.linalg.eigh is ascending: "
        "flip to descending eigenvalues and matching eigenvector columns.",
        "test_fit_pca_color*"),
    _ex("lecturelib.augmentation.pca_color_jitter", 2,
        "alpha ~ N(0, std^2) of shape (N, 3) from `generator`; offset = (alpha * eigvals) @ eigvecs.T "
        "(pca_color_offset); add it to every pixel of each image.",
        "test_pca_color_jitter*"),
    _ex("lecturelib.augmentation.five_crop", 1,
        "top-left, top-right, bottom-left, bottom-right, centre (center_crop), stacked on a new first axis.",
        "test_center_five_and_ten_crop_equal_torchvision", "test_five_crop_*"),
    _ex("lecturelib.augmentation.ten_crop", 1,
        "the five crops of x followed by the five crops of its horizontal flip.",
        "test_center_five_and_ten_crop_equal_torchvision", "test_ten_crop_*"),
)

validate(EXERCISES)
