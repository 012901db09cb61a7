"""Data augmentation as batched tensor operations, and test-time averaging.

Every function takes a float image ``(C, H, W)`` or a batch ``(N, C, H, W)`` on any device and
returns the same layout. Random functions draw each sample's parameters independently, all at once
(no per-image Python loop), from an explicit ``torch.Generator``; the parameters are drawn on the
generator's device and then moved to the images, so a CPU generator with a fixed seed gives the
same augmentations on CPU and GPU.

Where ``torchvision.transforms.v2.functional`` has the same operation, this module computes the
same numbers (``tests/test_augmentation.py`` checks it): crops and flips exactly; resampling
(``resized_crop`` / ``resize`` with ``antialias=False``, ``affine`` with bilinear interpolation)
and colour blends up to float rounding.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # ITU-R 601 luma, the weights torchvision uses
RESNET_SHORT_SIDE = (256, 480)  # He et al. 2016: short side in [256, 480], then a 224 crop
RESNET_CROP = 224
RESNET_TEST_SCALES = (224, 256, 384, 480, 640)


# ----------------------------------------------------------------------------- helpers

def _as_batch(x: Tensor, name: str = "x") -> tuple[Tensor, bool]:
    """``(C, H, W)`` -> ``(1, C, H, W)``; returns the batch and whether it was a single image."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (C, H, W) or (N, C, H, W), "
                        f"got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.ndim == 3:
        return x.unsqueeze(0), True
    if x.ndim == 4:
        return x, False
    raise ValueError(f"{name} must have shape (C, H, W) or (N, C, H, W), got {tuple(x.shape)}")


def _unbatch(x: Tensor, single: bool) -> Tensor:
    return x[0] if single else x


def _pair(size: int | Sequence[int], name: str = "size") -> tuple[int, int]:
    """``size`` as ``(height, width)``: an int means a square."""
    if isinstance(size, int) and not isinstance(size, bool):
        h = w = size
    elif isinstance(size, (tuple, list)) and len(size) == 2:
        h, w = size
    else:
        raise ValueError(f"{name} must be an int or a (height, width) pair, got {size!r}")
    if not all(isinstance(v, int) and v > 0 for v in (h, w)):
        raise ValueError(f"{name} must hold positive ints, got {size!r}")
    return int(h), int(w)


def _range(value: float | Sequence[float], name: str, center: float = 0.0,
           low: float = -math.inf) -> tuple[float, float]:
    """A number ``v`` means ``[center - v, center + v]``; a pair is taken as given."""
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"{name} must be non-negative, got {value}")
        lo, hi = center - value, center + value
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        lo, hi = float(value[0]), float(value[1])
    else:
        raise ValueError(f"{name} must be a number or a (min, max) pair, got {value!r}")
    if lo > hi:
        raise ValueError(f"{name} must satisfy min <= max, got {value!r}")
    return max(lo, low), hi


def _rand(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Uniform [0, 1) numbers drawn on the generator's device, returned on ``device``."""
    src = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=src).to(device)


def _uniform(n: int, lo: float, hi: float, generator, device) -> Tensor:
    return lo + (hi - lo) * _rand((n,), generator, device)


def _randint(n: int, high: Tensor, generator, device) -> Tensor:
    """Per-sample ``randint(0, high[i])`` (exclusive) as int64."""
    return (_rand((n,), generator, device) * high).floor().long().clamp_(max=high.long() - 1)


def _per_sample(value, n: int, name: str, device, dtype=torch.float32) -> Tensor:
    """A scalar or an ``(N,)`` sequence/tensor of per-sample parameters as an ``(N,)`` tensor."""
    t = torch.as_tensor(value, dtype=dtype, device=device)
    if t.ndim == 0:
        return t.expand(n)
    if t.shape != (n,):
        raise ValueError(f"{name} must be a scalar or have shape ({n},), got {tuple(t.shape)}")
    return t


# ----------------------------------------------------------------------------- flips

def horizontal_flip(x: Tensor) -> Tensor:
    """Mirror left-right: ``x[..., ::-1]``. ``x``: ``(C, H, W)`` or ``(N, C, H, W)``."""
    _as_batch(x)
    return x.flip(-1)


def vertical_flip(x: Tensor) -> Tensor:
    """Mirror top-bottom (rarely a symmetry of natural images)."""
    _as_batch(x)
    return x.flip(-2)


def random_horizontal_flip(x: Tensor, p: float = 0.5, generator: torch.Generator | None = None) -> Tensor:
    """Flip each image left-right with probability ``p``, independently."""
    return _random_flip(x, p, -1, generator)


def random_vertical_flip(x: Tensor, p: float = 0.5, generator: torch.Generator | None = None) -> Tensor:
    """Flip each image top-bottom with probability ``p``, independently."""
    return _random_flip(x, p, -2, generator)


