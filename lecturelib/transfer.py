"""Transfer learning: freeze and unfreeze by stage, per-stage learning rates, features from any
stage, linear classifiers on features, a source CNN pretrained within the book, and the real
ImageNet ResNet-18.

A *stage* is a named block of a network, in forward order. For a model built as a plain chain of
named children (``SourceCNN`` below) every child is a stage; for torchvision's ResNets the stem
(``conv1, bn1, relu, maxpool``) is one stage ``"stem"`` and the rest are ``layer1 .. layer4``,
``avgpool``, ``fc``. ``stages(model)`` gives that ordered map, and every function here speaks in
stage names: ``freeze(model, ["stage1", "stage2"])``, ``stage_param_groups(model, {"head": 1e-3},
lr=1e-4)``, ``extract_features(model, x, "stage2")``.

Frozen stages stay in eval mode even while the rest of the network trains, so their BatchNorm
layers keep the source statistics instead of re-estimating them from a handful of target images.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .data import cache_dir, fashion_mnist, stratified_subset
from .training import evaluate, fit

Tensor = torch.Tensor
Data = tuple[Tensor, Tensor]

# Source / target split of Fashion-MNIST: each target class has a near relative among the source
# classes (Shirt ~ T-shirt and Coat, Sneaker and Ankle boot ~ Sandal, Dress ~ Coat), so the target
# task is "very similar" in the lecture's sense: same pixels, same imaging, related objects.
SOURCE_CLASSES = (0, 2, 4, 5, 8)   # T-shirt/top, Pullover, Coat, Sandal, Bag
TARGET_CLASSES = (1, 3, 6, 7, 9)   # Trouser, Dress, Shirt, Sneaker, Ankle boot
STRATEGIES = ("linear", "finetune-last", "finetune-all", "scratch")
RESNET18_FILE = "resnet18-f37072fd.pth"   # the file name torchvision's IMAGENET1K_V1 weights use


# ----------------------------------------------------------------------------- stages

def stages(model: nn.Module) -> dict[str, tuple[nn.Module, ...]]:
    """The model's stages in forward order: ``{name: (modules...)}``.

    torchvision ResNets group ``conv1, bn1, relu, maxpool`` as ``"stem"``; any other model is
    taken as a chain of its named children, one stage each.
    """
    children = dict(model.named_children())
    if not children:
        raise ValueError(f"{type(model).__name__} has no child modules to split into stages")
    stem = ("conv1", "bn1", "relu", "maxpool")
    if all(name in children for name in stem) and "fc" in children:
        out = {"stem": tuple(children[n] for n in stem)}
        out.update({n: (m,) for n, m in children.items() if n not in stem})
        return out
    return {name: (module,) for name, module in children.items()}


def _check_stage_names(model: nn.Module, names: Iterable[str]) -> list[str]:
    known = list(stages(model))
    names = [names] if isinstance(names, str) else list(names)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; {type(model).__name__} has stages {known}")
    return names


def _stay_in_eval(self: nn.Module, mode: bool = True) -> nn.Module:
    """Replacement ``train`` for frozen normalization layers: always eval mode."""
    return nn.Module.train(self, False)


_NORMS = (nn.modules.batchnorm._BatchNorm,)


def freeze(model: nn.Module, names: Iterable[str] | None = None) -> nn.Module:
    """Stop training the named stages (all stages if ``names`` is None); returns ``model``.

    Their parameters get ``requires_grad=False`` and their BatchNorm layers are pinned to eval
    mode (running statistics used and not updated), whatever ``model.train()`` later says.
    """
    names = list(stages(model)) if names is None else _check_stage_names(model, names)
    for name in names:
        for module in stages(model)[name]:
            for p in module.parameters():
                p.requires_grad_(False)
            for sub in module.modules():
                if isinstance(sub, _NORMS):
                    sub.train = types.MethodType(_stay_in_eval, sub)
                    sub.eval()
    return model


def unfreeze(model: nn.Module, names: Iterable[str] | None = None) -> nn.Module:
    """Undo ``freeze`` for the named stages (all if None); returns ``model``."""
    names = list(stages(model)) if names is None else _check_stage_names(model, names)
    for name in names:
        for module in stages(model)[name]:
            for p in module.parameters():
                p.requires_grad_(True)
            for sub in module.modules():
                if "train" in vars(sub):
                    del sub.train
                    sub.train(model.training)
    return model


def freeze_all_but_last(model: nn.Module, k: int) -> nn.Module:
    """Train only the last ``k`` stages that have parameters ("finetune the last few layers")."""
    with_params = [n for n, mods in stages(model).items() if any(True for m in mods for _ in m.parameters())]
    if not isinstance(k, int) or not 0 <= k <= len(with_params):
        raise ValueError(f"k must be an int in [0, {len(with_params)}] (stages with parameters: "
                         f"{with_params}), got {k!r}")
    unfreeze(model)
    return freeze(model, with_params[: len(with_params) - k])


def trainable_stages(model: nn.Module) -> list[str]:
    """Names of the stages with at least one parameter that requires a gradient."""
    return [n for n, mods in stages(model).items()
            if any(p.requires_grad for m in mods for p in m.parameters())]


def count_parameters(model: nn.Module, *, trainable: bool = True) -> int:
    """Number of (trainable, by default) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable)


