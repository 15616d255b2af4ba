"""Build of the C CPU engine for the Python binding (everything else is in pyproject.toml).

The engine is built here as a shared library that lives in the package
(``bnnflow/bnncpu/_bnncpu*.so``): no compile step at import, and ``pip
install`` (editable or not) builds it with the same sources as ``make -C cpu``.
``bnnflow.bnncpu.engine`` opens it with ctypes for the C API of bnncpu.h and
imports it as a Python module for one function, the batch entry point of
``src/bnnflow/bnncpu/_entry.c`` (METH_FASTCALL and the buffer protocol: a
ctypes call and its pointer conversions cost more than the smallest networks'
whole inference; that file says by how much). The SIMD kernels carry target
attributes, so one set of flags builds every kernel set that the host's
architecture has.
"""

from pathlib import Path

from setuptools import Extension, setup

CPU = Path("cpu")
sources = sorted(str(p) for p in (CPU / "src").rglob("*.c")) + ["src/bnnflow/bnncpu/_entry.c"]

setup(
    ext_modules=[
        Extension(
            "bnnflow.bnncpu._bnncpu",
            sources=sources,
            include_dirs=[str(CPU / "include"), str(CPU / "src")],
            define_macros=[("_POSIX_C_SOURCE", "200809L")],
            # Only the API of bnncpu.h (BNN_API) and the module's PyInit are exported.
            extra_compile_args=["-std=c11", "-O2", "-fvisibility=hidden"],
            libraries=["pthread", "m"],
        )
    ]
)