def _random_flip(x: Tensor, p: float, dim: int, generator) -> Tensor:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"flip probability p must be in [0, 1], got {p}")
    xb, single = _as_batch(x)
    flip = _rand((xb.shape[0],), generator, xb.device) < p
    return _unbatch(torch.where(flip[:, None, None, None], xb.flip(dim), xb), single)


# ----------------------------------------------------------------------------- crops

def crop(x: Tensor, top: Tensor | int, left: Tensor | int, height: int, width: int) -> Tensor:
    """Cut a ``height x width`` window at ``(top, left)``, a different one per image.

    ``top``, ``left``: ints or int tensors ``(N,)``; windows must lie inside the image.
    One gather for the whole batch. Returns ``(N, C, height, width)`` (or ``(C, height, width)``).
    """
    xb, single = _as_batch(x)
    n, _, h, w = xb.shape
    top = _per_sample(top, n, "top", xb.device, torch.long)
    left = _per_sample(left, n, "left", xb.device, torch.long)
    if height > h or width > w or height <= 0 or width <= 0:
        raise ValueError(f"crop of {height}x{width} does not fit an image of {h}x{w}")
    if (top < 0).any() or (left < 0).any() or (top + height > h).any() or (left + width > w).any():
        raise ValueError(f"crop windows must lie inside the {h}x{w} image")
    rows = top[:, None] + torch.arange(height, device=xb.device)  # (N, height)
    cols = left[:, None] + torch.arange(width, device=xb.device)  # (N, width)
    batch = torch.arange(n, device=xb.device)[:, None, None]
    out = xb[batch, :, rows[:, :, None], cols[:, None, :]]  # (N, height, width, C)
    return _unbatch(out.permute(0, 3, 1, 2).contiguous(), single)


def random_crop(x: Tensor, size: int | Sequence[int], padding: int = 0,
                generator: torch.Generator | None = None, fill: float = 0.0) -> Tensor:
    """Pad by ``padding`` pixels of value ``fill`` on every side, then cut a random ``size`` window
    per image (a random translation by up to ``padding`` pixels when ``size`` is the image size).

    Same as ``torchvision.transforms.v2.RandomCrop(size, padding, fill=fill)`` on each image.
    """
    if not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding must be a non-negative int, got {padding!r}")
    xb, single = _as_batch(x)
    th, tw = _pair(size)
    if padding:
        xb = F.pad(xb, (padding, padding, padding, padding), value=fill)
    n, _, h, w = xb.shape
    if th > h or tw > w:
        raise ValueError(f"crop size {(th, tw)} is larger than the (padded) image {(h, w)}")
    top = _randint(n, torch.full((n,), h - th + 1, device=xb.device), generator, xb.device)
    left = _randint(n, torch.full((n,), w - tw + 1, device=xb.device), generator, xb.device)
    return _unbatch(crop(xb, top, left, th, tw), single)


def center_crop(x: Tensor, size: int | Sequence[int]) -> Tensor:
    """The central ``size`` window (torchvision's rounding of the offset)."""
    xb, single = _as_batch(x)
    th, tw = _pair(size)
    h, w = xb.shape[-2:]
    if th > h or tw > w:
        raise ValueError(f"crop size {(th, tw)} is larger than the image {(h, w)}")
    top, left = int(round((h - th) / 2.0)), int(round((w - tw) / 2.0))
    return _unbatch(xb[..., top:top + th, left:left + tw], single)


def five_crop(x: Tensor, size: int | Sequence[int]) -> Tensor:
    """Four corners and the centre, stacked: ``(5, N, C, h, w)`` (or ``(5, C, h, w)``), in
    torchvision's order (top-left, top-right, bottom-left, bottom-right, centre)."""
    _as_batch(x)
    th, tw = _pair(size)
    h, w = x.shape[-2:]
    if th > h or tw > w:
        raise ValueError(f"crop size {(th, tw)} is larger than the image {(h, w)}")
    return torch.stack([
        x[..., :th, :tw], x[..., :th, w - tw:], x[..., h - th:, :tw], x[..., h - th:, w - tw:],
        center_crop(x, (th, tw)),
    ])


def ten_crop(x: Tensor, size: int | Sequence[int]) -> Tensor:
    """The five crops of ``x`` and the five crops of its mirror image: ``(10, ...)``.

    ``ten_crop(x, s)[k]`` equals ``torchvision.transforms.v2.functional.ten_crop(x, s)[k]``.
    """
    return torch.cat([five_crop(x, size), five_crop(horizontal_flip(x), size)])


# ----------------------------------------------------------------------------- resampling

