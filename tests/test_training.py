import math

import pytest
import torch
from torch import nn

from lecturelib.device import best_device, by_scale, scale, seed_everything
from lecturelib.training import History, TrainingDiverged, evaluate, fit


def blobs(n=600, seed=0):
    """Three well-separated Gaussian blobs in 2-D: a problem any working loop solves."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0, 4.0], [4.0, -3.0], [-4.0, -3.0]])
    y = torch.arange(n) % 3
    x = centres[y] + torch.randn(n, 2, generator=g)
    return x, y


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 3))


def test_a_tiny_model_really_learns():
    x, y = blobs()
    model = mlp()
    before = evaluate(model, x, y)[1]
    hist = fit(model, (x, y), optimizer=torch.optim.SGD(model.parameters(), lr=0.1), epochs=5,
               batch_size=32, val=blobs(300, seed=1), device="cpu", progress=False)
    assert before < 0.6
    assert hist.val_acc[-1] > 0.97 and hist.train_loss[-1] < hist.train_loss[0] / 3
    assert hist.epochs == 5 and hist.steps == 5 * math.ceil(600 / 32) == len(hist.step_lr)
    assert hist.device == "cpu" and hist.wall_time > 0 and len(hist.epoch_time) == 5
    assert "5 epochs" in hist.summary()
    assert hist.best_epoch("val_acc") in range(5) and hist.best_epoch("val_loss") in range(5)


def test_divergence_stops_with_step_and_learning_rate():
    x, y = blobs()
    x = x * 1e3
    model = mlp()
    with pytest.raises(TrainingDiverged, match=r"step \d+ .*learning rate 1e\+06") as err:
        fit(model, (x, y), optimizer=torch.optim.SGD(model.parameters(), lr=1e6), epochs=3,
            device="cpu", progress=False)
    hist = err.value.history
    assert isinstance(hist, History) and not math.isfinite(hist.step_loss[-1])
    assert all(math.isfinite(v) for v in hist.step_loss[:-1])
    assert hist.steps < 3 * math.ceil(600 / 128)  # it stopped, it did not run on NaNs


def test_divergence_is_caught_with_blocked_sync_too():
    x, y = blobs()
    model = mlp()
    with pytest.raises(TrainingDiverged) as err:
        fit(model, (x * 1e3, y), optimizer=torch.optim.SGD(model.parameters(), lr=1e6), epochs=3,
            device="cpu", progress=False, sync_every=7)
    # the reported step is the first non-finite one, even though losses were read in blocks
    first_bad = next(i for i, v in enumerate(err.value.history.step_loss) if not math.isfinite(v))
    assert f"step {first_bad + 1} " in str(err.value)


def run_once(seed):
    x, y = blobs()
    model = mlp(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return fit(model, (x, y), optimizer=opt, epochs=2, batch_size=50, device="cpu", seed=seed,
               progress=False)


def test_same_seed_same_history_different_seed_differs():
    a, b, c = run_once(0), run_once(0), run_once(1)
    assert a.step_loss == b.step_loss and a.train_acc == b.train_acc
    assert a.step_loss != c.step_loss


def test_seed_everything_repeats_random_draws():
    g = seed_everything(5)
    first = (torch.rand(3), torch.rand(2, generator=g))
    g = seed_everything(5)
    assert torch.equal(first[0], torch.rand(3)) and torch.equal(first[1], torch.rand(2, generator=g))
    with pytest.raises(ValueError, match="seed"):
        seed_everything(-1)


class Recorder:
    def __init__(self, stop_at=None, interrupt_at=None):
        self.events, self.stop_at, self.interrupt_at = [], stop_at, interrupt_at

    def on_train_begin(self, state):
        self.events.append("begin")

    def on_step_end(self, state):
        self.events.append(("step", state.step))
        if state.step == self.interrupt_at:
            raise KeyboardInterrupt
        if state.step == self.stop_at:
            state.stop_training = True

    def on_epoch_end(self, state):
        self.events.append(("epoch", state.epoch))

    def on_train_end(self, state):
        self.events.append("end")


def test_callbacks_see_every_hook_and_can_stop_training():
    x, y = blobs()
    model = mlp()
    rec = Recorder(stop_at=7)
    hist = fit(model, (x, y), optimizer=torch.optim.SGD(model.parameters(), lr=0.1), epochs=5,
               batch_size=100, callbacks=[rec], device="cpu", progress=False)
    assert rec.events[0] == "begin" and rec.events[-1] == "end"
    assert ("epoch", 1) in rec.events and ("step", 7) in rec.events and ("step", 8) not in rec.events
    assert hist.stopped_early and hist.steps == 7 and hist.epochs == 2


def test_interrupt_keeps_history_and_runs_on_train_end(capsys):
    x, y = blobs()
    model = mlp()
    rec = Recorder(interrupt_at=4)
    hist = fit(model, (x, y), optimizer=torch.optim.SGD(model.parameters(), lr=0.1), epochs=5,
               batch_size=100, callbacks=[rec], device="cpu", progress=False)
    assert hist.interrupted and hist.steps == 4 and rec.events[-1] == "end"
    assert "interrupted at step 4" in capsys.readouterr().out


def test_scheduler_augment_and_max_steps():
    x, y = blobs()
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
    calls = []

    def augment(xb):
        calls.append(len(xb))
        return xb + 0.01

    hist = fit(model, (x, y), optimizer=opt, epochs=10, batch_size=64, scheduler=sched,
               augment=augment, max_steps=8, device="cpu", progress=False)
    assert hist.steps == 8 and len(calls) == 8
    assert hist.step_lr == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25]

    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.1)
    hist = fit(model, (x, y), optimizer=opt, epochs=2, batch_size=300, scheduler=sched,
               scheduler_interval="epoch", device="cpu", progress=False)
    assert hist.step_lr == pytest.approx([1.0, 1.0, 0.1, 0.1])


def test_evaluate_matches_a_manual_pass_and_restores_mode():
    x, y = blobs()
    model = nn.Sequential(nn.Linear(2, 16), nn.Dropout(0.5), nn.ReLU(), nn.Linear(16, 3))
    model.train()
    loss, acc = evaluate(model, x, y, batch_size=37)
    assert model.training
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert loss == pytest.approx(nn.functional.cross_entropy(out, y).item(), rel=1e-6)
    assert acc == pytest.approx((out.argmax(1) == y).float().mean().item())


def test_bad_input_is_a_clear_error():
    x, y = blobs()
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="600 inputs but 10 labels"):
        fit(model, (x, y[:10]), optimizer=opt, progress=False)
    with pytest.raises(ValueError, match="epochs and batch_size"):
        fit(model, (x, y), optimizer=opt, epochs=0, progress=False)
    with pytest.raises(TypeError, match="pair of tensors"):
        fit(model, (x.numpy(), y), optimizer=opt, progress=False)
    with pytest.raises(ValueError, match="scheduler_interval"):
        fit(model, (x, y), optimizer=opt, scheduler_interval="batch", progress=False)


def test_scale_and_device(monkeypatch):
    monkeypatch.setenv("LECTURELIB_SCALE", "full")
    assert scale() == "full" and by_scale(quick=1, full=2) == 2
    monkeypatch.setenv("LECTURELIB_SCALE", "quick")
    assert by_scale(quick=1, full=2) == 1
    monkeypatch.setenv("LECTURELIB_SCALE", "huge")
    with pytest.raises(ValueError, match="LECTURELIB_SCALE"):
        scale()
    monkeypatch.setenv("LECTURELIB_DEVICE", "cpu")
    assert best_device() == torch.device("cpu")
    monkeypatch.delenv("LECTURELIB_DEVICE")
    expected = "cuda" if torch.cuda.is_available() else best_device().type
    assert best_device().type == expected


def test_fit_trains_on_real_fashion_mnist():
    from lecturelib.data import fashion_mnist

    x, y = fashion_mnist("train", subset=3000)
    xt, yt = fashion_mnist("test", subset=1000)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    hist = fit(model, (x, y), optimizer=torch.optim.Adam(model.parameters(), lr=1e-3), epochs=3,
               val=(xt, yt), device="cpu", progress=False)
    assert hist.val_acc[-1] > 0.75  # a small MLP on 3k images; chance is 0.10


def test_environment_names_the_hardware_behind_the_numbers():
    from lecturelib.device import environment

    env = environment()
    for key in ("python", "torch", "device", "scale", "cpu_threads", "cpu", "cpu_capability"):
        assert isinstance(env[key], str) and env[key], key
    assert env["torch"] == torch.__version__
