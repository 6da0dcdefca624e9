"""The docs' tables against the program: every flag --help shows is a row of
docs/flags-and-outputs.md's flag table, once, with the default --help states; every file
a run writes is a row of its file table, once; every field of the run.json and the
layer_inputs.json a run writes is named in its table, once; every message the code can
print is quoted in one row of the docs' error tables (docs/troubleshooting.md's above
all), and every row quotes one. The expected sets come from the parser's help text, the
files of a real run and the code's source, not from the docs. Last, the dated records
beside the benchmark are indexed, and docs/speed.md stays a short page that links them."""
import ast
import json
import re
import shutil

import keras
import pytest

import model_batchnorm as mb
from conftest import ROOT, cli
from machinery import cli as flags
from testdata import synthetic

PAGE = (ROOT / "docs" / "flags-and-outputs.md").read_text()
# Written only by a run of several worker processes (tests/test_workers.py makes one).
MULTIWORKER_ONLY = {"workers/"}


def section(title):
    return PAGE.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def table_rows(text):
    """[(first cell, second cell, the rest)] of the markdown table rows in `text`."""
    rows = []
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        if line.startswith("| ") and len(cells) >= 2 and not set(cells[0]) <= set("-|"):
            rows.append((cells[0], cells[1], " | ".join(cells[2:])))
    return rows[1:]  # the header


def help_entries(monkeypatch):
    """{flag: its help text} as `--help` prints it, each entry on one line."""
    monkeypatch.setenv("COLUMNS", "10000")
    parser = flags.build_parser(mb.flag_defaults)
    entries, flag = {}, None
    for line in parser.format_help().split("options:\n", 1)[1].splitlines():
        match = re.match(r"  (?:-h, )?(--[a-z0-9-]+)\S*(?: \S+)*?(?:  +(.*))?$", line)
        if match:
            flag = match.group(1)
            entries[flag] = match.group(2) or ""
        elif flag and line.strip():
            entries[flag] += " " + line.strip()
    entries.pop("--help")
    return entries


def stated_default(help_text):
    found = re.findall(r"\(default: (.*)\)$", help_text)
    return found[0] if found else None


def test_no_help_entry_states_its_default_twice_or_as_none(monkeypatch):
    entries = help_entries(monkeypatch)
    assert len(entries) >= 30
    for flag, text in entries.items():
        assert len(re.findall(r"default", text)) <= 1, (flag, text)
        assert "(default: None)" not in text and "(default: False)" not in text, flag