def _interp_matrix(src: Tensor, size_in: int) -> Tensor:
    """Bilinear weights ``(N, out, in)`` for sampling positions ``src`` ``(N, out)`` (pixel units,
    pixel centres at integers), clamped to the image as ``F.interpolate`` does."""
    src = src.clamp(0, size_in - 1)
    i0 = src.floor().long().clamp_(max=size_in - 1)
    i1 = (i0 + 1).clamp_(max=size_in - 1)
    frac = (src - i0.to(src.dtype)).unsqueeze(-1)
    return (F.one_hot(i0, size_in).to(src.dtype) * (1 - frac)
            + F.one_hot(i1, size_in).to(src.dtype) * frac)


def _resample_boxes(xb: Tensor, top: Tensor, left: Tensor, box_h: Tensor, box_w: Tensor,
                    scale_y: Tensor, scale_x: Tensor, out_h: int, out_w: int,
                    clamp_box: bool) -> Tensor:
    """Bilinear sampling of an ``out_h x out_w`` grid per image, separable in y and x.

    Output pixel ``i`` reads input row ``top + (i + 0.5) * scale_y - 0.5`` (align_corners=False),
    clamped to the box ``[top, top + box_h - 1]`` (``clamp_box``) or to the image.
    Two batched matrix products: ``Wy @ x @ Wx^T``.
    """
    _, _, h, w = xb.shape
    dt = xb.dtype
    iy = torch.arange(out_h, device=xb.device, dtype=dt)
    ix = torch.arange(out_w, device=xb.device, dtype=dt)
    sy = (iy[None] + 0.5) * scale_y[:, None] - 0.5
    sx = (ix[None] + 0.5) * scale_x[:, None] - 0.5
    if clamp_box:
        sy = torch.minimum(sy.clamp(min=0), (box_h - 1).to(dt)[:, None])
        sx = torch.minimum(sx.clamp(min=0), (box_w - 1).to(dt)[:, None])
    sy = sy + top.to(dt)[:, None]
    sx = sx + left.to(dt)[:, None]
    wy = _interp_matrix(sy, h)  # (N, out_h, H)
    wx = _interp_matrix(sx, w)  # (N, out_w, W)
    return wy[:, None] @ xb @ wx[:, None].transpose(-1, -2)


def resized_crop(x: Tensor, top: Tensor | int, left: Tensor | int, height: Tensor | int,
                 width: Tensor | int, size: int | Sequence[int]) -> Tensor:
    """Cut the box ``(top, left, height, width)`` (per image) and resize it bilinearly to ``size``.

    Equals ``torchvision.transforms.v2.functional.resized_crop(..., antialias=False)`` per image.
    """
    xb, single = _as_batch(x)
    n, _, h, w = xb.shape
    oh, ow = _pair(size)
    top, left, height, width = (_per_sample(v, n, name, xb.device, torch.long) for v, name in
                                ((top, "top"), (left, "left"), (height, "height"), (width, "width")))
    if (height <= 0).any() or (width <= 0).any() or (top < 0).any() or (left < 0).any() \
            or (top + height > h).any() or (left + width > w).any():
        raise ValueError(f"boxes must have positive size and lie inside the {h}x{w} image")
    out = _resample_boxes(xb, top, left, height, width, height.to(xb.dtype) / oh,
                          width.to(xb.dtype) / ow, oh, ow, clamp_box=True)
    return _unbatch(out, single)


