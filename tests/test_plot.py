"""plot_history.py: curves from a History, a dict or a JSON file; overlays; test-set pictures."""
import json
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
from matplotlib.image import imread

import plot_history as ph
from conftest import error_lines, run_script

HISTORY = {
    "accuracy": [0.80, 0.90, 0.95],
    "loss": [0.60, 0.30, 0.15],
    "val_accuracy": [0.70, 0.85, 0.90],
    "val_loss": [0.90, 0.50, 0.35],
}


def check_figure(figure, path):
    axes = figure.axes
    assert [ax.get_title() for ax in axes] == ["Accuracy", "Loss"]
    assert [len(ax.get_lines()) for ax in axes] == [2, 2]  # training and validation
    for ax in axes:
        assert [text.get_text() for text in ax.get_legend().get_texts()] == [
            "training", "validation"]
        for line in ax.get_lines():
            np.testing.assert_array_equal(line.get_xdata(), [1, 2, 3])  # epochs from 1
    np.testing.assert_array_equal(axes[0].get_lines()[1].get_ydata(), HISTORY["val_accuracy"])
    np.testing.assert_array_equal(axes[1].get_lines()[0].get_ydata(), HISTORY["loss"])
    assert imread(path).shape[2] in (3, 4)  # a real PNG


def test_plot_from_dict(tmp_path):
    check_figure(ph.plot_history(HISTORY, tmp_path / "a.png"), tmp_path / "a.png")


def test_plot_from_keras_history(tmp_path):
    history = keras.callbacks.History()
    history.history = HISTORY
    check_figure(ph.plot_history(history, tmp_path / "b.png"), tmp_path / "b.png")


def test_plot_from_json_path(tmp_path):
    source = tmp_path / "history.json"
    source.write_text(json.dumps(HISTORY))
    check_figure(ph.plot_history(str(source), tmp_path / "c.png"), tmp_path / "c.png")


def test_plot_without_path_returns_figure_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    figure = ph.plot_history(HISTORY, title="run 1")
    assert figure.get_suptitle() == "run 1"
    assert list(tmp_path.iterdir()) == []


def test_command_line_writes_the_png(tmp_path):
    source = tmp_path / "history.json"
    source.write_text(json.dumps(HISTORY))
    done = run_script(source, "-o", tmp_path / "curves.png", script="plot_history.py")
    assert done.returncode == 0, done.stderr
    assert imread(tmp_path / "curves.png").shape[0] > 100


def test_overlay_of_several_runs_labels_each(tmp_path):
    other = {key: [v * 0.9 for v in values] for key, values in HISTORY.items()}
    figure = ph.plot_comparison([HISTORY, other], ["BN", "no BN"], tmp_path / "o.png")
    for ax in figure.axes:
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["BN", "no BN"]
    assert figure.axes[0].get_title() == "Validation accuracy"
    np.testing.assert_allclose(figure.axes[0].get_lines()[1].get_ydata(),
                               other["val_accuracy"])


def test_command_line_overlays_files_with_labels(tmp_path):
    for name in ("a.json", "b.json"):
        (tmp_path / name).write_text(json.dumps(HISTORY))
    done = run_script(tmp_path / "a.json", tmp_path / "b.json", "--labels", "BN", "no BN",
                      "-o", tmp_path / "overlay.png", script="plot_history.py")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "overlay.png").stat().st_size > 0


@pytest.mark.parametrize("content, words", [
    (None, "does not exist"),
    ("{not json", "not valid JSON"),
    (json.dumps({"val_loss": [1.0]}), "no 'loss' series"),
    (json.dumps({"loss": [1.0]}), "no 'accuracy' series"),
])
def test_command_line_bad_input_is_one_line_exit_1(content, words, tmp_path):
    source = tmp_path / "history.json"
    if content is not None:
        source.write_text(content)
    done = run_script(source, script="plot_history.py")
    assert done.returncode == 1
    lines = error_lines(done.stderr)
    assert len(lines) == 1 and words in lines[0]


def test_mismatched_labels_are_refused():
    with pytest.raises(ph.HistoryError, match="one label per history"):
        ph.plot_comparison([HISTORY, HISTORY], ["only one"])


NAMES = [("お", "o"), ("き", "ki"), ("す", "su")]


def test_labels_fall_back_to_romanization_without_a_cjk_font(monkeypatch):
    monkeypatch.setattr(ph, "font_covering", lambda characters: None)
    assert ph.class_labels(NAMES) == (["o", "ki", "su"], None)


def test_labels_use_the_characters_with_a_cjk_font(monkeypatch):
    monkeypatch.setattr(ph, "font_covering", lambda characters: "Some CJK Font")
    assert ph.class_labels(NAMES) == (["お", "き", "す"], "Some CJK Font")


def test_matplotlibs_last_resort_font_never_counts_as_covering(monkeypatch):
    """matplotlib's Last Resort font has a box for every character, so its charmap covers
    the hiragana; under its own name it must not count, under another name the same file
    does. The file is a stand-in whose charmap covers every character (not every
    matplotlib release ships the real one)."""
    import dataclasses
    from matplotlib import font_manager, ft2font

    class EveryCharacter:
        def __init__(self, fname):
            self.fname = fname

        def get_charmap(self):
            return {code: 1 for code in range(0x3000, 0x3100)}  # CJK symbols, hiragana

    monkeypatch.setattr(ft2font, "FT2Font", EveryCharacter)
    last_resort = font_manager.FontEntry(fname="LastResortHE-Regular.ttf",
                                         name="Last Resort High-Efficiency")
    for name, expected in (("Last Resort High-Efficiency", None), ("Any Other", "Any Other")):
        entry = dataclasses.replace(last_resort, name=name)
        monkeypatch.setattr(font_manager.fontManager, "ttflist", [entry])
        ph.font_covering.cache_clear()
        assert ph.font_covering("おきす") == expected
    ph.font_covering.cache_clear()


