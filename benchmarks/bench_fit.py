"""Benchmark: ``lecturelib.training.fit`` against a plain ``DataLoader`` training loop.

Same model, data, optimizer, batch size, epochs and device; each variant is run ``--repeats``
times, alternating, and the median wall time is kept. Results (with the device and versions) go to
``benchmarks/results/fit_vs_dataloader-<device>.json`` and a line per model is printed.

    python benchmarks/bench_fit.py                 # best device, Fashion-MNIST 20k images
    python benchmarks/bench_fit.py --device cpu --train-size 10000

Not a test: timings depend on the machine. Targets: at least 1.3x faster on a CPU, never slower;
at least 5x on a GPU (where the DataLoader loop copies every batch from the host).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lecturelib.data import fashion_mnist  # noqa: E402
from lecturelib.device import best_device, environment  # noqa: E402
from lecturelib.training import fit  # noqa: E402

MODELS = {
    "mlp-784-256-10": lambda: nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10)),
    "cnn-2conv": lambda: nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 10)),
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def plain_loop(make_model, x_cpu, y_cpu, device, epochs, batch_size, lr) -> float:
    """The loop most tutorials write: a DataLoader over a TensorDataset on the host."""
    torch.manual_seed(0)
    model = make_model().to(device)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    loader = DataLoader(TensorDataset(x_cpu, y_cpu), batch_size=batch_size, shuffle=True,
                        pin_memory=device.type == "cuda")
    sync(device)
    start = time.perf_counter()
    for _ in range(epochs):
        for xb, yb in loader:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            loss = nn.functional.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            running = loss.item()  # noqa: F841  (what such loops log every step)
    sync(device)
    return time.perf_counter() - start


def with_fit(make_model, x_cpu, y_cpu, device, epochs, batch_size, lr) -> float:
    torch.manual_seed(0)
    model = make_model().to(device)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    sync(device)
    start = time.perf_counter()  # includes fit's one-time copy of the data to the device
    fit(model, (x_cpu, y_cpu), optimizer=opt, epochs=epochs, batch_size=batch_size, device=device,
        progress=False)
    sync(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None)
    parser.add_argument("--train-size", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()

    device = torch.device(args.device) if args.device else best_device()
    x, y = fashion_mnist("train", subset=args.train_size)
    rows = []
    for name, make_model in MODELS.items():
        with_fit(make_model, x, y, device, 1, args.batch_size, 0.05)  # warm-up (kernels, caches)
        times = {"dataloader": [], "fit": []}
        for _ in range(args.repeats):
            times["dataloader"].append(plain_loop(make_model, x, y, device, args.epochs, args.batch_size, 0.05))
            times["fit"].append(with_fit(make_model, x, y, device, args.epochs, args.batch_size, 0.05))
        med = {k: statistics.median(v) for k, v in times.items()}
        row = {"model": name, "dataloader_s": med["dataloader"], "fit_s": med["fit"],
               "speedup": med["dataloader"] / med["fit"], "all_runs_s": times}
        rows.append(row)
        print(f"{name:16s} DataLoader loop {med['dataloader']:7.2f} s   fit {med['fit']:7.2f} s   "
              f"speed-up {row['speedup']:.2f}x  ({device}, {args.train_size} images x {args.epochs} epochs)")
    env = environment()
    tag = env.get("gpu", "cpu").replace(" ", "-") if device.type == "cuda" else f"cpu-{env['cpu_threads']}threads"
    result = {"device": str(device), "environment": env, "train_size": args.train_size,
              "epochs": args.epochs, "batch_size": args.batch_size, "repeats": args.repeats, "results": rows,
              "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"fit_vs_dataloader-{tag}.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