def random_resized_crop_params(image_size: tuple[int, int], n: int,
                               scale: Sequence[float] = (0.08, 1.0),
                               ratio: Sequence[float] = (3 / 4, 4 / 3),
                               generator: torch.Generator | None = None,
                               device: torch.device | str = "cpu", attempts: int = 10) -> Tensor:
    """Boxes ``(N, 4)`` as ``(top, left, height, width)``, torchvision's RandomResizedCrop rule:
    area fraction ~ U(scale), log aspect ratio ~ U(log ratio); the first of ``attempts`` draws that
    fits the image, else the centre crop with the aspect ratio clamped to ``ratio``."""
    h, w = image_size
    if not (0 < scale[0] <= scale[1]):
        raise ValueError(f"scale must be (min, max) with 0 < min <= max, got {tuple(scale)}")
    if not (0 < ratio[0] <= ratio[1]):
        raise ValueError(f"ratio must be (min, max) with 0 < min <= max, got {tuple(ratio)}")
    device = torch.device(device)
    area = h * w
    u = _rand((n, attempts, 2), generator, device).double()
    target = area * (scale[0] + (scale[1] - scale[0]) * u[..., 0])
    lr = (math.log(ratio[0]), math.log(ratio[1]))
    aspect = torch.exp(lr[0] + (lr[1] - lr[0]) * u[..., 1])
    cw = torch.round(torch.sqrt(target * aspect)).long()
    ch = torch.round(torch.sqrt(target / aspect)).long()
    ok = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = ok.long().argmax(dim=1)  # first attempt that fits (0 if none)
    found = ok.any(dim=1)
    bh = ch.gather(1, first[:, None])[:, 0]
    bw = cw.gather(1, first[:, None])[:, 0]
    # fallback: centre crop with the aspect ratio clamped to `ratio`
    in_ratio = w / h
    if in_ratio < min(ratio):
        fw, fh = w, int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        fh, fw = h, int(round(h * max(ratio)))
    else:
        fw, fh = w, h
    bh = torch.where(found, bh, torch.full_like(bh, fh))
    bw = torch.where(found, bw, torch.full_like(bw, fw))
    top = torch.where(found, _randint(n, h - bh + 1, generator, device), (h - bh) // 2)
    left = torch.where(found, _randint(n, w - bw + 1, generator, device), (w - bw) // 2)
    return torch.stack([top, left, bh, bw], dim=1)


def random_resized_crop(x: Tensor, size: int | Sequence[int], scale: Sequence[float] = (0.08, 1.0),
                        ratio: Sequence[float] = (3 / 4, 4 / 3),
                        generator: torch.Generator | None = None) -> Tensor:
    """Inception-style crop: a random box (area fraction in ``scale``, aspect ratio in ``ratio``)
    per image, resized to ``size``. The box rule is torchvision's ``RandomResizedCrop``."""
    xb, single = _as_batch(x)
    boxes = random_resized_crop_params(xb.shape[-2:], xb.shape[0], scale, ratio, generator, xb.device)
    out = resized_crop(xb, boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3], size)
    return _unbatch(out, single)


def resized_shape(image_size: tuple[int, int], short_side: int) -> tuple[int, int]:
    """``(H, W)`` after resizing so the short side is ``short_side`` (torchvision's rounding)."""
    h, w = image_size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(short_side * long / short)
    return (new_long, short_side) if w <= h else (short_side, new_long)


def resize_short_side(x: Tensor, short_side: int, antialias: bool = False) -> Tensor:
    """Bilinear resize of the whole batch so the short side is ``short_side``.

    Equals ``torchvision.transforms.v2.functional.resize(x, short_side, antialias=antialias)``.
    """
    xb, single = _as_batch(x)
    if not isinstance(short_side, int) or short_side <= 0:
        raise ValueError(f"short_side must be a positive int, got {short_side!r}")
    shape = resized_shape(tuple(xb.shape[-2:]), short_side)
    out = F.interpolate(xb, size=shape, mode="bilinear", align_corners=False, antialias=antialias)
    return _unbatch(out, single)


def resnet_short_side_range(crop_size: int) -> tuple[int, int]:
    """ResNet's scale range [256, 480] for a 224 crop, rescaled to ``crop_size``."""
    if not isinstance(crop_size, int) or crop_size <= 0:
        raise ValueError(f"crop_size must be a positive int, got {crop_size!r}")
    return (round(crop_size * RESNET_SHORT_SIDE[0] / RESNET_CROP),
            round(crop_size * RESNET_SHORT_SIDE[1] / RESNET_CROP))


def resnet_scale_crop(x: Tensor, size: int, short_side: tuple[int, int] | None = None,
                      generator: torch.Generator | None = None) -> Tensor:
    """ResNet's scale augmentation: per image, a short side ``L ~ U{short_side}`` (both ends
    included), a bilinear resize to short side ``L``, and a random ``size x size`` crop.

    ``short_side`` defaults to ``resnet_short_side_range(size)``, i.e. [256, 480] for 224 crops.
    Resize and crop are done in one sampling step (no resized image is materialised); per image it
    equals ``crop(resize(x, L, antialias=False), top, left, size, size)``.
    """
    xb, single = _as_batch(x)
    n, _, h, w = xb.shape
    lo, hi = short_side if short_side is not None else resnet_short_side_range(size)
    if not (isinstance(lo, int) and isinstance(hi, int) and size <= lo <= hi):
        raise ValueError(f"short_side must be ints (lo, hi) with size={size} <= lo <= hi, "
                         f"got {short_side!r}")
    dev = xb.device
    L = lo + _randint(n, torch.full((n,), hi - lo + 1, device=dev), generator, dev)
    short, long = min(h, w), max(h, w)
    new_long = (L.double() * long / short).floor().long()  # int() as torchvision does
    new_h, new_w = (new_long, L) if w <= h else (L, new_long)
    top = _randint(n, new_h - size + 1, generator, dev)
    left = _randint(n, new_w - size + 1, generator, dev)
    dt = xb.dtype
    # pixel (i) of the crop is pixel (top + i) of the resized image, which reads input
    # row (top + i + 0.5) * H / new_h - 0.5: shift the grid by `top` output pixels.
    sy, sx = h / new_h.to(dt), w / new_w.to(dt)
    iy = torch.arange(size, device=dev, dtype=dt)[None] + top.to(dt)[:, None]
    ix = torch.arange(size, device=dev, dtype=dt)[None] + left.to(dt)[:, None]
    wy = _interp_matrix((iy + 0.5) * sy[:, None] - 0.5, h)
    wx = _interp_matrix((ix + 0.5) * sx[:, None] - 0.5, w)
    out = wy[:, None] @ xb @ wx[:, None].transpose(-1, -2)
    return _unbatch(out, single)


# ----------------------------------------------------------------------------- colour

def _grayscale(xb: Tensor) -> Tensor:
    """Luma ``(N, 1, H, W)``; a one-channel image is its own luma."""
    if xb.shape[1] == 1:
        return xb
    r, g, b = xb.unbind(1)
    return (r * GRAY_WEIGHTS[0] + g * GRAY_WEIGHTS[1] + b * GRAY_WEIGHTS[2]).unsqueeze(1)


def _blend(a: Tensor, b: Tensor, factor: Tensor) -> Tensor:
    f = factor[:, None, None, None]
    return (a * f + b * (1 - f)).clamp_(0, 1)


def adjust_brightness(x: Tensor, factor) -> Tensor:
    """``clamp(f * x, 0, 1)``; ``factor`` a number or one per image ``(N,)``. Images in [0, 1]."""
    xb, single = _as_batch(x)
    f = _check_factor(factor, xb, "brightness factor")
    return _unbatch((xb * f[:, None, None, None]).clamp_(0, 1), single)


def adjust_contrast(x: Tensor, factor) -> Tensor:
    """Blend with the image's mean grey level: ``clamp(f * x + (1 - f) * mean(gray(x)), 0, 1)``."""
    xb, single = _as_batch(x)
    _check_channels(xb)
    f = _check_factor(factor, xb, "contrast factor")
    mean = _grayscale(xb).mean(dim=(1, 2, 3), keepdim=True)
    return _unbatch(_blend(xb, mean, f), single)


def adjust_saturation(x: Tensor, factor) -> Tensor:
    """Blend with the image's own greyscale version: 0 is grey, 1 unchanged, >1 more vivid."""
    xb, single = _as_batch(x)
    _check_channels(xb)
    f = _check_factor(factor, xb, "saturation factor")
    if xb.shape[1] == 1:
        return x
    return _unbatch(_blend(xb, _grayscale(xb), f), single)


def _check_channels(xb: Tensor) -> None:
    if xb.shape[1] not in (1, 3):
        raise ValueError(f"colour adjustments need 1 or 3 channels, got {xb.shape[1]}")


def _check_factor(factor, xb: Tensor, name: str) -> Tensor:
    f = _per_sample(factor, xb.shape[0], name, xb.device, xb.dtype)
    if (f < 0).any():
        raise ValueError(f"{name} must be non-negative, got {factor!r}")
    return f


def color_jitter(x: Tensor, brightness: float | Sequence[float] = 0,
                 contrast: float | Sequence[float] = 0, saturation: float | Sequence[float] = 0,
                 generator: torch.Generator | None = None) -> Tensor:
    """Random brightness, contrast and saturation, one factor of each per image.

    A number ``b`` means a factor ~ U[max(0, 1 - b), 1 + b] (torchvision's ``ColorJitter``); a pair
    is the range itself. Applied in the fixed order brightness, contrast, saturation (torchvision
    shuffles the order per call). Images in [0, 1].
    """
    xb, single = _as_batch(x)
    _check_channels(xb)
    n, dev = xb.shape[0], xb.device
    ranges = [_range(v, name, center=1.0, low=0.0) for v, name in
              ((brightness, "brightness"), (contrast, "contrast"), (saturation, "saturation"))]
    u = _rand((n, 3), generator, dev).to(xb.dtype)
    factors = [lo + (hi - lo) * u[:, k] for k, (lo, hi) in enumerate(ranges)]
    out = xb
    if ranges[0] != (1.0, 1.0):
        out = adjust_brightness(out, factors[0])
    if ranges[1] != (1.0, 1.0):
        out = adjust_contrast(out, factors[1])
    if ranges[2] != (1.0, 1.0):
        out = adjust_saturation(out, factors[2])
    return _unbatch(out, single)


def fit_pca_color(images: Tensor | Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """PCA of the RGB values of every pixel of ``images`` (AlexNet's colour augmentation, step 1).

    ``images``: ``(N, 3, H, W)``, ``(3, H, W)``, or a list of ``(3, H, W)`` of different sizes.
    Returns ``eigvals`` ``(3,)`` (descending) and ``eigvecs`` ``(3, 3)`` (column ``k`` belongs to
    ``eigvals[k]``) of the 3x3 pixel covariance (unbiased, as ``numpy.cov``). Computed in float64.
    """
    if isinstance(images, Tensor):
        images = [images]
    pixels = []
    for i, img in enumerate(images):
        xb, _ = _as_batch(img, f"images[{i}]")
        if xb.shape[1] != 3:
            raise ValueError(f"fit_pca_color needs RGB images (3 channels), got {xb.shape[1]} "
                             f"in images[{i}]")
        pixels.append(xb.permute(1, 0, 2, 3).reshape(3, -1).double())
    if not pixels:
        raise ValueError("fit_pca_color needs at least one image")
    p = torch.cat(pixels, dim=1)
    if p.shape[1] < 2:
        raise ValueError("fit_pca_color needs at least two pixels")
    p = p - p.mean(dim=1, keepdim=True)
    cov = p @ p.T / (p.shape[1] - 1)
    eigvals, eigvecs = torch.linalg.eigh(cov)  # ascending
    dtype = images[0].dtype
    return eigvals.flip(0).to(dtype), eigvecs.flip(1).to(dtype)


def pca_color_offset(alpha: Tensor, eigvals: Tensor, eigvecs: Tensor) -> Tensor:
    """AlexNet's colour offset ``[p1 p2 p3] [a1 l1, a2 l2, a3 l3]^T`` per image: ``(N, 3)``."""
    return (alpha * eigvals) @ eigvecs.T


def pca_color_jitter(x: Tensor, eigvals: Tensor, eigvecs: Tensor, std: float = 0.1,
                     generator: torch.Generator | None = None) -> Tensor:
    """Add one colour offset per image along the principal RGB axes (Krizhevsky et al. 2012):
    ``alpha ~ N(0, std^2)`` per image and component, offset ``= eigvecs @ (alpha * eigvals)``,
    added to every pixel (no clamping, as in the paper). ``eigvals``, ``eigvecs``: from
    ``fit_pca_color``, in the same pixel units as ``x``."""
    xb, single = _as_batch(x)
    if xb.shape[1] != 3:
        raise ValueError(f"pca_color_jitter needs RGB images (3 channels), got {xb.shape[1]}")
    if eigvals.shape != (3,) or eigvecs.shape != (3, 3):
        raise ValueError(f"eigvals must be (3,) and eigvecs (3, 3), got {tuple(eigvals.shape)} "
                         f"and {tuple(eigvecs.shape)}")
    if std < 0:
        raise ValueError(f"std must be non-negative, got {std}")
    n = xb.shape[0]
    src = generator.device if generator is not None else xb.device
    alpha = (torch.randn((n, 3), generator=generator, device=src) * std).to(xb.device, xb.dtype)
    offset = pca_color_offset(alpha, eigvals.to(xb.device, xb.dtype), eigvecs.to(xb.device, xb.dtype))
    return _unbatch(xb + offset[:, :, None, None], single)


# ----------------------------------------------------------------------------- geometric warps

def _warp(xb: Tensor, inverse: Tensor, mode: str, padding_mode: str) -> Tensor:
    """Sample ``xb`` at ``inverse @ [u, v, 1]`` for every output pixel, where ``(u, v)`` are pixel
    coordinates relative to the image centre (torchvision's convention); ``inverse``: ``(N, 2, 3)``."""
    n, _, h, w = xb.shape
    dt = xb.dtype
    base = torch.empty(h, w, 3, dtype=dt, device=xb.device)
    base[..., 0] = torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, w, device=xb.device, dtype=dt)
    base[..., 1] = torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, h, device=xb.device,
                                  dtype=dt)[:, None]
    base[..., 2] = 1
    theta = inverse.to(dt).transpose(1, 2) / torch.tensor([0.5 * w, 0.5 * h], dtype=dt, device=xb.device)
    grid = (base.view(1, h * w, 3) @ theta).view(n, h, w, 2)
    return F.grid_sample(xb, grid, mode=mode, padding_mode=padding_mode, align_corners=False)


