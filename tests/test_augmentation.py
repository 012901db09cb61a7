"""lecturelib.augmentation against torchvision.transforms.v2.functional (and numpy / sklearn)."""

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torchvision.transforms.v2.functional as TF
from sklearn.decomposition import PCA

from lecturelib import augmentation as A


def images(n=4, c=3, h=20, w=26, seed=0):
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed))


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- flips and crops

def test_flips_equal_torchvision():
    x = images()
    assert torch.equal(A.horizontal_flip(x), TF.horizontal_flip(x))
    assert torch.equal(A.vertical_flip(x), TF.vertical_flip(x))
    assert torch.equal(A.horizontal_flip(x[0]), TF.horizontal_flip(x[0]))


def test_random_flip_is_per_sample_and_seeded():
    x = images(n=64)
    out = A.random_horizontal_flip(x, generator=gen(1))
    flipped = torch.tensor([torch.equal(o, TF.horizontal_flip(xi)) for o, xi in zip(out, x)])
    kept = torch.tensor([torch.equal(o, xi) for o, xi in zip(out, x)])
    assert bool((flipped ^ kept).all())  # every image is either flipped or untouched
    assert 10 < int(flipped.sum()) < 54  # both happen within one batch
    assert torch.equal(out, A.random_horizontal_flip(x, generator=gen(1)))
    assert torch.equal(A.random_horizontal_flip(x, p=0.0, generator=gen(1)), x)
    assert torch.equal(A.random_vertical_flip(x, p=1.0, generator=gen(1)), TF.vertical_flip(x))


def test_crop_per_sample_equals_torchvision():
    x = images(n=3)
    top, left = torch.tensor([0, 5, 9]), torch.tensor([3, 0, 12])
    out = A.crop(x, top, left, 11, 14)
    for i in range(3):
        assert torch.equal(out[i], TF.crop(x[i], int(top[i]), int(left[i]), 11, 14))


def test_random_crop_with_padding_matches_functional_crop_of_padded_image():
    x = images(n=32)
    out = A.random_crop(x, 20, padding=4, generator=gen(3))
    padded = TF.pad(x, [4])
    # recover each sample's window by search, then compare exactly with torchvision's crop
    offsets = set()
    for i in range(32):
        hits = [(t, l) for t in range(padded.shape[-2] - 20 + 1) for l in range(padded.shape[-1] - 20 + 1)
                if torch.equal(TF.crop(padded[i], t, l, 20, 20), out[i])]
        assert hits, f"sample {i} is not a crop of the padded image"
        offsets.add(hits[0])
    assert len(offsets) > 16  # windows are drawn independently per sample
    assert torch.equal(out, A.random_crop(x, 20, padding=4, generator=gen(3)))
    assert not torch.equal(out, A.random_crop(x, 20, padding=4, generator=gen(4)))


def test_center_five_and_ten_crop_equal_torchvision():
    for shape in [(3, 20, 26), (2, 3, 21, 17), (1, 1, 28, 28)]:
        x = torch.rand(*shape, generator=gen(5))
        for size in [8, (9, 12), 17]:
            assert torch.equal(A.center_crop(x, size), TF.center_crop(x, list(A._pair(size))))
            ours, theirs = A.ten_crop(x, size), TF.ten_crop(x, list(A._pair(size)))
            assert ours.shape[0] == 10 == len(theirs)
            for k in range(10):
                assert torch.equal(ours[k], theirs[k]), (shape, size, k)


def test_resized_crop_matches_torchvision_without_antialias():
    x = images(n=3, h=30, w=40)
    boxes = [(2, 5, 20, 30), (0, 0, 30, 40), (10, 3, 7, 11)]
    t, l, h, w = (torch.tensor(v) for v in zip(*boxes))
    for size in [16, (12, 25), 50]:  # down- and up-sampling
        out = A.resized_crop(x, t, l, h, w, size)
        for i, (ti, li, hi, wi) in enumerate(boxes):
            ref = TF.resized_crop(x[i], ti, li, hi, wi, list(A._pair(size)), antialias=False)
            torch.testing.assert_close(out[i], ref, atol=1e-5, rtol=0)


