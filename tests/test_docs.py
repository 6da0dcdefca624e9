"""The prose of the docs held to the code as the tables are (docs/development.md, "The
docs"): each flag's default stated in the flag table only, every measured figure beside
a link to its record in bench/records/ (or a value from the lesson, a cited paper or the
code, each checked here), and the pages within their lengths. Every message the code
prints has its one row: tests/test_docs_tables.py."""
import re

import pytest

import model_batchnorm as mb
from conftest import ROOT
from machinery import compare, distribute, layer_inputs
from test_docs_tables import help_entries, stated_default

DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [ROOT / "README.md", *DOCS]
FLAG_TABLE = ROOT / "docs" / "flags-and-outputs.md"


def prose(text):
    """`text` without its code blocks and inline code, which quote commands and output."""
    return re.sub(r"`[^`\n]*`", "", re.sub(r"```.*?```", "", text, flags=re.S))


def sections(text):
    """The text under each heading, up to the next heading."""
    return re.split(r"^#+ .*$", text, flags=re.M)


def test_each_flags_default_is_stated_in_the_flag_table_only(monkeypatch):
    with_defaults = [flag for flag, text in help_entries(monkeypatch).items()
                     if stated_default(text) is not None]
    assert len(with_defaults) >= 10
    restated = []
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        if page == FLAG_TABLE:
            text = text.split("\n## Flags\n", 1)[0] + text.split("\n## Flags\n", 1)[1].split(
                "\n## ", 1)[1]
        # A sentence (or a table row) that names the flag and a default.
        for sentence in re.split(r"(?<=[.;])\s+|\n\|", text):
            for flag in with_defaults:
                if re.search(rf"`{flag}\b[^`]*`", sentence) and re.search(r"\bdefault",
                                                                          sentence):
                    restated.append((page.name, flag, sentence.strip()[:90]))
    assert restated == [], "\n".join(map(str, restated))


# A figure: a number with a unit of time, share, ratio, size or speed.
FIGURE = re.compile(r"(?<![\w.^])(\d[\d,]*(?:\.\d+)?)\s?(%|×(?!\d)|times\b|seconds?\b|s\b|ms\b"
                    r"|min\b|minutes?\b|GB\b|MB\b|images/s\b)")
RECORD = re.compile(r"\]\((?:\.\./)?bench/records/[^)]+\)")
POWER = re.compile(r"(0\.\d+)\^(\d+) (?:=|is) ([\d.]+)%")


def power_is_right(text):
    """Every 'x^n = y%' in `text` computes: y is x to the n, in percent, as rounded."""
    for base, exponent, percent in POWER.findall(text):
        decimals = len(percent.partition(".")[2])
        assert round(100 * float(base) ** int(exponent), decimals) == float(percent), \
            (base, exponent, percent)
    return {f"{percent}%" for *_, percent in POWER.findall(text)}


# Figures that need no record, each with the place it comes from, checked below.
GIVEN = {
    "20%": "the lesson's validation split",
    "99%": "BatchNormalization's momentum, Keras' and the lesson's",
    "95.12%": "KMNIST's authors' simple CNN (rois-codh/kmnist, cited on the page)",
    "97.82%": "KMNIST's authors' PreActResNet-18 (rois-codh/kmnist, cited on the page)",
    "3%": "--track-layer-inputs' budget (layer_inputs.BUDGET)",
    "90%": "--compare's thresholds (compare.THRESHOLDS)",
    "95%": "--compare's thresholds, and the remedies' test threshold",
    "98%": "--compare's thresholds (compare.THRESHOLDS)",
    "10 seconds": "the heartbeat timeout (distribute.HEARTBEAT_TIMEOUT_S)",
    "30 seconds": "the lost worker's bound (distribute.LOST_WORKER_BOUND_S)",
    "5 s": "the Windows rename's retries (files.replace: 50 tries, 0.1 s apart)",
    "300 s": "every test's time limit (pytest.ini)",
}


def test_the_given_figures_are_what_their_sources_say():
    assert mb.validation_split == 0.2
    assert mb.keras.layers.BatchNormalization().momentum == 0.99
    assert layer_inputs.BUDGET == 0.03
    assert compare.THRESHOLDS == (0.90, 0.95, 0.98)
    assert (distribute.HEARTBEAT_TIMEOUT_S, distribute.LOST_WORKER_BOUND_S) == (10, 30)
    assert "attempts=50" in (ROOT / "machinery" / "files.py").read_text()
    assert "timeout = 300" in (ROOT / "pytest.ini").read_text()
    assert "0.95" in (ROOT / "tests" / "test_batchnorm_stats.py").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "rois-codh/kmnist" in readme and "95.12%" in readme and "97.82%" in readme


def unrecorded_figures(text):
    """The figures of `text` in a section that links no record and that are not given."""
    found = []
    for part in sections(text):
        if RECORD.search(part):
            continue
        computed = power_is_right(prose(part))
        for number, unit in FIGURE.findall(prose(part)):
            figure = f"{number}{unit}" if unit in ("%", "×") else f"{number} {unit}"
            if figure not in GIVEN and figure not in computed:
                found.append(figure)
    return found


@pytest.mark.parametrize("page", PAGES, ids=[page.name for page in PAGES])
def test_every_measured_figure_links_its_record(page):
    assert unrecorded_figures(page.read_text()) == []


def test_the_figure_check_sees_a_figure_and_its_record():
    assert unrecorded_figures("## A\n\nIt took 3.5 s and 1.2 GB, 1.4× faster.\n") == [
        "3.5 s", "1.2 GB", "1.4×"]
    assert unrecorded_figures("## A\n\nIt took 3.5 s ([record](../bench/records/x.md)).\n"
                              "\n## B\n\n20% validate; 28×28 images.\n") == []
    assert unrecorded_figures("0.99^21 = 81% of it") == []
    with pytest.raises(AssertionError):
        unrecorded_figures("0.99^21 = 91% of it")


def test_the_pages_keep_within_their_lengths():
    lengths = {page.name: len(page.read_text().splitlines()) for page in DOCS}
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200
    assert sum(lengths.values()) <= 1200, lengths
    assert max(lengths.values()) <= 200, lengths
