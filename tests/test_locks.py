"""The pinned installs (requirements.lock, tests/requirements.lock, written by
.ci/refresh-locks) stay those of the ranges: every requirement is pinned, hashed, within
its range, for every Python the README names, and the tests' lock installs the product's
versions."""
import re

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import ROOT

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]  # the README's
PLATFORMS = ["linux", "darwin", "win32"]


def requirements(path):
    """The requirements of a requirements file, following its -r includes."""
    found = []
    for line in path.read_text().splitlines():
        line = line.split(" #")[0].strip()
        if line.startswith("-r "):
            found += requirements(path.parent / line[3:].strip())
        elif line and not line.startswith("#"):
            found.append(Requirement(line))
    return found


def pins(path):
    """{(name, version, marker or None)} of a lock, and whether every pin has a hash."""
    text = path.read_text()
    entries = re.findall(r"^([A-Za-z0-9._-]+)==(\S+?)(?: ; (.+?))? \\\n((?:    --hash=\S+(?: \\)?\n)+)",
                         text, re.M)
    pinned_lines = re.findall(r"^[A-Za-z0-9._-]+==", text, re.M)
    assert len(entries) == len(pinned_lines), path  # every pin with its hashes
    return [(canonicalize_name(name), version, Marker(marker) if marker else None)
            for name, version, marker, _ in entries]


def pinned_for(lock, name, python, platform):
    environment = {"python_version": python, "python_full_version": f"{python}.0",
                   "sys_platform": platform, "platform_system": {
                       "linux": "Linux", "darwin": "Darwin", "win32": "Windows"}[platform],
                   "platform_machine": "x86_64", "implementation_name": "cpython",
                   "platform_python_implementation": "CPython", "os_name":
                       "nt" if platform == "win32" else "posix"}
    return [version for pinned, version, marker in lock
            if pinned == name and (marker is None or marker.evaluate(environment))]


@pytest.mark.parametrize("lock_file, requirements_file", [
    ("requirements.lock", "requirements.txt"),
    ("tests/requirements.lock", "tests/requirements.txt")])
def test_every_requirement_is_pinned_once_within_its_range_on_every_python(
        lock_file, requirements_file):
    lock = pins(ROOT / lock_file)
    for requirement in requirements(ROOT / requirements_file):
        name = canonicalize_name(requirement.name)
        for python in PYTHONS:
            for platform in PLATFORMS:
                versions = pinned_for(lock, name, python, platform)
                assert len(versions) == 1, (lock_file, name, python, platform, versions)
                assert requirement.specifier.contains(versions[0], prereleases=True), (
                    f"{lock_file} pins {name}=={versions[0]} outside {requirement}: "
                    "run .ci/refresh-locks")


def test_the_tests_install_the_products_pinned_versions():
    product, tests = pins(ROOT / "requirements.lock"), pins(ROOT / "tests/requirements.lock")
    for name, version, marker in product:
        assert (name, version, marker) in tests, (name, version, str(marker))