def test_random_resized_crop_boxes_follow_torchvision_rule():
    n, (h, w) = 4000, (30, 40)
    boxes = A.random_resized_crop_params((h, w), n, (0.2, 0.9), (0.5, 2.0), gen(0))
    top, left, bh, bw = boxes.T
    assert bool(((top >= 0) & (left >= 0) & (top + bh <= h) & (left + bw <= w)).all())
    frac = (bh * bw).double() / (h * w)
    assert 0.15 < frac.min() and frac.max() < 0.95  # rounding moves the area a little
    aspect = bw.double() / bh
    assert 0.4 < aspect.min() and aspect.max() < 2.5
    assert frac.std() > 0.1 and len({tuple(b.tolist()) for b in boxes}) > 1000
    # an impossible request falls back to torchvision's centre crop
    fb = A.random_resized_crop_params((10, 40), 5, (0.99, 1.0), (1.0, 1.0), gen(0))
    assert fb.tolist() == [[0, 15, 10, 10]] * 5


def test_random_resized_crop_equals_functional_api_with_its_boxes():
    x = images(n=6, h=30, w=40)
    out = A.random_resized_crop(x, 16, (0.3, 1.0), (0.75, 4 / 3), generator=gen(2))
    boxes = A.random_resized_crop_params((30, 40), 6, (0.3, 1.0), (0.75, 4 / 3), gen(2))
    for i, (t, l, h, w) in enumerate(boxes.tolist()):
        ref = TF.resized_crop(x[i], t, l, h, w, [16, 16], antialias=False)
        torch.testing.assert_close(out[i], ref, atol=1e-5, rtol=0)


def test_resize_short_side_equals_torchvision():
    x = images(n=2, h=30, w=45)
    for s in [20, 30, 64]:
        for aa in [False, True]:
            torch.testing.assert_close(A.resize_short_side(x, s, antialias=aa),
                                       TF.resize(x, [s], antialias=aa), atol=1e-6, rtol=0)


def test_resnet_range_and_scale_crop_equal_resize_then_crop():
    assert A.resnet_short_side_range(224) == (256, 480)
    assert A.resnet_short_side_range(28) == (32, 60)
    x = images(n=5, h=24, w=30)
    out = A.resnet_scale_crop(x, 20, (24, 40), generator=gen(7))
    assert out.shape == (5, 3, 20, 20)
    # find, per image, the L and window that torchvision reproduces
    for i in range(5):
        best = min(
            (float((TF.crop(TF.resize(x[i], [L], antialias=False), t, l, 20, 20) - out[i]).abs().max()), L)
            for L in range(24, 41)
            for r in [TF.resize(x[i], [L], antialias=False)]
            for t in range(r.shape[-2] - 19) for l in range(r.shape[-1] - 19)
        )
        assert best[0] < 1e-5, (i, best)


# ----------------------------------------------------------------------------- colour

@pytest.mark.parametrize("c", [1, 3])
def test_color_adjustments_equal_torchvision(c):
    x = images(n=3, c=c)
    f = [0.4, 1.0, 1.7]
    for ours, theirs in [(A.adjust_brightness, TF.adjust_brightness),
                         (A.adjust_contrast, TF.adjust_contrast),
                         (A.adjust_saturation, TF.adjust_saturation)]:
        out = ours(x, torch.tensor(f))
        for i in range(3):
            torch.testing.assert_close(out[i], theirs(x[i], f[i]), atol=1e-6, rtol=0)


def test_color_jitter_is_torchvision_ops_with_drawn_factors():
    x = images(n=8)
    out = A.color_jitter(x, 0.4, 0.4, 0.4, generator=gen(9))
    u = torch.rand(8, 3, generator=gen(9))
    factors = 0.6 + 0.8 * u
    for i in range(8):
        b, c, s = factors[i].tolist()
        ref = TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(x[i], b), c), s)
        torch.testing.assert_close(out[i], ref, atol=1e-6, rtol=0)
    assert torch.equal(A.color_jitter(x, generator=gen(9)), x)  # all ranges zero: identity


def test_fit_pca_color_matches_numpy_and_sklearn():
    x = images(n=3, h=10, w=12, seed=1)
    x[:, 1] = 0.7 * x[:, 0] + 0.3 * x[:, 1]  # correlated channels
    more = torch.rand(3, 7, 9, generator=gen(2))
    vals, vecs = A.fit_pca_color([x, more])
    pix = np.concatenate([x.permute(1, 0, 2, 3).reshape(3, -1).numpy(), more.reshape(3, -1).numpy()], 1)
    ref_vals, ref_vecs = np.linalg.eigh(np.cov(pix.astype(np.float64)))
    np.testing.assert_allclose(vals.numpy(), ref_vals[::-1], rtol=1e-5)
    pca = PCA(3).fit(pix.T.astype(np.float64))
    np.testing.assert_allclose(vals.numpy(), pca.explained_variance_, rtol=1e-5)
    for k in range(3):  # same axes up to sign
        assert abs(abs(float(np.dot(vecs[:, k].numpy(), pca.components_[k]))) - 1) < 1e-5


