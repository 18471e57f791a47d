"""Builds the repro profile's fixed-order kernels (protocol/repro/csrc) as a torch extension.

Everything else about the package is in pyproject.toml. -ffp-contract=off is part of the
arithmetic contract: the compiler must never fuse a multiply and an add the kernels wrote apart.
"""

from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

SOURCES = [
    f"protocol/repro/csrc/{name}.cpp"
    for name in ("bindings", "isa_scalar", "isa_avx2", "isa_avx512")
]
# -fopenmp: at::parallel_for is inline and only uses torch's OpenMP pool when compiled with it.
FLAGS = [
    "-O3",
    "-fopenmp",
    "-ffp-contract=off",
    "-fno-math-errno",
    "-Wall",
    "-Wextra",
    "-Wno-unused-parameter",
]

setup(
    ext_modules=[
        CppExtension(
            "protocol.repro._fixed_order",
            SOURCES,
            extra_compile_args=FLAGS,
            extra_link_args=["-fopenmp"],
        )
    ],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=False)},
)