def affine_matrix(angle, translate, scale, shear, stretch=1.0) -> Tensor:
    """Forward affine maps ``(N, 2, 3)`` in centred pixel coordinates, float64.

    Linear part ``scale * R(angle) Sh_y(shear_y) Sh_x(shear_x) diag(sqrt(stretch), 1/sqrt(stretch))``
    (angles in degrees, clockwise on screen as torchvision; ``stretch`` is the width/height aspect
    change at constant area), then a shift by ``translate`` (pixels). ``angle``, ``scale``,
    ``stretch``: ``(N,)``; ``translate``, ``shear``: ``(N, 2)``.
    """
    rot = torch.deg2rad(angle.double())
    sx, sy = torch.deg2rad(shear[:, 0].double()), torch.deg2rad(shear[:, 1].double())
    a = torch.cos(rot - sy) / torch.cos(sy)
    b = -torch.cos(rot - sy) * torch.tan(sx) / torch.cos(sy) - torch.sin(rot)
    c = torch.sin(rot - sy) / torch.cos(sy)
    d = -torch.sin(rot - sy) * torch.tan(sx) / torch.cos(sy) + torch.cos(rot)
    lin = torch.stack([torch.stack([a, b], -1), torch.stack([c, d], -1)], -2) * scale.double()[:, None, None]
    st = stretch.double().sqrt()
    lin = lin * torch.stack([st, 1 / st], -1)[:, None, :]
    return torch.cat([lin, translate.double()[:, :, None]], dim=2)


