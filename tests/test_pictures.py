"""A run's pictures drawn beside it (machinery/pictures.py, machinery/painter.py): by a
second process, byte for byte the picture plot_history draws; drawn by the run wherever
the process cannot start, has died or cannot be sent the function; nothing left behind
by Ctrl-C or by a run that is gone; the statistics picture asked for as training ends."""
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
from conftest import ROOT, settings_for
from machinery import batchnorm_stats, painter, pictures
from testdata import synthetic

STATISTICS = [[{"moving_mean": 0.1 * e, "moving_variance": 1 - 0.1 * e,
                "batch_mean": 0.5, "batch_variance": 0.3 + 0.01 * e}] * 2 for e in range(3)]


def expected_png(tmp_path, draw, *args):
    """What plot_history draws into a file of its own, here."""
    path = tmp_path / f"expected-{draw.__name__}.png"
    draw(*args, path)
    return path.read_bytes()


@pytest.fixture
def answers(monkeypatch):
    """Each answer the process gives the run: True where it drew the picture."""
    given, drew = [], painter.Painter.drew

    def recorded(self, number):
        given.append(drew(self, number))
        return given[-1]
    monkeypatch.setattr(painter.Painter, "drew", recorded)
    return given


def test_a_picture_drawn_beside_the_run_is_the_one_plot_history_draws(tmp_path, answers):
    expected = expected_png(tmp_path, plot_history.plot_batchnorm_statistics, STATISTICS)
    (tmp_path / "run").mkdir()
    shown = pictures.Pictures(tmp_path / "run")
    shown.ask("statistics.png", plot_history.plot_batchnorm_statistics, STATISTICS)
    assert shown.take("statistics.png").read_bytes() == expected
    shown.close()
    assert answers == [True]  # drawn by the other process, not by the run
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["statistics.png"]


def test_a_picture_asked_for_after_another_was_taken_is_drawn_anew(tmp_path, answers):
    other = [[dict(layer, batch_mean=2.0) for layer in epoch] for epoch in STATISTICS]
    expected = expected_png(tmp_path, plot_history.plot_batchnorm_statistics, other)
    shown = pictures.Pictures(tmp_path)
    shown.ask("first.png", plot_history.plot_batchnorm_statistics, STATISTICS)
    shown.take("first.png")
    shown.ask("second.png", plot_history.plot_batchnorm_statistics, other)
    assert shown.take("second.png").read_bytes() == expected
    shown.close()
    assert answers == [True, True]


def test_no_picture_is_drawn_under_no_plot(tmp_path):
    shown = pictures.Pictures(tmp_path, enabled=False)
    shown.ask("statistics.png", plot_history.plot_batchnorm_statistics, STATISTICS)
    assert shown.painter is None and shown.take_all() == {} and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("trouble", ["cannot start", "died", "cannot be sent"])
def test_a_picture_the_other_process_cannot_draw_is_drawn_by_the_run(tmp_path, monkeypatch,
                                                                     trouble):
    y_true, y_pred = np.array([0, 1, 2, 2]), np.array([0, 2, 2, 2])
    names = [("a", "a"), ("b", "b"), ("c", "c")]
    expected = expected_png(tmp_path, plot_history.plot_confusion_matrix, y_true, y_pred, names)
    if trouble == "cannot start":
        monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python-here"))
    shown = pictures.Pictures(tmp_path)
    if trouble == "died":
        shown.painter.process.kill()
    def unsendable(*args):  # a function of no module: the process cannot import it
        return plot_history.plot_confusion_matrix(*args)
    draw = unsendable if trouble == "cannot be sent" else plot_history.plot_confusion_matrix
    shown.ask("confusion.png", draw, y_true, y_pred, names)
    assert shown.take("confusion.png").read_bytes() == expected
    shown.close()


def test_ctrl_c_while_waiting_ends_the_process_and_leaves_no_partial_file(tmp_path,
                                                                          monkeypatch):
    shown = pictures.Pictures(tmp_path)
    process = shown.painter.process

    def interrupted(number):
        time.sleep(2)  # the process is drawing (or has drawn) the partial file by now
        raise KeyboardInterrupt

    monkeypatch.setattr(shown.painter, "_answer", interrupted)
    shown.ask("statistics.png", plot_history.plot_batchnorm_statistics, STATISTICS)
    with pytest.raises(KeyboardInterrupt):
        shown.take("statistics.png")
    assert process.poll() is not None  # ended before the partial file was removed
    time.sleep(0.5)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT to one process")
def test_the_other_process_leaves_ctrl_c_to_the_run(tmp_path, answers):
    shown = pictures.Pictures(tmp_path)
    shown.ask("first.png", plot_history.plot_batchnorm_statistics, STATISTICS)
    shown.take("first.png")  # drawn there: the process is serving, its handler in place
    shown.painter.process.send_signal(signal.SIGINT)
    shown.ask("statistics.png", plot_history.plot_batchnorm_statistics, STATISTICS)
    shown.take("statistics.png")
    shown.close()
    assert answers == [True, True]


# A run that asks for a picture and is gone as soon as the request has left, before the
# other process has drawn it (as after SIGKILL: no clean-up of its own).
GONE = """
import json, os, sys, time
sys.path.insert(0, {root!r})
import plot_history
from machinery import painter
p = painter.Painter()
p.draw(plot_history.plot_batchnorm_statistics, (json.loads({statistics!r}),), {path!r})
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

    def ask(self, name, draw, *args):
        self.asked.append((name, draw, args))


def test_the_statistics_picture_is_asked_for_as_training_ends():
    arrays = synthetic.make_arrays(train=200, test=1, seed=6)
    images, labels = arrays["train_imgs"], arrays["train_labels"]
    run = settings_for(["--batch-size", 40], ((images, labels),) * 2)
    asked = AskedFor()
    monitor = batchnorm_stats.monitor(images, labels, run, asked)

    class Before(mb.keras.callbacks.Callback):  # what was asked when each epoch began
        seen = []

        def on_epoch_begin(self, epoch, logs=None):
            self.seen.append(len(asked.asked))

    model = mb.compile_model(mb.build_model((28, 28, 1), 10))
    model.fit(mb.preprocess(images), labels, batch_size=40, epochs=2, verbose=0,
              validation_split=0.2, callbacks=[monitor, Before()])
    assert Before.seen == [0, 0]
    assert [(name, draw) for name, draw, _ in asked.asked] == [
        ("batchnorm_statistics.png", plot_history.plot_batchnorm_statistics)]
    statistics, = asked.asked[0][2]
    assert len(statistics) == 2 and len(statistics[0]) == 5  # each epoch, each layer