def stage_param_groups(model: nn.Module, lrs: Mapping[str, float] | None = None, *,
                       lr: float) -> list[dict]:
    """Optimizer parameter groups, one per stage with trainable parameters.

    ``lrs`` maps stage names to their learning rate; stages not in it get ``lr``. Frozen
    parameters are left out (the optimizer never sees them). Each group carries its stage name
    under ``"stage"``, so ``[g["lr"] for g in opt.param_groups]`` can be read back by stage.
    """
    lrs = dict(lrs or {})
    _check_stage_names(model, lrs)
    for name, value in [("lr", lr), *lrs.items()]:
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ValueError(f"learning rate for {name!r} must be a finite number >= 0, got {value!r}")
    groups = []
    for name, mods in stages(model).items():
        params = [p for m in mods for p in m.parameters() if p.requires_grad]
        if params:
            groups.append({"params": params, "lr": float(lrs.get(name, lr)), "stage": name})
    if not groups:
        raise ValueError("the model has no trainable parameters (every stage is frozen)")
    return groups


def discriminative_lrs(model: nn.Module, lr: float, decay: float) -> dict[str, float]:
    """Learning rate per stage, ``lr`` for the last stage with parameters and ``decay`` times the
    next one's for each stage below it (Howard & Ruder 2018's "discriminative fine-tuning")."""
    if not 0 < decay <= 1:
        raise ValueError(f"decay must be in (0, 1], got {decay!r}")
    names = [n for n, mods in stages(model).items() if any(True for m in mods for _ in m.parameters())]
    return {n: lr * decay ** (len(names) - 1 - i) for i, n in enumerate(names)}


# ----------------------------------------------------------------------------- features

def forward_to(model: nn.Module, x: Tensor, stage: str) -> Tensor:
    """Run ``model`` as a chain of stages up to and including ``stage`` (``"input"``: ``x``).

    Inputs of ``nn.Linear`` stages are flattened, which is what ResNet's forward does before
    ``fc``. Valid for models whose forward is that chain (``SourceCNN``, torchvision ResNets).
    """
    if stage == "input":
        return x
    _check_stage_names(model, [stage])
    for name, mods in stages(model).items():
        for module in mods:
            if isinstance(module, nn.Linear) and x.dim() > 2:
                x = torch.flatten(x, 1)
            x = module(x)
        if name == stage:
            return x
    raise AssertionError("unreachable")