def affine(x: Tensor, angle=0.0, translate=(0.0, 0.0), scale=1.0, shear=(0.0, 0.0), stretch=1.0,
           interpolation: str = "bilinear", padding_mode: str = "zeros") -> Tensor:
    """Affine warp about the image centre, parameters per image (numbers or ``(N,)`` / ``(N, 2)``).

    With ``stretch=1`` it equals ``torchvision.transforms.v2.functional.affine`` (bilinear, no fill).
    ``translate`` is ``(dx, dy)`` in pixels, ``shear`` ``(x, y)`` in degrees.
    """
    xb, single = _as_batch(x)
    n, dev = xb.shape[0], xb.device
    if interpolation not in ("bilinear", "nearest"):
        raise ValueError(f"interpolation must be 'bilinear' or 'nearest', got {interpolation!r}")
    angle = _per_sample(angle, n, "angle", dev, torch.float64)
    scale = _per_sample(scale, n, "scale", dev, torch.float64)
    stretch = _per_sample(stretch, n, "stretch", dev, torch.float64)
    if (scale <= 0).any() or (stretch <= 0).any():
        raise ValueError("scale and stretch must be positive")
    translate = torch.as_tensor(translate, dtype=torch.float64, device=dev).expand(n, 2)
    shear = torch.as_tensor(shear, dtype=torch.float64, device=dev).expand(n, 2)
    fwd = affine_matrix(angle, translate, scale, shear, stretch)
    inv_lin = torch.linalg.inv(fwd[:, :, :2])
    inverse = torch.cat([inv_lin, -(inv_lin @ fwd[:, :, 2:])], dim=2)
    return _unbatch(_warp(xb, inverse, interpolation, padding_mode), single)


