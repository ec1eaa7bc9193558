"""`pip wheel .` builds a wheel whose minoots/ is the runtime package and nothing else:
the root package, kernel (with its compiled extension), raft, api, cli, bench, chaos and
the generated gRPC stubs minoots.v1; no build script, tests, docs or ops files.

The wheel is built from a copy of the working tree (without build output, caches or
the venv), so a build/ folder left by an earlier build cannot hide or add anything.
Takes a compile of the Cython extension: marked `packaging`, outside the fast loop.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.packaging

REPO = Path(__file__).resolve().parent.parent
RUNTIME = ["kernel", "raft", "api", "cli", "bench", "chaos"]
STUBS = ["timers_pb2.py", "timers_pb2_grpc.py", "cluster_pb2.py", "cluster_pb2_grpc.py"]
# What a checkout holds that is no source: build output, caches, the venv, local data.
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "venv", "build", "dist", "*.egg-info", "__pycache__",
                                    ".hypothesis", ".pytest_cache", "minoots-data", "bench-results", "*.so")


def build_deps_here() -> bool:
    """Whether this interpreter has the build requirements, so the build needs no isolation."""
    if any(importlib.util.find_spec(m) is None for m in ("Cython", "grpc_tools", "setuptools", "wheel")):
        return False
    import setuptools

    return int(setuptools.__version__.split(".")[0]) >= 68


def build_wheel(src: Path, out: Path) -> Path:
    """`pip wheel SRC --no-deps -w OUT` (SRC absolute: a bare name would be looked up on an index)."""
    cmd = [sys.executable, "-m", "pip", "wheel", str(src.resolve()), "--no-deps", "-w", str(out)]
    if build_deps_here():
        cmd.append("--no-build-isolation")
    proc = subprocess.run(cmd, cwd=out.parent, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (whl,) = out.glob("minoots-*.whl")
    return whl


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A copy of the working tree without build output, caches or the venv."""
    src = tmp_path_factory.mktemp("packaging") / "src"
    shutil.copytree(REPO, src, ignore=NOT_SOURCE)
    return src


@pytest.fixture(scope="module")
def wheel_file(source) -> Path:
    return build_wheel(source, source.parent / "wheels")


@pytest.fixture(scope="module")
def names(wheel_file) -> list[str]:
    with zipfile.ZipFile(wheel_file) as z:
        return z.namelist()


def test_the_wheel_holds_the_runtime_package(names):
    required = ["minoots/__init__.py", "minoots/__main__.py"]
    required += [f"minoots/{p}/__init__.py" for p in RUNTIME]
    required += ["minoots/v1/__init__.py"] + [f"minoots/v1/{s}" for s in STUBS]
    missing = [n for n in required if n not in names]
    assert not missing, missing
    assert [n for n in names if re.fullmatch(r"minoots/kernel/_wheel\.[^/]+\.(so|pyd)", n)], \
        "the compiled kernel extension is not in the wheel"


def test_every_module_of_the_runtime_folders_is_in_the_wheel(names):
    """Nested packages too (e.g. minoots.api.client): a package missing from setup.py's list
    would leave its modules out of the wheel while the editable install works."""
    want = []
    for top in RUNTIME:
        for path in (REPO / top).rglob("*.py"):
            if "__pycache__" not in path.parts and (path.parent / "__init__.py").exists():
                want.append("minoots/" + path.relative_to(REPO).as_posix())
    assert want
    missing = [n for n in want if n not in names]
    assert not missing, missing


def test_the_wheel_holds_nothing_else(names):
    tops = {n.split("/")[0] for n in names}
    assert "minoots" in tops and len(tops) == 2, tops      # the package and its .dist-info
    assert all(t == "minoots" or re.fullmatch(r"minoots-[^-/]+\.dist-info", t) for t in tops), tops
    assert "minoots/setup.py" not in names, "the build script is in the wheel as a module"
    files = [n for n in names if n.startswith("minoots/")]
    # Python modules, their type stubs and the compiled extension; no .c/.pyx, docs, ops,
    # .proto sources, README or pyproject.
    other = [n for n in files if not n.endswith((".py", ".pyi"))
             and not re.fullmatch(r"minoots/kernel/_wheel\.[^/]+\.(so|pyd)", n)]
    assert not other, other
    subpackages = {n.split("/")[1] for n in files if n.count("/") >= 2}
    assert subpackages == set(RUNTIME) | {"v1"}, subpackages
    tests = [n for n in files if re.search(r"(^|/)(tests?/|test_[^/]*\.py$|conftest\.py$)", n)]
    assert not tests, tests


def test_the_unpacked_wheel_imports_on_its_own(wheel_file, tmp_path):
    """Unpacked ahead of the checkout on sys.path: the package, its extension and its stubs
    import from the wheel's files (not from the editable install)."""
    with zipfile.ZipFile(wheel_file) as z:
        z.extractall(tmp_path)
    code = ("import minoots, minoots.kernel._wheel, minoots.v1.timers_pb2_grpc, minoots.cli; "
            "print(minoots.__file__); print(minoots.kernel._wheel.__file__)")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    for line in proc.stdout.splitlines():
        assert Path(line).resolve().is_relative_to(tmp_path.resolve()), proc.stdout


def test_a_rebuild_in_the_same_tree_leaves_out_a_module_deleted_since(source, wheel_file, names):
    """build/ is kept between builds of one tree; what it still holds of a deleted module
    must not ship. (Runs last: it deletes a module from the copy.)"""
    gone = "minoots/raft/jsonlog.py"
    assert gone in names and (source / "build").is_dir()
    (source / "raft" / "jsonlog.py").unlink()
    with zipfile.ZipFile(build_wheel(source, source.parent / "rebuilt")) as z:
        again = z.namelist()
    assert gone not in again
    assert sorted(set(names) - set(again)) == [gone], sorted(set(names) ^ set(again))
