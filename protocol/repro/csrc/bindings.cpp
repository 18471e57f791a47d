// Torch bindings of the fixed-order kernels: shape and dtype checks, output allocation, the
// choice of ISA table, and torch's intra-op thread pool as the kernels' parallel_for.
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <mutex>
#include <string>
#include <vector>

#include "table.h"

namespace vt {
static void torch_parallel_for(int64_t n, int64_t grain, RangeFn fn, void* ctx) {
  at::parallel_for(0, n, grain, [&](int64_t b, int64_t e) { fn(ctx, b, e); });
}
ParallelFor parallel_for = torch_parallel_for;
}  // namespace vt

namespace {

const vt::KernelTable* active = vt::table_scalar();

bool cpu_runs(const std::string& isa) {
#if defined(__x86_64__)
  if (isa == "avx2") return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (isa == "avx512")
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("fma");
#endif
  return isa == "scalar";
}

const vt::KernelTable* table_for(const std::string& isa) {
  if (isa == "scalar") return vt::table_scalar();
  if (isa == "avx2") return vt::table_avx2();
  if (isa == "avx512") return vt::table_avx512();
  return nullptr;
}

void select_isa(const std::string& isa) {
  const vt::KernelTable* table = table_for(isa);
  TORCH_CHECK_VALUE(table != nullptr, "unknown or unbuilt kernel ISA: ", isa);
  TORCH_CHECK_VALUE(cpu_runs(isa), "this CPU cannot run the ", isa, " kernels");
  active = table;
}

std::vector<std::string> available_isas() {
  std::vector<std::string> out;
  for (const char* isa : {"scalar", "avx2", "avx512"})
    if (table_for(isa) && cpu_runs(isa)) out.emplace_back(isa);
  return out;
}

void check_float(const at::Tensor& t, const char* name) {
  TORCH_CHECK_TYPE(t.scalar_type() == at::kFloat, name, " must be float32, not ", t.scalar_type());
  TORCH_CHECK_VALUE(t.device().is_cpu(), name, " must be on the CPU");
}

at::Tensor floats(const at::Tensor& t, const char* name) {
  check_float(t, name);
  return t.contiguous();
}

at::Tensor indices(const at::Tensor& t, int64_t bound, const char* name) {
  TORCH_CHECK_TYPE(t.scalar_type() == at::kLong, name, " must be int64");
  at::Tensor c = t.contiguous();
  if (c.numel() > 0) {
    TORCH_CHECK_VALUE(c.min().item<int64_t>() >= 0 && c.max().item<int64_t>() < bound, name,
                      " out of range [0, ", bound, ")");
  }
  return c;
}

vt::Strided strided4(const at::Tensor& t) {
  int64_t d = t.dim();
  return {t.data_ptr<float>(), d == 4 ? t.stride(0) : 0, d >= 3 ? t.stride(d - 3) : 0,
          t.stride(d - 2), t.stride(d - 1)};
}

std::mutex packed_mutex;
at::Tensor packed_kept;
constexpr int64_t PACKED_KEEP = int64_t(16) << 20;  // floats

// a (..., M, K) @ b (..., K, N) with the same 0–2 batch dims, any strides; written into `out`
// (any strides with unit column stride) or a new contiguous tensor. bias: N values that start
// every dot product.
at::Tensor matmul(const at::Tensor& a, const at::Tensor& b, const c10::optional<at::Tensor>& bias,
                  const c10::optional<at::Tensor>& out) {
  check_float(a, "a");
  check_float(b, "b");
  TORCH_CHECK_VALUE(a.dim() >= 2 && a.dim() <= 4 && b.dim() == a.dim(), "matmul takes 2-4 dims, equal in a and b");
  int64_t d = a.dim(), m = a.size(d - 2), k = a.size(d - 1), n = b.size(d - 1);
  TORCH_CHECK_VALUE(b.size(d - 2) == k, "inner sizes differ: ", a.sizes(), " @ ", b.sizes());
  for (int64_t i = 0; i < d - 2; ++i) TORCH_CHECK_VALUE(a.size(i) == b.size(i), "batch sizes differ");
  std::vector<int64_t> shape(a.sizes().begin(), a.sizes().end() - 1);
  shape.push_back(n);
  at::Tensor c = out.has_value() ? *out : at::empty(shape, a.options());
  check_float(c, "out");
  TORCH_CHECK_VALUE(c.sizes().vec() == shape && (n <= 1 || c.stride(d - 1) == 1), "out must be ",
                    c10::IntArrayRef(shape), " with unit column stride");
  at::Tensor bias_c;
  if (bias.has_value()) {
    bias_c = floats(*bias, "bias");
    TORCH_CHECK_VALUE(bias_c.dim() == 1 && bias_c.size(0) == n, "bias must have ", n, " values");
  }
  if (c.numel() == 0) return c;
  if (k == 0) {
    if (bias.has_value()) c.copy_(bias_c.expand(shape)); else c.zero_();
    return c;
  }
  int64_t b1 = d == 4 ? a.size(0) : 1, b2 = d >= 3 ? a.size(d - 3) : 1;
  // The packed copy of B is scratch: one buffer (up to 64 MiB) is kept between products, so a
  // training step does not map and zero fresh pages for every product. A concurrent product
  // while it is in use gets its own.
  const int64_t need = active->packed_b_size(b1 * b2, n, k);
  std::unique_lock<std::mutex> lease(packed_mutex, std::try_to_lock);
  at::Tensor packed;
  if (lease.owns_lock() && need <= PACKED_KEEP) {
    if (!packed_kept.defined() || packed_kept.numel() < need) packed_kept = at::empty({need}, a.options());
    packed = packed_kept;
  } else {
    packed = at::empty({need}, a.options());
  }
  vt::MatmulArgs args{strided4(a), strided4(b), strided4(c), b1, b2, m, n, k,
                      bias.has_value() ? bias_c.data_ptr<float>() : nullptr, packed.data_ptr<float>(),
                      at::get_num_threads()};
  active->matmul(args);
  return c;
}

at::Tensor sum16_rows(const at::Tensor& x) {
  at::Tensor c = floats(x, "x");
  TORCH_CHECK_VALUE(c.dim() >= 1, "sum16_rows needs at least one dim");
  int64_t n = c.size(-1), rows = n ? c.numel() / n : 0;
  std::vector<int64_t> shape(c.sizes().begin(), c.sizes().end() - 1);
  at::Tensor out = at::empty(shape, c.options());
  if (n == 0) return out.zero_();
  active->sum16_rows(c.data_ptr<float>(), rows, n, out.data_ptr<float>());
  return out;
}

at::Tensor sum16_cols(const at::Tensor& x) {
  at::Tensor c = floats(x, "x");
  TORCH_CHECK_VALUE(c.dim() >= 1, "sum16_cols needs at least one dim");
  int64_t d = c.size(-1), rows = d ? c.numel() / d : 0;
  at::Tensor out = at::empty({d}, c.options());
  if (d > 0) active->sum16_cols(c.data_ptr<float>(), rows, d, out.data_ptr<float>());
  return out;
}

// out[s] = sum16 of the rows i with index[i] = s, in ascending i (a stable counting sort).
at::Tensor segment_sum(const at::Tensor& values, const at::Tensor& index, int64_t segments) {
  at::Tensor v = floats(values, "values");
  TORCH_CHECK_VALUE(v.dim() == 2 && index.dim() == 1 && index.size(0) == v.size(0), "values (R, D), index (R,)");
  TORCH_CHECK_VALUE(segments >= 0, "segments must be >= 0");
  at::Tensor idx = indices(index, segments, "index");
  int64_t rows = v.size(0), d = v.size(1);
  std::vector<int64_t> offsets(segments + 1, 0), order(rows), fill;
  const int64_t* ip = idx.data_ptr<int64_t>();
  for (int64_t i = 0; i < rows; ++i) ++offsets[ip[i] + 1];
  for (int64_t s = 0; s < segments; ++s) offsets[s + 1] += offsets[s];
  fill.assign(offsets.begin(), offsets.end() - 1);
  for (int64_t i = 0; i < rows; ++i) order[fill[ip[i]]++] = i;
  at::Tensor out = at::empty({segments, d}, v.options());
  if (segments > 0 && d > 0)
    active->segment_sum(v.data_ptr<float>(), order.data(), offsets.data(), segments, d, out.data_ptr<float>());
  return out;
}

using Unary = void (*)(const float*, int64_t, float*);

at::Tensor unary(const at::Tensor& x, Unary fn) {
  at::Tensor c = floats(x, "x");
  at::Tensor out = at::empty_like(c);
  fn(c.data_ptr<float>(), c.numel(), out.data_ptr<float>());
  return out;
}

at::Tensor exp_nonpositive(const at::Tensor& x) { return unary(x, active->exp_nonpositive); }
at::Tensor log_positive(const at::Tensor& x) { return unary(x, active->log); }
at::Tensor tanh_(const at::Tensor& x) { return unary(x, active->tanh); }

void same_shape(const at::Tensor& a, const at::Tensor& b, const char* what) {
  TORCH_CHECK_VALUE(a.sizes() == b.sizes(), what, ": shapes differ, ", a.sizes(), " vs ", b.sizes());
}

std::tuple<at::Tensor, at::Tensor> gelu_forward(const at::Tensor& x) {
  at::Tensor c = floats(x, "x");
  at::Tensor out = at::empty_like(c), t = at::empty_like(c);
  active->gelu_forward(c.data_ptr<float>(), c.numel(), out.data_ptr<float>(), t.data_ptr<float>());
  return {out, t};
}

at::Tensor gelu_backward(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& t) {
  at::Tensor g = floats(grad, "grad"), xc = floats(x, "x"), tc = floats(t, "t");
  same_shape(g, xc, "gelu_backward");
  same_shape(tc, xc, "gelu_backward");
  at::Tensor out = at::empty_like(xc);
  active->gelu_backward(g.data_ptr<float>(), xc.data_ptr<float>(), tc.data_ptr<float>(), xc.numel(),
                        out.data_ptr<float>());
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_norm_forward(const at::Tensor& x, const at::Tensor& w,
                                                                  const at::Tensor& b, double eps) {
  at::Tensor c = floats(x, "x"), wc = floats(w, "weight"), bc = floats(b, "bias");
  TORCH_CHECK_VALUE(c.dim() >= 1, "layer_norm needs at least one dim");
  int64_t d = c.size(-1), rows = d ? c.numel() / d : 0;
  TORCH_CHECK_VALUE(wc.numel() == d && bc.numel() == d, "weight and bias need ", d, " values");
  std::vector<int64_t> stat_shape(c.sizes().begin(), c.sizes().end() - 1);
  stat_shape.push_back(1);
  at::Tensor out = at::empty_like(c), normalized = at::empty_like(c), inv_std = at::empty(stat_shape, c.options());
  if (d > 0)
    active->layer_norm_forward(c.data_ptr<float>(), wc.data_ptr<float>(), bc.data_ptr<float>(), (float)eps, rows, d,
                               out.data_ptr<float>(), normalized.data_ptr<float>(), inv_std.data_ptr<float>());
  return {out, normalized, inv_std};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_norm_backward(const at::Tensor& grad, const at::Tensor& normalized,
                                                                   const at::Tensor& inv_std, const at::Tensor& w) {
  at::Tensor g = floats(grad, "grad"), nc = floats(normalized, "normalized"), ic = floats(inv_std, "inv_std"),
             wc = floats(w, "weight");
  same_shape(g, nc, "layer_norm_backward");
  int64_t d = nc.size(-1), rows = d ? nc.numel() / d : 0;
  TORCH_CHECK_VALUE(wc.numel() == d && ic.numel() == rows, "layer_norm_backward: weight or inv_std size");
  at::Tensor grad_x = at::empty_like(nc), grad_times_normalized = at::empty_like(nc);
  if (d > 0)
    active->layer_norm_backward_rows(g.data_ptr<float>(), nc.data_ptr<float>(), ic.data_ptr<float>(),
                                     wc.data_ptr<float>(), rows, d, grad_x.data_ptr<float>(),
                                     grad_times_normalized.data_ptr<float>());
  return {grad_x, sum16_cols(grad_times_normalized), sum16_cols(g)};
}

// In place on a contiguous float32 tensor: softmax of each last-dim row of x·scale, causal
// (square trailing dims, future masked) when asked.
at::Tensor softmax_(at::Tensor x, double scale, bool causal) {
  check_float(x, "x");
  TORCH_CHECK_VALUE(x.is_contiguous() && x.dim() >= 1, "softmax_ needs a contiguous tensor");
  int64_t n = x.size(-1), rows = n ? x.numel() / n : 0;
  TORCH_CHECK_VALUE(!causal || (x.dim() >= 2 && x.size(-2) == n), "a causal softmax needs square trailing dims");
  if (n > 0) active->softmax_rows(x.data_ptr<float>(), rows, n, (float)scale, causal ? 1 : 0);
  return x;
}

at::Tensor softmax_backward(const at::Tensor& grad_probs, const at::Tensor& probs, double scale) {
  at::Tensor g = floats(grad_probs, "grad_probs"), p = floats(probs, "probs");
  same_shape(g, p, "softmax_backward");
  int64_t n = p.size(-1), rows = n ? p.numel() / n : 0;
  at::Tensor out = at::empty_like(p);
  if (n > 0) active->softmax_backward_rows(g.data_ptr<float>(), p.data_ptr<float>(), rows, n, (float)scale, out.data_ptr<float>());
  return out;
}

// Mean cross-entropy of (N, C) logits: (loss, probs); loss = sum16(row losses) / N.
std::tuple<at::Tensor, at::Tensor> cross_entropy(const at::Tensor& logits, const at::Tensor& targets) {
  at::Tensor x = floats(logits, "logits");
  TORCH_CHECK_VALUE(x.dim() == 2 && targets.dim() == 1 && targets.size(0) == x.size(0), "logits (N, C), targets (N,)");
  int64_t rows = x.size(0), n = x.size(1);
  TORCH_CHECK_VALUE(rows > 0 && n > 0, "cross_entropy needs at least one row and one class");
  at::Tensor t = indices(targets, n, "targets");
  at::Tensor probs = at::empty_like(x), losses = at::empty({1, rows}, x.options());
  active->cross_entropy_rows(x.data_ptr<float>(), t.data_ptr<int64_t>(), rows, n, probs.data_ptr<float>(),
                             losses.data_ptr<float>());
  float total = sum16_rows(losses).item<float>();
  return {at::full({}, total / (float)rows, x.options()), probs};
}

at::Tensor cross_entropy_backward(const at::Tensor& probs, const at::Tensor& targets, const at::Tensor& grad) {
  at::Tensor p = floats(probs, "probs");
  TORCH_CHECK_VALUE(p.dim() == 2 && targets.dim() == 1 && targets.size(0) == p.size(0), "probs (N, C), targets (N,)");
  at::Tensor t = indices(targets, p.size(1), "targets");
  float scale = floats(grad, "grad").item<float>() / (float)p.size(0);
  at::Tensor out = at::empty_like(p);
  active->cross_entropy_backward(p.data_ptr<float>(), t.data_ptr<int64_t>(), p.size(0), p.size(1), scale,
                                 out.data_ptr<float>());
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> adamw_update(const at::Tensor& param, const at::Tensor& grad,
                                                            const at::Tensor& exp_avg, const at::Tensor& exp_avg_sq,
                                                            double decay, double beta1, double one_minus_beta1,
                                                            double beta2, double one_minus_beta2,
                                                            double sqrt_correction2, double eps, double step_size) {
  at::Tensor p = floats(param, "param"), g = floats(grad, "grad"), m = floats(exp_avg, "exp_avg"),
             v = floats(exp_avg_sq, "exp_avg_sq");
  same_shape(p, g, "adamw_update");
  same_shape(p, m, "adamw_update");
  same_shape(p, v, "adamw_update");
  vt::AdamwScalars s{(float)decay, (float)beta1, (float)one_minus_beta1, (float)beta2, (float)one_minus_beta2,
                     (float)sqrt_correction2, (float)eps, (float)step_size};
  at::Tensor p_out = at::empty_like(p), m_out = at::empty_like(p), v_out = at::empty_like(p);
  active->adamw(p.data_ptr<float>(), g.data_ptr<float>(), m.data_ptr<float>(), v.data_ptr<float>(), p.numel(), s,
                p_out.data_ptr<float>(), m_out.data_ptr<float>(), v_out.data_ptr<float>());
  return {p_out, m_out, v_out};
}

std::tuple<at::Tensor, at::Tensor> sgd_update(const at::Tensor& param, const at::Tensor& grad, const at::Tensor& buffer,
                                              double lr, double momentum, double weight_decay) {
  at::Tensor p = floats(param, "param"), g = floats(grad, "grad"), b = floats(buffer, "momentum_buffer");
  same_shape(p, g, "sgd_update");
  same_shape(p, b, "sgd_update");
  vt::SgdScalars s{(float)weight_decay, (float)momentum, (float)lr, weight_decay != 0.0 ? 1 : 0};
  at::Tensor p_out = at::empty_like(p), b_out = at::empty_like(p);
  active->sgd(p.data_ptr<float>(), g.data_ptr<float>(), b.data_ptr<float>(), p.numel(), s, p_out.data_ptr<float>(),
              b_out.data_ptr<float>());
  return {p_out, b_out};
}

int64_t conv_out(int64_t size, int64_t k, int64_t stride, int64_t padding) { return (size + 2 * padding - k) / stride + 1; }

void check_conv(int64_t h, int64_t w, int64_t kh, int64_t kw, int64_t stride, int64_t padding) {
  TORCH_CHECK_VALUE(kh > 0 && kw > 0 && stride > 0 && padding >= 0, "bad convolution geometry");
  TORCH_CHECK_VALUE(h + 2 * padding >= kh && w + 2 * padding >= kw, "kernel larger than the padded input");
}

// Convolution gathers are channels-last: x (N, H, W, C) → cols (N·Ho·Wo, kh·kw·C).
at::Tensor im2col(const at::Tensor& x, int64_t kh, int64_t kw, int64_t stride, int64_t padding) {
  at::Tensor c = floats(x, "x");
  TORCH_CHECK_VALUE(c.dim() == 4, "im2col takes (N, H, W, C)");
  int64_t n = c.size(0), h = c.size(1), w = c.size(2), ch = c.size(3);
  check_conv(h, w, kh, kw, stride, padding);
  int64_t ho = conv_out(h, kh, stride, padding), wo = conv_out(w, kw, stride, padding);
  at::Tensor out = at::empty({n * ho * wo, kh * kw * ch}, c.options());
  if (out.numel() > 0) active->im2col(c.data_ptr<float>(), n, h, w, ch, kh, kw, stride, padding, out.data_ptr<float>());
  return out;
}

at::Tensor conv2d_input_grad(const at::Tensor& grad_rows, const at::Tensor& w_rows, std::vector<int64_t> shape,
                             int64_t kh, int64_t kw, int64_t stride, int64_t padding) {
  at::Tensor g = floats(grad_rows, "grad_rows"), wr = floats(w_rows, "w_rows");
  TORCH_CHECK_VALUE(shape.size() == 4, "conv2d_input_grad needs an (N, H, W, C) shape");
  int64_t n = shape[0], h = shape[1], w = shape[2], ch = shape[3];
  check_conv(h, w, kh, kw, stride, padding);
  int64_t ho = conv_out(h, kh, stride, padding), wo = conv_out(w, kw, stride, padding), o = wr.size(0);
  TORCH_CHECK_VALUE(wr.dim() == 2 && wr.size(1) == kh * kw * ch, "w_rows must be (O, kh*kw*C)");
  TORCH_CHECK_VALUE(g.dim() == 2 && g.size(0) == n * ho * wo && g.size(1) == o, "grad_rows must be (N*Ho*Wo, O)");
  at::Tensor out = at::empty(shape, g.options());
  if (out.numel() == 0) return out;
  if (o == 0) return out.zero_();
  active->conv_input_grad(g.data_ptr<float>(), wr.data_ptr<float>(), n, h, w, ch, o, kh, kw, stride, padding,
                          out.data_ptr<float>());
  return out;
}

// Elementwise kernels run over the storage of any dense layout (a channels-last view included),
// so they never pay for a transposing copy; the output has the input's strides.
at::Tensor dense(const at::Tensor& t, const char* name) {
  check_float(t, name);
  return t.is_non_overlapping_and_dense() ? t : t.contiguous();
}

at::Tensor relu(const at::Tensor& x) {
  at::Tensor d = dense(x, "x");
  at::Tensor out = at::empty_like(d);
  active->relu(d.data_ptr<float>(), d.numel(), out.data_ptr<float>());
  return out;
}

at::Tensor relu_backward(const at::Tensor& grad, const at::Tensor& out) {
  at::Tensor o = dense(out, "out"), g = dense(grad, "grad");
  same_shape(g, o, "relu_backward");
  if (g.strides() != o.strides()) g = at::empty_like(o).copy_(g);
  at::Tensor grad_in = at::empty_like(o);
  active->relu_backward(g.data_ptr<float>(), o.data_ptr<float>(), o.numel(), grad_in.data_ptr<float>());
  return grad_in;
}

// --- ONNX layers (fixed_order_layers.h) ---------------------------------------------------------

at::Tensor sigmoid(const at::Tensor& x) {
  at::Tensor d = dense(x, "x");
  at::Tensor out = at::empty_like(d);
  active->sigmoid(d.data_ptr<float>(), d.numel(), out.data_ptr<float>());
  return out;
}

using Backward = void (*)(const float*, const float*, int64_t, float*);

// grad · f'(saved) elementwise, on the saved tensor's dense layout.
at::Tensor elementwise_backward(const at::Tensor& grad, const at::Tensor& saved, Backward fn, const char* what) {
  at::Tensor s = dense(saved, "saved"), g = dense(grad, "grad");
  same_shape(g, s, what);
  if (g.strides() != s.strides()) g = at::empty_like(s).copy_(g);
  at::Tensor out = at::empty_like(s);
  fn(g.data_ptr<float>(), s.data_ptr<float>(), s.numel(), out.data_ptr<float>());
  return out;
}

at::Tensor tanh_backward(const at::Tensor& grad, const at::Tensor& t) {
  return elementwise_backward(grad, t, active->tanh_backward, "tanh_backward");
}

at::Tensor sigmoid_backward(const at::Tensor& grad, const at::Tensor& s) {
  return elementwise_backward(grad, s, active->sigmoid_backward, "sigmoid_backward");
}

void check_pool(int64_t h, int64_t w, int64_t kh, int64_t kw, int64_t sh, int64_t sw) {
  TORCH_CHECK_VALUE(kh > 0 && kw > 0 && h >= kh && w >= kw, "pooling window larger than the input");
  TORCH_CHECK_VALUE(sh >= kh && sw >= kw, "the fixed-order average pool needs stride >= kernel (windows that do not overlap)");
}

// Channels-last average pool: x (N, H, W, C) → (N, Ho, Wo, C), no padding.
at::Tensor avg_pool2d(const at::Tensor& x, int64_t kh, int64_t kw, int64_t sh, int64_t sw) {
  at::Tensor c = floats(x, "x");
  TORCH_CHECK_VALUE(c.dim() == 4, "avg_pool2d takes (N, H, W, C)");
  int64_t n = c.size(0), h = c.size(1), w = c.size(2), ch = c.size(3);
  check_pool(h, w, kh, kw, sh, sw);
  at::Tensor out = at::empty({n, (h - kh) / sh + 1, (w - kw) / sw + 1, ch}, c.options());
  if (out.numel() > 0) active->avg_pool2d(c.data_ptr<float>(), n, h, w, ch, kh, kw, sh, sw, out.data_ptr<float>());
  return out;
}

at::Tensor avg_pool2d_backward(const at::Tensor& grad, int64_t h, int64_t w, int64_t kh, int64_t kw, int64_t sh,
                               int64_t sw) {
  at::Tensor g = floats(grad, "grad");
  TORCH_CHECK_VALUE(g.dim() == 4, "avg_pool2d_backward takes (N, Ho, Wo, C)");
  check_pool(h, w, kh, kw, sh, sw);
  int64_t n = g.size(0), ch = g.size(3);
  TORCH_CHECK_VALUE(g.size(1) == (h - kh) / sh + 1 && g.size(2) == (w - kw) / sw + 1, "grad has the wrong pooled size");
  at::Tensor out = at::empty({n, h, w, ch}, g.options());
  if (out.numel() > 0)
    active->avg_pool2d_backward(g.data_ptr<float>(), n, h, w, ch, kh, kw, sh, sw, out.data_ptr<float>());
  return out;
}

// Training-mode batch norm over the rows of x (M, C): (out, normalized, mean, inv_std, unbiased var).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> batch_norm_forward(
    const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, double eps) {
  at::Tensor c = floats(x, "x"), wc = floats(w, "weight"), bc = floats(b, "bias");
  TORCH_CHECK_VALUE(c.dim() == 2 && c.size(0) > 0, "batch_norm_forward takes (M, C) with M > 0");
  int64_t m = c.size(0), d = c.size(1);
  TORCH_CHECK_VALUE(wc.numel() == d && bc.numel() == d, "weight and bias need ", d, " values");
  at::Tensor out = at::empty_like(c), normalized = at::empty_like(c);
  at::Tensor mean = at::empty({d}, c.options()), inv_std = at::empty({d}, c.options()), var = at::empty({d}, c.options());
  if (d > 0)
    active->batch_norm_forward(c.data_ptr<float>(), wc.data_ptr<float>(), bc.data_ptr<float>(), (float)eps, m, d,
                               out.data_ptr<float>(), normalized.data_ptr<float>(), mean.data_ptr<float>(),
                               inv_std.data_ptr<float>(), var.data_ptr<float>());
  return {out, normalized, mean, inv_std, var};
}

// (grad_x, grad_weight, grad_bias).
std::tuple<at::Tensor, at::Tensor, at::Tensor> batch_norm_backward(const at::Tensor& grad, const at::Tensor& normalized,
                                                                   const at::Tensor& inv_std, const at::Tensor& w) {
  at::Tensor g = floats(grad, "grad"), nc = floats(normalized, "normalized"), ic = floats(inv_std, "inv_std"),
             wc = floats(w, "weight");
  same_shape(g, nc, "batch_norm_backward");
  TORCH_CHECK_VALUE(nc.dim() == 2 && nc.size(0) > 0, "batch_norm_backward takes (M, C) with M > 0");
  int64_t m = nc.size(0), d = nc.size(1);
  TORCH_CHECK_VALUE(wc.numel() == d && ic.numel() == d, "batch_norm_backward: weight or inv_std size");
  at::Tensor grad_x = at::empty_like(nc), grad_w = at::empty({d}, nc.options()), grad_b = at::empty({d}, nc.options());
  if (d > 0)
    active->batch_norm_backward(g.data_ptr<float>(), nc.data_ptr<float>(), ic.data_ptr<float>(), wc.data_ptr<float>(),
                                m, d, grad_x.data_ptr<float>(), grad_w.data_ptr<float>(), grad_b.data_ptr<float>());
  return {grad_x, grad_w, grad_b};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "veritrain repro profile: fixed-order float32 kernels (see protocol/repro/reference.py)";
  m.def("select_isa", &select_isa);
  m.def("available_isas", &available_isas);
  m.def("active_isa", []() { return std::string(active->name); });
  m.def("matmul", &matmul, py::arg("a"), py::arg("b"), py::arg("bias") = py::none(), py::arg("out") = py::none());
  m.def("sum16_rows", &sum16_rows);
  m.def("sum16_cols", &sum16_cols);
  m.def("segment_sum", &segment_sum);
  m.def("exp_nonpositive", &exp_nonpositive);
  m.def("log", &log_positive);
  m.def("tanh", &tanh_);
  m.def("gelu_forward", &gelu_forward);
  m.def("gelu_backward", &gelu_backward);
  m.def("layer_norm_forward", &layer_norm_forward);
  m.def("layer_norm_backward", &layer_norm_backward);
  m.def("softmax_", &softmax_);
  m.def("softmax_backward", &softmax_backward);
  m.def("cross_entropy", &cross_entropy);
  m.def("cross_entropy_backward", &cross_entropy_backward);
  m.def("adamw_update", &adamw_update);
  m.def("sgd_update", &sgd_update);
  m.def("im2col", &im2col);
  m.def("conv2d_input_grad", &conv2d_input_grad);
  m.def("relu", &relu);
  m.def("relu_backward", &relu_backward);
  m.def("sigmoid", &sigmoid);
  m.def("tanh_backward", &tanh_backward);
  m.def("sigmoid_backward", &sigmoid_backward);
  m.def("avg_pool2d", &avg_pool2d);
  m.def("avg_pool2d_backward", &avg_pool2d_backward);
  m.def("batch_norm_forward", &batch_norm_forward);
  m.def("batch_norm_backward", &batch_norm_backward);
}
