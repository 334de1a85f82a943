"""Build timenet._core from csrc/.

The extension is plain C (C11, OpenMP) against the CPython and NumPy C APIs.
GEMMs go to OpenBLAS from the scipy-openblas32 wheel (the BLAS numpy itself
is built on); its symbols carry the `scipy_` prefix, so it never clashes
with another BLAS loaded in the same process.

Environment:
  TIMENET_MARCH      -march value for the C kernels (default "native"; set to ""
                     for a portable build).
  TIMENET_DEBUG      1 builds with -O0 -g and without -DNDEBUG.
  TIMENET_CUDA       auto (default): the CUDA backend when nvcc and cuDNN are
                     found (CUDA_HOME / CUDA_PATH, else nvcc on PATH, else
                     /usr/local/cuda); 1: required (an error if not found);
                     0: a CPU-only build. One line says which was built.
  TIMENET_CUDA_ARCH  GPU architectures, e.g. "80;90" (the default: sm_80 and
                     sm_90 code, plus compute_90 PTX that newer GPUs JIT).
                     The PTX is always that of the last entry.
  CUDNN_HOME         where cuDNN lives when it is not inside the toolkit.
  TIMENET_CUDA_UNITS how many nvcc calls compile csrc/cuda/*.cu (default: one
                     per 4 CPUs; see compile_cuda).

CUDA build (as CuPy's): nvcc compiles each csrc/cuda/*.cu to an object (in
parallel, and only when the source, a csrc/cuda header or the flags changed)
and setuptools links the objects into timenet._core as extra_objects, with
cudart (static), cuBLAS and cuDNN. The C glue sees only the plain-C header
csrc/cuda/tn_cuda.h and the macro TN_HAVE_CUDA. Nothing CUDA runs at import:
a CUDA build imports and passes its CPU tests on a machine without a GPU
or a driver (timenet.cuda.is_available() is then False).
"""
import glob
import hashlib
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy
import scipy_openblas32
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


# ---------------------------------------------------------------------------
# CUDA: discovery, nvcc, link settings

def _say(msg):
    print(f"timenet: {msg}", flush=True)


def _find_cuda():
    """(cuda_home, nvcc) of the toolkit to use, or (None, None)."""
    for env in ("CUDA_HOME", "CUDA_PATH"):
        home = os.environ.get(env)
        if home and os.path.isfile(os.path.join(home, "bin", "nvcc")):
            return home, os.path.join(home, "bin", "nvcc")
    nvcc = shutil.which("nvcc")
    if nvcc:
        return os.path.dirname(os.path.dirname(os.path.realpath(nvcc))), nvcc
    if os.path.isfile("/usr/local/cuda/bin/nvcc"):
        return "/usr/local/cuda", "/usr/local/cuda/bin/nvcc"
    return None, None


def _lib_dirs(home):
    return [d for d in (os.path.join(home, "lib64"), os.path.join(home, "lib"),
                        os.path.join(home, "targets", "x86_64-linux", "lib"),
                        os.path.join(home, "targets", "sbsa-linux", "lib"))
            if os.path.isdir(d)]


def _site_dirs():
    import site
    dirs = site.getsitepackages() + [site.getusersitepackages()] + sys.path
    return [d for d in dict.fromkeys(dirs) if d and os.path.isdir(d)]


def _find_cudnn(home):
    """(include_dir, lib_dir) of cuDNN, or None: CUDNN_HOME, the toolkit,
    the system, then the nvidia-cudnn pip wheel of an installed PyTorch."""
    roots = [os.environ.get("CUDNN_HOME"), home, "/usr", "/usr/local"]
    roots += [os.path.join(d, "nvidia", "cudnn") for d in _site_dirs()]
    incs, libs = [], []
    for r in filter(None, roots):
        incs += [os.path.join(r, "include"), os.path.join(r, "include", "x86_64-linux-gnu")]
        libs += _lib_dirs(r) + [os.path.join(r, "lib", "x86_64-linux-gnu")]
    inc = next((d for d in incs if os.path.isfile(os.path.join(d, "cudnn.h"))), None)
    lib = next((d for d in libs if glob.glob(os.path.join(d, "libcudnn.so*"))), None)
    return (inc, lib) if inc and lib else None