@pytest.mark.parametrize("font", ["found", None])
def test_pictures_draw_without_glyph_or_font_warnings(font, tmp_path, monkeypatch):
    if font is None:
        monkeypatch.setattr(ph, "font_covering", lambda characters: None)
    images = np.random.default_rng(0).integers(0, 255, (40, 28, 28)).astype(np.uint8)
    y_true = np.arange(40) % 3
    y_pred = y_true.copy()
    y_pred[:4] = (y_pred[:4] + 1) % 3
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        grid = ph.plot_predictions(images, y_true, y_pred, NAMES, tmp_path / "p.png")
        matrix = ph.plot_confusion_matrix(y_true, y_pred, NAMES, tmp_path / "m.png")
    assert [str(w.message) for w in caught] == []
    titles = [ax.get_title() for ax in grid.axes if ax.get_title()]
    assert len(titles) == 32
    red = [ax for ax in grid.axes if ax.get_title() and ax.title.get_color() == "red"]
    assert len(red) == 4
    assert "4 wrong" in grid.get_suptitle()
    assert [t.get_text() for t in matrix.axes[0].get_xticklabels()] == ph.class_labels(NAMES)[0]


def test_confusion_matrix_counts():
    counts = ph.confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 2, 0], 3)
    np.testing.assert_array_equal(counts, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])


def test_command_line_without_o_writes_beside_the_first_file(tmp_path, monkeypatch):
    first, second, elsewhere = tmp_path / "first", tmp_path / "second", tmp_path / "cwd"
    for folder in (first, second, elsewhere):
        folder.mkdir()
    (first / "history.json").write_text(json.dumps(HISTORY))
    (second / "other.json").write_text(json.dumps(HISTORY))
    monkeypatch.chdir(elsewhere)
    ph.main([str(first / "history.json")])
    assert imread(first / "history.png").shape[2] in (3, 4)  # --help: "the first file's name"
    ph.main([str(first / "history.json"), str(second / "other.json")])
    assert sorted(p.name for p in first.iterdir()) == ["history.json", "history.png"]
    assert list(second.iterdir()) == [second / "other.json"]
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("files", [1, 2], ids=["one", "overlay"])
def test_command_line_title_goes_above_the_panels(files, tmp_path, monkeypatch):
    drawn = []
    for name in ("plot_history", "plot_comparison"):
        real = getattr(ph, name)
        monkeypatch.setattr(ph, name, lambda *a, real=real, **k: drawn.append(real(*a, **k)))
    (tmp_path / "h.json").write_text(json.dumps(HISTORY))
    ph.main([str(tmp_path / "h.json")] * files + ["-o", str(tmp_path / "t.png"),
                                                  "--title", "Synthetic data"])
    assert [figure.get_suptitle() for figure in drawn] == ["Synthetic data"]


def test_no_plot_writes_no_picture_anywhere(data_dir, tmp_path):
    import model_batchnorm as mb
    mb.main(["--compare", "--epochs", "1", "--limit", "300", "--no-plot",
             "--data-dir", str(data_dir), "--output-dir", str(tmp_path / "out")])
    assert (tmp_path / "out" / "comparison.json").exists()
    assert list((tmp_path / "out").rglob("*.png")) == []


def test_overlay_labels_default_to_the_file_names(tmp_path, monkeypatch):
    drawn = []
    real = ph.plot_comparison
    monkeypatch.setattr(ph, "plot_comparison",
                        lambda *a, **k: drawn.append(real(*a, **k)))
    for folder in ("batchnorm", "no_batchnorm"):
        (tmp_path / "a-rather-long-folder-name" / folder).mkdir(parents=True)
        (tmp_path / "a-rather-long-folder-name" / folder / "history.json").write_text(
            json.dumps(HISTORY))
    (tmp_path / "x.json").write_text(json.dumps(HISTORY))
    base = tmp_path / "a-rather-long-folder-name"
    ph.main([str(base / "batchnorm" / "history.json"), str(base / "no_batchnorm" / "history.json"),
             "-o", str(tmp_path / "o.png")])
    ph.main([str(tmp_path / "x.json"), str(base / "batchnorm" / "history.json"),
             "-o", str(tmp_path / "p.png")])
    legends = [[t.get_text() for t in figure.axes[0].get_legend().get_texts()]
               for figure in drawn]
    assert legends == [["batchnorm/history.json", "no_batchnorm/history.json"],
                       ["x.json", "history.json"]]


def test_batch_statistics_curves_are_dashed_and_the_others_solid():
    # docs/flags-and-outputs.md: --track-batch-stats values are "drawn dashed".
    history = {**HISTORY, "val_accuracy_batch_stats": [0.75, 0.88, 0.93],
               "val_loss_batch_stats": [0.7, 0.4, 0.2]}
    figure = ph.plot_history(history)
    for ax, key in zip(figure.axes, ("val_accuracy_batch_stats", "val_loss_batch_stats")):
        styles = {line.get_label(): line.get_linestyle() for line in ax.get_lines()}
        assert styles == {"training": "-", "validation": "-",
                          "validation, batch statistics": "--"}
        dashed, = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
        np.testing.assert_array_equal(dashed.get_ydata(), history[key])
