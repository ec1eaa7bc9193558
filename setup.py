"""Build script: maps the top-level folders onto the one import package `minoots`
and compiles the timing wheel with Cython.

The repository root is the `minoots` package (its `__init__.py` holds the public
re-exports); each top-level folder is a subpackage, so users write
`import minoots` and nothing generic (`kernel`, `api`) lands in site-packages.
"""
from Cython.Build import cythonize
from setuptools import Extension, setup

SUBPACKAGES = ["kernel", "raft", "cli", "bench", "chaos"]

extensions = [
    Extension(
        "minoots.kernel._wheel",
        ["kernel/_wheel.pyx"],
        extra_compile_args=["-O3"],
    ),
]

setup(
    packages=["minoots"] + [f"minoots.{p}" for p in SUBPACKAGES],
    package_dir={"minoots": ".", **{f"minoots.{p}": p for p in SUBPACKAGES}},
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    ),
    zip_safe=False,
)
