// The CUDA runtime of the engine: devices, one stream per device, the
// cuBLAS / cuDNN handles bound to it, a caching allocator, copies, and the
// error messages every other .cu file reports through (common.cuh).
//
// Nothing here runs at import: the first call that needs a device runs
// cudaGetDeviceCount once, and a machine without a driver or a GPU simply
// has 0 devices (the reason is kept for error messages).
//
// Caching allocator (after PyTorch's, reduced to one stream per device):
// sizes are rounded up to a size class (512 bytes, then 8 classes per power
// of two: at most 12.5% slack), each class has a free list, and a freed
// block goes back on its list without any CUDA call. All work on a device
// runs on its one stream, so a block freed after queuing a kernel that uses
// it can be handed to the next op at once: that op's kernels queue behind.
// On out-of-memory the cache is released (cudaFree waits for the device)
// and the cudaMalloc retried once.
#include "common.cuh"

#include <mutex>
#include <vector>

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

// ---------------------------------------------------------------------------
// errors

static thread_local char tls_error[1024];

extern "C" const char *tn_cuda_last_error(void) { return tls_error; }

static void set_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tls_error, sizeof tls_error, fmt, ap);
    va_end(ap);
}

// The source path relative to the repository (nvcc gets "csrc/cuda/x.cu" from
// setup.py; an absolute path is cut back to csrc/).
static const char *short_path(const char *file) {
    const char *p = strstr(file, "csrc/");
    return p ? p : file;
}

int tn_cuda_fail(int status, const char *file, int line, const char *expr, const char *what) {
    set_error("%s:%d: %.300s failed: %s", short_path(file), line, expr, what);
    return status;
}

int tn_cuda_fail_cuda(cudaError_t e, const char *file, int line, const char *expr) {
    char what[256];
    snprintf(what, sizeof what, "%s (%s)", cudaGetErrorString(e), cudaGetErrorName(e));
    (void)cudaGetLastError();  // clear a non-sticky error so later calls can succeed
    return tn_cuda_fail(e == cudaErrorMemoryAllocation ? (int)TN_ENOMEM : (int)TN_ECUDA, file, line, expr,
                        what);
}

int tn_cuda_fail_cublas(cublasStatus_t s, const char *file, int line, const char *expr) {
    char what[160];
    snprintf(what, sizeof what, "%s (%s)", cublasGetStatusString(s), cublasGetStatusName(s));
    return tn_cuda_fail(s == CUBLAS_STATUS_ALLOC_FAILED ? (int)TN_ENOMEM : (int)TN_ECUDA, file, line,
                        expr, what);
}

int tn_cuda_fail_cudnn(cudnnStatus_t s, const char *file, int line, const char *expr) {
    return tn_cuda_fail(s == CUDNN_STATUS_ALLOC_FAILED ? (int)TN_ENOMEM : (int)TN_ECUDA, file, line, expr,
                        cudnnGetErrorString(s));
}

// ---------------------------------------------------------------------------
// devices

static std::once_flag g_count_once;
static int g_count = 0;
static char g_reason[320];

extern "C" int tn_cuda_device_count(void) {
    std::call_once(g_count_once, [] {
        int n = 0;
        cudaError_t e = cudaGetDeviceCount(&n);
        if (e != cudaSuccess) {
            const char *hint = e == cudaErrorInsufficientDriver
                                   ? ": no NVIDIA driver, or one older than this CUDA runtime"
                               : e == cudaErrorNoDevice ? ": no NVIDIA GPU" : "";
            snprintf(g_reason, sizeof g_reason, "cudaGetDeviceCount failed: %s (%s)%s",
                     cudaGetErrorString(e), cudaGetErrorName(e), hint);
            (void)cudaGetLastError();
            n = 0;
        } else if (n == 0) {
            snprintf(g_reason, sizeof g_reason, "the CUDA driver reports no device");
        }
        g_count = n < TN_CUDA_MAX_DEVICES ? n : TN_CUDA_MAX_DEVICES;
    });
    return g_count;
}

