"""Build script: maps the top-level folders onto the one import package `minoots`
and compiles the timing wheel with Cython.

The repository root is the `minoots` package (its `__init__.py` holds the public
re-exports); each top-level folder is a subpackage, the wire contract's generated
stubs are `minoots.v1` (from proto/minoots/v1), so users write
`import minoots` and nothing generic (`kernel`, `api`) lands in site-packages.
"""
import glob
import sys
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

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

extensions = [
    Extension(
        "minoots.kernel._wheel",
        ["kernel/_wheel.pyx"],
        extra_compile_args=["-O3"],
    ),
]

setup(
    # Nested packages (minoots.api.client: the SDK) take their folder from their parent's entry.
    packages=["minoots", "minoots.v1"] + [f"minoots.{p}" for p in SUBPACKAGES] + ["minoots.api.client"],
    package_dir={"minoots": ".", "minoots.v1": "proto/minoots/v1", **{f"minoots.{p}": p for p in SUBPACKAGES}},
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    ),
    zip_safe=False,
)