def random_affine(x: Tensor, degrees: float | Sequence[float] = 0, translate: float = 0.0,
                  scale: Sequence[float] = (1.0, 1.0), shear: float | Sequence[float] = 0,
                  stretch: Sequence[float] = (1.0, 1.0), generator: torch.Generator | None = None,
                  interpolation: str = "bilinear", padding_mode: str = "zeros") -> Tensor:
    """Random translation, rotation, scale, stretch and shear, drawn independently per image.

    ``degrees`` ``d``: angle ~ U[-d, d]; ``translate`` ``t``: shift ~ U[-t, t] times width/height;
    ``scale``: U(range); ``stretch``: aspect change, log-uniform in the range; ``shear`` ``s``:
    x-shear ~ U[-s, s] degrees (a pair of pairs is not supported; a pair is the x-shear range).
    """
    xb, single = _as_batch(x)
    n, dev = xb.shape[0], xb.device
    h, w = xb.shape[-2:]
    if not 0 <= translate <= 1:
        raise ValueError(f"translate must be a fraction in [0, 1], got {translate}")
    d_lo, d_hi = _range(degrees, "degrees")
    s_lo, s_hi = _range(shear, "shear")
    if not (0 < scale[0] <= scale[1]):
        raise ValueError(f"scale must be (min, max) with 0 < min <= max, got {tuple(scale)}")
    if not (0 < stretch[0] <= stretch[1]):
        raise ValueError(f"stretch must be (min, max) with 0 < min <= max, got {tuple(stretch)}")
    u = _rand((n, 6), generator, dev).double()
    angle = d_lo + (d_hi - d_lo) * u[:, 0]
    shift = torch.stack([(2 * u[:, 1] - 1) * translate * w, (2 * u[:, 2] - 1) * translate * h], 1)
    sc = scale[0] + (scale[1] - scale[0]) * u[:, 3]
    log_st = math.log(stretch[0]) + (math.log(stretch[1]) - math.log(stretch[0])) * u[:, 4]
    sh = torch.stack([s_lo + (s_hi - s_lo) * u[:, 5], torch.zeros_like(u[:, 5])], 1)
    return _unbatch(affine(xb, angle, shift, sc, sh, log_st.exp(), interpolation, padding_mode),
                    single)


