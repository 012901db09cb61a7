"""The training loop every chapter uses: ``fit``, ``evaluate``, ``History`` and callbacks.

``fit`` trains on tensors that already sit in memory. The whole training set is moved to the
device once; each epoch draws one seeded permutation and slices batches out of it on the device,
so no batch is collated in Python or copied from the host. Losses stay on the device and are read
back in blocks (every step on the CPU, every ``sync_every`` steps on an accelerator), which is
also where a non-finite loss is caught.

Callbacks are objects with any of the hooks ``on_train_begin(state)``, ``on_step_end(state)``,
``on_epoch_end(state)`` and ``on_train_end(state)``; ``state`` is the ``TrainState`` below. A
callback stops training by setting ``state.stop_training = True``. ``on_train_end`` runs however
training ends (finished, stopped early, interrupted with Ctrl-C, or diverged), so a callback that
keeps a best checkpoint can always restore it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from .device import best_device, progress_enabled

Tensor = torch.Tensor
LossFn = Callable[[Tensor, Tensor], Tensor]


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite. ``history`` holds everything recorded up to then."""

    def __init__(self, message: str, history: "History"):
        super().__init__(message)
        self.history = history


@dataclass
class History:
    """What one ``fit`` call recorded.

    Per step: ``step_loss`` (training loss of the batch) and ``step_lr`` (learning rate of the
    first parameter group). Per epoch: ``train_loss`` / ``train_acc`` (averaged over the epoch's
    batches, in training mode), ``val_loss`` / ``val_acc`` (one ``evaluate`` pass, if validation
    data was given) and ``epoch_time`` in seconds.
    """

    step_loss: list[float] = field(default_factory=list)
    step_lr: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    epoch_time: list[float] = field(default_factory=list)
    wall_time: float = 0.0
    device: str = "cpu"
    stopped_early: bool = False
    interrupted: bool = False

    @property
    def epochs(self) -> int:
        return len(self.train_loss)

    @property
    def steps(self) -> int:
        return len(self.step_loss)

    def best_epoch(self, metric: str = "val_acc") -> int:
        """Index of the best epoch by ``metric`` (max for accuracies, min for losses)."""
        values = getattr(self, metric)
        if not values:
            raise ValueError(f"History has no {metric!r} values (was validation data given?)")
        pick = max if metric.endswith("acc") else min
        return values.index(pick(values))

    def summary(self) -> str:
        """One line: epochs, final losses and accuracies, wall time, device."""
        parts = [f"{self.epochs} epochs ({self.steps} steps) on {self.device} in {self.wall_time:.1f} s"]
        if self.train_loss:
            parts.append(f"train loss {self.train_loss[-1]:.4f} acc {self.train_acc[-1]:.4f}")
        if self.val_loss:
            parts.append(f"val loss {self.val_loss[-1]:.4f} acc {self.val_acc[-1]:.4f}")
        return "; ".join(parts)

    def plot(self, axes=None, *, label: str | None = None, smooth: int = 20):
        """Two panels: per-step training loss (moving average over ``smooth`` steps) and per-epoch
        accuracy (train dashed, validation solid). Returns the axes, so several runs can share them.
        """
        import matplotlib.pyplot as plt

        if axes is None:
            _, axes = plt.subplots(1, 2, figsize=(10, 3.5))
        ax_loss, ax_acc = axes
        losses = torch.tensor(self.step_loss, dtype=torch.float64)
        if len(losses) >= smooth > 1:
            kernel = torch.ones(smooth, dtype=torch.float64) / smooth
            losses = torch.nn.functional.conv1d(losses.view(1, 1, -1), kernel.view(1, 1, -1)).flatten()
        offset = len(self.step_loss) - len(losses)
        line, = ax_loss.plot(range(offset + 1, offset + 1 + len(losses)), losses.numpy(), label=label)
        ax_loss.set(xlabel="step", ylabel="training loss", yscale="log", title="Training loss per step")
        epochs = range(1, self.epochs + 1)
        ax_acc.plot(epochs, self.train_acc, "--", color=line.get_color(),
                    label=f"{label} (train)" if label else "train")
        if self.val_acc:
            ax_acc.plot(epochs, self.val_acc, "-", color=line.get_color(),
                        label=f"{label} (val)" if label else "validation")
        ax_acc.set(xlabel="epoch", ylabel="accuracy", title="Accuracy per epoch")
        for ax in axes:
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize="small")
        return axes


