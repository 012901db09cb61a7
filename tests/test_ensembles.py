"""Tests for lecturelib.ensembles: against torch's schedulers, AveragedModel and plain fit runs."""

import functools
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingWarmRestarts
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from lecturelib.ensembles import (
    EMA, AveragedEvaluation, EarlyStopping, PolyakAverage, SnapshotCollector, atomic_save,
    cycle_ends, ensemble_predict, load_checkpoint, lr_schedule, majority_vote, sgdr_lr,
    snapshot_lr, train_stacked,
)
from lecturelib.training import fit

ROOT = Path(__file__).resolve().parents[1]


def blobs(n=240, d=6, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, d, generator=g) * 2
    y = torch.randint(0, k, (n,), generator=g)
    return centres[y] + torch.randn(n, d, generator=g), y


def mlp(seed, d=6, k=3, hidden=16):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, k))


# ----------------------------------------------------------------------------- early stopping

class ScriptedVal:
    """Overwrites the last val_acc with a scripted sequence (runs before EarlyStopping)."""

    def __init__(self, values):
        self.values = values

    def on_epoch_end(self, state):
        state.history.val_acc[-1] = self.values[state.epoch - 1]


def test_early_stopping_patience_and_restores_best(tmp_path):
    x, y = blobs()
    model = mlp(0)
    snapshots = {}

    class Record:
        def on_epoch_end(self, state):
            snapshots[state.epoch] = {k: v.clone() for k, v in state.model.state_dict().items()}

    stop = EarlyStopping(tmp_path / "best.pt", monitor="val_acc", patience=2)
    scripted = ScriptedVal([0.5, 0.7, 0.6, 0.65, 0.9, 0.95])
    h = fit(model, (x, y), optimizer=torch.optim.SGD(model.parameters(), lr=0.1), epochs=6,
            val=(x, y), callbacks=[scripted, Record(), stop], device="cpu", progress=False)
    assert h.stopped_early and h.epochs == 4 and stop.stopped_epoch == 4
    assert stop.best_epoch == 2 and stop.best_value == 0.7 and stop.restored
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, snapshots[2][k], rtol=0, atol=0)
        assert not torch.equal(v, snapshots[4][k])
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 2


def test_early_stopping_val_loss_min_delta(tmp_path):
    x, y = blobs()
    model = mlp(1)

    class ScriptedLoss:
        def on_epoch_end(self, state):
            state.history.val_loss[-1] = [1.0, 0.9, 0.895, 0.893, 0.5][state.epoch - 1]

    stop = EarlyStopping(tmp_path / "best.pt", monitor="val_loss", patience=2, min_delta=0.01)
    h = fit(model, (x, y), optimizer=torch.optim.SGD(model.parameters(), lr=0.1), epochs=5,
            val=(x, y), callbacks=[ScriptedLoss(), stop], device="cpu", progress=False)
    assert stop.best_epoch == 2 and h.epochs == 4


def test_early_stopping_restores_after_keyboard_interrupt(tmp_path):
    x, y = blobs()
    model = mlp(2)
    kept = {}

    class InterruptAt3:
        def on_epoch_end(self, state):
            if state.epoch == 1:
                kept.update({k: v.clone() for k, v in state.model.state_dict().items()})
        def on_step_end(self, state):
            if state.epoch == 2 and state.step == 2 * 2 + 1:  # mid-epoch 3 (2 batches per epoch)
                raise KeyboardInterrupt

    stop = EarlyStopping(tmp_path / "best.pt", patience=5)
    scripted = ScriptedVal([0.9, 0.1, 0.1, 0.1])
    h = fit(model, (x, y), optimizer=torch.optim.SGD(model.parameters(), lr=0.5), epochs=4,
            batch_size=128, val=(x, y), callbacks=[scripted, InterruptAt3(), stop], device="cpu",
            progress=False)
    assert h.interrupted and stop.restored and stop.best_epoch == 1
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, kept[k], rtol=0, atol=0)


