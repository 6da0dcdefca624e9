"""The network's arithmetic, counted from the lesson's layer table, and the CPU's peak.

Only the convolutions and dense layers are counted: their multiply-adds (MACs) are
the work; BatchNormalization, ReLU, pooling and Adam add a few elementwise
operations per activation or weight, about 2% more, left out. One MAC is two
FLOPs. Training an image costs its forward pass, the weights' gradients (as many
MACs again) and the inputs' gradients (as many again, except for the first
convolution, whose input, the image, needs none).
"""
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

# (layer, output positions per image, MACs per position), from docs' layer table
LAYERS = (
    ("Conv2D 32, 3x3, on 28x28x1", 26 * 26, 32 * 3 * 3 * 1),
    ("Conv2D 64, 3x3, on 13x13x32", 11 * 11, 64 * 3 * 3 * 32),
    ("Dense 256 on 1,600", 1, 1600 * 256),
    ("Dense 10 on 256", 1, 256 * 10),
)


def forward_flops():
    """FLOPs of one image's forward pass (inference, validation)."""
    return 2 * sum(positions * macs for _, positions, macs in LAYERS)


def training_flops():
    """FLOPs of one training image: forward, weight gradients, input gradients."""
    first = 2 * LAYERS[0][1] * LAYERS[0][2]
    return 3 * forward_flops() - first


def epoch_flops(train_images, validation_images):
    """What an epoch computes: training plus one forward pass over the validation."""
    return train_images * training_flops() + validation_images * forward_flops()


# FLOPs per cycle and core: AMD Zen 5 (CPU family 26) has two 512-bit FMA pipes, 16
# float32 lanes each, an FMA being 2 FLOPs; AVX-512 BF16's VDPBF16PS does two bfloat16
# multiply-adds per float32 lane, 4 FLOPs, assumed at the FMA pipes' rate.
FLOP_PER_CYCLE = {"float32": 2 * 16 * 2, "bfloat16": 2 * 16 * 4}


def theoretical_peak(ghz, precision, cores=None):
    """cores x GHz x FLOP per cycle: what the arithmetic units could do at most."""
    return (cores or os.cpu_count()) * ghz * 1e9 * FLOP_PER_CYCLE[precision]


def measured_ghz(tries=3):
    """The core clock by bench/clock.c (needs a C compiler), or None without one."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    with tempfile.TemporaryDirectory() as folder:
        program = Path(folder) / "clock"
        subprocess.run([compiler, "-O1", str(Path(__file__).with_name("clock.c")), "-o",
                        str(program)], check=True)
        return max(float(subprocess.run([str(program)], capture_output=True, text=True,
                                        check=True).stdout.split()[0]) for _ in range(tries))


def measured_peak(multiply, size=2048, tries=5):
    """The best FLOP/s of `multiply` (a size x size matrix product) over a few tries:
    what the CPU's best-tuned kernel reaches, an attainable peak."""
    multiply()  # warm-up: threads, caches, first-call dispatch
    best = float("inf")
    for _ in range(tries):
        start = time.perf_counter()
        multiply()
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best


def numpy_float32_peak(size=2048):
    import numpy as np
    a = np.random.default_rng(0).random((size, size), dtype=np.float32)
    return measured_peak(lambda: a @ a, size)


def torch_bfloat16_peak(size=2048):
    import torch
    a = torch.rand(size, size).to(torch.bfloat16)
    return measured_peak(lambda: a @ a, size)