def test_every_flag_in_help_is_a_row_of_the_flag_table_once_with_its_default(monkeypatch):
    entries = help_entries(monkeypatch)
    rows = table_rows(section("Flags"))
    named = [re.match(r"`(--[a-z0-9-]+)", first).group(1) for first, _, _ in rows]
    assert sorted(named) == sorted(entries), "the table's flags are not --help's, once each"
    for (first, default_cell, _), flag in zip(rows, named):
        shown = default_cell.replace("`", "")
        default = stated_default(entries[flag])
        if default is None:  # an on/off flag: --help states no default
            assert shown.startswith("off"), (flag, shown)
        else:
            assert shown == default, (flag, shown, default)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """A tiny run that writes every file a single run can: --fast, layer inputs,
    TensorBoard logs; what is in its folder while its second epoch ends is kept too."""
    data = tmp_path_factory.mktemp("tables-data")
    synthetic.write(synthetic.folder_paths(data), synthetic.make_arrays(300, 100))
    out = tmp_path_factory.mktemp("tables") / "run"
    during = set()

    class Look(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:  # a backup of epoch 1 exists, the run holds its lock
                during.update(entry_names(out))

    with pytest.MonkeyPatch.context() as patch:
        real_train = mb.train
        patch.setattr(mb, "train", lambda *args: real_train(*args[:-1], args[-1] + [Look()]))
        assert cli(["--epochs", "2", "--limit", "300", "--batch-size", "100", "--verbose",
                    "2", "--data-dir", str(data), "--output-dir", str(out), "--fast",
                    "--track-layer-inputs", "--tensorboard"]) == 0
    yield out, during
    shutil.rmtree(out)


def entry_names(folder):
    return {p.name + ("/" if p.is_dir() else "") for p in folder.iterdir()}


def test_every_file_a_run_writes_is_a_row_of_the_file_table_once(full_run):
    out, during = full_run
    written = entry_names(out) | during
    assert {"backup/", "run.lock", "layer_inputs.json", "logs/"} <= written
    named = [re.fullmatch(r"`([^`]+)`", first).group(1)
             for first, _, _ in table_rows(section("Output files"))]
    assert len(named) == len(set(named)), "a file listed twice"
    assert sorted(named) == sorted(written | MULTIWORKER_ONLY)


def field_rows():
    """{field named in the run.json table's first cells: its description}; a field
    named twice fails."""
    fields = {}
    for first, description, _ in table_rows(section("run.json")):
        for name in re.findall(r"`([^`]+)`", first):
            assert name not in fields, f"{name} listed twice"
            fields[name] = description
    return fields


def assert_keys_named_once(keys, description, where):
    """Each key is named once in the description, and every snake_case name the
    description quotes is a key."""
    quoted = re.findall(r"`([a-z][a-z0-9_]*)`", description)
    for key in keys:
        assert quoted.count(key) == 1, (where, key)
    assert set(quoted) - {"null"} <= set(keys), (where, set(quoted) - set(keys))


def test_every_run_json_field_is_named_in_its_table_once(full_run):
    run = json.loads((full_run[0] / "run.json").read_text())
    fields = field_rows()
    expected = {*run, *(f"config.{key}" for key in run["config"])}
    assert sorted(fields) == sorted(expected)
    nested = {name: value for name, value in [*run.items(), *(
        (f"config.{k}", v) for k, v in run["config"].items())] if isinstance(value, dict)}
    nested.pop("config")
    assert {"config.fast", "batchnorm_diagnosis", "versions"} <= set(nested)
    for name, value in nested.items():
        assert_keys_named_once(value, fields[name], name)
    per_layer = run["batchnorm_statistics"][0][0]  # per epoch, per layer
    assert_keys_named_once(per_layer, fields["batchnorm_statistics"], "batchnorm_statistics")


def test_every_layer_inputs_json_field_is_named_in_its_file_row_once(full_run):
    fields = json.loads((full_run[0] / "layer_inputs.json").read_text())
    [row] = [rest for first, rest, _ in table_rows(section("Output files"))
             if first == "`layer_inputs.json`"]
    assert_keys_named_once(fields, row, "layer_inputs.json")


# The message tables: every line the training script can print beside Keras' own (its
# errors and, on stdout, its notes) is quoted in exactly one row of the docs' tables of
# them, and every row quotes one of them.
ERROR_PAGE = "troubleshooting.md"
NOTES = "\n## Lines that are not errors\n"  # the troubleshooting page's table of stdout lines
# Calls that pass on a message made elsewhere (argparse's, a helper's, an exception's).
WRAPPERS = {("flags.py", "OneLineParser.error"), ("data.py", "check_arrays")}
# Functions whose returned strings are messages that a wrapper above passes on.
PRODUCERS = {("data.py", "problem_with"), ("batchnorm_stats.py", "note"),
             ("predict.py", "how_prepared")}
# One call, several rows: Ctrl-C's and SIGTERM's lines differ only in their first words.
SEVERAL_ROWS = {("signals.py", "stopped"): 2}
# Rows quoting argparse's own words, which no call of the code holds.
ARGPARSE_ROWS = ("invalid choice", "unrecognized arguments", "expected one argument",
                 "expected at least one argument")


def module_constants(trees):
    """{name: str} of every module-level string constant, for messages that use one."""
    constants = {}
    for tree in trees.values():
        for node in tree.body:
            if (isinstance(node, ast.Assign) and len(node.targets) == 1
                    and isinstance(node.targets[0], ast.Name)
                    and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
                constants[node.targets[0].id] = node.value.value
    return constants


def segments(node, constants):
    """The fixed parts of a message: its literal text, constants filled in, split where
    a value is formatted in."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if not isinstance(node, ast.JoinedStr):
        return []
    parts = [""]
    for value in node.values:
        if isinstance(value, ast.Constant):
            parts[-1] += value.value
        elif (isinstance(value.value, ast.Name) and value.value.id in constants
              and value.format_spec is None):
            parts[-1] += constants[value.value.id]
        else:
            parts.append("")
    return parts


def enclosing_functions(tree):
    """{id(node): 'Class.function' or 'function'} for every node inside a function."""
    names = {}

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                visit(child, f"{child.name}.")
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(child):
                    names[id(inner)] = prefix + child.name
                visit(child, prefix)
            else:
                visit(child, prefix)
    visit(tree, "")
    return names


def is_message_call(node):
    """ScriptError(...), UsageError(...), parser.error(...), ArgumentTypeError(...),
    Interrupted/Terminated(...) via `error(...)`, or print(...)."""
    if not isinstance(node, ast.Call) or not node.args:
        return False
    func = node.func
    name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
    if name == "print":  # to stderr or stdout: code_messages leaves out print(err)
        return True
    return name in {"ScriptError", "UsageError", "ArgumentTypeError", "error",
                    "Interrupted", "Terminated"}


def code_messages():
    """{(file, function, line): [fixed parts]} of every message the code can print."""
    paths = [ROOT / "model_batchnorm.py", *sorted((ROOT / "machinery").glob("*.py"))]
    trees = {path.name: ast.parse(path.read_text()) for path in paths}
    constants = module_constants(trees)
    messages = {}
    for file, tree in trees.items():
        functions = enclosing_functions(tree)
        for node in ast.walk(tree):
            where = (file, functions.get(id(node), ""))
            if is_message_call(node):
                parts = segments(node.args[0], constants)
                passes_one_on = getattr(node.func, "id", None) == "print" and max(
                    map(len, distinctive(parts)), default=0) < 12  # print(err)
                if not passes_one_on:
                    messages[(*where, node.lineno)] = parts
            elif (isinstance(node, ast.Return) and where in PRODUCERS
                  and not isinstance(node.value, (ast.Constant, type(None)))):
                returned = node.value.elts if isinstance(node.value, ast.Tuple) else [node.value]
                for index, value in enumerate(returned):
                    parts = segments(value, constants)
                    if distinctive(parts):  # not the empty string, or None
                        messages[(*where, node.lineno, index)] = parts
    return messages


def error_rows():
    """(page, the quoted text of the cells after the first) of every table row of the
    docs that quotes an error line, and of every row of the troubleshooting table;
    (page, the quoted first cell) of every row of its table of lines that are not errors."""
    rows = []
    for page in sorted((ROOT / "docs").glob("*.md")):
        text = page.read_text()
        errors, _, notes = text.partition(NOTES) if page.name == ERROR_PAGE else (text, "", "")
        for line in errors.splitlines():
            if line.startswith("| ") and ("`error: " in line or (
                    page.name == ERROR_PAGE and re.search(r"\| \d+ \|", line))):
                quoted = re.findall(r"`([^`]+)`", line.split(" | ", 1)[1])
                rows.append((page.name, " / ".join(quoted)))
        for line in notes.splitlines():
            if line.startswith("| `"):
                rows.append((page.name, " / ".join(re.findall(r"`([^`]+)`",
                                                              line.split(" | ", 1)[0]))))
    return rows


def distinctive(parts):
    """The fixed parts long enough to tell, without the punctuation that joins them
    to the formatted values."""
    stripped = (part.strip(" :;,.(") for part in parts)
    return [part for part in stripped if len(part) >= 4]


def matching_rows(parts, rows):
    return [row for row in rows if all(part in row[1] for part in distinctive(parts))]


def test_every_message_of_the_code_is_quoted_in_one_row():
    messages = code_messages()
    assert len(messages) >= 60
    assert WRAPPERS <= {where[:2] for where in messages}
    rows = error_rows()
    wrong = [(where, distinctive(parts), [row[:60] for _, row in found])
             for where, parts in messages.items() if where[:2] not in WRAPPERS
             for found in [matching_rows(parts, rows)]
             if len(found) != SEVERAL_ROWS.get(where[:2], 1)]
    assert wrong == [], "\n".join(map(str, wrong))


def test_every_error_row_quotes_a_message_of_the_code():
    messages = [parts for where, parts in code_messages().items()
                if where[:2] not in WRAPPERS]
    unquoted = [(page, row[:100]) for page, row in error_rows()
                if not any(words in row for words in ARGPARSE_ROWS)
                and not any(matching_rows(parts, [(page, row)]) for parts in messages)]
    assert unquoted == [], "\n".join(map(str, unquoted))


# The user's speed page and the dated records beside the benchmark.
RECORDS = ROOT / "bench" / "records"


def test_every_record_is_listed_once_in_the_records_index():
    index = (RECORDS / "README.md").read_text()
    listed = re.findall(r"^\| \[([^]]+)\]\(([^)]+)\) \|", index, re.M)
    assert all(name == target for name, target in listed)
    records = sorted(p.name for p in RECORDS.glob("*.md") if p.name != "README.md")
    assert len(records) >= 3
    assert sorted(name for name, _ in listed) == records
    for record in records:  # dated: YYYY-MM-DD-what.md
        assert re.fullmatch(r"20\d\d-\d\d-\d\d-[a-z0-9-]+\.md", record), record


def test_the_speed_page_is_short_and_takes_its_figures_from_a_record():
    page = (ROOT / "docs" / "speed.md").read_text()
    assert len(page.splitlines()) <= 150
    linked = set(re.findall(r"\]\(\.\./bench/records/([^)#]+)", page))
    assert "README.md" in linked and linked - {"README.md"}
    for name in linked:
        assert (RECORDS / name).is_file(), name


def github_anchor(heading):
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to -."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_relative_link_of_the_docs_and_records_resolves():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
             *sorted(RECORDS.glob("*.md"))]
    broken = []
    for page in pages:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto: not this test's business
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append((page.name, target))
            elif anchor and linked.suffix == ".md":
                headings = re.findall(r"^#+ (.+)$", linked.read_text(), re.M)
                if anchor not in map(github_anchor, headings):
                    broken.append((page.name, target))
    assert broken == []
