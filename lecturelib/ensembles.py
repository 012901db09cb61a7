"""Early stopping, model ensembles, snapshot ensembles and weight averaging (chapter 4).

- ``EarlyStopping``: a ``fit`` callback that keeps the best snapshot on disk, written atomically
  (``atomic_save``), and restores it however training ends.
- ``ensemble_predict`` / ``majority_vote``: combine the predictions of several models.
- ``snapshot_lr`` (Huang et al. 2017) and ``sgdr_lr`` (Loshchilov & Hutter 2017): cyclic cosine
  learning rates as pure functions of the step; ``lr_schedule`` turns one into a torch scheduler;
  ``SnapshotCollector`` keeps a copy of the model at the end of every cycle.
- ``EMA`` and ``PolyakAverage``: averaged copies of a model with the interface of
  ``torch.optim.swa_utils.AveragedModel``; ``AveragedEvaluation`` tracks them during ``fit``.
- ``train_stacked``: M ensemble members trained in one pass with ``torch.func`` (stacked
  parameters, ``vmap``, ``functional_call``), step for step the same as M separate ``fit`` runs.
"""

from __future__ import annotations

import copy
import math
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .training import TrainState

Tensor = torch.Tensor


# ----------------------------------------------------------------------------- early stopping

def atomic_save(obj: object, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` such that ``path`` is always either the old file or the new one.

    The bytes go to a temporary file in the same folder, are flushed and ``fsync``-ed to disk, and
    only then renamed over ``path`` with ``os.replace`` (atomic on POSIX and Windows when source
    and target are on the same file system, hence the same folder). A process killed mid-write
    leaves at worst a stray ``*.tmp`` file, never a truncated checkpoint.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint folder {str(folder)!r} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # also KeyboardInterrupt: never leave the half-written temp behind
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX)
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by ``EarlyStopping``: a dict with ``model`` (a state dict),
    ``epoch`` (1-based), ``monitor`` and ``value``."""
    return torch.load(path, map_location=map_location, weights_only=True)


class EarlyStopping:
    """Keep the snapshot that did best on validation; stop after ``patience`` epochs without one.

    A ``fit`` callback. After every epoch it reads ``history.<monitor>[-1]``; an improvement by
    more than ``min_delta`` (up for ``val_acc``, down for ``val_loss``) writes the model's
    ``state_dict`` to ``path`` with ``atomic_save``. ``on_train_end``, which ``fit`` calls however
    training ends (finished, stopped early, Ctrl-C, diverged), loads the best snapshot back into
    the model when ``restore_best``.

    Attributes after training: ``best_epoch`` (1-based, 0 if none), ``best_value``,
    ``stopped_epoch`` (epoch at which patience ran out, 0 if it never did), ``restored``.
    """

    MONITORS = ("val_acc", "val_loss")

    def __init__(self, path: str | os.PathLike, *, monitor: str = "val_acc", patience: int = 5,
                 min_delta: float = 0.0, restore_best: bool = True):
        if monitor not in self.MONITORS:
            raise ValueError(f"monitor must be one of {self.MONITORS}, got {monitor!r}")
        if not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience must be an int >= 1, got {patience!r}")
        if min_delta < 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta!r}")
        self.path = Path(path)
        self.monitor = monitor
        self.patience = patience
        self.min_delta = float(min_delta)
        self.restore_best = restore_best
        self._reset()

    def _reset(self) -> None:
        self.best_value = -math.inf if self.monitor == "val_acc" else math.inf
        self.best_epoch = 0
        self.stopped_epoch = 0
        self.restored = False
        self._wait = 0

    def _improved(self, value: float) -> bool:
        if self.monitor == "val_acc":
            return value > self.best_value + self.min_delta
        return value < self.best_value - self.min_delta

    def on_train_begin(self, state: TrainState) -> None:
        self._reset()

    def on_epoch_end(self, state: TrainState) -> None:
        values = getattr(state.history, self.monitor)
        if len(values) < state.epoch:
            raise ValueError(f"EarlyStopping monitors {self.monitor!r}, but fit recorded none: "
                             "pass validation data with fit(..., val=(x, y))")
        value = values[-1]
        if self._improved(value):
            self.best_value, self.best_epoch, self._wait = value, state.epoch, 0
            atomic_save({"model": state.model.state_dict(), "epoch": state.epoch,
                         "monitor": self.monitor, "value": value}, self.path)
        else:
            self._wait += 1
            if self._wait >= self.patience:
                self.stopped_epoch = state.epoch
                state.stop_training = True

    def on_train_end(self, state: TrainState) -> None:
        if self.restore_best and self.best_epoch > 0:
            checkpoint = load_checkpoint(self.path, map_location=state.device)
            state.model.load_state_dict(checkpoint["model"])
            self.restored = True


# ----------------------------------------------------------------------------- ensembles

def _check_models(models: Sequence[nn.Module]) -> list[nn.Module]:
    models = list(models)
    if not models or not all(isinstance(m, nn.Module) for m in models):
        raise ValueError("models must be a non-empty sequence of nn.Module")
    return models


@torch.no_grad()
def member_probabilities(models: Sequence[nn.Module], x: Tensor, *, batch_size: int = 1024) -> Tensor:
    """Softmax probabilities of every model: ``(M, N, classes)``, computed in eval mode.

    ``x``: inputs ``(N, ...)``, moved batch by batch to each model's device. Each model's
    train/eval mode is restored afterwards.
    """
    models = _check_models(models)
    if not isinstance(x, Tensor) or x.dim() < 2 or len(x) == 0:
        raise ValueError(f"x must be a non-empty tensor of inputs (N, ...), got {getattr(x, 'shape', type(x))}")
    out = []
    for model in models:
        was_training = model.training
        model.eval()
        first = next(model.parameters(), None)
        device = first.device if first is not None else x.device
        probs = torch.cat([F.softmax(model(x[i: i + batch_size].to(device)).float(), dim=1).cpu()
                           for i in range(0, len(x), batch_size)])
        model.train(was_training)
        if out and probs.shape != out[0].shape:
            raise ValueError(f"models disagree on the output shape: {tuple(out[0].shape)} vs {tuple(probs.shape)}")
        out.append(probs)
    return torch.stack(out)


def ensemble_predict(models: Sequence[nn.Module], x: Tensor, *, batch_size: int = 1024) -> Tensor:
    """The ensemble's predicted distribution: the mean of the models' softmax probabilities.

    ``x``: ``(N, ...)``. Returns ``(N, classes)`` on the CPU, rows summing to 1; the predicted
    class is its ``argmax(dim=1)``.
    """
    return member_probabilities(models, x, batch_size=batch_size).mean(dim=0)


def majority_vote(models: Sequence[nn.Module], x: Tensor, *, batch_size: int = 1024) -> Tensor:
    """Predicted labels ``(N,)`` by majority vote of the models' argmax predictions.

    Ties go to the tied class with the highest summed probability, so the vote is deterministic.
    """
    probs = member_probabilities(models, x, batch_size=batch_size)      # (M, N, C)
    votes = F.one_hot(probs.argmax(dim=2), probs.shape[2]).sum(dim=0)   # (N, C)
    # Summed probabilities lie in [0, M) < 1 vote * M: scale them below one vote as a tie-breaker.
    return (votes.double() + probs.sum(dim=0).double() / (len(probs) + 1)).argmax(dim=1)


def accuracy(probs_or_labels: Tensor, y: Tensor) -> float:
    """Accuracy of predicted labels ``(N,)`` or of probabilities / logits ``(N, classes)``."""
    pred = probs_or_labels.argmax(dim=1) if probs_or_labels.dim() == 2 else probs_or_labels
    if pred.shape != y.shape:
        raise ValueError(f"predictions {tuple(pred.shape)} and labels {tuple(y.shape)} differ in shape")
    return (pred.cpu() == y.cpu()).double().mean().item()


# ----------------------------------------------------------------------------- cyclic schedules

def _check_step(t: int) -> None:
    if not isinstance(t, int) or isinstance(t, bool) or t < 0:
        raise ValueError(f"step t must be an int >= 0, got {t!r}")


def snapshot_lr(t: int, *, lr_max: float, total_steps: int, cycles: int) -> float:
    """Huang et al.'s cyclic cosine learning rate at step ``t`` (0-based: the paper's ``t - 1``).

    ``lr(t) = lr_max / 2 * (cos(pi * (t mod L) / L) + 1)`` with cycle length
    ``L = ceil(total_steps / cycles)``: ``cycles`` cosine annealings from ``lr_max`` towards 0,
    each ending in a snapshot.
    """
    _check_step(t)
    if lr_max <= 0:
        raise ValueError(f"lr_max must be > 0, got {lr_max!r}")
    if not isinstance(total_steps, int) or not isinstance(cycles, int) or not 1 <= cycles <= total_steps:
        raise ValueError(f"need ints 1 <= cycles <= total_steps, got cycles={cycles!r}, total_steps={total_steps!r}")
    length = math.ceil(total_steps / cycles)
    return lr_max / 2 * (math.cos(math.pi * (t % length) / length) + 1)


def _sgdr_position(t: int, T_0: int, T_mult: int) -> tuple[int, int]:
    """(T_cur, T_i): steps into the current cycle and that cycle's length."""
    if T_mult == 1:
        return t % T_0, T_0
    T_i = T_0
    while t >= T_i:  # cycle lengths grow geometrically, so this loops O(log t) times
        t -= T_i
        T_i *= T_mult
    return t, T_i


def sgdr_lr(t: int, *, lr_max: float, lr_min: float = 0.0, T_0: int, T_mult: int = 1) -> float:
    """SGDR's learning rate at step ``t`` (Loshchilov & Hutter 2017).

    ``lr = lr_min + (lr_max - lr_min) * (1 + cos(pi * T_cur / T_i)) / 2``, where ``T_cur`` counts
    steps since the last restart and the cycle length ``T_i`` starts at ``T_0`` and is multiplied
    by ``T_mult`` at every restart. Equal to ``CosineAnnealingWarmRestarts(opt, T_0, T_mult,
    eta_min=lr_min)`` after ``t`` calls of ``scheduler.step()``.
    """
    _check_step(t)
    if not isinstance(T_0, int) or T_0 < 1:
        raise ValueError(f"T_0 must be an int >= 1, got {T_0!r}")
    if not isinstance(T_mult, int) or T_mult < 1:
        raise ValueError(f"T_mult must be an int >= 1, got {T_mult!r}")
    if not 0 <= lr_min <= lr_max:
        raise ValueError(f"need 0 <= lr_min <= lr_max, got lr_min={lr_min!r}, lr_max={lr_max!r}")
    T_cur, T_i = _sgdr_position(t, T_0, T_mult)
    return lr_min + (lr_max - lr_min) * (1 + math.cos(math.pi * T_cur / T_i)) / 2


def cycle_ends(total_steps: int, *, cycles: int | None = None, T_0: int | None = None,
               T_mult: int = 1) -> list[int]:
    """Steps (1-based counts of optimizer steps) at which a cycle ends, up to ``total_steps``.

    Give ``cycles`` for ``snapshot_lr`` (every ``ceil(total_steps / cycles)`` steps, and the last
    step) or ``T_0`` / ``T_mult`` for ``sgdr_lr``.
    """
    if (cycles is None) == (T_0 is None):
        raise ValueError("give exactly one of cycles= (snapshot_lr) or T_0= (sgdr_lr)")
    if cycles is not None:
        length = math.ceil(total_steps / cycles)
        return sorted(set(list(range(length, total_steps + 1, length)) + [total_steps]))
    ends, end, T_i = [], 0, T_0
    while end + T_i <= total_steps:
        end += T_i
        ends.append(end)
        T_i *= T_mult
    return ends


def lr_schedule(optimizer: torch.optim.Optimizer, lr_fn: Callable[[int], float]):
    """A torch scheduler that sets every group's learning rate to ``lr_fn(t)`` at step ``t``.

    E.g. ``lr_schedule(opt, functools.partial(snapshot_lr, lr_max=0.1, total_steps=T, cycles=5))``,
    stepped once per optimizer step (``fit(..., scheduler=..., scheduler_interval="step")``).
    """
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] = 1.0  # LambdaLR multiplies the initial lr by lr_fn(t)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: lr_fn(t))


class SnapshotCollector:
    """A ``fit`` callback that keeps a copy of the model (in eval mode, on the CPU) at the given
    step counts, e.g. ``cycle_ends(...)``: the members of a snapshot ensemble."""

    def __init__(self, at_steps: Iterable[int]):
        self.at_steps = sorted(set(int(s) for s in at_steps))
        if not self.at_steps or self.at_steps[0] < 1:
            raise ValueError(f"at_steps must be non-empty step counts >= 1, got {self.at_steps}")
        self.snapshots: list[nn.Module] = []
        self.steps: list[int] = []

    def on_train_begin(self, state: TrainState) -> None:
        self.snapshots, self.steps = [], []

    def on_step_end(self, state: TrainState) -> None:
        if state.step in self.at_steps:
            self.snapshots.append(copy.deepcopy(state.model).cpu().eval())
            self.steps.append(state.step)


# ----------------------------------------------------------------------------- weight averaging

class _AveragedParameters(nn.Module):
    """Shared machinery of ``EMA`` and ``PolyakAverage`` (the ``AveragedModel`` interface)."""

    def __init__(self, model: nn.Module, use_buffers: bool = False):
        super().__init__()
        self.module = copy.deepcopy(model)
        self.register_buffer("n_averaged", torch.tensor(0, dtype=torch.long))
        self.use_buffers = use_buffers

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def _average(self, avg: Tensor, new: Tensor, n: int) -> None:
        raise NotImplementedError

    def _tensors(self, model: nn.Module) -> list[Tensor]:
        return list(model.parameters()) + (list(model.buffers()) if self.use_buffers else [])

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        """Fold ``model``'s current parameters into the average (call after each optimizer step)."""
        mine, theirs = self._tensors(self.module), self._tensors(model)
        if len(mine) != len(theirs) or any(a.shape != b.shape for a, b in zip(mine, theirs)):
            raise ValueError("update_parameters got a model whose parameters differ from the averaged one's")
        n = int(self.n_averaged)
        for avg, new in zip(mine, theirs):
            new = new.detach().to(avg.device)
            if n == 0 or not (avg.is_floating_point() or avg.is_complex()):
                # The first update copies. Integer buffers (BatchNorm's num_batches_tracked) are
                # copied, not averaged: torch's rounding of an integer average is an accident.
                avg.copy_(new)
            else:
                self._average(avg, new, n)
        if not self.use_buffers:  # buffers (e.g. BatchNorm statistics) follow the live model
            for avg, new in zip(self.module.buffers(), model.buffers()):
                avg.copy_(new.detach().to(avg.device))
        self.n_averaged += 1

    def on_step_end(self, state: TrainState) -> None:
        """So an averager can be passed straight to ``fit(..., callbacks=[...])``."""
        self.update_parameters(state.model)


class EMA(_AveragedParameters):
    """Exponential moving average of the parameters: ``avg <- decay * avg + (1 - decay) * w``.

    The first update copies ``w``. Same interface and numbers as
    ``AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=...)``:
    ``update_parameters(model)`` after each step, ``.module`` the averaged network, callable.
    (Floating-point tensors only: integer buffers are copied from the live model.)
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, *, use_buffers: bool = False):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay must be in [0, 1], got {decay!r}")
        super().__init__(model, use_buffers)
        self.decay = float(decay)

    def _average(self, avg: Tensor, new: Tensor, n: int) -> None:
        avg.lerp_(new, 1 - self.decay)  # avg + (1 - decay) * (new - avg)


class PolyakAverage(_AveragedParameters):
    """Polyak-Juditsky averaging: the running arithmetic mean of all iterates so far,
    ``avg <- avg + (w - avg) / (n + 1)``. Same numbers as ``AveragedModel(model)``."""

    def _average(self, avg: Tensor, new: Tensor, n: int) -> None:
        avg.lerp_(new, 1 / (n + 1))  # avg + (new - avg) / (n + 1)


class AveragedEvaluation:
    """A ``fit`` callback: after every epoch, the validation accuracy of the live model and of each
    averaged copy, in ``self.val_acc[name]`` (``"raw"`` for the live model).

    ``averagers``: name -> ``EMA`` / ``PolyakAverage``, updated after every optimizer step.
    """

    def __init__(self, averagers: dict[str, _AveragedParameters], val: tuple[Tensor, Tensor]):
        from .training import evaluate

        self._evaluate = evaluate
        self.averagers = dict(averagers)
        self.val = val
        self.val_acc: dict[str, list[float]] = {}

    def on_train_begin(self, state: TrainState) -> None:
        self.val_acc = {name: [] for name in ["raw", *self.averagers]}
        for avg in self.averagers.values():
            avg.to(state.device)

    def on_step_end(self, state: TrainState) -> None:
        for avg in self.averagers.values():
            avg.update_parameters(state.model)

    def on_epoch_end(self, state: TrainState) -> None:
        self.val_acc["raw"].append(self._evaluate(state.model, *self.val)[1])
        for name, avg in self.averagers.items():
            self.val_acc[name].append(self._evaluate(avg.module, *self.val)[1])


# ----------------------------------------------------------------------------- torch.func ensembles

def _has_running_stats(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
               for m in model.modules())


def train_stacked(
    models: Sequence[nn.Module],
    train: tuple[Tensor, Tensor],
    *,
    make_optimizer: Callable[[list[Tensor]], torch.optim.Optimizer],
    epochs: int = 1,
    batch_size: int = 128,
    seeds: Sequence[int] | None = None,
    loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
    make_scheduler: Callable[[torch.optim.Optimizer], object] | None = None,
    device: torch.device | str | None = None,
) -> list[nn.Module]:
    """Train M same-architecture models in one pass: parameters stacked along a new leading
    dimension (``torch.func.stack_module_state``), one ``vmap``-ed ``functional_call`` per step.

    Member ``m`` sees the batches ``fit(..., seed=seeds[m])`` would draw, and the summed loss gives
    it exactly the gradient of its own mean loss. Optimizers whose update is elementwise (SGD,
    momentum, Adam, ...) then take the same step on the stacked tensors as on each member alone, so
    the result equals M separate ``fit`` runs up to floating-point rounding.

    Args:
        models: M models with identical architecture, without dropout or BatchNorm running
            statistics (randomness and in-place buffer updates do not batch under ``vmap``).
        make_optimizer: builds the optimizer over the list of stacked parameter tensors,
            e.g. ``lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9)``.
        seeds: batch-order seed of each member (default ``0..M-1``).
        make_scheduler: optional, builds a scheduler over that optimizer, stepped after every
            optimizer step (as ``fit(..., scheduler_interval="step")``).

    Returns:
        M new trained models (the inputs are left untouched), in eval mode.
    """
    from torch.func import functional_call, stack_module_state, vmap

    models = _check_models(models)
    seeds = list(range(len(models))) if seeds is None else list(seeds)
    if len(seeds) != len(models):
        raise ValueError(f"need one seed per model: {len(models)} models, {len(seeds)} seeds")
    shapes = [[(k, v.shape) for k, v in m.state_dict().items()] for m in models]
    if any(s != shapes[0] for s in shapes):
        raise ValueError("train_stacked needs models of identical architecture (same state_dict keys and shapes)")
    if any(_has_running_stats(m) or any(isinstance(l, nn.modules.dropout._DropoutNd) for l in m.modules())
           for m in models):
        raise ValueError("train_stacked does not support BatchNorm running statistics or dropout under vmap")
    x, y = train
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"train must be non-empty (inputs, labels) of equal length, got {len(x)} and {len(y)}")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got epochs={epochs}, batch_size={batch_size}")
    from .device import best_device

    device = torch.device(device) if device is not None else best_device()
    x, y = x.to(device), y.to(device)
    copies = [copy.deepcopy(m).to(device).train() for m in models]
    params, buffers = stack_module_state(copies)  # leaf tensors (M, ...) that require grad
    base = copy.deepcopy(copies[0]).to("meta")

    def member_loss(p, b, xb, yb):
        return loss_fn(functional_call(base, (p, b), (xb,)), yb)

    batched_loss = vmap(member_loss)
    optimizer = make_optimizer(list(params.values()))
    scheduler = make_scheduler(optimizer) if make_scheduler is not None else None
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    n = len(x)
    for _ in range(epochs):
        orders = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(device)  # (M, n)
        for start in range(0, n, batch_size):
            idx = orders[:, start: start + batch_size]                                # (M, B)
            loss = batched_loss(params, buffers, x[idx], y[idx]).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
    trained = []
    for m, model in enumerate(copies):
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(params[name][m])
            for name, b in model.named_buffers():
                b.copy_(buffers[name][m])
        trained.append(model.eval())
    return trained
