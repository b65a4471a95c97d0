"""The one compiled part: the position solver's inner loop (gateway/presence/_kernel.c).

Optional, as habluetooth's Cython is: without a C compiler (or Python's headers) the build
goes on without it and `gateway.presence.batch` uses its numpy path. Everything else about
the package is declared in pyproject.toml.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "gateway.presence._kernel",
            ["gateway/presence/_kernel.c"],
            optional=True,
            extra_compile_args=["-O2", "-fno-fast-math"],
        )
    ]
)
