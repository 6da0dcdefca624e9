"""--sync-bn: under --distribute, BatchNormalization normalises with the whole global
batch's statistics (docs/distributed.md), checked against a NumPy computation by hand;
without it, a note when each replica's share of the batch is small."""
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, cli
from machinery import distribute
from test_readme_errors import readme_row

MOMENTUM = 0.5  # the moving statistics move halfway to the batch's in one step


def one_step(path, *extra):
    """In a fresh process (logical devices are set before TensorFlow starts): the
    lesson's model under --distribute mirrored on two CPU devices with --sync-bn, one
    step on a global batch of 8 whose halves (one per replica) differ; saves the batch,
    the first convolution's starting weights and the first BatchNormalization's moving
    statistics after the step. `extra`: more flags (--fast)."""
    import model_batchnorm as mb
    from conftest import settings_for
    some = (np.zeros((10, 28, 28), np.uint8), np.zeros(10, np.uint8))  # any 10 images
    run = settings_for(["--distribute", "mirrored", "--cpu-devices", "2", "--sync-bn",
                        "--bn-momentum", MOMENTUM, "--batch-size", "8", *extra], (some, some),
                       strategy=distribute.make_strategy("mirrored", 2))
    model = mb.make_model(run)
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(0.5, 1, (4, 28, 28, 1)), rng.uniform(0, 0.2, (4, 28, 28, 1))])
    kernel, bias = (np.asarray(w) for w in model.layers[0].get_weights())
    model.fit(x.astype("float32"), np.arange(8), batch_size=8, epochs=1, shuffle=False, verbose=0)
    norm = model.layers[1]
    np.savez(path, x=x, kernel=kernel, bias=bias, mean=np.asarray(norm.moving_mean),
             variance=np.asarray(norm.moving_variance))


@pytest.mark.parametrize("flags", [[], ["--fast"]], ids=["default", "fast"])
def test_sync_bn_moving_statistics_are_those_of_the_whole_global_batch(flags, tmp_path):
    """--fast's fused layer hands a synchronised layer to Keras' own: the same numbers."""
    path = tmp_path / "step.npz"
    code = f"import sys; sys.path[:0] = {[str(ROOT), str(ROOT / 'tests')]!r}; " \
           f"import test_sync_bn; test_sync_bn.one_step({str(path)!r}, *{flags!r})"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=240, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    saved = np.load(path)
    # The first convolution by hand: 3x3 windows, no padding, then ReLU.
    windows = np.lib.stride_tricks.sliding_window_view(saved["x"][..., 0], (3, 3), axis=(1, 2))
    features = np.maximum(np.einsum("nijab,abf->nijf", windows, saved["kernel"][:, :, 0, :])
                          + saved["bias"], 0)
    # One device on the same global batch: statistics over all 8 images; Keras'
    # moving statistics start at mean 0, variance 1.
    batch_mean = features.mean(axis=(0, 1, 2))
    batch_variance = features.var(axis=(0, 1, 2))
    np.testing.assert_allclose(saved["mean"], MOMENTUM * 0 + (1 - MOMENTUM) * batch_mean,
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(saved["variance"], MOMENTUM * 1 + (1 - MOMENTUM) * batch_variance,
                               rtol=1e-4, atol=1e-6)
    # The halves differ: moving variances from each replica's own statistics would miss
    # the whole batch's by at least ten times the tolerance above (variances near 1).
    half_variance = (features[:4].var(axis=(0, 1, 2)) + features[4:].var(axis=(0, 1, 2))) / 2
    assert (1 - MOMENTUM) * np.abs(half_variance - batch_variance).max() > 10 * (1e-4 + 1e-6)


class Replicas:
    def __init__(self, count):
        self.num_replicas_in_sync = count


@pytest.mark.parametrize("replicas, sync_bn, note", [
    (16, False, "Note: each of the 16 replicas normalises only 15 images per step (under 16, "
                "BatchNormalization's statistics get noisy): add --sync-bn, or a larger "
                "--batch-size (docs/distributed.md).\n"),  # 250 // 16 = 15
    (16, True, ""),  # synchronised: every layer sees all 250
    (4, False, ""),  # 62 each
], ids=["small-shares", "synchronised", "large-shares"])
def test_a_note_when_each_replica_normalises_few_images(replicas, sync_bn, note, capsys):
    distribute.note_small_shares(250, sync_bn, Replicas(replicas))
    assert capsys.readouterr().out == note


def test_sync_bn_without_distribute_is_refused(capsys, tmp_path):
    (line,), code = readme_row("`--sync-bn` without")  # docs/troubleshooting.md's table
    assert cli(["--sync-bn", "--output-dir", str(tmp_path / "out")]) == code == 2
    assert capsys.readouterr().err == line + "\n"