@torch.no_grad()
def extract_features(model: nn.Module, x: Tensor, stage: str, *, batch_size: int = 1024) -> Tensor:
    """Activations of ``stage`` for inputs ``x (N, C, H, W)``, flattened to ``(N, D)``, computed
    in eval mode on the model's device; returned on the CPU as float32."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = [torch.flatten(forward_to(model, x[i: i + batch_size].to(device), stage), 1).float().cpu()
           for i in range(0, len(x), batch_size)]
    model.train(was_training)
    return torch.cat(out)


class LinearProbe(nn.Module):
    """A linear classifier on standardized features: ``logits = W ((f - mean) / std) + b``."""

    def __init__(self, mean: Tensor, std: Tensor, linear: nn.Linear):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.linear = linear

    def forward(self, features: Tensor) -> Tensor:
        return self.linear((features - self.mean) / self.std)


def fit_linear_probe(features: Tensor, labels: Tensor, *, n_classes: int | None = None,
                     l2: float = 1e-3, max_iter: int = 200) -> LinearProbe:
    """Multinomial logistic regression on ``features (N, D)``, ``labels (N,)``.

    Minimizes ``mean cross-entropy + l2 / 2 * ||W||^2`` (bias unpenalized) on features standardized
    with their own mean and std, by full-batch L-BFGS from zero: a convex problem, so the result
    is deterministic. The same objective as scikit-learn's ``LogisticRegression(C=1 / (l2 * N))``.
    """
    if features.dim() != 2 or labels.dim() != 1 or len(features) != len(labels):
        raise ValueError(f"expected features (N, D) and labels (N,), got {tuple(features.shape)} "
                         f"and {tuple(labels.shape)}")
    if not features.is_floating_point():
        raise ValueError(f"features must be floating point, got {features.dtype}")
    if l2 < 0:
        raise ValueError(f"l2 must be >= 0, got {l2!r}")
    n_classes = int(labels.max()) + 1 if n_classes is None else n_classes
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(f"labels must lie in [0, {n_classes}), got [{int(labels.min())}, {int(labels.max())}]")
    mean = features.mean(0)
    std = features.std(0, unbiased=False).clamp_min(1e-6)
    z = (features - mean) / std
    linear = nn.Linear(features.shape[1], n_classes, dtype=features.dtype, device=features.device)
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    opt = torch.optim.LBFGS(linear.parameters(), lr=1, max_iter=max_iter, history_size=20,
                            tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(linear(z), labels) + 0.5 * l2 * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return LinearProbe(mean, std, linear)


def probe_accuracy(probe: LinearProbe, features: Tensor, labels: Tensor) -> float:
    """Accuracy of a linear probe on ``features (N, D)``."""
    with torch.no_grad():
        return float((probe(features.to(probe.mean.dtype)).argmax(1) == labels).double().mean())


# ----------------------------------------------------------------------------- the source CNN

class SourceCNN(nn.Sequential):
    """A small CNN for 28x28 grayscale images, built as a chain of named stages:

    ``stage1``: conv 3x3 (1 -> w1) + BN + ReLU + max-pool -> (w1, 14, 14)
    ``stage2``: conv 3x3 (w1 -> w2) + BN + ReLU + max-pool -> (w2, 7, 7)
    ``stage3``: conv 3x3 (w2 -> w3) + BN + ReLU + max-pool -> (w3, 3, 3)
    ``fc``: flatten + linear (9 w3 -> hidden) + ReLU      -> (hidden,)
    ``head``: linear (hidden -> n_classes)                 -> logits
    """

    def __init__(self, n_classes: int, widths: tuple[int, int, int] = (16, 32, 64), hidden: int = 128):
        if len(widths) != 3 or min(widths) < 1 or hidden < 1 or n_classes < 2:
            raise ValueError(f"need 3 positive widths, hidden >= 1, n_classes >= 2; got widths="
                             f"{widths}, hidden={hidden}, n_classes={n_classes}")

        def block(c_in, c_out):
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                                 nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2))

        w1, w2, w3 = widths
        super().__init__()
        self.add_module("stage1", block(1, w1))
        self.add_module("stage2", block(w1, w2))
        self.add_module("stage3", block(w2, w3))
        self.add_module("fc", nn.Sequential(nn.Flatten(), nn.Linear(9 * w3, hidden), nn.ReLU()))
        self.add_module("head", nn.Linear(hidden, n_classes))


def seeded_model(build, generator: torch.Generator) -> nn.Module:
    """``build()`` with torch's default initialization drawn from a seed taken from ``generator``
    (so the global random state is left untouched)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


