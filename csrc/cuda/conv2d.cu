// conv2d forward / backward through cuDNN (csrc/cpu/conv2d.c's contract:
// NCHW, square stride and zero padding, cross-correlation as PyTorch).
//
// A plan per shape and type (device, N, C, H, W, K, R, S, stride, pad, TF32,
// autocast) holds the descriptors and, chosen the first time each pass
// runs, its algorithm and workspace size: timed once with
// cudnnFind*AlgorithmEx on the real buffers
// (timenet.cuda.set_cudnn_benchmark(True), the default) or cuDNN's
// heuristic order (cudnnGet*_v7). Workspace comes from the caching
// allocator for each call. Each pass has its own convolution descriptor,
// so the math type the chosen algorithm needs is fixed per pass.
// Bias: forward cudnnAddTensor; backward our deterministic double sum.
// Autocast (bf16): x, w, dy go to cuDNN as bfloat16 copies with float
// compute (its pseudo-bf16 configuration: the outputs are bf16 too, so y,
// dx, dw are widened back to float32); bias and its gradient stay float32.
#include "common.cuh"

#include <mutex>
#include <unordered_map>

namespace {

struct ConvKey {
    int v[12];
    bool operator==(const ConvKey &o) const {
        for (int i = 0; i < 12; i++)
            if (v[i] != o.v[i]) return false;
        return true;
    }
};

struct ConvKeyHash {
    size_t operator()(const ConvKey &k) const {
        size_t h = 1469598103934665603ull;
        for (int i = 0; i < 12; i++) h = (h ^ (size_t)(unsigned)k.v[i]) * 1099511628211ull;
        return h;
    }
};

struct ConvPlan {
    // x, w, y in the plan's data type; y32 is y as float32, for the bias.
    cudnnTensorDescriptor_t x = nullptr, y = nullptr, y32 = nullptr, bias = nullptr;
    cudnnFilterDescriptor_t w = nullptr;
    cudnnConvolutionDescriptor_t conv[3] = {nullptr, nullptr, nullptr};  // fwd, bwd data, bwd filter
    bool chosen[3] = {false, false, false};
    cudnnConvolutionFwdAlgo_t fwd_algo = CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM;
    cudnnConvolutionBwdDataAlgo_t bwd_data_algo = CUDNN_CONVOLUTION_BWD_DATA_ALGO_0;
    cudnnConvolutionBwdFilterAlgo_t bwd_filter_algo = CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0;
    size_t ws[3] = {0, 0, 0};
    cudnnMathType_t math = CUDNN_FMA_MATH;  // what make_plan asked for
};

std::mutex g_mu;  // plans and algorithm choice
std::unordered_map<ConvKey, ConvPlan *, ConvKeyHash> g_plans;

// Most workspace an algorithm may use (and that Find gets to time with).
const size_t kMaxWorkspace = (size_t)1 << 30;

int make_plan(ConvPlan **out, int N, int C, int H, int W, int K, int R, int S, int stride,
              int pad, int P, int Q, bool bf16) {
    ConvPlan *p = new ConvPlan();
    *out = p;  // kept even when a step fails: its descriptors are freed never (tiny)
    const cudnnDataType_t dt = bf16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
    TN_CUDNN_CHECK(cudnnCreateTensorDescriptor(&p->x));
    TN_CUDNN_CHECK(cudnnCreateTensorDescriptor(&p->y));
    TN_CUDNN_CHECK(cudnnCreateTensorDescriptor(&p->y32));
    TN_CUDNN_CHECK(cudnnCreateTensorDescriptor(&p->bias));
    TN_CUDNN_CHECK(cudnnCreateFilterDescriptor(&p->w));
    TN_CUDNN_CHECK(cudnnSetTensor4dDescriptor(p->x, CUDNN_TENSOR_NCHW, dt, N, C, H, W));
    TN_CUDNN_CHECK(cudnnSetTensor4dDescriptor(p->y, CUDNN_TENSOR_NCHW, dt, N, K, P, Q));
    TN_CUDNN_CHECK(
        cudnnSetTensor4dDescriptor(p->y32, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, N, K, P, Q));
    TN_CUDNN_CHECK(
        cudnnSetTensor4dDescriptor(p->bias, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, K, 1, 1));
    TN_CUDNN_CHECK(cudnnSetFilter4dDescriptor(p->w, dt, CUDNN_TENSOR_NCHW, K, C, R, S));
    // PyTorch's rule: FMA math when TF32 is off, default math (TF32 allowed)
    // when on; tensor-op math for bf16 (float accumulation either way).
    const cudnnMathType_t math = bf16                     ? CUDNN_TENSOR_OP_MATH
                                 : tn_cuda_get_allow_tf32() ? CUDNN_DEFAULT_MATH
                                                            : CUDNN_FMA_MATH;
    p->math = math;
    for (int i = 0; i < 3; i++) {
        TN_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&p->conv[i]));
        TN_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(p->conv[i], pad, pad, stride, stride, 1,
                                                       1, CUDNN_CROSS_CORRELATION,
                                                       CUDNN_DATA_FLOAT));
        TN_CUDNN_CHECK(cudnnSetConvolutionMathType(p->conv[i], math));
    }
    // cuDNN must produce exactly (N, K, P, Q).
    int n, k, pp, q;
    TN_CUDNN_CHECK(
        cudnnGetConvolution2dForwardOutputDim(p->conv[0], p->x, p->w, &n, &k, &pp, &q));
    if (n != N || k != K || pp != P || q != Q)
        return tn_cuda_fail(TN_EINVAL, __FILE__, __LINE__, "cudnnGetConvolution2dForwardOutputDim",
                            "cuDNN's output shape differs from (N, K, P, Q)");
    return TN_OK;
}