def test_pca_color_jitter_offsets_along_eigenvectors():
    eigvals = torch.tensor([0.05, 0.01, 0.002])
    eigvecs, _ = torch.linalg.qr(torch.randn(3, 3, generator=gen(0)))
    x = images(n=4000, h=2, w=2)
    out = A.pca_color_jitter(x, eigvals, eigvecs, std=0.5, generator=gen(1))
    offset = out - x
    assert torch.allclose(offset, offset[:, :, :1, :1].expand_as(offset), atol=1e-6)  # one colour/image
    alpha = torch.randn(4000, 3, generator=gen(1)) * 0.5
    torch.testing.assert_close(offset[:, :, 0, 0], A.pca_color_offset(alpha, eigvals, eigvecs),
                               atol=1e-6, rtol=1e-5)
    # coordinates along the eigenvectors have std = std * eigenvalue
    coords = offset[:, :, 0, 0] @ eigvecs
    torch.testing.assert_close(coords.std(0), 0.5 * eigvals, rtol=0.06, atol=0)


# ----------------------------------------------------------------------------- warps

@pytest.mark.parametrize("angle,translate,scale,shear", [
    (0.0, (0.0, 0.0), 1.0, (0.0, 0.0)),
    (30.0, (2.0, -3.0), 1.2, (0.0, 0.0)),
    (-45.0, (0.0, 1.0), 0.8, (15.0, -10.0)),
])
def test_affine_equals_torchvision(angle, translate, scale, shear):
    x = images(n=2, h=21, w=26)
    out = A.affine(x, angle, translate, scale, shear)
    ref = TF.affine(x, angle=angle, translate=list(translate), scale=scale, shear=list(shear),
                    interpolation=TF.InterpolationMode.BILINEAR)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_affine_per_sample_parameters_match_one_by_one():
    x = images(n=3, h=16, w=16)
    angles, scales = torch.tensor([-20.0, 0.0, 35.0]), torch.tensor([0.9, 1.0, 1.3])
    out = A.affine(x, angles, (1.0, 0.0), scales)
    for i in range(3):
        ref = TF.affine(x[i], angle=float(angles[i]), translate=[1, 0], scale=float(scales[i]),
                        shear=[0.0, 0.0], interpolation=TF.InterpolationMode.BILINEAR)
        torch.testing.assert_close(out[i], ref, atol=1e-5, rtol=0)


def test_stretch_scales_the_axes_on_a_ramp():
    h = w = 16
    ramp = torch.arange(w, dtype=torch.float64).expand(1, 1, h, w).clone()
    out = A.affine(ramp, stretch=4.0)  # width x2, height x1/2
    cx = (w - 1) / 2
    inner = slice(4, 12)
    expected = cx + (torch.arange(w, dtype=torch.float64) - cx) / 2  # sampled at half the offset
    torch.testing.assert_close(out[0, 0, inner, :], expected.expand(8, w), atol=1e-9, rtol=0)


def test_random_affine_is_seeded_and_per_sample():
    x = images(n=8, h=16, w=16)
    a = A.random_affine(x, 30, 0.1, (0.8, 1.2), 10, (0.8, 1.25), generator=gen(0))
    assert torch.equal(a, A.random_affine(x, 30, 0.1, (0.8, 1.2), 10, (0.8, 1.25), generator=gen(0)))
    y = x[:1].expand(8, -1, -1, -1)
    b = A.random_affine(y, 30, generator=gen(0))
    assert (b[1:] - b[:1]).abs().flatten(1).amax(1).min() > 1e-3  # every copy warped differently
    assert torch.equal(A.random_affine(x, generator=gen(0)), A.affine(x))


def test_lens_distortion():
    x = images(n=2, h=15, w=15)
    torch.testing.assert_close(A.lens_distortion(x, 0.0), x, atol=1e-5, rtol=0)
    out = A.lens_distortion(x, torch.tensor([0.3, -0.3]))
    torch.testing.assert_close(out[..., 7, 7], x[..., 7, 7], atol=1e-6, rtol=0)  # centre fixed
    # radial: commutes with a quarter turn of a square image
    torch.testing.assert_close(A.lens_distortion(torch.rot90(x, 1, (-2, -1)), 0.3),
                               torch.rot90(A.lens_distortion(x, 0.3), 1, (-2, -1)), atol=1e-5, rtol=0)
    # on a linear ramp along x, the middle row reads x * (1 + k r^2)
    ramp = (torch.arange(15, dtype=torch.float64) - 7).expand(1, 1, 15, 15).clone()
    k = 0.1
    u = torch.arange(15, dtype=torch.float64) - 7
    expected = u * (1 + k * u ** 2 / (0.25 * 2 * 15 ** 2))
    inside = slice(1, 14)  # the outermost columns read beyond the border (zeros)
    torch.testing.assert_close(A.lens_distortion(ramp, k)[0, 0, 7, inside], expected[inside], atol=1e-9, rtol=0)
    barrel = A.lens_distortion(torch.ones(1, 1, 15, 15), 0.5)
    assert barrel[0, 0, 0, 0] == 0  # corners read outside the image: barrel shrinks content
    r = A.random_lens_distortion(x, 0.3, generator=gen(0))
    assert torch.equal(r, A.random_lens_distortion(x, 0.3, generator=gen(0)))


