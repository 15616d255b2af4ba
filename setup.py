"""Build of the C CPU engine for the Python binding (everything else is in pyproject.toml).

``bnnflow.bnncpu`` loads the engine with ctypes, so it is built here as a plain
shared library that lives in the package (``bnnflow/bnncpu/_bnncpu*.so``): no
compile step at import, and ``pip install`` (editable or not) builds it with
the same sources as ``make -C cpu``. It is not a Python extension module and
is never imported; setuptools' Extension is only the portable way to have the
package's own build compile C. The SIMD kernels carry target attributes, so
one set of flags builds every kernel set that the host's architecture has.
"""

from pathlib import Path

from setuptools import Extension, setup

CPU = Path("cpu")
sources = sorted(str(p) for p in (CPU / "src").rglob("*.c"))

setup(
    ext_modules=[
        Extension(
            "bnnflow.bnncpu._bnncpu",
            sources=sources,
            include_dirs=[str(CPU / "include"), str(CPU / "src")],
            define_macros=[("_POSIX_C_SOURCE", "200809L")],
            # Only the API of bnncpu.h is exported, as from `make -C cpu` (BNN_API).
            extra_compile_args=["-std=c11", "-O2", "-fvisibility=hidden"],
            libraries=["pthread", "m"],
        )
    ]
)
