"""Build timenet._core from csrc/.

The extension is plain C (C11, OpenMP) against the CPython and NumPy C APIs.
GEMMs go to OpenBLAS from the scipy-openblas32 wheel (the BLAS numpy itself
is built on); its symbols carry the `scipy_` prefix, so it never clashes
with another BLAS loaded in the same process.

Environment:
  TIMENET_MARCH  -march value for the C kernels (default "native"; set to ""
                 for a portable build).
  TIMENET_DEBUG  1 builds with -O0 -g and without -DNDEBUG.
"""
import glob
import os

import numpy
import scipy_openblas32
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class ParallelBuildExt(build_ext):
    def finalize_options(self):
        super().finalize_options()
        if self.parallel is None:
            self.parallel = os.cpu_count() or 1


def core_extension():
    sources = sorted(glob.glob("csrc/**/*.c", recursive=True))
    headers = sorted(glob.glob("csrc/**/*.h", recursive=True))
    debug = os.environ.get("TIMENET_DEBUG") == "1"
    march = os.environ.get("TIMENET_MARCH", "native")
    cflags = ["-std=c11", "-fopenmp", "-Wall", "-Wextra", "-Wno-unused-parameter",
              "-Wno-missing-field-initializers", "-fno-strict-aliasing"]
    cflags += ["-O0", "-g"] if debug else ["-O3"]
    if march:
        cflags.append(f"-march={march}")
    libdir = scipy_openblas32.get_lib_dir()
    return Extension(
        "timenet._core",
        sources=sources,
        depends=headers,
        include_dirs=["csrc", numpy.get_include(), scipy_openblas32.get_include_dir()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_25_API_VERSION"),
                       ("BLAS_SYMBOL_PREFIX", "scipy_")] + ([] if debug else [("NDEBUG", "1")]),
        library_dirs=[libdir],
        libraries=[scipy_openblas32.get_library(), "m"],
        # timenet/__init__.py loads the wheel's library first, so the rpath is
        # only a convenience for builds that stay next to their build env.
        runtime_library_dirs=[libdir],
        extra_compile_args=cflags,
        extra_link_args=["-fopenmp"],
    )


setup(ext_modules=[core_extension()], cmdclass={"build_ext": ParallelBuildExt})
