"""A run's pictures drawn beside its own work (machinery/pictures.py): by a worker
thread, byte for byte the picture plot_history draws; a picture that fails fails the
run with its error; Ctrl-C while the run waits leaves no file; the statistics picture
is asked for as training ends."""
import _thread
import threading
import time

import numpy as np
import pytest

import model_batchnorm as mb
import plot_history
from conftest import settings_for
from machinery import batchnorm_stats, pictures
from testdata import synthetic

STATISTICS = [[{"moving_mean": 0.1 * e, "moving_variance": 1 - 0.1 * e,
                "batch_mean": 0.5, "batch_variance": 0.3 + 0.01 * e}] * 2 for e in range(3)]


def expected_png(tmp_path, draw, *args):
    """What plot_history draws into a file of its own, here."""
    path = tmp_path / f"expected-{draw.__name__}.png"
    draw(*args, path)
    return path.read_bytes()


def recording_threads(draw):
    """draw, noting the thread each call runs in."""
    def recorded(*args, **kwargs):
        recorded.threads.append(threading.current_thread())
        return draw(*args, **kwargs)
    recorded.threads = []
    return recorded


def test_a_picture_is_drawn_by_another_thread_and_is_the_one_plot_history_draws(tmp_path):
    expected = expected_png(tmp_path, plot_history.plot_batchnorm_statistics, STATISTICS)
    draw = recording_threads(plot_history.plot_batchnorm_statistics)
    (tmp_path / "run").mkdir()
    shown = pictures.Pictures(tmp_path / "run")
    shown.ask("statistics.png", draw, STATISTICS)
    assert shown.take("statistics.png").read_bytes() == expected
    shown.close()
    assert draw.threads and threading.main_thread() not in draw.threads
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["statistics.png"]


def test_a_picture_asked_for_after_another_was_taken_is_drawn_anew(tmp_path):
    other = [[dict(layer, batch_mean=2.0) for layer in epoch] for epoch in STATISTICS]
    expected = expected_png(tmp_path, plot_history.plot_batchnorm_statistics, other)
    shown = pictures.Pictures(tmp_path)
    shown.ask("first.png", plot_history.plot_batchnorm_statistics, STATISTICS)
    shown.take("first.png")
    shown.ask("second.png", plot_history.plot_batchnorm_statistics, other)
    assert shown.take("second.png").read_bytes() == expected
    shown.close()


def test_no_picture_is_drawn_under_no_plot(tmp_path):
    draw = recording_threads(plot_history.plot_batchnorm_statistics)
    shown = pictures.Pictures(tmp_path, enabled=False)
    shown.ask("statistics.png", draw, STATISTICS)
    assert shown.take_all() == {} and draw.threads == [] and list(tmp_path.iterdir()) == []


def test_a_picture_that_fails_fails_the_run_with_its_error_and_leaves_no_file(tmp_path):
    def broken(statistics, path):
        raise ValueError("no such statistics")

    shown = pictures.Pictures(tmp_path)
    shown.ask("statistics.png", broken, STATISTICS)
    with pytest.raises(ValueError, match="no such statistics"):
        shown.take("statistics.png")
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_while_waiting_leaves_no_file_and_draws_nothing_more(tmp_path):
    drawn = []

    def slow(name, path):
        time.sleep(1.0)
        drawn.append(name)
        path.write(b"a picture")

    shown = pictures.Pictures(tmp_path)
    shown.ask("first.png", slow, "first")
    shown.ask("second.png", slow, "second")  # waits for the first
    threading.Timer(0.3, _thread.interrupt_main).start()  # Ctrl-C, as the run waits
    with pytest.raises(KeyboardInterrupt):
        shown.take("first.png")
    time.sleep(1.5)  # the first picture is drawn by now, in memory only
    assert drawn == ["first"]  # the second was never started
    assert list(tmp_path.iterdir()) == []


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
    assert np.isfinite([layer["batch_mean"] for layer in statistics[0]]).all()