@dataclass(frozen=True)
class SourceConfig:
    """Everything that determines the pretrained source model; the cache key."""

    classes: tuple[int, ...] = SOURCE_CLASSES
    per_class: int | None = None      # training images per class; None = all 6,000
    widths: tuple[int, int, int] = (16, 32, 64)
    hidden: int = 128
    epochs: int = 5
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 5e-4
    seed: int = 0
    version: int = 1                  # bump when the training code changes

    def key(self) -> str:
        """A short hash of the configuration, used in the cache file name."""
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def class_subset(x: Tensor, y: Tensor, classes: Iterable[int]) -> Data:
    """The examples of the given classes, relabeled ``0 .. len(classes) - 1`` in that order."""
    classes = list(classes)
    if len(set(classes)) != len(classes) or not classes:
        raise ValueError(f"classes must be a non-empty list without repeats, got {classes}")
    lookup = torch.full((int(max(int(y.max()), *classes)) + 1,), -1, dtype=torch.int64)
    lookup[torch.tensor(classes)] = torch.arange(len(classes))
    new = lookup[y.cpu()].to(y.device)
    keep = new >= 0
    if int(keep.sum()) == 0:
        raise ValueError(f"no examples of classes {classes}")
    return x[keep], new[keep]


def source_path(config: SourceConfig) -> Path:
    return cache_dir() / "transfer" / f"source-cnn-{config.key()}.pt"


def train_source(config: SourceConfig, *, device=None) -> tuple[nn.Module, dict]:
    """Train the source CNN on Fashion-MNIST's ``config.classes``; return it (on the CPU) and
    its metrics ``{"test_acc", "train_seconds", "n_train"}``."""
    x, y = class_subset(*fashion_mnist("train"), config.classes)
    if config.per_class is not None:
        idx = stratified_subset(y, config.per_class * len(config.classes), seed=config.seed)
        x, y = x[idx], y[idx]
    xt, yt = class_subset(*fashion_mnist("test"), config.classes)
    gen = torch.Generator().manual_seed(config.seed)
    model = seeded_model(lambda: SourceCNN(len(config.classes), config.widths, config.hidden), gen)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps = config.epochs * math.ceil(len(x) / config.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=steps)
    hist = fit(model, (x, y), optimizer=opt, scheduler=sched, epochs=config.epochs,
               batch_size=config.batch_size, seed=config.seed, device=device, desc="source CNN")
    _, acc = evaluate(model, xt, yt)
    return model.cpu().eval(), {"test_acc": acc, "train_seconds": hist.wall_time, "n_train": len(x)}


def pretrained_source(config: SourceConfig = SourceConfig(), *, retrain: bool = False,
                      device=None, verbose: bool = True) -> tuple[nn.Module, dict]:
    """The source CNN for ``config``: loaded from ``cache_dir()/transfer`` when a file saved with
    exactly this configuration is there, trained (and saved with its configuration) otherwise.

    Returns ``(model on the CPU in eval mode, info)`` where ``info`` has the metrics of training,
    ``"path"`` and ``"trained"`` (True when this call trained it).
    """
    if not isinstance(config, SourceConfig):
        raise TypeError(f"config must be a SourceConfig, got {type(config).__name__}")
    path = source_path(config)
    if path.is_file() and not retrain:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved.get("config") == _jsonable(config):
            model = SourceCNN(len(config.classes), config.widths, config.hidden)
            model.load_state_dict(saved["state_dict"])
            if verbose:
                print(f"loaded the source CNN ({config.key()}) from the cache")
            return model.eval(), {**saved["metrics"], "path": str(path), "trained": False}
        if verbose:
            print("the cached source CNN was saved with another configuration: retraining")
    model, metrics = train_source(config, device=device)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save({"config": _jsonable(config), "state_dict": model.state_dict(), "metrics": metrics}, tmp)
    os.replace(tmp, path)   # atomic: a reader never sees half a file
    if verbose:
        print(f"trained the source CNN ({config.key()}) and saved it to the cache")
    return model, {**metrics, "path": str(path), "trained": True}


