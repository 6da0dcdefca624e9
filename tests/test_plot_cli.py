"""plot_history.py --title: the title goes above the panels of the picture it writes."""
import json

import numpy as np
import pytest
from matplotlib.image import imread

import plot_history as ph
from machinery.cli import run

HISTORY = {"accuracy": [0.5, 0.7], "loss": [1.2, 0.8],
           "val_accuracy": [0.4, 0.6], "val_loss": [1.4, 1.0]}
TITLE = "Synthetic data, not KMNIST"


@pytest.fixture
def histories(tmp_path):
    paths = []
    for name in ("a.json", "b.json"):
        paths.append(tmp_path / name)
        paths[-1].write_text(json.dumps(HISTORY))
    return paths


@pytest.fixture
def drawn(monkeypatch):
    """The figures the command line draws, by the function that drew them."""
    figures = {}
    for name in ("plot_history", "plot_comparison"):
        def keep(*args, _draw=getattr(ph, name), _name=name, **kwargs):
            figures[_name] = _draw(*args, **kwargs)
            return figures[_name]
        monkeypatch.setattr(ph, name, keep)
    return figures


@pytest.mark.parametrize("overlay", [False, True], ids=["one file", "overlay"])
def test_title_is_drawn_above_the_panels(overlay, histories, drawn, tmp_path, capsys):
    files = [str(p) for p in (histories if overlay else histories[:1])]
    labels = ["--labels", "BN", "no BN"] if overlay else []
    titled, plain = tmp_path / "titled.png", tmp_path / "plain.png"
    assert run(ph.main, [*files, *labels, "--title", TITLE, "-o", str(titled)]) == 0
    assert capsys.readouterr().out == f"Wrote {titled}\n"
    figure = drawn["plot_comparison" if overlay else "plot_history"]
    assert figure.get_suptitle() == TITLE
    assert run(ph.main, [*files, *labels, "-o", str(plain)]) == 0
    assert figure is not drawn["plot_comparison" if overlay else "plot_history"]
    assert drawn["plot_comparison" if overlay else "plot_history"].get_suptitle() == ""
    # The title is in the written picture: the two files differ, in their top rows.
    with_title, without = imread(titled), imread(plain)
    assert with_title.shape == without.shape
    rows_differing = np.flatnonzero(np.any(with_title != without, axis=(1, 2)))
    assert rows_differing.size and rows_differing[0] < with_title.shape[0] * 0.1
