"""The README stays true: CI runs its test command, it is a short front door, and the docs
name every output file (the flag, file and field tables: tests/test_docs_tables.py)."""
import re

from conftest import ROOT

README = (ROOT / "README.md").read_text()
FLAGS_DOCS = (ROOT / "docs" / "flags-and-outputs.md").read_text()


def commands_in_readme():
    blocks = re.findall(r"```sh\n(.*?)```", README, re.S)
    return [line for block in blocks for line in block.splitlines()
            if line and not line.startswith("#")]


def test_ci_runs_exactly_the_readme_test_command():
    ci_lines = [line for line in (ROOT / ".ci/run").read_text().splitlines()
                if line and not line.startswith("#")]
    test_command = next(c for c in commands_in_readme() if "pytest" in c)
    assert ci_lines[-1] == test_command
    assert "venv" in test_command and "-r tests/requirements.lock" in test_command


def test_readme_gives_the_faithful_run_command_without_flags():
    run = next(c for c in commands_in_readme() if "-r requirements.lock &&" in c
               and "pytest" not in c)
    assert run.endswith("python model_batchnorm.py")


def test_docs_document_every_output_file():
    for name in ("history.json", "history.csv", "model.keras", "run.json",
                 "training_history.png", "predictions.png", "confusion_matrix.png", "backup/",
                 "history_batchnorm.json", "history_no_batchnorm.json",
                 "batchnorm_comparison.png", "comparison.json", "layer_inputs.json",
                 "layer_inputs.png", "batchnorm_lr0.001/", "history_batchnorm_lr0.1.json",
                 "batchnorm_statistics.png", "logs/", "manifest.json", "run.lock"):
        assert f"`{name}`" in FLAGS_DOCS, name


def test_readme_is_a_short_front_door_that_names_the_lesson_and_links_every_page():
    lines = README.splitlines()
    lesson = "https://www.machinecurve.com/index.php/2020/01/15/how-to-use-batch-normalization-with-keras/"
    assert any(f"]({lesson})" in line for line in lines[:10])
    # A newcomer's way to a finished smoke run, what it prints and where its picture
    # is, in the first 60 lines; why its accuracies are low, in the same place.
    top = "\n".join(lines[:60])
    for needed in ("--dry-run", "--limit", "training_history.png", "Test accuracy",
                   "near chance", "batchnorm-statistics.md"):
        assert needed in top, needed
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"](docs/{page.name})" in README, page.name