def lens_distortion(x: Tensor, k1=0.0, k2=0.0, padding_mode: str = "zeros") -> Tensor:
    """Radial lens distortion (Brown's model), coefficients per image (numbers or ``(N,)``).

    Output pixel at radius ``r`` (relative to the half-diagonal) reads the input at radius
    ``r (1 + k1 r^2 + k2 r^4)`` along the same ray: ``k > 0`` pulls the border in (barrel),
    ``k < 0`` pushes it out (pincushion). Bilinear, centre fixed.
    """
    xb, single = _as_batch(x)
    n, _, h, w = xb.shape
    dt, dev = xb.dtype, xb.device
    k1 = _per_sample(k1, n, "k1", dev, dt)
    k2 = _per_sample(k2, n, "k2", dev, dt)
    u = torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, w, device=dev, dtype=dt)[None, :].expand(h, w)
    v = torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, h, device=dev, dtype=dt)[:, None].expand(h, w)
    r2 = (u ** 2 + v ** 2) / (0.25 * (w ** 2 + h ** 2))
    factor = 1 + k1[:, None, None] * r2 + k2[:, None, None] * r2 ** 2  # (N, H, W)
    grid = torch.stack([u * factor / (0.5 * w), v * factor / (0.5 * h)], dim=-1)
    out = F.grid_sample(xb, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)
    return _unbatch(out, single)


def random_lens_distortion(x: Tensor, strength: float = 0.2, generator: torch.Generator | None = None,
                           padding_mode: str = "zeros") -> Tensor:
    """``lens_distortion`` with ``k1 ~ U[-strength, strength]`` per image (barrel or pincushion)."""
    if strength < 0:
        raise ValueError(f"strength must be non-negative, got {strength}")
    xb, single = _as_batch(x)
    k1 = _uniform(xb.shape[0], -strength, strength, generator, xb.device).to(xb.dtype)
    return _unbatch(lens_distortion(xb, k1, 0.0, padding_mode), single)


# ----------------------------------------------------------------------------- test time

@torch.no_grad()
def predict_proba(model: torch.nn.Module, x: Tensor, batch_size: int = 1024) -> Tensor:
    """Softmax of ``model`` on ``x`` ``(N, C, H, W)`` in eval mode, in batches: ``(N, K)``."""
    xb, _ = _as_batch(x)
    was_training = model.training
    model.eval()
    try:
        return torch.cat([F.softmax(model(xb[i:i + batch_size]), dim=1)
                          for i in range(0, xb.shape[0], batch_size)])
    finally:
        model.train(was_training)


def average_predictions(model: torch.nn.Module, views: Sequence[Tensor] | Tensor,
                        batch_size: int = 1024) -> Tensor:
    """Mean of the predicted probabilities over views ``(V, N, C, H, W)`` of the same ``N`` images
    (probabilities, not logits, are averaged)."""
    if len(views) == 0:
        raise ValueError("average_predictions needs at least one view")
    return torch.stack([predict_proba(model, v, batch_size) for v in views]).mean(0)


def flip_predict(model: torch.nn.Module, x: Tensor, batch_size: int = 1024) -> Tensor:
    """Average of the predictions on ``x`` and on its mirror image."""
    return average_predictions(model, [x, horizontal_flip(x)], batch_size)


def ten_crop_predict(model: torch.nn.Module, x: Tensor, size: int | Sequence[int],
                     batch_size: int = 1024) -> Tensor:
    """AlexNet / ResNet test-time averaging: mean probability over the ten crops of ``x``."""
    return average_predictions(model, ten_crop(x, size), batch_size)


def multi_scale_predict(model: torch.nn.Module, x: Tensor, size: int, scales: Sequence[int],
                        batch_size: int = 1024) -> Tensor:
    """ResNet's multi-scale test: resize the short side to each of ``scales`` and average the ten
    ``size`` crops of every scale (``len(scales) * 10`` views). Every scale must be >= ``size``."""
    if not scales or any(s < size for s in scales):
        raise ValueError(f"scales must be non-empty and each >= size={size}, got {scales!r}")
    return torch.stack([ten_crop_predict(model, resize_short_side(x, s), size, batch_size)
                        for s in scales]).mean(0)


Augmentation = Callable[[Tensor], Tensor]


def compose(*steps: Augmentation) -> Augmentation:
    """Chain batch augmentations: ``compose(f, g)(x) == g(f(x))``."""
    def pipeline(x: Tensor) -> Tensor:
        for step in steps:
            x = step(x)
        return x
    return pipeline