def _link_name(name, dirs):
    """The -l argument for lib<name>: `name` when lib<name>.so is in one of
    dirs, else ':lib<name>.so.<N>' (pip wheels ship only the versioned file)."""
    for d in dirs:
        if os.path.exists(os.path.join(d, f"lib{name}.so")):
            return name
    for d in dirs:
        found = sorted(glob.glob(os.path.join(d, f"lib{name}.so.[0-9]*")), key=len)
        if found:
            return ":" + os.path.basename(found[0])
    return name


def _gencode(arch_spec):
    archs = [a.strip() for a in arch_spec.replace(",", ";").split(";") if a.strip()]
    if not archs:
        raise SystemExit("timenet: TIMENET_CUDA_ARCH lists no architecture")
    flags = []
    for a in archs:
        flags += ["-gencode", f"arch=compute_{a},code=sm_{a}"]
    flags += ["-gencode", f"arch=compute_{archs[-1]},code=compute_{archs[-1]}"]
    return flags


def cuda_config():
    """What the CUDA part of the build uses, or None for a CPU-only build.
    Prints the one line that says which build this is."""
    mode = os.environ.get("TIMENET_CUDA", "auto").strip().lower()
    if mode not in ("auto", "0", "1"):
        raise SystemExit(f"timenet: TIMENET_CUDA must be auto, 0 or 1, got {mode!r}")
    if mode == "0":
        _say("CPU-only build (TIMENET_CUDA=0)")
        return None
    home, nvcc = _find_cuda()
    cudnn = _find_cudnn(home) if home else None
    missing = ("nvcc not found (set CUDA_HOME or put nvcc on PATH)" if not home else
               None if cudnn else f"cuDNN not found (cudnn.h and libcudnn.so under {home}, "
                                  "/usr, /usr/local or CUDNN_HOME)")
    if missing:
        if mode == "1":
            raise SystemExit(f"timenet: TIMENET_CUDA=1 but {missing}")
        _say(f"CPU-only build (TIMENET_CUDA=auto: {missing})")
        return None
    arch = os.environ.get("TIMENET_CUDA_ARCH", "80;90")
    debug = os.environ.get("TIMENET_DEBUG") == "1"
    flags = ["-std=c++17", "-Xcompiler", "-fPIC,-Wall", "-Icsrc", f"-I{cudnn[0]}",
             f"-I{os.path.join(home, 'include')}", "-lineinfo"]
    flags += ["-O0", "-g"] if debug else ["-O3", "-DNDEBUG"]
    flags += _gencode(arch)
    lib_dirs = list(dict.fromkeys(_lib_dirs(home) + [cudnn[1]]))
    _say(f"CUDA build (nvcc {nvcc}, arch {arch}, cuDNN {cudnn[1]})")
    libs = [_link_name("cublas", lib_dirs), _link_name("cudnn", lib_dirs)]
    return {"nvcc": nvcc, "flags": flags, "lib_dirs": lib_dirs, "libs": libs}


def _uses_cub(path):
    with open(path) as f:
        return "#include <cub/" in f.read()