@dataclass
class TrainState:
    """What callbacks see: the live model and optimizer, counters, and the history so far."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    history: History
    device: torch.device
    epoch: int = 0          # epochs completed (0 before the first ends)
    step: int = 0           # optimizer steps taken
    loss: float = math.nan  # last step's loss, when it was read back (always on the CPU)
    stop_training: bool = False


class Callback(Protocol):  # documentation of the protocol; any subset of hooks will do
    def on_train_begin(self, state: TrainState) -> None: ...
    def on_step_end(self, state: TrainState) -> None: ...
    def on_epoch_end(self, state: TrainState) -> None: ...
    def on_train_end(self, state: TrainState) -> None: ...


def _call(callbacks: Iterable[object], hook: str, state: TrainState) -> None:
    for cb in callbacks:
        fn = getattr(cb, hook, None)
        if fn is not None:
            fn(state)


def _check_data(x: Tensor, y: Tensor, name: str) -> None:
    if not (isinstance(x, Tensor) and isinstance(y, Tensor)):
        raise TypeError(f"{name} must be a pair of tensors (inputs, labels), got {type(x).__name__}, {type(y).__name__}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{name}: {x.shape[0]} inputs but {y.shape[0]} labels")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty")


@torch.no_grad()
def evaluate(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    batch_size: int = 1024,
    loss_fn: LossFn = F.cross_entropy,
    device: torch.device | str | None = None,
) -> tuple[float, float]:
    """Mean loss and accuracy of ``model`` on ``(x, y)``, in eval mode, without gradients.

    ``x`` is moved to the model's device batch by batch if it lives elsewhere. The model's
    train/eval mode is restored afterwards.
    """
    _check_data(x, y, "evaluation data")
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else x.device
    was_training = model.training
    model.eval()
    total_loss = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    for i in range(0, len(x), batch_size):
        xb = x[i: i + batch_size].to(device, non_blocking=True)
        yb = y[i: i + batch_size].to(device, non_blocking=True)
        out = model(xb)
        total_loss += loss_fn(out, yb).double() * len(xb)
        correct += (out.argmax(dim=1) == yb).sum()
    model.train(was_training)
    return float(total_loss) / len(x), int(correct) / len(x)


def fit(
    model: nn.Module,
    train: tuple[Tensor, Tensor],
    *,
    optimizer: torch.optim.Optimizer,
    epochs: int = 1,
    batch_size: int = 128,
    val: tuple[Tensor, Tensor] | None = None,
    loss_fn: LossFn = F.cross_entropy,
    scheduler=None,
    scheduler_interval: str = "step",
    augment: Callable[[Tensor], Tensor] | None = None,
    callbacks: Iterable[object] = (),
    device: torch.device | str | None = None,
    seed: int = 0,
    max_steps: int | None = None,
    drop_last: bool = False,
    sync_every: int | None = None,
    progress: bool | None = None,
    desc: str = "training",
) -> History:
    """Train ``model`` on ``train = (x, y)`` with ``optimizer``; return a ``History``.

    Args:
        model: moved to ``device`` (default ``best_device()``).
        train: inputs ``(N, ...)`` and integer labels ``(N,)``; moved to the device once.
        optimizer: built over ``model.parameters()`` by the caller.
        epochs, batch_size: as usual; the last short batch is kept unless ``drop_last``.
        val: optional ``(x, y)`` evaluated after every epoch.
        loss_fn: ``loss_fn(logits, labels)``, default cross-entropy.
        scheduler: anything with ``.step()``, stepped after every optimizer step
            (``scheduler_interval="step"``) or after every epoch (``"epoch"``).
        augment: ``augment(x_batch) -> x_batch`` applied to each training batch on the device.
        callbacks: see the module docstring.
        seed: seeds the batch order (one ``torch.Generator``), so a run is repeatable.
        max_steps: stop after this many optimizer steps (counting across epochs).
        sync_every: read losses back every this many steps (default: 1 on CPU, 50 elsewhere).
        progress: a tqdm bar; default on unless ``LECTURELIB_PROGRESS=0``.

    Raises:
        TrainingDiverged: the loss became non-finite; the message names the step and learning rate.
    """
    _check_data(*train, "train")
    if val is not None:
        _check_data(*val, "val")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got epochs={epochs}, batch_size={batch_size}")
    if scheduler_interval not in ("step", "epoch"):
        raise ValueError(f"scheduler_interval must be 'step' or 'epoch', got {scheduler_interval!r}")
    device = torch.device(device) if device is not None else best_device()
    sync_every = sync_every or (1 if device.type == "cpu" else 50)
    progress = progress_enabled() if progress is None else progress

    model.to(device)
    x, y = train[0].to(device), train[1].to(device)
    n = len(x)
    batches_per_epoch = n // batch_size if drop_last else math.ceil(n / batch_size)
    if batches_per_epoch == 0:
        raise ValueError(f"drop_last with batch_size={batch_size} > {n} examples leaves no batch")
    total_steps = epochs * batches_per_epoch if max_steps is None else min(max_steps, epochs * batches_per_epoch)

    history = History(device=str(device))
    state = TrainState(model=model, optimizer=optimizer, history=history, device=device)
    gen = torch.Generator().manual_seed(seed)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_steps, desc=desc, leave=False)

    pending: list[Tensor] = []   # per-step losses not yet read back
    pending_lr: list[float] = []
    epoch_sum = torch.zeros((), device=device, dtype=torch.float64)
    epoch_correct = torch.zeros((), device=device, dtype=torch.int64)

    def flush() -> None:
        if not pending:
            return
        values = torch.stack(pending).double().cpu().tolist()
        lrs = list(pending_lr)
        pending.clear()
        pending_lr.clear()
        first_step = state.step - len(values) + 1
        for i, (value, lr) in enumerate(zip(values, lrs)):
            history.step_loss.append(value)
            history.step_lr.append(lr)
            if not math.isfinite(value):
                raise TrainingDiverged(
                    f"training diverged: the loss became {value} at step {first_step + i} "
                    f"(epoch {state.epoch + 1}) with learning rate {lr:g}. Lower the learning rate, "
                    "normalize the inputs, or clip gradients.", history)
        state.loss = values[-1]

    start = time.perf_counter()
    model.train()
    _call(callbacks, "on_train_begin", state)
    try:
        for epoch in range(epochs):
            epoch_start = time.perf_counter()
            order = torch.randperm(n, generator=gen).to(device)
            epoch_sum.zero_()
            epoch_correct.zero_()
            seen = 0
            for b in range(batches_per_epoch):
                idx = order[b * batch_size: (b + 1) * batch_size]
                xb, yb = x.index_select(0, idx), y.index_select(0, idx)
                if augment is not None:
                    xb = augment(xb)
                out = model(xb)
                loss = loss_fn(out, yb)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                lr = optimizer.param_groups[0]["lr"]
                optimizer.step()
                state.step += 1
                detached = loss.detach()
                pending.append(detached)
                pending_lr.append(float(lr))
                epoch_sum += detached.double() * len(idx)
                epoch_correct += (out.detach().argmax(dim=1) == yb).sum()
                seen += len(idx)
                if scheduler is not None and scheduler_interval == "step":
                    scheduler.step()
                if state.step % sync_every == 0:
                    flush()
                if bar is not None:
                    bar.update(1)
                    if state.step % 20 == 0 and math.isfinite(state.loss):
                        bar.set_postfix(loss=f"{state.loss:.4f}", refresh=False)
                _call(callbacks, "on_step_end", state)
                if state.stop_training or state.step >= total_steps:
                    break
            flush()
            history.train_loss.append(float(epoch_sum) / seen)
            history.train_acc.append(int(epoch_correct) / seen)
            if val is not None:
                val_loss, val_acc = evaluate(model, *val, loss_fn=loss_fn, device=device)
                history.val_loss.append(val_loss)
                history.val_acc.append(val_acc)
            if scheduler is not None and scheduler_interval == "epoch":
                scheduler.step()
            history.epoch_time.append(time.perf_counter() - epoch_start)
            state.epoch = epoch + 1
            _call(callbacks, "on_epoch_end", state)
            if state.stop_training:
                history.stopped_early = True
                break
            if state.step >= total_steps:
                break
    except KeyboardInterrupt:
        # Ctrl-C (or the notebook's stop button) ends training, not the session: what was learned
        # so far, the history and any checkpoint a callback keeps, all survive.
        history.interrupted = True
        print(f"training interrupted at step {state.step}; returning the history so far")
    finally:
        if bar is not None:
            bar.close()
        history.wall_time = time.perf_counter() - start
        try:
            flush()
        finally:
            _call(callbacks, "on_train_end", state)
    return history
