"""People may copy and cite the project: an MIT LICENSE and a CITATION.cff, both named in
the README, and the lesson's archived address beside its original one."""
import re

from conftest import ROOT

README = (ROOT / "README.md").read_text()
ARCHIVED_LESSON = ("https://github.com/christianversloot/machine-learning-articles/blob/main/"
                   "how-to-use-batch-normalization-with-keras.md")
ORIGINAL_LESSON = ("https://www.machinecurve.com/index.php/2020/01/15/"
                   "how-to-use-batch-normalization-with-keras/")


def test_the_code_is_mit_licensed_and_the_readme_says_so():
    licence = (ROOT / "LICENSE").read_text()
    assert licence.startswith("MIT License\n")
    assert re.search(r"^Copyright \(c\) \d{4} \S", licence, re.M)
    assert "Permission is hereby granted, free of charge" in licence
    assert "](LICENSE)" in README and "MIT" in README


def test_the_citation_file_has_the_fields_cff_1_2_0_requires_and_the_readme_names_it():
    citation = (ROOT / "CITATION.cff").read_text()
    top_level = set(re.findall(r"^([a-z-]+):", citation, re.M))
    assert {"cff-version", "message", "title", "authors"} <= top_level
    assert re.search(r'^cff-version: "?1\.2\.0"?$', citation, re.M)
    assert re.search(r"^authors:\n  - (name|family-names): ", citation, re.M)
    for cited in ("arXiv:1812.01718", "arXiv:1502.03167", ORIGINAL_LESSON, ARCHIVED_LESSON):
        assert cited in citation, cited
    assert "](CITATION.cff)" in README


def test_the_readme_gives_the_lessons_archived_address_beside_the_original():
    top = "\n".join(README.splitlines()[:10])
    assert f"]({ORIGINAL_LESSON})" in top and f"]({ARCHIVED_LESSON})" in top
