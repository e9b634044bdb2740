"""Build script: compiles every Cython module under ``src/mlserve`` (metadata is in pyproject).

``MLSERVE_DEBUG_BUILD=1`` builds the extensions without optimisation and with
Cython's bounds checks, for debugging a kernel.
"""

from __future__ import annotations

import os
from pathlib import Path

from setuptools import Extension, setup


def _extensions() -> list[Extension]:
    sources = sorted(Path("src").rglob("*.pyx"))
    if not sources:
        return []
    import numpy
    from Cython.Build import cythonize

    debug = os.environ.get("MLSERVE_DEBUG_BUILD") == "1"
    modules = [
        Extension(
            ".".join(src.with_suffix("").parts[1:]),
            [str(src)],
            include_dirs=[numpy.get_include()],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
            extra_compile_args=["-O0", "-g"] if debug else ["-O3"],
            # Without a compiler the package still installs; the shim uses the numpy twin.
            optional=True,
        )
        for src in sources
    ]
    directives = {
        "language_level": "3",
        "boundscheck": debug,
        "wraparound": debug,
        "cdivision": not debug,
        "initializedcheck": debug,
    }
    # force: a debug build leaves a generated .c whose timestamp would hide the switch back.
    return cythonize(modules, compiler_directives=directives, force=True)  # type: ignore[no-any-return]


setup(ext_modules=_extensions())