def _jsonable(config: SourceConfig) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(config)))


# ----------------------------------------------------------------------------- targets

def digits_28(*, n_test: int = 497, seed: int = 0) -> tuple[Data, Data]:
    """scikit-learn's handwritten digits (1,797 images, 8x8, ten classes) resized to 28x28 with
    bilinear interpolation: ``(train, test)``, images ``(N, 1, 28, 28)`` standardized with the
    training split's mean and std, split stratified and seeded."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False)
    y = torch.tensor(digits.target, dtype=torch.int64)
    test_idx = stratified_subset(y, n_test, seed=seed)
    mask = torch.ones(len(y), dtype=torch.bool)
    mask[test_idx] = False
    mean, std = x[mask].mean(), x[mask].std()
    x = (x - mean) / std
    return (x[mask], y[mask]), (x[test_idx], y[test_idx])


def fashion_target(split: str, *, subset: int | None = None, seed: int = 0) -> Data:
    """The Fashion-MNIST classes the source never saw (``TARGET_CLASSES``), relabeled 0..4."""
    x, y = class_subset(*fashion_mnist(split), TARGET_CLASSES)
    if subset is not None:
        idx = stratified_subset(y, subset, seed=seed)
        x, y = x[idx], y[idx]
    return x, y


def few_per_class(x: Tensor, y: Tensor, k: int, *, seed: int = 0) -> Data:
    """``k`` examples of every class, drawn with ``seed``."""
    n_classes = len(torch.unique(y))
    idx = stratified_subset(y, k * n_classes, seed=seed)
    return x[idx], y[idx]


# ----------------------------------------------------------------------------- strategies

def new_head(model: nn.Module, n_classes: int, generator: torch.Generator) -> nn.Module:
    """A copy of ``model`` whose last stage (a linear layer) is replaced by a freshly initialized
    one with ``n_classes`` outputs; the original is not touched."""
    model = copy.deepcopy(model)
    name, (last,) = list(stages(model).items())[-1]
    if not isinstance(last, nn.Linear):
        raise ValueError(f"the last stage {name!r} must be an nn.Linear, got {type(last).__name__}")
    head = seeded_model(lambda: nn.Linear(last.in_features, n_classes), generator)
    setattr(model, name, head.to(last.weight.device))
    return model


def transfer_strategy(strategy: str, source: nn.Module, train: Data, test: Data, *,
                      n_classes: int, steps: int = 200, lr: float = 1e-3, body_lr_scale: float = 0.1,
                      last: int = 2, stage: str = "fc", l2: float = 1e-3, max_iter: int = 200,
                      batch_size: int = 64,
                      seed: int = 0, device=None, build=None) -> float:
    """Test accuracy of one transfer strategy from ``source`` to the target ``(train, test)``.

    - ``"linear"``: a linear probe on the frozen features of ``stage`` (``"fc"``: the top layer).
    - ``"finetune-last"``: new head, the last ``last`` stages trained, the rest frozen.
    - ``"finetune-all"``: new head at ``lr``, every earlier stage trained at ``lr * body_lr_scale``.
    - ``"scratch"``: the same architecture (``build()``, default a ``SourceCNN``), random init.

    ``l2`` and ``max_iter`` are the linear probe's. Trained strategies use AdamW for ``steps`` steps of ``batch_size`` (fewer if the data are
    smaller), batches seeded by ``seed``.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    gen = torch.Generator().manual_seed(seed)
    if strategy == "linear":
        probe = fit_linear_probe(extract_features(source, train[0], stage), train[1].cpu(),
                                 n_classes=n_classes, l2=l2, max_iter=max_iter)
        return probe_accuracy(probe, extract_features(source, test[0], stage), test[1].cpu())
    if strategy == "scratch":
        if build is None:
            widths = tuple(source.get_submodule(s)[0].out_channels for s in ("stage1", "stage2", "stage3"))
            build = lambda: SourceCNN(n_classes, widths, source.fc[1].out_features)  # noqa: E731
        model = seeded_model(build, gen)
        groups = stage_param_groups(model, lr=lr)
    else:
        model = new_head(source, n_classes, gen)
        if strategy == "finetune-last":
            freeze_all_but_last(model, last)
            groups = stage_param_groups(model, lr=lr)
        else:
            unfreeze(model)
            head = list(stages(model))[-1]
            groups = stage_param_groups(model, {head: lr}, lr=lr * body_lr_scale)
    opt = torch.optim.AdamW(groups, weight_decay=1e-4)
    batch_size = min(batch_size, len(train[0]))
    epochs = math.ceil(steps / math.ceil(len(train[0]) / batch_size))
    fit(model, train, optimizer=opt, epochs=epochs, batch_size=batch_size, max_steps=steps,
        seed=seed, device=device, progress=False)
    return evaluate(model, *test)[1]


