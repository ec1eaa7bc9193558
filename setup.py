"""Build script: maps the top-level folders onto the one import package `minoots`
and compiles the timing wheel with Cython.

The repository root is the `minoots` package (its `__init__.py` holds the public
re-exports); each top-level folder is a subpackage, the wire contract's generated
stubs are `minoots.v1` (from proto/minoots/v1), so users write
`import minoots` and nothing generic (`kernel`, `api`) lands in site-packages.
"""
import glob
import shutil
import sys
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, find_packages, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


def generate_grpc_stubs() -> None:
    """Generate the Python stubs of proto/minoots/v1/*.proto next to them (package minoots.v1).

    The .proto files are the single source of truth; the generated *_pb2*.py files
    are build products (git-ignored), made fresh on every install.
    """
    import importlib.resources

    from grpc_tools import protoc

    include = str(importlib.resources.files("grpc_tools") / "_proto")
    protos = sorted(glob.glob(str(HERE / "proto" / "minoots" / "v1" / "*.proto")))
    args = ["protoc", f"-I{HERE / 'proto'}", f"-I{include}", f"--python_out={HERE / 'proto'}",
            f"--grpc_python_out={HERE / 'proto'}", f"--pyi_out={HERE / 'proto'}", *protos]
    if protoc.main(args) != 0:
        sys.exit("protoc failed to compile proto/minoots/v1/*.proto")


generate_grpc_stubs()

SUBPACKAGES = ["kernel", "raft", "api", "cli", "bench", "chaos"]

# What the wheel's minoots/ holds: the root package, the generated stubs, each runtime
# folder and every package nested in one (found, so a new one such as minoots.api.client
# needs no entry here; it takes its folder from its parent's package_dir entry).
# tests/, docs/, ops/ and proto/'s sources are no package of it.
PACKAGES = ["minoots", "minoots.v1"] + [
    f"minoots.{name}"
    for top in SUBPACKAGES
    for name in (top, *(f"{top}.{sub}" for sub in find_packages(str(HERE / top))))
]


class BuildPy(build_py):
    """The repository root is the package `minoots`, so every .py file beside setup.py is
    one of its modules: leave this build script out (no `minoots.setup` in the wheel).
    And start from an empty build/lib/minoots: a build copies what it finds there into the
    wheel, so a module deleted from the tree since the last build would ship again."""

    def run(self):
        if not getattr(self, "editable_mode", False):
            shutil.rmtree(Path(self.build_lib) / "minoots", ignore_errors=True)
        super().run()

    def find_package_modules(self, package, package_dir):
        return [m for m in super().find_package_modules(package, package_dir) if m[:2] != ("minoots", "setup")]


extensions = [
    Extension(
        "minoots.kernel._wheel",
        ["kernel/_wheel.pyx"],
        extra_compile_args=["-O3"],
    ),
]

setup(
    packages=PACKAGES,
    package_dir={"minoots": ".", "minoots.v1": "proto/minoots/v1", **{f"minoots.{p}": p for p in SUBPACKAGES}},
    # Data files: only the type stubs. Not the Cython source or the C it generates
    # (kernel/_wheel.pyx, kernel/_wheel.c): the compiled extension is what runs.
    include_package_data=False,
    package_data={"minoots.kernel": ["*.pyi"], "minoots.v1": ["*.pyi"]},
    cmdclass={"build_py": BuildPy},
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    ),
    zip_safe=False,
)