extern "C" const char *tn_cuda_unavailable_reason(void) {
    tn_cuda_device_count();
    return g_reason;
}

static int check_device(int dev) {
    const int n = tn_cuda_device_count();
    if (n == 0) {
        set_error("no CUDA device is available: %s", g_reason);
        return TN_ENODEV;
    }
    if (dev < 0 || dev >= n) {
        set_error("device cuda:%d does not exist (this machine has %d CUDA device%s)", dev, n,
                  n == 1 ? "" : "s");
        return TN_ENODEV;
    }
    return TN_OK;
}

extern "C" int tn_cuda_set_device(int dev) {
    TN_TRY(check_device(dev));
    int cur = -1;
    TN_CUDA_CHECK(cudaGetDevice(&cur));
    if (cur != dev) TN_CUDA_CHECK(cudaSetDevice(dev));
    return TN_OK;
}

extern "C" int tn_cuda_current_device(void) {
    int cur = 0;
    if (cudaGetDevice(&cur) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return cur;
}

// Makes `dev` current for a scope and restores the previous device.
struct DeviceGuard {
    int prev = -1;
    int status = TN_OK;
    explicit DeviceGuard(int dev) {
        if (cudaGetDevice(&prev) != cudaSuccess) {
            (void)cudaGetLastError();
            prev = -1;
        }
        if (prev != dev) {
            cudaError_t e = cudaSetDevice(dev);
            if (e != cudaSuccess) status = tn_cuda_fail_cuda(e, __FILE__, __LINE__, "cudaSetDevice");
        }
    }
    ~DeviceGuard() {
        int cur = -1;
        if (prev >= 0 && cudaGetDevice(&cur) == cudaSuccess && cur != prev) cudaSetDevice(prev);
    }
};

// ---------------------------------------------------------------------------
// per-device state: stream, handles, allocator

// 512 bytes, then 8 classes per power of two up to 2^48 bytes.
#define MIN_BLOCK 512
#define MAX_LOG2 48
#define NUM_BINS (1 + (MAX_LOG2 - 9) * 8)

struct DeviceState {
    std::mutex mu;                 // allocator state and stats
    std::vector<void *> bins[NUM_BINS];
    tn_cuda_memstats stats;
    std::mutex init_mu;            // stream / handle creation
    cudaStream_t stream = nullptr;
    cublasHandle_t cublas = nullptr;
    cudnnHandle_t cudnn = nullptr;
    DeviceState() { memset(&stats, 0, sizeof stats); }
};

static std::mutex g_states_mu;
static DeviceState *g_states[TN_CUDA_MAX_DEVICES];

static DeviceState *state(int dev) {
    std::lock_guard<std::mutex> lock(g_states_mu);
    if (!g_states[dev]) g_states[dev] = new DeviceState();
    return g_states[dev];
}

// Size class of n bytes (n > 0): its size, and its bin in *bin; 0 if too large.
static size_t size_class(size_t n, int *bin) {
    if (n <= MIN_BLOCK) {
        *bin = 0;
        return MIN_BLOCK;
    }
    int e = 63 - __builtin_clzll((unsigned long long)(n - 1));  // 2^e < n <= 2^(e+1)
    if (e + 1 > MAX_LOG2) return 0;
    const size_t base = (size_t)1 << e, step = base >> 3;
    const size_t sub = (n - base + step - 1) / step;  // 1..8
    *bin = 1 + (e - 9) * 8 + (int)(sub - 1);
    return base + sub * step;
}

static size_t bin_size(int bin) {
    if (bin == 0) return MIN_BLOCK;
    const int e = 9 + (bin - 1) / 8;
    const size_t sub = (size_t)((bin - 1) % 8) + 1;
    return ((size_t)1 << e) + sub * (((size_t)1 << e) >> 3);
}

int tn_cuda_stream(cudaStream_t *out) {
    const int dev = tn_cuda_current_device();
    TN_TRY(check_device(dev));
    DeviceState *d = state(dev);
    std::lock_guard<std::mutex> lock(d->init_mu);
    if (!d->stream) {
        cudaStream_t s;
        // Non-blocking: never serialised against the legacy default stream.
        TN_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
        d->stream = s;
    }
    *out = d->stream;
    return TN_OK;
}

extern "C" void *tn_cuda_stream_handle(void) {
    cudaStream_t s = nullptr;
    if (tn_cuda_stream(&s) != TN_OK) return nullptr;
    return (void *)s;
}

int tn_cuda_cublas(cublasHandle_t *out) {
    cudaStream_t s;
    TN_TRY(tn_cuda_stream(&s));
    DeviceState *d = state(tn_cuda_current_device());
    std::lock_guard<std::mutex> lock(d->init_mu);
    if (!d->cublas) {
        cublasHandle_t h;
        TN_CUBLAS_CHECK(cublasCreate(&h));
        TN_CUBLAS_CHECK(cublasSetStream(h, s));
        d->cublas = h;
    }
    *out = d->cublas;
    return TN_OK;
}

int tn_cuda_cudnn(cudnnHandle_t *out) {
    cudaStream_t s;
    TN_TRY(tn_cuda_stream(&s));
    DeviceState *d = state(tn_cuda_current_device());
    std::lock_guard<std::mutex> lock(d->init_mu);
    if (!d->cudnn) {
        cudnnHandle_t h;
        TN_CUDNN_CHECK(cudnnCreate(&h));
        TN_CUDNN_CHECK(cudnnSetStream(h, s));
        d->cudnn = h;
    }
    *out = d->cudnn;
    return TN_OK;
}

extern "C" int tn_cuda_synchronize(int dev) {
    if (dev >= 0) {
        TN_TRY(check_device(dev));
        DeviceGuard g(dev);
        TN_TRY(g.status);
        TN_CUDA_CHECK(cudaDeviceSynchronize());
        return TN_OK;
    }
    const int n = tn_cuda_device_count();
    for (int i = 0; i < n; i++) {
        DeviceState *d;
        {
            std::lock_guard<std::mutex> lock(g_states_mu);
            d = g_states[i];
        }
        if (!d) continue;  // never used: nothing queued
        DeviceGuard g(i);
        TN_TRY(g.status);
        TN_CUDA_CHECK(cudaDeviceSynchronize());
    }
    return TN_OK;
}

// ---------------------------------------------------------------------------
// allocator

static void fmt_bytes(char *buf, size_t n, uint64_t b) {
    if (b >= (1ull << 30)) snprintf(buf, n, "%.2f GiB", b / (double)(1ull << 30));
    else if (b >= (1ull << 20)) snprintf(buf, n, "%.2f MiB", b / (double)(1ull << 20));
    else if (b >= (1ull << 10)) snprintf(buf, n, "%.2f KiB", b / (double)(1ull << 10));
    else snprintf(buf, n, "%llu bytes", (unsigned long long)b);
}

// cudaFree every cached block of d (caller holds d->mu; device current).
// A cached block may still be read or written by kernels queued before it
// was freed (stream order makes reuse safe, not cudaFree), so wait for the
// device first: this path (empty_cache, the out-of-memory retry) is rare.
static int release_cached(DeviceState *d) {
    bool any = false;
    for (int b = 0; b < NUM_BINS && !any; b++) any = !d->bins[b].empty();
    if (any) TN_CUDA_CHECK(cudaDeviceSynchronize());
    for (int b = 0; b < NUM_BINS; b++) {
        const size_t sz = bin_size(b);
        while (!d->bins[b].empty()) {
            void *p = d->bins[b].back();
            d->bins[b].pop_back();
            d->stats.cached -= sz;
            d->stats.reserved -= sz;
            d->stats.num_device_frees++;
            TN_CUDA_CHECK(cudaFree(p));
        }
    }
    return TN_OK;
}

extern "C" int tn_cuda_malloc(void **ptr, size_t nbytes, int dev) {
    *ptr = nullptr;
    if (nbytes == 0) return TN_OK;
    TN_TRY(check_device(dev));
    int bin = 0;
    const size_t sz = size_class(nbytes, &bin);
    char want[64];
    fmt_bytes(want, sizeof want, nbytes);
    if (sz == 0) {
        set_error("CUDA out of memory: tried to allocate %s (%zu bytes) on cuda:%d, more than "
                  "the allocator handles", want, nbytes, dev);
        return TN_ENOMEM;
    }
    DeviceState *d = state(dev);
    std::lock_guard<std::mutex> lock(d->mu);
    tn_cuda_memstats &s = d->stats;
    s.num_allocs++;
    if (!d->bins[bin].empty()) {
        *ptr = d->bins[bin].back();
        d->bins[bin].pop_back();
        s.cached -= sz;
    } else {
        DeviceGuard g(dev);
        TN_TRY(g.status);
        void *p = nullptr;
        cudaError_t e = cudaMalloc(&p, sz);
        if (e == cudaErrorMemoryAllocation) {
            (void)cudaGetLastError();
            TN_TRY(release_cached(d));
            e = cudaMalloc(&p, sz);
        }
        if (e == cudaErrorMemoryAllocation) {
            (void)cudaGetLastError();
            s.num_ooms++;
            size_t fr = 0, tot = 0;
            if (cudaMemGetInfo(&fr, &tot) != cudaSuccess) (void)cudaGetLastError();
            char inuse[64], frs[64], tots[64];
            fmt_bytes(inuse, sizeof inuse, s.allocated);
            fmt_bytes(frs, sizeof frs, fr);
            fmt_bytes(tots, sizeof tots, tot);
            set_error("CUDA out of memory: tried to allocate %s (%zu bytes) on cuda:%d; %s in "
                      "use by timenet, %s free of %s", want, nbytes, dev, inuse, frs, tots);
            return TN_ENOMEM;
        }
        if (e != cudaSuccess) return tn_cuda_fail_cuda(e, __FILE__, __LINE__, "cudaMalloc");
        *ptr = p;
        s.num_device_allocs++;
        s.reserved += sz;
        if (s.reserved > s.peak_reserved) s.peak_reserved = s.reserved;
    }
    s.allocated += sz;
    s.requested += nbytes;
    if (s.allocated > s.peak_allocated) s.peak_allocated = s.allocated;
    return TN_OK;
}

extern "C" void tn_cuda_free(void *ptr, size_t nbytes, int dev) {
    if (!ptr || dev < 0 || dev >= TN_CUDA_MAX_DEVICES) return;
    int bin = 0;
    const size_t sz = size_class(nbytes, &bin);
    if (sz == 0) return;  // never handed out
    DeviceState *d = state(dev);
    std::lock_guard<std::mutex> lock(d->mu);
    d->bins[bin].push_back(ptr);
    d->stats.num_frees++;
    d->stats.allocated -= sz;
    d->stats.requested -= nbytes;
    d->stats.cached += sz;
}

extern "C" int tn_cuda_empty_cache(int dev) {
    const int n = tn_cuda_device_count();
    for (int i = 0; i < n; i++) {
        if (dev >= 0 && i != dev) continue;
        DeviceState *d;
        {
            std::lock_guard<std::mutex> lock(g_states_mu);
            d = g_states[i];
        }
        if (!d) continue;
        DeviceGuard g(i);
        TN_TRY(g.status);
        std::lock_guard<std::mutex> lock(d->mu);
        TN_TRY(release_cached(d));
    }
    if (dev >= 0) TN_TRY(check_device(dev));
    return TN_OK;
}

extern "C" int tn_cuda_memory_stats(int dev, tn_cuda_memstats *out) {
    TN_TRY(check_device(dev));
    DeviceState *d = state(dev);
    std::lock_guard<std::mutex> lock(d->mu);
    *out = d->stats;
    return TN_OK;
}

extern "C" int tn_cuda_reset_peak_stats(int dev) {
    TN_TRY(check_device(dev));
    DeviceState *d = state(dev);
    std::lock_guard<std::mutex> lock(d->mu);
    d->stats.peak_allocated = d->stats.allocated;
    d->stats.peak_reserved = d->stats.reserved;
    return TN_OK;
}

extern "C" int tn_cuda_mem_info(int dev, size_t *free_bytes, size_t *total_bytes) {
    TN_TRY(check_device(dev));
    DeviceGuard g(dev);
    TN_TRY(g.status);
    TN_CUDA_CHECK(cudaMemGetInfo(free_bytes, total_bytes));
    return TN_OK;
}

extern "C" int tn_cuda_device_name(int dev, char *buf, size_t n, int *major, int *minor) {
    TN_TRY(check_device(dev));
    cudaDeviceProp prop;
    TN_CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
    snprintf(buf, n, "%s", prop.name);
    *major = prop.major;
    *minor = prop.minor;
    return TN_OK;
}

// ---------------------------------------------------------------------------
// settings

static int g_allow_tf32 = 0;
static int g_cudnn_benchmark = 1;

extern "C" void tn_cuda_set_allow_tf32(int on) { __atomic_store_n(&g_allow_tf32, on ? 1 : 0, __ATOMIC_RELAXED); }
extern "C" int tn_cuda_get_allow_tf32(void) { return __atomic_load_n(&g_allow_tf32, __ATOMIC_RELAXED); }
extern "C" void tn_cuda_set_cudnn_benchmark(int on) { __atomic_store_n(&g_cudnn_benchmark, on ? 1 : 0, __ATOMIC_RELAXED); }
extern "C" int tn_cuda_get_cudnn_benchmark(void) { return __atomic_load_n(&g_cudnn_benchmark, __ATOMIC_RELAXED); }

// Per thread, as torch.autocast: ops run on their caller's thread, so one
// thread's autocast block never changes another's precision.
static thread_local int g_autocast = 0;

extern "C" void tn_cuda_set_autocast(int on) { g_autocast = on ? 1 : 0; }
extern "C" int tn_cuda_get_autocast(void) { return g_autocast; }

// ---------------------------------------------------------------------------
// copies

extern "C" int tn_cuda_memcpy_h2d(void *dst, const void *src, size_t n) {
    if (n == 0) return TN_OK;
    cudaStream_t s;
    TN_TRY(tn_cuda_stream(&s));
    // From pageable memory the call returns once src has been staged.
    TN_CUDA_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, s));
    return TN_OK;
}

extern "C" int tn_cuda_memcpy_d2h(void *dst, const void *src, size_t n) {
    if (n == 0) return TN_OK;
    cudaStream_t s;
    TN_TRY(tn_cuda_stream(&s));
    TN_CUDA_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, s));
    TN_CUDA_CHECK(cudaStreamSynchronize(s));
    return TN_OK;
}

extern "C" int tn_cuda_memcpy_d2d(void *dst, const void *src, size_t n) {
    if (n == 0) return TN_OK;
    cudaStream_t s;
    TN_TRY(tn_cuda_stream(&s));
    TN_CUDA_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, s));
    return TN_OK;
}

extern "C" int tn_cuda_memset_zero(void *dst, size_t n) {
    if (n == 0) return TN_OK;
    cudaStream_t s;
    TN_TRY(tn_cuda_stream(&s));
    TN_CUDA_CHECK(cudaMemsetAsync(dst, 0, n, s));
    return TN_OK;
}
