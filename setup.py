"""Build script for the optional compiled MaxSim kernels (float rows and residual-coded rows).

Everything else about the package lives in pyproject.toml. The C extensions
``metaembed_rag.scoring._maxsim``, ``metaembed_rag.scoring._residual`` and
``metaembed_rag.scoring._tiered`` are optional: on a machine without a C compiler the build
step is skipped, the package still installs, and scoring uses the pure-torch path (a warning
is logged on first use). The kernel picks its instruction set at run time (AVX-512, AVX2 or
portable C), so the build never uses ``-march=native``.
"""

from __future__ import annotations

import sys

from setuptools import Extension, setup

extra_compile_args: list[str] = []
extra_link_args: list[str] = []
if sys.platform != "win32":
    extra_compile_args = ["-O3", "-std=gnu11", "-fno-strict-aliasing", "-Wno-psabi", "-pthread"]
    extra_link_args = ["-pthread"]

setup(
    ext_modules=[
        Extension(
            "metaembed_rag.scoring._maxsim",
            sources=["metaembed_rag/scoring/_maxsim.c"],
            depends=[
                "metaembed_rag/scoring/_maxsim_impl.h",
                "metaembed_rag/scoring/_maxsim_direct.h",
                "metaembed_rag/scoring/_maxsim_amx.h",
            ],
            extra_compile_args=extra_compile_args,
            extra_link_args=extra_link_args,
            optional=True,
        ),
        Extension(
            "metaembed_rag.scoring._residual",
            sources=["metaembed_rag/scoring/_residual.c"],
            depends=["metaembed_rag/scoring/_coded_threads.h"],
            extra_compile_args=extra_compile_args,
            extra_link_args=extra_link_args,
            optional=True,
        ),
        Extension(
            "metaembed_rag.scoring._tiered",
            sources=["metaembed_rag/scoring/_tiered.c"],
            depends=["metaembed_rag/scoring/_coded_threads.h"],
            extra_compile_args=extra_compile_args,
            extra_link_args=extra_link_args,
            optional=True,
        ),
    ],
)