int get_plan(ConvPlan **out, int N, int C, int H, int W, int K, int R, int S, int stride,
             int pad, bool bf16) {
    const int P = (H + 2 * pad - R) / stride + 1, Q = (W + 2 * pad - S) / stride + 1;
    const ConvKey key = {{tn_cuda_current_device(), N, C, H, W, K, R, S, stride, pad,
                          tn_cuda_get_allow_tf32(), bf16}};
    auto it = g_plans.find(key);
    if (it != g_plans.end()) {
        *out = it->second;
        return TN_OK;
    }
    ConvPlan *p = nullptr;
    int st = make_plan(&p, N, C, H, W, K, R, S, stride, pad, P, Q, bf16);
    if (st != TN_OK) return st;  // not cached: the next call tries again (p leaks, tiny)
    g_plans.emplace(key, p);
    *out = p;
    return TN_OK;
}

// A workspace for Find to time algorithms with: as much as kMaxWorkspace,
// less when the device is short of memory.
int find_workspace(TnBuffer &ws) {
    for (size_t n = kMaxWorkspace; n >= ((size_t)1 << 20); n /= 2) {
        if (ws.alloc(n) == TN_OK) return TN_OK;
        (void)cudaGetLastError();
    }
    return TN_OK;  // time with no workspace at all
}

// The math type to run a chosen algorithm with. Find / Get report the
// mathType they timed, which may be CUDNN_DEFAULT_MATH (TF32 allowed on
// Ampere+) even when the descriptor asked for FMA math (PyTorch's note
// "chooseAlgorithm doesn't respect mathType"): with TF32 off, FMA stays.
cudnnMathType_t run_math(const ConvPlan *p, cudnnMathType_t reported) {
    return p->math == CUDNN_FMA_MATH ? CUDNN_FMA_MATH : reported;
}

template <typename Perf>
int pick(const Perf *perf, int n, size_t limit, const char *what) {
    for (int i = 0; i < n; i++)
        if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].memory <= limit) return i;
    (void)what;
    return -1;
}

// x, w, y (dx, dw, dy below) are buffers of the plan's data type.
int choose_fwd(cudnnHandle_t h, ConvPlan *p, const void *x, const void *w, void *y) {
    cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    int n = 0, i;
    if (tn_cuda_get_cudnn_benchmark()) {
        TnBuffer ws;
        TN_TRY(find_workspace(ws));
        TN_CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithmEx(
            h, p->x, x, p->w, w, p->conv[0], p->y, y, CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &n, perf,
            ws.ptr, ws.nbytes));
        i = pick(perf, n, ws.nbytes, "forward");
    } else {
        TN_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(
            h, p->x, p->w, p->conv[0], p->y, CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &n, perf));
        i = pick(perf, n, kMaxWorkspace, "forward");
    }
    if (i < 0)
        return tn_cuda_fail(TN_ECUDA, __FILE__, __LINE__, "choose conv2d forward algorithm",
                            "cuDNN offers no usable algorithm for this shape");
    p->fwd_algo = perf[i].algo;
    p->ws[0] = perf[i].memory;
    TN_CUDNN_CHECK(cudnnSetConvolutionMathType(p->conv[0], run_math(p, perf[i].mathType)));
    p->chosen[0] = true;
    return TN_OK;
}