# ----------------------------------------------------------------------------- ImageNet ResNet-18

class PretrainedWeightsUnavailable(RuntimeError):
    """The ImageNet weights are neither cached nor downloadable; the message says what to do."""


def imagenet_resnet18(weights_file: str | Path | None = None, *, download: bool = True) -> nn.Module:
    """torchvision's ResNet-18 with its ImageNet weights (``IMAGENET1K_V1``), in eval mode.

    Looked for in this order: ``weights_file`` (a state-dict file); torch hub's cache
    (``$TORCH_HOME/hub/checkpoints/resnet18-f37072fd.pth``); a download (if ``download``).
    Raises ``PretrainedWeightsUnavailable`` with instructions when none works.
    """
    from torchvision.models import ResNet18_Weights, resnet18

    weights = ResNet18_Weights.IMAGENET1K_V1
    model = resnet18(weights=None)
    if weights_file is not None:
        path = Path(weights_file)
        if not path.is_file():
            raise PretrainedWeightsUnavailable(f"ResNet-18 weights file {path} does not exist")
        state = torch.load(path, map_location="cpu", weights_only=True)
    else:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / RESNET18_FILE
        if cached.is_file():
            state = torch.load(cached, map_location="cpu", weights_only=True)
        elif download:
            try:
                state = weights.get_state_dict(progress=False)
            except Exception as err:  # offline, proxy, disk: say what to do instead
                raise PretrainedWeightsUnavailable(_resnet_help(cached, weights.url, err)) from err
        else:
            raise PretrainedWeightsUnavailable(_resnet_help(cached, weights.url, "downloads disabled"))
    if not isinstance(state, Mapping):
        raise PretrainedWeightsUnavailable(f"expected a state dict in the weights file, got {type(state).__name__}")
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise PretrainedWeightsUnavailable(f"the weights file is not a torchvision ResNet-18 state dict: {err}") from err
    return model.eval()


def _resnet_help(cached: Path, url: str, err) -> str:
    return (f"ImageNet ResNet-18 weights unavailable ({err}). Fix one of: connect to the internet "
            f"once (torchvision downloads {url} into {cached.parent}); copy that file to {cached}; "
            "or pass weights_file= a saved resnet18 state dict.")


def imagenet_inputs(x: Tensor, size: int = 112) -> Tensor:
    """Grayscale ``(N, 1, H, W)`` standardized images -> ``(N, 3, size, size)`` in ImageNet's
    normalization (min-max to [0, 1] per image, gray copied to RGB, ImageNet mean and std)."""
    if x.dim() != 4 or x.shape[1] != 1:
        raise ValueError(f"expected grayscale images (N, 1, H, W), got {tuple(x.shape)}")
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    hi = x.amax(dim=(1, 2, 3), keepdim=True)
    x = (x - lo) / (hi - lo).clamp_min(1e-8)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    mean = torch.tensor([0.485, 0.456, 0.406], device=x.device).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std
