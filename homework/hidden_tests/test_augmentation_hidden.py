"""Hidden tests for PCA colour jitter and five/ten-crop."""

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from lecturelib import augmentation as au


def test_fit_pca_color_hidden_matches_numpy_eigh():
    x = torch.rand(3, 3, 7, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x[:, 1] = 0.5 * x[:, 0] + 0.1 * x[:, 1]
    vals, vecs = au.fit_pca_color(x)
    pix = x.permute(1, 0, 2, 3).reshape(3, -1).numpy()
    ref_vals, ref_vecs = np.linalg.eigh(np.cov(pix))
    assert np.allclose(vals.numpy(), ref_vals[::-1], rtol=1e-10)
    for k in range(3):  # eigenvectors up to sign
        assert abs(abs(vecs[:, k].numpy() @ ref_vecs[:, 2 - k]) - 1) < 1e-8


def test_pca_color_jitter_hidden_offset_is_per_image_constant():
    x = torch.rand(4, 3, 5, 6, generator=torch.Generator().manual_seed(1))
    vals, vecs = au.fit_pca_color(x)
    out = au.pca_color_jitter(x, vals, vecs, std=0.5, generator=torch.Generator().manual_seed(2))
    diff = out - x
    assert torch.allclose(diff, diff[:, :, :1, :1].expand_as(diff), atol=1e-6)
    gen = torch.Generator().manual_seed(2)
    alpha = torch.randn((4, 3), generator=gen) * 0.5
    torch.testing.assert_close(diff[:, :, 0, 0], (alpha * vals) @ vecs.T, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(au.pca_color_jitter(x, vals, vecs, std=0.0), x)


@pytest.mark.parametrize("size", [3, (2, 4)])
def test_five_crop_matches_torchvision_odd_image(size):
    x = torch.arange(2 * 3 * 7 * 9, dtype=torch.float32).reshape(2, 3, 7, 9)
    ours = au.five_crop(x, size)
    for k, ref in enumerate(TF.five_crop(x, size)):
        assert torch.equal(ours[k], ref)


def test_ten_crop_matches_torchvision_single_image():
    x = torch.arange(3 * 8 * 6, dtype=torch.float32).reshape(3, 8, 6)
    ours = au.ten_crop(x, (5, 3))
    refs = TF.ten_crop(x, [5, 3])
    assert ours.shape[0] == 10
    for k, ref in enumerate(refs):
        assert torch.equal(ours[k], ref)
