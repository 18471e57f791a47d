// The fixed-order kernels' interface between the torch bindings and the per-ISA translation
// units. Plain C types only: the ISA units include no torch headers (an inline function compiled
// for AVX-512 in one unit must never be picked by the linker for another).
#pragma once
#include <cstdint>

namespace vt {

typedef void (*RangeFn)(void* ctx, int64_t begin, int64_t end);
// Runs fn(ctx, b, e) over [0, n) in chunks of at least `grain`, on torch's intra-op threads.
// Results never depend on how the range is cut: every output is computed by one call.
typedef void (*ParallelFor)(int64_t n, int64_t grain, RangeFn fn, void* ctx);
extern ParallelFor parallel_for;

// A strided view of up to two batch dimensions of matrices: element (b1, b2, r, c) is at
// data[b1*batch1 + b2*batch2 + r*rows + c*cols].
struct Strided {
  float* data;
  int64_t batch1, batch2, rows, cols;
};

struct MatmulArgs {
  Strided a, b, c;  // c's cols stride is 1
  int64_t b1, b2, m, n, k;
  const float* bias;  // n values that start every dot product, or null (start at +0)
  float* packed_b;    // scratch: packed_b_size(...) floats
  int threads;
};

// Float32 casts of the optimizer's scalars, as torch casts a Python float meeting a float32
// tensor (see protocol/repro/reference.py adamw_update / sgd_update for the formulas).
struct AdamwScalars {
  float decay, beta1, one_minus_beta1, beta2, one_minus_beta2, sqrt_correction2, eps, step_size;
};
struct SgdScalars {
  float weight_decay, momentum, lr;
  int has_weight_decay;
};

struct KernelTable {
  const char* name;
  int64_t (*packed_b_size)(int64_t batches, int64_t n, int64_t k);
  void (*matmul)(const MatmulArgs& args);
  void (*sum16_rows)(const float* x, int64_t rows, int64_t n, float* out);
  void (*sum16_cols)(const float* x, int64_t rows, int64_t d, float* out);
  void (*segment_sum)(const float* values, const int64_t* order, const int64_t* offsets,
                      int64_t segments, int64_t d, float* out);
  void (*exp_nonpositive)(const float* x, int64_t n, float* out);
  void (*log)(const float* x, int64_t n, float* out);
  void (*tanh)(const float* x, int64_t n, float* out);
  void (*gelu_forward)(const float* x, int64_t n, float* out, float* t);
  void (*gelu_backward)(const float* grad, const float* x, const float* t, int64_t n, float* out);
  void (*layer_norm_forward)(const float* x, const float* w, const float* b, float eps,
                             int64_t rows, int64_t d, float* out, float* normalized, float* inv_std);
  void (*layer_norm_backward_rows)(const float* grad, const float* normalized, const float* inv_std,
                                   const float* w, int64_t rows, int64_t d, float* grad_x,
                                   float* grad_times_normalized);
  void (*softmax_rows)(float* x, int64_t rows, int64_t n, float scale, int causal);
  void (*softmax_backward_rows)(const float* grad_probs, const float* probs, int64_t rows,
                                int64_t n, float scale, float* out);
  void (*cross_entropy_rows)(const float* logits, const int64_t* targets, int64_t rows, int64_t n,
                             float* probs, float* losses);
  void (*cross_entropy_backward)(const float* probs, const int64_t* targets, int64_t rows,
                                 int64_t n, float scale, float* out);
  void (*adamw)(const float* param, const float* grad, const float* exp_avg, const float* exp_avg_sq,
                int64_t n, const AdamwScalars& s, float* param_out, float* exp_avg_out, float* exp_avg_sq_out);
  void (*sgd)(const float* param, const float* grad, const float* buffer, int64_t n, const SgdScalars& s,
              float* param_out, float* buffer_out);
  void (*im2col)(const float* x, int64_t n, int64_t h, int64_t w, int64_t c, int64_t kh,
                 int64_t kw, int64_t stride, int64_t padding, float* out);
  // col2im(g · w_rows) without materialising g · w_rows: g (N·Ho·Wo, O), w_rows (O, kh·kw·C).
  void (*conv_input_grad)(const float* g, const float* w_rows, int64_t n, int64_t h, int64_t w, int64_t c,
                          int64_t o, int64_t kh, int64_t kw, int64_t stride, int64_t padding, float* out);
  void (*relu)(const float* x, int64_t n, float* out);
  void (*relu_backward)(const float* grad, const float* out, int64_t n, float* grad_in);
  // ONNX layers (fixed_order_layers.h)
  void (*sigmoid)(const float* x, int64_t n, float* out);
  void (*tanh_backward)(const float* grad, const float* t, int64_t n, float* out);
  void (*sigmoid_backward)(const float* grad, const float* s, int64_t n, float* out);
  // channels-last (N, H, W, C), no padding, stride >= kernel
  void (*avg_pool2d)(const float* x, int64_t n, int64_t h, int64_t w, int64_t c, int64_t kh, int64_t kw,
                     int64_t sh, int64_t sw, float* out);
  void (*avg_pool2d_backward)(const float* grad, int64_t n, int64_t h, int64_t w, int64_t c, int64_t kh,
                              int64_t kw, int64_t sh, int64_t sw, float* out);
  // per column of an (M, C) matrix
  void (*batch_norm_forward)(const float* x, const float* w, const float* b, float eps, int64_t m, int64_t d,
                             float* out, float* normalized, float* mean, float* inv_std, float* var_unbiased);
  void (*batch_norm_backward)(const float* grad, const float* normalized, const float* inv_std, const float* w,
                              int64_t m, int64_t d, float* grad_x, float* grad_w, float* grad_b);
};

const KernelTable* table_scalar();
const KernelTable* table_avx2();
const KernelTable* table_avx512();

}  // namespace vt
