"""The lesson's network in PyTorch, as a speed peer for bench/benchmark.py.

Same layers in the same order, BatchNorm translated (Keras momentum 0.99 is
PyTorch momentum 0.01; epsilon 0.001), Keras' initialisers (Glorot uniform,
zero biases), Adam with Keras' settings (learning rate 0.001, epsilon 1e-7),
batch 250, the last 20% of the training images held out, training images
shuffled every epoch. Softmax and cross-entropy are fused into
CrossEntropyLoss on logits, the same function. Writes run.json and
history.json in model_batchnorm.py's format, so the harness reads both alike.

    python bench/torch_peer.py --data-dir DIR --epochs 3 --output-dir OUT [--bf16]
"""
import argparse
import contextlib
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from machinery.datasets import folder_paths  # noqa: E402  (file names, no TensorFlow)


def load(data_dir, dataset="kmnist"):
    arrays = {}
    for part, path in folder_paths(data_dir, dataset).items():
        with np.load(path, allow_pickle=False) as archive:
            arrays[part] = archive["arr_0"]
    return arrays


def to_tensors(images, labels):
    x = torch.from_numpy(images.reshape(-1, 1, 28, 28).astype("float32") / 255)
    return x, torch.from_numpy(labels.astype("int64"))


def build(classes=10):
    def norm(channels, dims=2):
        return (nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d)(channels, eps=1e-3,
                                                                  momentum=0.01)

    model = nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), norm(32), nn.MaxPool2d(2), norm(32),
        nn.Conv2d(32, 64, 3), nn.ReLU(), norm(64), nn.MaxPool2d(2), norm(64),
        nn.Flatten(), nn.Linear(1600, 256), nn.ReLU(), norm(256, dims=1),
        nn.Linear(256, classes),
    )
    for layer in model:
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
    return model


def evaluate(model, x, y, batch_size, autocast):
    model.eval()
    loss_sum, correct = 0.0, 0
    with torch.no_grad(), autocast():
        for start in range(0, len(x), batch_size):
            logits = model(x[start:start + batch_size]).float()
            target = y[start:start + batch_size]
            loss_sum += nn.functional.cross_entropy(logits, target, reduction="sum").item()
            correct += (logits.argmax(1) == target).sum().item()
    return loss_sum / len(x), correct / len(x)


def train_epoch(model, optimizer, x, y, batch_size, autocast):
    model.train()
    order = torch.randperm(len(x))
    loss_sum, correct = 0.0, 0
    for start in range(0, len(x), batch_size):
        index = order[start:start + batch_size]
        with autocast():
            logits = model(x[index]).float()
            loss = nn.functional.cross_entropy(logits, y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.item() * len(index)
        correct += (logits.argmax(1) == y[index]).sum().item()
    return loss_sum / len(x), correct / len(x)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--validation-split", type=float, default=0.2)
    parser.add_argument("--output-dir", type=Path, default=Path("outputs-torch"))
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the model (the strongest peer a PyTorch user has)")
    parser.add_argument("--seed", type=int, default=None, help="seed torch's generators")
    parser.add_argument("--no-plot", action="store_true", help="accepted for the harness")
    parser.add_argument("--verbose", type=int, default=2)
    args = parser.parse_args(argv)

    if args.seed is not None:
        torch.manual_seed(args.seed)
    arrays = load(args.data_dir)
    split_at = int(len(arrays["train_imgs"]) * (1 - args.validation_split))
    x_all, y_all = to_tensors(arrays["train_imgs"], arrays["train_labels"])
    x_train, y_train, x_val, y_val = x_all[:split_at], y_all[:split_at], x_all[split_at:], \
        y_all[split_at:]
    x_test, y_test = to_tensors(arrays["test_imgs"], arrays["test_labels"])

    network = build()
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-7)
    model = torch.compile(network) if args.compile else network
    autocast = ((lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if args.bf16
                else contextlib.nullcontext)
    history = {"accuracy": [], "loss": [], "val_accuracy": [], "val_loss": []}
    epoch_seconds = []
    for epoch in range(args.epochs):
        start = time.perf_counter()
        loss, accuracy = train_epoch(model, optimizer, x_train, y_train, args.batch_size,
                                     autocast)
        val_loss, val_accuracy = evaluate(model, x_val, y_val, args.batch_size, autocast)
        epoch_seconds.append(time.perf_counter() - start)
        for key, value in zip(history, (accuracy, loss, val_accuracy, val_loss)):
            history[key].append(value)
        if args.verbose:
            print(f"Epoch {epoch + 1}/{args.epochs} - {epoch_seconds[-1]:.1f}s - "
                  f"loss {loss:.4f} - accuracy {accuracy:.4f} - val_loss {val_loss:.4f} - "
                  f"val_accuracy {val_accuracy:.4f}", flush=True)
    start = time.perf_counter()
    test_loss, test_accuracy = evaluate(model, x_test, y_test, 32, autocast)
    evaluation_seconds = time.perf_counter() - start
    print(f"Test loss: {test_loss} / Test accuracy: {test_accuracy}")

    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "history.json").write_text(json.dumps(history, indent=2))
    (args.output_dir / "run.json").write_text(json.dumps({
        "test_loss": test_loss, "test_accuracy": test_accuracy,
        "train_images": split_at, "epoch_seconds": epoch_seconds,
        "evaluation_seconds": evaluation_seconds, "bf16": args.bf16, "compile": args.compile,
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "torch_cuda": torch.version.cuda, "numpy": np.__version__},
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
