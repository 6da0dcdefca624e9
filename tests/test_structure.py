"""The shape of the code, as docs/development.md describes it: the lesson on top of the
machinery, at most 9 floors of imports and no circle; the files and the folder at the
ground floor, importing no feature; no module over 250 lines; the flags never changed
after parsing; a run's settings frozen, a --compare run a copy that says so."""
import ast
import dataclasses
import re

import numpy as np
import pytest

from conftest import ROOT, settings_for

MACHINERY = sorted((ROOT / "machinery").glob("*.py"))
PRODUCT = [ROOT / "model_batchnorm.py", ROOT / "plot_history.py", *MACHINERY]


def module_name(path):
    relative = path.relative_to(ROOT).with_suffix("")
    return ".".join(relative.parts).removesuffix(".__init__")


def imports_of(path, known):
    """The product's modules that `path` imports (import x, from x import y, from
    machinery import module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return {name for name in found if name in known}


def import_graph():
    known = {module_name(path) for path in PRODUCT} - {"machinery"}
    return {module_name(path): imports_of(path, known) for path in PRODUCT
            if module_name(path) != "machinery"}


def floors(graph):
    """{module: its floor}: 1 for one that imports none of the others, else one above
    the highest it imports. Fails on a circle."""
    floor = {}

    def visit(module, path):
        assert module not in path, f"an import circle: {' -> '.join([*path, module])}"
        if module not in floor:
            floor[module] = 1 + max((visit(m, (*path, module)) for m in graph[module]),
                                    default=0)
        return floor[module]

    for module in graph:
        visit(module, ())
    return floor


def test_the_lesson_stands_on_top_of_at_most_nine_floors_without_a_circle():
    floor = floors(import_graph())
    assert floor["model_batchnorm"] == max(floor.values()) <= 9, floor


def test_the_floors_are_counted_as_described():
    # Hand-made graphs: a chain of three, and a circle.
    assert floors({"a": {"b"}, "b": {"c"}, "c": set()}) == {"a": 3, "b": 2, "c": 1}
    with pytest.raises(AssertionError, match="circle"):
        floors({"a": {"b"}, "b": {"a"}})


@pytest.mark.parametrize("module, allowed", [
    ("machinery.files", {"machinery.errors"}),
    ("machinery.folder", {"machinery.errors", "machinery.files"}),
])
def test_the_ground_floor_imports_no_feature(module, allowed):
    assert import_graph()[module] <= allowed


def test_no_machinery_module_is_over_250_lines():
    long = {path.name: n for path in MACHINERY
            if (n := len(path.read_text().splitlines())) > 250}
    assert long == {}


def assignments_to_args(tree):
    """The line of every assignment to an attribute of `args` (the parsed flags), and of
    every setattr(args, ...)."""
    found = []
    for node in ast.walk(tree):
        targets = (node.targets if isinstance(node, ast.Assign) else
                   [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else [])
        found += [node.lineno for target in targets for part in ast.walk(target)
                  if isinstance(part, ast.Attribute) and isinstance(part.value, ast.Name)
                  and part.value.id == "args"]
        if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setattr"
                and node.args and getattr(node.args[0], "id", None) == "args"):
            found.append(node.lineno)
    return found


def test_nothing_changes_the_flags_after_they_are_parsed():
    changed = {path.name: lines for path in [ROOT / "model_batchnorm.py", *MACHINERY]
               if (lines := assignments_to_args(ast.parse(path.read_text())))}
    assert changed == {}
    # and the check sees one: in a method, and through setattr
    assert assignments_to_args(ast.parse("def f(args):\n    args.seed = 1\n")) == [2]
    assert assignments_to_args(ast.parse("setattr(args, 'seed', 1)")) == [1]


SOME = (np.zeros((10, 28, 28), np.uint8), np.zeros(10, np.uint8))  # any 10 images


def test_a_runs_settings_are_frozen():
    run = settings_for([], (SOME, SOME))
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.batch_size = 100


def test_the_split_point_is_the_lessons_share_rounded_down():
    # 10 images at 0.2: 8 train; 999 at 0.2: 799.2, so 799 (hand-computed).
    assert settings_for([], (SOME, SOME)).split_at == 8
    many = (np.zeros((999, 28, 28), np.uint8), np.zeros(999, np.uint8))
    assert settings_for([], (many, SOME)).split_at == 799


def test_a_compare_run_is_a_copy_that_says_so(tmp_path):
    run = settings_for(["--compare"], (SOME, SOME), out=tmp_path)
    assert run.variant is None and run.output_dir == tmp_path and run.seed == 1
    variant = dataclasses.replace(run, variant="no_batchnorm", batchnorm=False)
    assert variant.output_dir == tmp_path / "no_batchnorm" and variant.top_dir == tmp_path
    assert variant.seed == run.seed and run.batchnorm  # the rest as it was


def test_the_development_page_maps_every_module_once():
    page = (ROOT / "docs" / "development.md").read_text()
    rows = re.findall(r"^\| `([^`]+\.py)` \|", page, re.M)
    modules = {str(path.relative_to(ROOT)) for path in [*PRODUCT, *(ROOT / "tools").glob("*.py")]
               if path.name != "__init__.py"}
    assert len(rows) == len(set(rows)), "a module mapped twice"
    assert modules <= set(rows), modules - set(rows)
    assert all((ROOT / row).is_file() for row in rows), [r for r in rows if not (ROOT / r).is_file()]
