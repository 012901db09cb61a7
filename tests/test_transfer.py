"""Tests for lecturelib.transfer: stages, freezing, per-stage learning rates, features, linear
probes (against scikit-learn), the cached source CNN, and the ImageNet ResNet-18 loader (offline,
with a state-dict file the test writes)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lecturelib import transfer as tl


def small_cnn(seed=0, n_classes=3):
    return tl.seeded_model(lambda: tl.SourceCNN(n_classes, (4, 6, 8), 10),
                           torch.Generator().manual_seed(seed))


def images(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 3, (n,), generator=g)


# ----------------------------------------------------------------------------- stages and freezing

def test_stages_of_source_cnn_and_resnet():
    from torchvision.models import resnet18

    assert list(tl.stages(small_cnn())) == ["stage1", "stage2", "stage3", "fc", "head"]
    assert list(tl.stages(resnet18())) == ["stem", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"]


def test_freeze_stops_gradients_and_pins_batchnorm():
    model = small_cnn()
    tl.freeze(model, ["stage1", "stage2"])
    assert tl.trainable_stages(model) == ["stage3", "fc", "head"]
    model.train()
    assert not model.stage1[1].training and model.stage3[1].training
    before = model.stage1[1].running_mean.clone()
    x, y = images()
    F.cross_entropy(model(x), y).backward()
    assert all(p.grad is None for p in model.stage1.parameters())
    assert all(p.grad is not None for p in model.head.parameters())
    assert torch.equal(model.stage1[1].running_mean, before)       # frozen BN statistics kept
    tl.unfreeze(model)
    model.train()
    assert tl.trainable_stages(model) == list(tl.stages(model)) and model.stage1[1].training


def test_freeze_all_but_last_and_bad_names():
    model = small_cnn()
    tl.freeze_all_but_last(model, 2)
    assert tl.trainable_stages(model) == ["fc", "head"]
    assert tl.count_parameters(model) == sum(p.numel() for p in [*model.fc.parameters(), *model.head.parameters()])
    with pytest.raises(ValueError, match="unknown stage"):
        tl.freeze(model, ["conv9"])
    with pytest.raises(ValueError, match="k must be"):
        tl.freeze_all_but_last(model, 9)


def test_stage_param_groups_give_each_stage_its_learning_rate():
    """One SGD step over the groups equals p - lr_stage * grad for every stage, frozen ones untouched."""
    model = small_cnn()
    tl.freeze(model, ["stage1"])
    lrs = {"head": 0.1, "fc": 0.05}
    groups = tl.stage_param_groups(model, lrs, lr=0.01)
    assert [g["stage"] for g in groups] == ["stage2", "stage3", "fc", "head"]
    opt = torch.optim.SGD(groups)
    old = {n: p.detach().clone() for n, p in model.named_parameters()}
    x, y = images()
    model.eval()   # no BN statistic updates: the step is the only change
    F.cross_entropy(model(x), y).backward()
    grads = {n: (p.grad.clone() if p.grad is not None else None) for n, p in model.named_parameters()}
    opt.step()
    for name, p in model.named_parameters():
        stage = name.split(".")[0]
        if stage == "stage1":
            assert torch.equal(p, old[name])
        else:
            expected = old[name] - lrs.get(stage, 0.01) * grads[name]
            torch.testing.assert_close(p.detach(), expected)
    with pytest.raises(ValueError, match="unknown stage"):
        tl.stage_param_groups(model, {"nope": 1.0}, lr=0.1)
    with pytest.raises(ValueError, match="learning rate"):
        tl.stage_param_groups(model, {"head": -1.0}, lr=0.1)
    with pytest.raises(ValueError, match="no trainable"):
        tl.stage_param_groups(tl.freeze(small_cnn()), lr=0.1)


def test_discriminative_lrs():
    lrs = tl.discriminative_lrs(small_cnn(), 1.0, 0.5)
    assert lrs == {"stage1": 0.0625, "stage2": 0.125, "stage3": 0.25, "fc": 0.5, "head": 1.0}
    with pytest.raises(ValueError, match="decay"):
        tl.discriminative_lrs(small_cnn(), 1.0, 0.0)


# ----------------------------------------------------------------------------- features

def test_extract_features_matches_the_forward_pass():
    from torchvision.models import resnet18

    model = small_cnn().eval()
    x, _ = images()
    with torch.no_grad():
        torch.testing.assert_close(tl.extract_features(model, x, "head"), model(x))
        manual = model.stage2(model.stage1(x)).flatten(1)
    torch.testing.assert_close(tl.extract_features(model, x, "stage2", batch_size=5), manual)
    assert tl.extract_features(model, x, "input").shape == (12, 784)
    net = tl.seeded_model(resnet18, torch.Generator().manual_seed(0)).eval()
    xr = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(tl.extract_features(net, xr, "fc"), net(xr))
    assert tl.extract_features(net, xr, "layer2").shape == (2, 128 * 8 * 8)


def test_linear_probe_matches_sklearn_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    g = torch.Generator().manual_seed(1)
    n, d, l2 = 120, 6, 0.05
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * torch.tensor([1, 2, 3, 0.5, 1, 4.0], dtype=torch.float64) + 1
    y = (x[:, :3] + 0.7 * torch.randn(n, 3, generator=g, dtype=torch.float64)).argmax(1)
    probe = tl.fit_linear_probe(x, y, l2=l2, max_iter=500)
    z = ((x - x.mean(0)) / x.std(0, unbiased=False)).numpy()
    ref = LogisticRegression(C=1 / (l2 * n), tol=1e-10, max_iter=5000).fit(z, y.numpy())
    with torch.no_grad():
        ours = probe(x).softmax(1).numpy()
    np.testing.assert_allclose(ours, ref.predict_proba(z), atol=1e-5)
    assert tl.probe_accuracy(probe, x, y) == pytest.approx(ref.score(z, y.numpy()))
    with pytest.raises(ValueError, match="features"):
        tl.fit_linear_probe(x[:, 0], y)
    with pytest.raises(ValueError, match="labels must lie"):
        tl.fit_linear_probe(x, y + 5, n_classes=3)


# ----------------------------------------------------------------------------- data helpers

def test_class_subset_digits_and_few_per_class():
    x = torch.arange(10.0).view(10, 1)
    y = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2, 3, 4])
    xs, ys = tl.class_subset(x, y, [3, 1])
    assert ys.tolist() == [1, 0, 1, 0] and xs.flatten().tolist() == [1, 3, 6, 8]
    with pytest.raises(ValueError, match="repeats"):
        tl.class_subset(x, y, [1, 1])
    (xtr, ytr), (xte, yte) = tl.digits_28()
    assert xtr.shape[1:] == (1, 28, 28) and len(xtr) + len(xte) == 1797
    assert abs(float(xtr.mean())) < 1e-4 and abs(float(xtr.std()) - 1) < 1e-3
    xf, yf = tl.few_per_class(xtr, ytr, 3, seed=0)
    assert torch.bincount(yf).tolist() == [3] * 10
    assert torch.equal(tl.few_per_class(xtr, ytr, 3, seed=0)[0], xf)


def test_new_head_leaves_the_source_alone_and_strategies_are_repeatable():
    src = small_cnn()
    before = {k: v.clone() for k, v in src.state_dict().items()}
    model = tl.new_head(src, 7, torch.Generator().manual_seed(0))
    assert model.head.out_features == 7 and src.head.out_features == 3
    assert torch.equal(model.stage1[0].weight, src.stage1[0].weight)
    x, y = images(30, seed=2)
    train, test = (x[:20], y[:20]), (x[20:], y[20:])
    runs = [tl.transfer_strategy("finetune-all", src, train, test, n_classes=3, steps=3, seed=4, device="cpu")
            for _ in range(2)]
    assert runs[0] == runs[1]
    assert all(torch.equal(v, src.state_dict()[k]) for k, v in before.items())
    with pytest.raises(ValueError, match="strategy must be"):
        tl.transfer_strategy("magic", src, train, test, n_classes=3)


# ----------------------------------------------------------------------------- the cached source CNN

def test_source_cnn_is_reused_when_config_matches_and_retrained_when_not(tmp_path, monkeypatch):
    monkeypatch.setenv("LECTURELIB_CACHE", str(tmp_path))
    config = tl.SourceConfig(per_class=8, epochs=1, widths=(2, 2, 2), hidden=4, batch_size=20)
    model, info = tl.pretrained_source(config, device="cpu", verbose=False)
    assert info["trained"] and tl.source_path(config).is_file()
    assert str(tmp_path) in info["path"]

    real_train = tl.train_source
    calls = []

    def counting_train(cfg, **kw):
        calls.append(cfg)
        return real_train(cfg, **kw)

    monkeypatch.setattr(tl, "train_source", counting_train)
    again, info2 = tl.pretrained_source(config, verbose=False)
    assert not info2["trained"] and calls == []
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    assert info2["test_acc"] == info["test_acc"]

    other = tl.SourceConfig(per_class=8, epochs=1, widths=(2, 2, 3), hidden=4, batch_size=20)
    _, info3 = tl.pretrained_source(other, device="cpu", verbose=False)
    assert info3["trained"] and calls == [other]

    # a file at the right place that was saved with another configuration is not trusted
    saved = torch.load(tl.source_path(config), weights_only=True)
    saved["config"]["epochs"] = 99
    torch.save(saved, tl.source_path(config))
    _, info4 = tl.pretrained_source(config, device="cpu", verbose=False)
    assert info4["trained"] and calls == [other, config]
    with pytest.raises(TypeError, match="SourceConfig"):
        tl.pretrained_source({"epochs": 1})


# ----------------------------------------------------------------------------- ImageNet ResNet-18

def test_imagenet_resnet18_from_a_local_state_dict(tmp_path, monkeypatch):
    from torchvision.models import resnet18

    reference = tl.seeded_model(resnet18, torch.Generator().manual_seed(3))
    path = tmp_path / "weights.pth"
    torch.save(reference.state_dict(), path)
    loaded = tl.imagenet_resnet18(path)
    assert not loaded.training
    assert all(torch.equal(a, b) for a, b in zip(reference.state_dict().values(), loaded.state_dict().values()))

    # torch hub's cache, where torchvision keeps downloaded weights, is found without a network
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(tl.PretrainedWeightsUnavailable, match="resnet18-f37072fd.pth"):
        tl.imagenet_resnet18(download=False)
    (tmp_path / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(reference.state_dict(), tmp_path / "torch" / "hub" / "checkpoints" / tl.RESNET18_FILE)
    cached = tl.imagenet_resnet18(download=False)
    assert torch.equal(cached.fc.weight, reference.fc.weight)

    torch.save({"not": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(tl.PretrainedWeightsUnavailable, match="not a torchvision ResNet-18"):
        tl.imagenet_resnet18(tmp_path / "bad.pth")
    with pytest.raises(tl.PretrainedWeightsUnavailable, match="does not exist"):
        tl.imagenet_resnet18(tmp_path / "missing.pth")


def test_imagenet_inputs():
    x = torch.randn(2, 1, 28, 28)
    out = tl.imagenet_inputs(x, size=32)
    assert out.shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="grayscale"):
        tl.imagenet_inputs(torch.randn(2, 3, 28, 28))