def test_early_stopping_needs_validation(tmp_path):
    x, y = blobs()
    model = mlp(0)
    with pytest.raises(ValueError, match="val="):
        fit(model, (x, y), optimizer=torch.optim.SGD(model.parameters(), lr=0.1), epochs=1,
            callbacks=[EarlyStopping(tmp_path / "b.pt")], device="cpu", progress=False)
    with pytest.raises(ValueError, match="monitor"):
        EarlyStopping(tmp_path / "b.pt", monitor="train_acc")
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping(tmp_path / "b.pt", patience=0)


def test_atomic_save_interrupted_write_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    atomic_save({"v": torch.arange(3)}, path)
    real_save = torch.save

    def half_then_interrupt(obj, f):
        real_save(obj, f)
        f.truncate(10)  # a half-written file ...
        raise KeyboardInterrupt  # ... and the user presses Ctrl-C

    monkeypatch.setattr(torch, "save", half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        atomic_save({"v": torch.arange(100)}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)["v"], torch.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temp file left behind


def test_killed_run_leaves_valid_best_checkpoint(tmp_path):
    """A process SIGKILLed in the middle of writing a new best checkpoint (after fsync of half a
    file, before the rename) leaves the previous best checkpoint intact and loadable."""
    script = textwrap.dedent(f"""
        import os, signal, sys, torch
        sys.path.insert(0, {str(ROOT)!r})
        from torch import nn
        from lecturelib.ensembles import EarlyStopping
        from lecturelib.training import fit
        real_save = torch.save
        calls = []
        def dying_save(obj, f):
            calls.append(1)
            real_save(obj, f)
            if len(calls) == 3:      # third best snapshot: write half of it, then get killed
                f.truncate(20); f.flush(); os.fsync(f.fileno())
                os.kill(os.getpid(), signal.SIGKILL)
        torch.save = dying_save
        torch.manual_seed(0)
        model = nn.Linear(4, 2)
        x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
        class Improving:
            def on_epoch_end(self, state):
                state.history.val_acc[-1] = state.epoch / 10
        fit(model, (x, y), optimizer=torch.optim.SGD(model.parameters(), lr=0.1), epochs=10,
            val=(x, y), callbacks=[Improving(), EarlyStopping({str(tmp_path / 'best.pt')!r})],
            device="cpu", progress=False)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()
    ckpt = load_checkpoint(tmp_path / "best.pt")
    assert ckpt["epoch"] == 2 and ckpt["value"] == pytest.approx(0.2)
    nn.Linear(4, 2).load_state_dict(ckpt["model"])  # complete and loadable


# ----------------------------------------------------------------------------- ensembles

def test_ensemble_predict_is_mean_softmax_and_vote():
    x, _ = blobs(50)
    models = [mlp(s) for s in range(3)]
    probs = ensemble_predict(models, x, batch_size=7)
    with torch.no_grad():
        expected = torch.stack([F.softmax(m(x), dim=1) for m in models]).mean(0)
    assert probs.shape == (50, 3)
    torch.testing.assert_close(probs, expected)
    torch.testing.assert_close(probs.sum(1), torch.ones(50))
    votes = majority_vote(models, x)
    with torch.no_grad():
        preds = torch.stack([m(x).argmax(1) for m in models])
    for i in range(50):
        counts = torch.bincount(preds[:, i], minlength=3)
        assert counts[votes[i]] == counts.max()
    assert torch.equal(majority_vote(models[:1], x), preds[0])


def test_ensemble_predict_restores_mode_and_rejects_bad_input():
    m = nn.Sequential(nn.Linear(6, 3), nn.Dropout(0.5))
    m.train()
    x, _ = blobs(20)
    p1, p2 = ensemble_predict([m], x), ensemble_predict([m], x)
    assert torch.equal(p1, p2) and m.training  # eval mode inside (no dropout), mode restored
    with pytest.raises(ValueError, match="non-empty"):
        ensemble_predict([], x)
    with pytest.raises(ValueError, match="output shape"):
        ensemble_predict([mlp(0), mlp(0, k=4)], x)


# ----------------------------------------------------------------------------- schedules

@pytest.mark.parametrize("T_0,T_mult,lr_min", [(5, 1, 0.0), (3, 2, 0.01), (4, 3, 0.001)])
def test_sgdr_lr_equals_cosine_annealing_warm_restarts(T_0, T_mult, lr_min):
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.3)
    sched = CosineAnnealingWarmRestarts(opt, T_0=T_0, T_mult=T_mult, eta_min=lr_min)
    for t in range(200):
        assert sgdr_lr(t, lr_max=0.3, lr_min=lr_min, T_0=T_0, T_mult=T_mult) == pytest.approx(
            opt.param_groups[0]["lr"], rel=1e-12, abs=1e-15), t
        opt.step()
        sched.step()


def test_snapshot_lr_formula_and_restarts():
    T, M = 100, 4
    for t in range(T):
        paper_t = t + 1  # the paper counts from 1
        L = -(-T // M)
        expected = 0.2 / 2 * (np.cos(np.pi * ((paper_t - 1) % L) / L) + 1)  # numpy, not our math
        assert snapshot_lr(t, lr_max=0.2, total_steps=T, cycles=M) == pytest.approx(expected, rel=1e-6)
        # Huang et al.'s schedule is SGDR with T_0 = ceil(T / M), T_mult = 1, lr_min = 0.
        assert snapshot_lr(t, lr_max=0.2, total_steps=T, cycles=M) == pytest.approx(
            sgdr_lr(t, lr_max=0.2, T_0=L), rel=1e-12)
    assert snapshot_lr(25, lr_max=0.2, total_steps=T, cycles=M) == 0.2
    assert cycle_ends(100, cycles=4) == [25, 50, 75, 100]
    assert cycle_ends(10, cycles=3) == [4, 8, 10]
    assert cycle_ends(25, T_0=3, T_mult=2) == [3, 9, 21]
    with pytest.raises(ValueError, match="cycles"):
        snapshot_lr(0, lr_max=0.1, total_steps=3, cycles=5)
    with pytest.raises(ValueError, match="step t"):
        sgdr_lr(-1, lr_max=0.1, T_0=3)
    with pytest.raises(ValueError, match="lr_min"):
        sgdr_lr(0, lr_max=0.1, lr_min=0.2, T_0=3)


def test_lr_schedule_in_fit_and_snapshot_collection():
    x, y = blobs(200)
    model = mlp(3)
    opt = torch.optim.SGD(model.parameters(), lr=123.0)
    lr_fn = functools.partial(snapshot_lr, lr_max=0.1, total_steps=20, cycles=4)
    collect = SnapshotCollector(cycle_ends(20, cycles=4))
    weights_at = {}

    class Record:
        def on_step_end(self, state):
            weights_at[state.step] = state.model[0].weight.detach().clone()

    h = fit(model, (x, y), optimizer=opt, epochs=4, batch_size=40,
            scheduler=lr_schedule(opt, lr_fn), callbacks=[collect, Record()], device="cpu", progress=False)
    assert h.step_lr == pytest.approx([lr_fn(t) for t in range(20)], rel=1e-12)
    assert collect.steps == [5, 10, 15, 20] and len(collect.snapshots) == 4
    for s, snap in zip(collect.steps, collect.snapshots):
        assert torch.equal(snap[0].weight, weights_at[s]) and not snap.training


# ----------------------------------------------------------------------------- averaging

def _train_with(averagers, reference, steps=15, seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    mine = averagers(model)
    ref = reference(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = blobs(64)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        mine.update_parameters(model)
        ref.update_parameters(model)
    return model, mine, ref, x


@pytest.mark.parametrize("use_buffers", [False, True])
@pytest.mark.parametrize("decay", [0.9, 0.995])
def test_ema_equals_averaged_model(decay, use_buffers):
    model, mine, ref, x = _train_with(
        lambda m: EMA(m, decay, use_buffers=use_buffers),
        lambda m: AveragedModel(m, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=use_buffers))
    for (name, a), b in zip(mine.module.state_dict().items(), ref.module.state_dict().values()):
        if a.is_floating_point():  # torch rounds an integer "average" (num_batches_tracked) oddly
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
        else:
            assert name.endswith("num_batches_tracked")
    assert int(mine.n_averaged) == int(ref.n_averaged) == 15
    mine.eval(), ref.eval()
    torch.testing.assert_close(mine(x), ref(x), rtol=1e-5, atol=1e-6)
    # and it is not just a copy of the live model
    assert not torch.allclose(mine.module[0].weight, model[0].weight)


@pytest.mark.parametrize("use_buffers", [False, True])
def test_polyak_equals_averaged_model(use_buffers):
    _, mine, ref, x = _train_with(lambda m: PolyakAverage(m, use_buffers=use_buffers),
                                  lambda m: AveragedModel(m, use_buffers=use_buffers))
    for (name, a), b in zip(mine.module.state_dict().items(), ref.module.state_dict().values()):
        if a.is_floating_point():  # torch rounds an integer "average" (num_batches_tracked) oddly
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
        else:
            assert name.endswith("num_batches_tracked")


def test_polyak_is_arithmetic_mean_and_ema_matches_slide_recurrence():
    w = nn.Linear(2, 1, bias=False)
    polyak, ema = PolyakAverage(w), EMA(w, 0.995)
    history, slide = [], None
    for k in range(1, 8):
        with torch.no_grad():
            w.weight.fill_(float(k * k))
        polyak.update_parameters(w)
        ema.update_parameters(w)
        history.append(float(k * k))
        slide = float(k * k) if slide is None else 0.995 * slide + 0.005 * k * k  # x_test update
    assert polyak.module.weight[0, 0].item() == pytest.approx(sum(history) / len(history))
    assert ema.module.weight[0, 0].item() == pytest.approx(slide, rel=1e-6)
    with pytest.raises(ValueError, match="decay"):
        EMA(w, 1.5)
    with pytest.raises(ValueError, match="differ"):
        ema.update_parameters(nn.Linear(3, 1, bias=False))


def test_averaged_evaluation_callback():
    x, y = blobs(200)
    model = mlp(4)
    cb = AveragedEvaluation({"ema": EMA(model, 0.9), "polyak": PolyakAverage(model)}, val=(x, y))
    fit(model, (x, y), optimizer=torch.optim.SGD(model.parameters(), lr=0.1), epochs=3,
        batch_size=50, callbacks=[cb], device="cpu", progress=False)
    assert set(cb.val_acc) == {"raw", "ema", "polyak"} and all(len(v) == 3 for v in cb.val_acc.values())
    assert int(cb.averagers["ema"].n_averaged) == 12


# ----------------------------------------------------------------------------- torch.func

@pytest.mark.parametrize("opt_name", ["sgd", "adam", "sgd+cosine"])
def test_train_stacked_equals_sequential_fit(opt_name):
    x, y = blobs(150)
    make = {"sgd": lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-3),
            "adam": lambda ps: torch.optim.Adam(ps, lr=1e-2),
            "sgd+cosine": lambda ps: torch.optim.SGD(ps, lr=0.2, momentum=0.9)}[opt_name]
    sched = (lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 15)) if "cosine" in opt_name else None
    models = [mlp(s) for s in range(3)]
    seeds = [10, 11, 12]
    stacked = train_stacked(models, (x, y), make_optimizer=make, epochs=3, batch_size=32,
                            seeds=seeds, make_scheduler=sched, device="cpu")
    for model, seed, got in zip(models, seeds, stacked):
        ref = mlp(0)
        ref.load_state_dict(model.state_dict())
        opt = make(list(ref.parameters()))
        fit(ref, (x, y), optimizer=opt, epochs=3, batch_size=32, seed=seed, device="cpu",
            scheduler=sched(opt) if sched else None, progress=False)
        for a, b in zip(got.parameters(), ref.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        assert not torch.allclose(got[0].weight, model[0].weight)  # inputs untouched, copies trained


def test_train_stacked_rejects_bad_input():
    x, y = blobs(20)
    make = lambda ps: torch.optim.SGD(ps, lr=0.1)  # noqa: E731
    with pytest.raises(ValueError, match="identical architecture"):
        train_stacked([mlp(0), mlp(0, hidden=4)], (x, y), make_optimizer=make, device="cpu")
    with pytest.raises(ValueError, match="BatchNorm"):
        train_stacked([nn.Sequential(nn.Linear(6, 3), nn.BatchNorm1d(3))] * 2, (x, y),
                      make_optimizer=make, device="cpu")
    with pytest.raises(ValueError, match="one seed per model"):
        train_stacked([mlp(0), mlp(1)], (x, y), make_optimizer=make, seeds=[1], device="cpu")