def compile_cuda(cfg, build_dir, force=False):
    """nvcc csrc/cuda/*.cu into objects in build_dir; returns their paths.

    Each nvcc call pays ~1.5 s of fixed cost (the CUDA, cuBLAS and cuDNN
    headers, one device pass per architecture) whatever its size, so the
    sources are compiled as a few generated "unity" units (round-robin over
    the sorted file names), one per 4 CPUs, in parallel. On the shared 2-core
    dev box a clean build of the ten files took 21 s as ten units, 9.3 s as
    two and 6.8 s as one. A unit is rebuilt only when one of its sources, a
    csrc/cuda header or the flags changed. (So file-local names in
    csrc/cuda/*.cu must not clash across files: see common.cuh.)"""
    sources = sorted(glob.glob("csrc/cuda/*.cu"))
    # (and the kernel headers whose shared code the .cu files include)
    headers = (glob.glob("csrc/cuda/*.h") + glob.glob("csrc/cuda/*.cuh") +
               glob.glob("csrc/ode/*.h") + glob.glob("csrc/score/*.h") +
               ["csrc/common.h", "csrc/metrics/sort.h"])  # sort.h: metrics.cu's keys
    os.makedirs(build_dir, exist_ok=True)
    # Objects built with other flags (another arch, a debug build) are stale.
    stamp = os.path.join(build_dir, "flags")
    key = hashlib.sha256(" ".join([cfg["nvcc"]] + cfg["flags"]).encode()).hexdigest()
    old = open(stamp).read() if os.path.exists(stamp) else ""
    newest_header = max(os.path.getmtime(h) for h in headers)
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    # A file that instantiates CUB's device algorithms (metrics.cu: ~15 s of
    # templates alone) is a unit of its own, so editing the others never
    # recompiles it (and the two compile in parallel).
    heavy = [src for src in sources if _uses_cub(src)]
    light = [src for src in sources if src not in heavy]
    n_units = int(os.environ.get("TIMENET_CUDA_UNITS", 0)) or max(1, cpus // 4)
    n_units = max(1, min(len(light), n_units))
    groups = [light[u::n_units] for u in range(n_units)] + [[s] for s in heavy]
    jobs, objects = [], []
    for u, members in enumerate(groups):
        unit = os.path.join(build_dir, f"unit{u}.cu")
        text = "".join(f'#include "cuda/{os.path.basename(m)}"\n' for m in members)
        if not os.path.exists(unit) or open(unit).read() != text:
            with open(unit, "w") as f:
                f.write(text)
        obj = unit[:-3] + ".o"
        objects.append(obj)
        newest = max([newest_header, os.path.getmtime(unit)] +
                     [os.path.getmtime(m) for m in members])
        if force or old != key or not os.path.exists(obj) or os.path.getmtime(obj) < newest:
            jobs.append((unit, obj, members))
    for stale in glob.glob(os.path.join(build_dir, "unit*.o")):
        if stale not in objects:
            os.remove(stale)
    if not jobs:
        return objects

    def run(job):
        unit, obj, members = job
        cmd = [cfg["nvcc"], "-c", unit, "-o", obj + ".tmp"] + cfg["flags"]
        res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        return members, obj, res

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        results = list(pool.map(run, jobs))
    failed = False
    for members, obj, res in results:
        if res.stdout.strip():
            sys.stderr.write(res.stdout)
        if res.returncode != 0:
            failed = True
            sys.stderr.write(f"timenet: nvcc failed on {', '.join(members)}\n")
        else:
            os.replace(obj + ".tmp", obj)
    if failed:
        raise SystemExit("timenet: CUDA compilation failed")
    with open(stamp, "w") as f:
        f.write(key)
    n_files = sum(len(m) for _, _, m in jobs)
    _say(f"nvcc compiled {n_files} file(s) in {len(jobs)} unit(s) in "
         f"{time.perf_counter() - t0:.1f} s")
    return objects


class ParallelBuildExt(build_ext):
    def finalize_options(self):
        super().finalize_options()
        if self.parallel is None:
            self.parallel = os.cpu_count() or 1

    def build_extensions(self):
        cfg = cuda_config()
        mode = "cuda" if cfg else "cpu"
        # Switching between a CPU-only and a CUDA build must relink even when
        # no source changed.
        os.makedirs(self.build_temp, exist_ok=True)
        mode_file = os.path.join(self.build_temp, "timenet-build-mode")
        if (open(mode_file).read() if os.path.exists(mode_file) else "") != mode:
            self.force = True
        for ext in self.extensions:
            if ext.name != "timenet._core" or not cfg:
                continue
            objects = compile_cuda(cfg, os.path.join(self.build_temp, "cuda"), self.force)
            ext.extra_objects += objects
            ext.depends += objects  # a rebuilt object relinks the extension
            ext.define_macros.append(("TN_HAVE_CUDA", "1"))
            ext.library_dirs += cfg["lib_dirs"]
            ext.runtime_library_dirs += cfg["lib_dirs"]
            # cudart static (no libcudart.so to find at run time); cuBLAS and
            # cuDNN shared, found through the rpath. libcuda (the driver) is
            # loaded by cudart on first use only, so no driver is needed to import.
            ext.libraries += ["cudart_static"] + cfg["libs"] + ["rt", "dl", "pthread", "stdc++"]
        super().build_extensions()
        with open(mode_file, "w") as f:
            f.write(mode)


def core_extension():
    sources = sorted(glob.glob("csrc/**/*.c", recursive=True))
    headers = sorted(glob.glob("csrc/**/*.h", recursive=True))
    debug = os.environ.get("TIMENET_DEBUG") == "1"
    march = os.environ.get("TIMENET_MARCH", "native")
    # -fno-math-errno: libm calls may not set errno (no kernel reads it), so
    # loops calling sqrtf vectorise (AdamW); IEEE results are unchanged.
    cflags = ["-std=c11", "-fopenmp", "-Wall", "-Wextra", "-Wno-unused-parameter",
              "-Wno-missing-field-initializers", "-fno-strict-aliasing", "-fno-math-errno"]
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