int choose_bwd_data(cudnnHandle_t h, ConvPlan *p, const void *w, const void *dy, void *dx) {
    cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    int n = 0, i;
    if (tn_cuda_get_cudnn_benchmark()) {
        TnBuffer ws;
        TN_TRY(find_workspace(ws));
        TN_CUDNN_CHECK(cudnnFindConvolutionBackwardDataAlgorithmEx(
            h, p->w, w, p->y, dy, p->conv[1], p->x, dx, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT,
            &n, perf, ws.ptr, ws.nbytes));
        i = pick(perf, n, ws.nbytes, "backward data");
    } else {
        TN_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(
            h, p->w, p->y, p->conv[1], p->x, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &n, perf));
        i = pick(perf, n, kMaxWorkspace, "backward data");
    }
    if (i < 0)
        return tn_cuda_fail(TN_ECUDA, __FILE__, __LINE__, "choose conv2d backward-data algorithm",
                            "cuDNN offers no usable algorithm for this shape");
    p->bwd_data_algo = perf[i].algo;
    p->ws[1] = perf[i].memory;
    TN_CUDNN_CHECK(cudnnSetConvolutionMathType(p->conv[1], run_math(p, perf[i].mathType)));
    p->chosen[1] = true;
    return TN_OK;
}

int choose_bwd_filter(cudnnHandle_t h, ConvPlan *p, const void *x, const void *dy, void *dw) {
    cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    int n = 0, i;
    if (tn_cuda_get_cudnn_benchmark()) {
        TnBuffer ws;
        TN_TRY(find_workspace(ws));
        TN_CUDNN_CHECK(cudnnFindConvolutionBackwardFilterAlgorithmEx(
            h, p->x, x, p->y, dy, p->conv[2], p->w, dw, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT,
            &n, perf, ws.ptr, ws.nbytes));
        i = pick(perf, n, ws.nbytes, "backward filter");
    } else {
        TN_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(
            h, p->x, p->y, p->conv[2], p->w, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &n, perf));
        i = pick(perf, n, kMaxWorkspace, "backward filter");
    }
    if (i < 0)
        return tn_cuda_fail(TN_ECUDA, __FILE__, __LINE__,
                            "choose conv2d backward-filter algorithm",
                            "cuDNN offers no usable algorithm for this shape");
    p->bwd_filter_algo = perf[i].algo;
    p->ws[2] = perf[i].memory;
    TN_CUDNN_CHECK(cudnnSetConvolutionMathType(p->conv[2], run_math(p, perf[i].mathType)));
    p->chosen[2] = true;
    return TN_OK;
}

// An output of the plan's type: y itself, or (bf16) a bfloat16 buffer of
// its n elements, widened into y by widen().
struct ConvOut {
    float *y;
    int64_t n;
    TnBuffer buf;
    void *ptr = nullptr;
    int init(float *y_, int64_t n_, bool bf16) {
        y = y_, n = n_, ptr = y_;
        if (!bf16 || !y_) return TN_OK;
        TN_TRY(buf.alloc(sizeof(__nv_bfloat16) * (size_t)n));
        ptr = buf.ptr;
        return TN_OK;
    }
    int widen() const {
        return buf.ptr ? tn_cuda_bf16_to_f32(y, buf.as<__nv_bfloat16>(), n) : TN_OK;
    }
};

}  // namespace

