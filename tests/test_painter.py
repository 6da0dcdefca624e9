"""Pictures drawn beside the run (machinery/painter.py, outputs.Pictures): the same
bytes as drawn in the run, drawn by the run wherever the other process cannot, and
nothing left behind by Ctrl-C or a run that is gone."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import model_batchnorm as mb
import plot_history
from conftest import ROOT
from machinery import batchnorm_stats, outputs, painter
from testdata import synthetic

STATISTICS = [[{"moving_mean": 0.1 * e, "moving_variance": 1 - 0.1 * e,
                "batch_mean": 0.5, "batch_variance": 0.3 + 0.01 * e}] * 2 for e in range(3)]


def expected_png(tmp_path, function, *args):
    """What the run's own process draws: plot_history itself, here."""
    path = tmp_path / f"expected-{function}.png"
    getattr(plot_history, function)(*args, path)
    return path.read_bytes()


def refusing(*args, **kwargs):
    raise AssertionError("drawn in the run's process")


def only_beside_the_run(tmp_path, monkeypatch, statistics):
    """(what the run draws for `statistics`, Pictures in an empty folder) with the run's
    own drawing of the statistics refused: what appears was drawn by the other process."""
    expected = expected_png(tmp_path, "plot_batchnorm_statistics", statistics)
    monkeypatch.setattr(plot_history, "plot_batchnorm_statistics", refusing)
    (tmp_path / "run").mkdir()
    return expected, outputs.Pictures(tmp_path / "run")


def test_a_picture_drawn_beside_the_run_is_the_one_drawn_in_it(tmp_path, monkeypatch):
    expected, pictures = only_beside_the_run(tmp_path, monkeypatch, STATISTICS)
    pictures.ask("statistics.png", "plot_batchnorm_statistics", STATISTICS)
    assert pictures.take("statistics.png").read_bytes() == expected
    pictures.close()
    assert sorted(p.name for p in pictures.out.iterdir()) == ["statistics.png"]


def test_a_picture_asked_for_after_another_was_taken_is_drawn_anew(tmp_path, monkeypatch):
    other = [[dict(layer, batch_mean=2.0) for layer in epoch] for epoch in STATISTICS]
    expected, pictures = only_beside_the_run(tmp_path, monkeypatch, other)
    pictures.ask("first.png", "plot_batchnorm_statistics", STATISTICS)
    pictures.take("first.png")
    pictures.ask("second.png", "plot_batchnorm_statistics", other)
    assert pictures.take("second.png").read_bytes() == expected
    pictures.close()


@pytest.mark.parametrize("trouble", ["cannot start", "died"])
def test_a_picture_the_other_process_cannot_draw_is_drawn_by_the_run(tmp_path, monkeypatch,
                                                                     trouble):
    y_true, y_pred = np.array([0, 1, 2, 2]), np.array([0, 2, 2, 2])
    names = [("a", "a"), ("b", "b"), ("c", "c")]
    expected = expected_png(tmp_path, "plot_confusion_matrix", y_true, y_pred, names)
    if trouble == "cannot start":
        monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python-here"))
    pictures = outputs.Pictures(tmp_path)
    if trouble == "died":
        pictures.painter.process.kill()
    pictures.ask("confusion.png", "plot_confusion_matrix", y_true, y_pred, names)
    assert pictures.take("confusion.png").read_bytes() == expected
    pictures.close()


def test_ctrl_c_while_waiting_ends_the_process_and_leaves_no_partial_file(tmp_path,
                                                                          monkeypatch):
    pictures = outputs.Pictures(tmp_path)
    process = pictures.painter.process

    def interrupted(number):
        time.sleep(2)  # the process is drawing (or has drawn) the partial file by now
        raise KeyboardInterrupt

    monkeypatch.setattr(pictures.painter, "_answer", interrupted)
    pictures.ask("statistics.png", "plot_batchnorm_statistics", STATISTICS)
    with pytest.raises(KeyboardInterrupt):
        pictures.take("statistics.png")
    assert process.poll() is not None  # ended before the partial file was removed
    time.sleep(0.5)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT to one process")
def test_the_other_process_leaves_ctrl_c_to_the_run(tmp_path, monkeypatch):
    expected, pictures = only_beside_the_run(tmp_path, monkeypatch, STATISTICS)
    pictures.ask("first.png", "plot_batchnorm_statistics", STATISTICS)
    pictures.take("first.png")  # drawn there: the process is serving, its handler in place
    pictures.painter.process.send_signal(signal.SIGINT)
    pictures.ask("statistics.png", "plot_batchnorm_statistics", STATISTICS)
    assert pictures.take("statistics.png").read_bytes() == expected
    pictures.close()


# A run that asks for a picture and is gone as soon as the request has left, before the
# other process has drawn it (as after SIGKILL: no clean-up of its own).
GONE = """
import json, os, sys, time
sys.path.insert(0, {root!r})
from machinery import painter
p = painter.Painter()
p.draw("plot_batchnorm_statistics", (json.loads({statistics!r}),), {path!r})
while not p.to_send.empty():
    time.sleep(0.01)
time.sleep(0.2)
print(p.process.pid, flush=True)
os._exit(0)
"""
# Twelve layers: a picture that takes the other process a second or more to draw.
SLOW = [epoch * 6 for epoch in STATISTICS]


@pytest.mark.skipif(sys.platform == "win32", reason="waits for a process by its number")
def test_a_picture_nobody_will_take_is_removed(tmp_path):
    partial = tmp_path / "statistics.partial.png"
    script = GONE.format(root=str(ROOT), statistics=json.dumps(SLOW), path=str(partial))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    pid = int(done.stdout.split()[0])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        pytest.fail("the other process outlived its run by a minute")
    assert not partial.exists()


class AskedFor:
    def __init__(self):
        self.asked = []

    def ask(self, name, function, *args):
        self.asked.append((name, function, json.loads(json.dumps(args))))


def test_the_statistics_picture_is_asked_for_as_training_ends():
    arrays = synthetic.make_arrays(train=200, test=1, seed=6)
    images, labels = arrays["train_imgs"], arrays["train_labels"]
    config = {"validation_split": 0.2, "batch_size": 40, "track_batch_stats": False}
    pictures = AskedFor()
    monitor = batchnorm_stats.monitor(images, labels, config, pictures)

    class Before(mb.keras.callbacks.Callback):  # what was asked when each epoch began
        seen = []

        def on_epoch_begin(self, epoch, logs=None):
            self.seen.append(len(pictures.asked))

    model = mb.compile_model(mb.build_model((28, 28, 1), 10))
    model.fit(mb.preprocess(images), labels, batch_size=40, epochs=2, verbose=0,
              validation_split=0.2, callbacks=[monitor, Before()])
    assert Before.seen == [0, 0]
    assert [(name, function) for name, function, _ in pictures.asked] == [
        ("batchnorm_statistics.png", "plot_batchnorm_statistics")]
    statistics = pictures.asked[0][2][0]
    assert len(statistics) == 2 and len(statistics[0]) == 5  # each epoch, each layer