# ----------------------------------------------------------------------------- test time

class _Pooled(nn.Module):
    """A tiny fully-convolutional classifier (any input size)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 5, 3)

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3))


def test_test_time_averaging_averages_probabilities():
    model = _Pooled()
    x = images(n=5, h=20, w=24)
    probs = A.ten_crop_predict(model, x, 16, batch_size=3)
    crops = TF.ten_crop(x, [16, 16])
    with torch.no_grad():
        ref = torch.stack([model(c).softmax(1) for c in crops]).mean(0)
    torch.testing.assert_close(probs, ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(probs.sum(1), torch.ones(5))
    flip = A.flip_predict(model, x)
    with torch.no_grad():
        torch.testing.assert_close(flip, (model(x).softmax(1) + model(x.flip(-1)).softmax(1)) / 2)
    ms = A.multi_scale_predict(model, x, 16, (20, 28))
    ref_ms = (A.ten_crop_predict(model, TF.resize(x, [20], antialias=False), 16)
              + A.ten_crop_predict(model, TF.resize(x, [28], antialias=False), 16)) / 2
    torch.testing.assert_close(ms, ref_ms)
    assert model.training  # mode restored


# ----------------------------------------------------------------------------- contracts

def test_bad_input_raises_clear_errors():
    x = images()
    with pytest.raises(TypeError, match="floating-point"):
        A.horizontal_flip(torch.zeros(3, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(C, H, W\) or \(N, C, H, W\)"):
        A.random_crop(torch.zeros(4, 4), 2)
    with pytest.raises(ValueError, match="larger than"):
        A.random_crop(x, 40)
    with pytest.raises(ValueError, match="padding"):
        A.random_crop(x, 4, padding=-1)
    with pytest.raises(ValueError, match="scale"):
        A.random_resized_crop(x, 8, scale=(0.9, 0.1))
    with pytest.raises(ValueError, match="3 channels"):
        A.fit_pca_color(torch.rand(2, 1, 4, 4))
    with pytest.raises(ValueError, match="brightness"):
        A.color_jitter(x, brightness=-1)
    with pytest.raises(ValueError, match="shape"):
        A.crop(x, torch.tensor([0, 1]), 0, 3, 3)
    with pytest.raises(ValueError, match="scales"):
        A.multi_scale_predict(_Pooled(), x, 16, (8,))
    with pytest.raises(ValueError, match="short_side"):
        A.resnet_scale_crop(x, 16, (10, 20))


def test_single_image_and_batch_agree():
    x = images(n=1)
    assert torch.equal(A.random_crop(x[0], 10, 2, gen(0)), A.random_crop(x, 10, 2, gen(0))[0])
    assert torch.equal(A.random_resized_crop(x[0], 8, generator=gen(0)),
                       A.random_resized_crop(x, 8, generator=gen(0))[0])
    assert A.color_jitter(x[0], 0.5, generator=gen(0)).shape == x[0].shape


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_with_a_cpu_generator():
    x = images(n=16)
    for fn in [lambda t, g: A.random_crop(t, 16, 4, g),
               lambda t, g: A.random_resized_crop(t, 12, generator=g),
               lambda t, g: A.color_jitter(t, 0.4, 0.4, 0.4, g),
               lambda t, g: A.random_affine(t, 20, 0.1, generator=g)]:
        torch.testing.assert_close(fn(x.cuda(), gen(0)).cpu(), fn(x, gen(0)), atol=1e-5, rtol=0)


def test_random_crop_fill_value():
    x = torch.full((2, 1, 6, 6), 5.0)
    out = A.random_crop(x, 6, padding=3, generator=gen(0), fill=-1.0)
    assert set(out.unique().tolist()) <= {5.0, -1.0} and (out == -1.0).any()