// y is (N, K, P, Q), written; x is (N, C, H, W); w is (K, C, R, S); b is (K,) or NULL.
extern "C" int tn_cuda_conv2d_forward(float *y, const float *x, const float *w, const float *b,
                                      int N, int C, int H, int W, int K, int R, int S, int stride,
                                      int pad) {
    cudnnHandle_t h;
    TN_TRY(tn_cuda_cudnn(&h));
    const bool bf = tn_cuda_get_autocast();
    const int P = (H + 2 * pad - R) / stride + 1, Q = (W + 2 * pad - S) / stride + 1;
    TnBuffer xb, wb;
    const void *xa, *wa;
    TN_TRY(tn_operand(&xa, xb, x, (int64_t)N * C * H * W, bf));
    TN_TRY(tn_operand(&wa, wb, w, (int64_t)K * C * R * S, bf));
    ConvOut out;
    TN_TRY(out.init(y, (int64_t)N * K * P * Q, bf));
    ConvPlan *p;
    {
        std::lock_guard<std::mutex> lock(g_mu);
        TN_TRY(get_plan(&p, N, C, H, W, K, R, S, stride, pad, bf));
        if (!p->chosen[0]) TN_TRY(choose_fwd(h, p, xa, wa, out.ptr));
    }
    TnBuffer ws;
    TN_TRY(ws.alloc(p->ws[0]));
    const float one = 1.0f, zero = 0.0f;
    TN_CUDNN_CHECK(cudnnConvolutionForward(h, &one, p->x, xa, p->w, wa, p->conv[0], p->fwd_algo,
                                           ws.ptr, p->ws[0], &zero, p->y, out.ptr));
    TN_TRY(out.widen());
    if (b) TN_CUDNN_CHECK(cudnnAddTensor(h, &one, p->bias, b, &one, p->y32, y));
    return TN_OK;
}

// dx (N, C, H, W) or NULL, dw (K, C, R, S), db (K,) or NULL: written;
// dy is (N, K, P, Q); x is (N, C, H, W); w is (K, C, R, S).
extern "C" int tn_cuda_conv2d_backward(float *dx, float *dw, float *db, const float *dy,
                                       const float *x, const float *w, int N, int C, int H, int W,
                                       int K, int R, int S, int stride, int pad) {
    cudnnHandle_t h;
    TN_TRY(tn_cuda_cudnn(&h));
    const bool bf = tn_cuda_get_autocast();
    const int P = (H + 2 * pad - R) / stride + 1, Q = (W + 2 * pad - S) / stride + 1;
    TnBuffer dyb, xb, wb;
    const void *dya, *xa, *wa = w;
    TN_TRY(tn_operand(&dya, dyb, dy, (int64_t)N * K * P * Q, bf));
    TN_TRY(tn_operand(&xa, xb, x, (int64_t)N * C * H * W, bf));
    if (dx) TN_TRY(tn_operand(&wa, wb, w, (int64_t)K * C * R * S, bf));
    ConvOut gx, gw;
    TN_TRY(gx.init(dx, (int64_t)N * C * H * W, bf));
    TN_TRY(gw.init(dw, (int64_t)K * C * R * S, bf));
    ConvPlan *p;
    {
        std::lock_guard<std::mutex> lock(g_mu);
        TN_TRY(get_plan(&p, N, C, H, W, K, R, S, stride, pad, bf));
        if (dx && !p->chosen[1]) TN_TRY(choose_bwd_data(h, p, wa, dya, gx.ptr));
        if (!p->chosen[2]) TN_TRY(choose_bwd_filter(h, p, xa, dya, gw.ptr));
    }
    const float one = 1.0f, zero = 0.0f;
    if (dx) {
        TnBuffer ws;
        TN_TRY(ws.alloc(p->ws[1]));
        TN_CUDNN_CHECK(cudnnConvolutionBackwardData(h, &one, p->w, wa, p->y, dya, p->conv[1],
                                                    p->bwd_data_algo, ws.ptr, p->ws[1], &zero,
                                                    p->x, gx.ptr));
        TN_TRY(gx.widen());
    }
    {
        TnBuffer ws;
        TN_TRY(ws.alloc(p->ws[2]));
        TN_CUDNN_CHECK(cudnnConvolutionBackwardFilter(h, &one, p->x, xa, p->y, dya, p->conv[2],
                                                      p->bwd_filter_algo, ws.ptr, p->ws[2],
                                                      &zero, p->w, gw.ptr));
        TN_TRY(gw.widen());
    }
    if (db) {  // from the float32 dy
        const int64_t shape[3] = {N, K, (int64_t)P * Q};
        const int reduce[3] = {1, 0, 1};
        TN_TRY(tn_cuda_sum(db, dy, nullptr, 3, shape, reduce));
    }
    return TN_OK;
}
