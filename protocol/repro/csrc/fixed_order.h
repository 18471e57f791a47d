// Fixed-order float32 kernels of the repro profile, compiled once per ISA level (see isa_*.cpp).
//
// The arithmetic contract (docs/repro.md; protocol/repro/reference.py is the executable spec):
//   dot     terms in chunks of CHAIN consecutive k; chunk q: c_q = z; for k in it: c_q = fma(a[k], b[k], c_q),
//           z = init for chunk 0, +0 after; result = (((c_0) + c_1) + c_2) + ...  (chunking bounds
//           the error by about (CHAIN + K/CHAIN) ulps instead of K)
//   sum16   lane l = +0 + x[l] + x[l+16] + x[l+32] + ..., left to right; then lanes folded
//           pairwise: l += l+8, l += l+4, l += l+2, l += l+1
//   every other step is one correctly rounded +, −, ×, ÷ or sqrt on float32 (no contraction:
//   built with -ffp-contract=off), a select, a compare or a bit operation.
// Each output element is computed start to finish by one thread in that order, whatever the
// vector width, so the bits cannot depend on thread count or ISA. Only the micro-kernels of the
// matrix product are written per ISA; everything else is plain loops the compiler vectorises
// across independent elements (which cannot change a result).
//
// This file is included inside `namespace VT_NS` by each ISA unit: nothing here may be shared
// between units (no inline function or template outside that namespace). The including unit
// provides <cstdint>, <cstdlib>, <cstring>, VT_ISA_NAME, the tile size MR × NR, the matrix
// product's blocking KC (a multiple of CHAIN), MC_PANELS and NC_PANELS, and `Vec`: its vector
// type T of W floats with zero, load, store, set1, fma (one rounding) and add.

using vt::MatmulArgs;

static constexpr int64_t LANES = 16;
static constexpr int64_t CHAIN = 64;         // terms per fma chain (part of the contract)
static_assert(KC > 0 && KC % CHAIN == 0, "a K block holds whole chains");
static constexpr int64_t SMALL_WORK = 1 << 15;  // below this many element-steps: one thread

template <class F>
static void run_parallel(int64_t n, int64_t grain, F& body) {
  if (n <= 0) return;
  vt::parallel_for(n, grain < 1 ? 1 : grain,
                   [](void* ctx, int64_t b, int64_t e) { (*static_cast<F*>(ctx))(b, e); }, &body);
}

static inline int64_t grain_for(int64_t items, int64_t work_per_item) {
  int64_t per = work_per_item < 1 ? 1 : work_per_item;
  int64_t g = SMALL_WORK / per;
  return g < 1 ? 1 : (g > items ? items : g);
}

static inline float bits_to_float(int32_t b) { return __builtin_bit_cast(float, b); }

// --- sum16 ------------------------------------------------------------------------------------

static inline float fold16(float* acc) {
  for (int l = 0; l < 8; ++l) acc[l] += acc[l + 8];
  for (int l = 0; l < 4; ++l) acc[l] += acc[l + 4];
  for (int l = 0; l < 2; ++l) acc[l] += acc[l + 2];
  return acc[0] + acc[1];
}

// sum16 of value(i) for i in [0, n): value is evaluated (and rounded) before it is added.
template <class V>
static inline float sum16_of(int64_t n, V value) {
  float acc[LANES];
  for (int l = 0; l < LANES; ++l) acc[l] = 0.0f;
  int64_t i = 0;
  for (; i + LANES <= n; i += LANES)
    for (int l = 0; l < LANES; ++l) acc[l] += value(i + l);
  for (int l = 0; i + l < n; ++l) acc[l] += value(i + l);
  return fold16(acc);
}

static void sum16_rows(const float* x, int64_t rows, int64_t n, float* out) {
  auto body = [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const float* row = x + r * n;
      out[r] = sum16_of(n, [row](int64_t i) { return row[i]; });
    }
  };
  run_parallel(rows, grain_for(rows, n), body);
}

// Column sums over rows: lane l takes rows l, l+16, ... (so lanes, not row ranges, are what
// threads share out), then the 16 lane vectors are folded as in sum16.
static void sum16_cols(const float* x, int64_t rows, int64_t d, float* out) {
  float* lanes = static_cast<float*>(std::calloc(LANES * (d > 0 ? d : 1), sizeof(float)));
  if (!lanes) std::abort();
  auto body = [&](int64_t b, int64_t e) {
    for (int64_t l = b; l < e; ++l) {
      float* acc = lanes + l * d;
      for (int64_t r = l; r < rows; r += LANES) {
        const float* row = x + r * d;
        for (int64_t j = 0; j < d; ++j) acc[j] += row[j];
      }
    }
  };
  run_parallel(LANES, grain_for(LANES, (rows / LANES + 1) * d), body);
  for (int64_t half = LANES / 2; half >= 1; half /= 2)
    for (int64_t l = 0; l < half; ++l)
      for (int64_t j = 0; j < d; ++j) lanes[l * d + j] += lanes[(l + half) * d + j];
  std::memcpy(out, lanes, sizeof(float) * d);
  std::free(lanes);
}

// out[s] = sum16 over the rows order[offsets[s]..offsets[s+1]) (ascending row order) of values.
static void segment_sum(const float* values, const int64_t* order, const int64_t* offsets,
                        int64_t segments, int64_t d, float* out) {
  auto body = [&](int64_t b, int64_t e) {
    float* lanes = static_cast<float*>(std::malloc(sizeof(float) * LANES * (d > 0 ? d : 1)));
    if (!lanes) std::abort();
    for (int64_t s = b; s < e; ++s) {
      for (int64_t j = 0; j < LANES * d; ++j) lanes[j] = 0.0f;
      int64_t count = offsets[s + 1] - offsets[s];
      for (int64_t p = 0; p < count; ++p) {
        const float* row = values + order[offsets[s] + p] * d;
        float* acc = lanes + (p % LANES) * d;
        for (int64_t j = 0; j < d; ++j) acc[j] += row[j];
      }
      for (int64_t half = LANES / 2; half >= 1; half /= 2)
        for (int64_t l = 0; l < half; ++l)
          for (int64_t j = 0; j < d; ++j) lanes[l * d + j] += lanes[(l + half) * d + j];
      std::memcpy(out + s * d, lanes, sizeof(float) * d);
    }
    std::free(lanes);
  };
  run_parallel(segments, grain_for(segments, d * 4), body);
}

// --- transcendental functions (no libm: its results depend on the CPU it dispatches to) ------

static constexpr float EXP_LOW = -87.0f;  // below: +0 (2**n stays a normal float)
static constexpr float INV_LN2 = (float)1.4426950408889634;
static constexpr float LN2_HIGH = 0.693359375f;  // few bits: n·LN2_HIGH is exact (Cody–Waite)
static constexpr float LN2_LOW = (float)-2.12194440e-4;
static constexpr float ROUND_MAGIC = 12582912.0f;  // 1.5·2**23: (t + M) − M rounds half to even
static constexpr float EXP_C[8] = {1.0f, 1.0f, 0.5f, (float)(1.0 / 6), (float)(1.0 / 24),
                                   (float)(1.0 / 120), (float)(1.0 / 720), (float)(1.0 / 5040)};

// e**x for x <= 0 (or NaN): 2**n · P(x − n·ln2), P the degree-7 Taylor polynomial in Horner form.
static inline float exp_nonpositive_one(float x) {
  bool under = x < EXP_LOW;
  float xc = under ? EXP_LOW : x;
  float n = (xc * INV_LN2 + ROUND_MAGIC) - ROUND_MAGIC;
  float r = xc - n * LN2_HIGH;
  r = r - n * LN2_LOW;
  float p = r * EXP_C[7] + EXP_C[6];
  for (int i = 5; i >= 0; --i) p = p * r + EXP_C[i];
  float whole = n == n ? n : 0.0f;
  float result = p * bits_to_float(((int32_t)whole + 127) << 23);
  return under ? 0.0f : result;
}

static constexpr double LN2_D = 0.6931471805599453;
static constexpr double SQRT2_D = 1.4142135623730951;

// Natural log of a positive normal float, in double: exponent bits and 2·atanh(s), 6 terms.
// NaN stays NaN (its payload bits must never pass for a mantissa).
static inline float log_one(float xf) {
  double x = xf;
  int64_t bits = __builtin_bit_cast(int64_t, x);
  int64_t e = ((bits >> 52) & 0x7FF) - 1023;
  double m = __builtin_bit_cast(double, (bits & ((int64_t(1) << 52) - 1)) | (int64_t(1023) << 52));
  bool big = m > SQRT2_D;
  m = big ? m * 0.5 : m;
  e = big ? e + 1 : e;
  double s = (m - 1.0) / (m + 1.0);
  double s2 = s * s;
  double series = s2 * (1.0 / 11) + (1.0 / 9);
  series = series * s2 + (1.0 / 7);
  series = series * s2 + (1.0 / 5);
  series = series * s2 + (1.0 / 3);
  series = series * s2 + 1.0;
  float result = (float)((s * 2.0) * series + (double)e * LN2_D);
  return xf != xf ? xf : result;
}

// tanh x = sign(x)·(1 − e)/(1 + e), e = exp(−2|x|); tanh(−0) = −0.
static inline float tanh_one(float x) {
  float e = exp_nonpositive_one(__builtin_fabsf(x) * -2.0f);
  return __builtin_copysignf((1.0f - e) / (1.0f + e), x);
}

template <class F>
static void elementwise(int64_t n, F one) {
  auto body = [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) one(i);
  };
  run_parallel(n, grain_for(n, 8), body);
}

static void exp_nonpositive(const float* x, int64_t n, float* out) {
  elementwise(n, [=](int64_t i) { out[i] = exp_nonpositive_one(x[i]); });
}
static void log_(const float* x, int64_t n, float* out) {
  elementwise(n, [=](int64_t i) { out[i] = log_one(x[i]); });
}
static void tanh_(const float* x, int64_t n, float* out) {
  elementwise(n, [=](int64_t i) { out[i] = tanh_one(x[i]); });
}

// --- GELU (tanh approximation) ----------------------------------------------------------------

static constexpr float GELU_A = (float)0.044715;
static constexpr float GELU_3A = (float)(3.0 * 0.044715);
static constexpr float GELU_C = (float)0.7978845608028654;  // sqrt(2/pi)

static void gelu_forward(const float* x, int64_t n, float* out, float* t) {
  elementwise(n, [=](int64_t i) {
    float v = x[i];
    float inner = ((v * v) * v) * GELU_A;
    inner = (inner + v) * GELU_C;
    float th = tanh_one(inner);
    t[i] = th;
    out[i] = ((th + 1.0f) * v) * 0.5f;
  });
}

static void gelu_backward(const float* grad, const float* x, const float* t, int64_t n, float* out) {
  elementwise(n, [=](int64_t i) {
    float v = x[i], th = t[i];
    float inner_grad = ((v * v) * GELU_3A + 1.0f) * GELU_C;
    float slope = (((1.0f - th * th) * v) * 0.5f) * inner_grad;
    out[i] = ((th + 1.0f) * 0.5f + slope) * grad[i];
  });
}

// --- row-wise fused ops -----------------------------------------------------------------------

template <class F>
static void by_rows(int64_t rows, int64_t n, F row_fn) {
  auto body = [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) row_fn(r);
  };
  run_parallel(rows, grain_for(rows, n * 8), body);
}

static void layer_norm_forward(const float* x, const float* w, const float* b, float eps,
                               int64_t rows, int64_t d, float* out, float* normalized, float* inv_std) {
  const float df = (float)d;
  by_rows(rows, d, [=](int64_t r) {
    const float* xr = x + r * d;
    float* nr = normalized + r * d;
    float mean = sum16_of(d, [xr](int64_t j) { return xr[j]; }) / df;
    for (int64_t j = 0; j < d; ++j) nr[j] = xr[j] - mean;
    float variance = sum16_of(d, [nr](int64_t j) { return nr[j] * nr[j]; }) / df;
    float inv = 1.0f / __builtin_sqrtf(variance + eps);
    inv_std[r] = inv;
    float* orow = out + r * d;
    for (int64_t j = 0; j < d; ++j) {
      nr[j] = nr[j] * inv;
      orow[j] = nr[j] * w[j] + b[j];
    }
  });
}

static void layer_norm_backward_rows(const float* grad, const float* normalized, const float* inv_std,
                                     const float* w, int64_t rows, int64_t d, float* grad_x,
                                     float* grad_times_normalized) {
  const float df = (float)d;
  by_rows(rows, d, [=](int64_t r) {
    const float* g = grad + r * d;
    const float* nr = normalized + r * d;
    float* gx = grad_x + r * d;
    float* gn = grad_times_normalized + r * d;
    for (int64_t j = 0; j < d; ++j) gx[j] = g[j] * w[j];
    float mean_grad = sum16_of(d, [gx](int64_t j) { return gx[j]; }) / df;
    float mean_proj = sum16_of(d, [gx, nr](int64_t j) { return gx[j] * nr[j]; }) / df;
    float inv = inv_std[r];
    for (int64_t j = 0; j < d; ++j) {
      gx[j] = ((gx[j] - mean_grad) - nr[j] * mean_proj) * inv;
      gn[j] = g[j] * nr[j];
    }
  });
}

// Row maximum ignoring NaN, with −0 made +0 (a max is exact; the sign of a zero max is not).
static inline float row_max(const float* x, int64_t n) {
  float m = -__builtin_inff();
  for (int64_t j = 0; j < n; ++j) m = x[j] > m ? x[j] : m;
  return m + 0.0f;
}

// In place: x ← softmax(x·scale), entries above the diagonal (j > r mod n) masked when causal.
static void softmax_rows(float* x, int64_t rows, int64_t n, float scale, int causal) {
  by_rows(rows, n, [=](int64_t r) {
    float* row = x + r * n;
    int64_t last = causal ? r % n : n - 1;
    for (int64_t j = 0; j < n; ++j) {
      const float scaled = row[j] * scale;
      row[j] = j > last ? -__builtin_inff() : scaled;
    }
    float m = row_max(row, n);
    for (int64_t j = 0; j < n; ++j) row[j] = exp_nonpositive_one(row[j] - m);
    float total = sum16_of(n, [row](int64_t j) { return row[j]; });
    for (int64_t j = 0; j < n; ++j) row[j] = row[j] / total;
  });
}

static void softmax_backward_rows(const float* grad_probs, const float* probs, int64_t rows,
                                  int64_t n, float scale, float* out) {
  by_rows(rows, n, [=](int64_t r) {
    const float* g = grad_probs + r * n;
    const float* p = probs + r * n;
    float* o = out + r * n;
    float dot = sum16_of(n, [g, p](int64_t j) { return g[j] * p[j]; });
    for (int64_t j = 0; j < n; ++j) o[j] = ((g[j] - dot) * p[j]) * scale;
  });
}

static void cross_entropy_rows(const float* logits, const int64_t* targets, int64_t rows, int64_t n,
                               float* probs, float* losses) {
  by_rows(rows, n, [=](int64_t r) {
    const float* x = logits + r * n;
    float* p = probs + r * n;
    float m = row_max(x, n);
    float picked = x[targets[r]] - m;
    for (int64_t j = 0; j < n; ++j) p[j] = exp_nonpositive_one(x[j] - m);
    float total = sum16_of(n, [p](int64_t j) { return p[j]; });
    losses[r] = log_one(total) - picked;
    for (int64_t j = 0; j < n; ++j) p[j] = p[j] / total;
  });
}

static void cross_entropy_backward(const float* probs, const int64_t* targets, int64_t rows,
                                   int64_t n, float scale, float* out) {
  by_rows(rows, n, [=](int64_t r) {
    const float* p = probs + r * n;
    float* o = out + r * n;
    int64_t t = targets[r];
    for (int64_t j = 0; j < n; ++j) o[j] = (p[j] - (j == t ? 1.0f : 0.0f)) * scale;
  });
}

// --- optimizer updates: the state's only writers, so they also make every NaN the canonical
// quiet NaN (payloads differ between CPUs and devices; a state root must not) ---------------------

static inline float canonical(float x) { return x != x ? __builtin_nanf("") : x; }

static void adamw(const float* param, const float* grad, const float* exp_avg, const float* exp_avg_sq,
                  int64_t n, const vt::AdamwScalars& s, float* param_out, float* exp_avg_out,
                  float* exp_avg_sq_out) {
  const vt::AdamwScalars c = s;
  elementwise(n, [=](int64_t i) {
    float g = grad[i];
    float p = param[i] * c.decay;
    float m = exp_avg[i] * c.beta1 + g * c.one_minus_beta1;
    float v = exp_avg_sq[i] * c.beta2 + (g * g) * c.one_minus_beta2;
    float denom = __builtin_sqrtf(v) / c.sqrt_correction2 + c.eps;
    param_out[i] = canonical(p - (m / denom) * c.step_size);
    exp_avg_out[i] = canonical(m);
    exp_avg_sq_out[i] = canonical(v);
  });
}

static void sgd(const float* param, const float* grad, const float* buffer, int64_t n, const vt::SgdScalars& s,
                float* param_out, float* buffer_out) {
  const vt::SgdScalars c = s;
  elementwise(n, [=](int64_t i) {
    float g = c.has_weight_decay ? grad[i] + param[i] * c.weight_decay : grad[i];
    float b = buffer[i] * c.momentum + g;
    param_out[i] = canonical(param[i] - b * c.lr);
    buffer_out[i] = canonical(b);
  });
}

// --- convolution gathers ----------------------------------------------------------------------

static inline int64_t out_size(int64_t size, int64_t k, int64_t stride, int64_t padding) {
  return (size + 2 * padding - k) / stride + 1;
}

// Channels-last: x (N, H, W, C) → (N·Ho·Wo, kh·kw·C) patches (column order kernel row, kernel
// column, channel), zeros outside: copies only.
static void im2col(const float* x, int64_t n, int64_t h, int64_t w, int64_t c, int64_t kh, int64_t kw,
                   int64_t stride, int64_t padding, float* out) {
  const int64_t ho = out_size(h, kh, stride, padding), wo = out_size(w, kw, stride, padding);
  const int64_t width = kh * kw * c;
  by_rows(n * ho, wo * width, [=](int64_t row) {
    const int64_t img = row / ho, oy = row % ho;
    for (int64_t ox = 0; ox < wo; ++ox) {
      float* dst = out + (row * wo + ox) * width;
      for (int64_t i = 0; i < kh; ++i) {
        const int64_t y = oy * stride + i - padding;
        for (int64_t j = 0; j < kw; ++j, dst += c) {
          const int64_t xx = ox * stride + j - padding;
          if (y >= 0 && y < h && xx >= 0 && xx < w)
            std::memcpy(dst, x + ((img * h + y) * w + xx) * c, sizeof(float) * c);
          else
            for (int64_t ch = 0; ch < c; ++ch) dst[ch] = 0.0f;
        }
      }
    }
  });
}

// ReLU as a select (+0 below and at zero, NaN → +0): max(x, 0) leaves the sign of a zero to the
// code path. Backward passes the gradient where the output is positive.
static void relu(const float* x, int64_t n, float* out) {
  elementwise(n, [=](int64_t i) { out[i] = x[i] > 0.0f ? x[i] : 0.0f; });
}
static void relu_backward(const float* grad, const float* out, int64_t n, float* grad_in) {
  elementwise(n, [=](int64_t i) {
    const float g = grad[i];  // loaded unconditionally, so the select vectorises
    grad_in[i] = out[i] > 0.0f ? g : 0.0f;
  });
}

// --- ONNX layers: tanh/sigmoid backward, average pooling, batch norm ---------------------------

#include "fixed_order_layers.h"

// --- matrix product ---------------------------------------------------------------------------

static int64_t packed_b_size(int64_t batches, int64_t n, int64_t k) {
  return batches * ((n + NR - 1) / NR) * k * NR;
}

// B is packed once per product, in NR-wide column panels cut into K blocks of `kblock` rows:
// block [k0, k0 + kc) holds every panel's kc × NR micro-panel in turn (B[k][p·NR + j] at
// k0·panels·NR + p·kc·NR + (k − k0)·NR, zero columns past N), so a K block of B is one
// contiguous stream. This packs panels [p0, p1) of one K block; `dst` is the batch entry's
// start (panels·K·NR floats). B is read in the order memory holds it: a transposed B (Wᵀ of a
// row-major W) along k, any other along its rows (one pass per row, not one per panel: a panel
// alone takes 64 bytes of each row, a page apart).
static void pack_b_block(const MatmulArgs& g, int64_t batch, int64_t k0, int64_t kc, int64_t p0, int64_t p1,
                         float* dst) {
  const float* base = g.b.data + (batch / g.b2) * g.b.batch1 + (batch % g.b2) * g.b.batch2;
  const int64_t panels = (g.n + NR - 1) / NR;
  float* block = dst + k0 * panels * NR;
  if (g.b.rows == 1 && g.b.cols != 1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t j0 = p * NR, jn = g.n - j0 < NR ? g.n - j0 : NR;
      for (int64_t s0 = 0; s0 < kc; s0 += CHAIN) {
        const int64_t kn = kc - s0 < CHAIN ? kc - s0 : CHAIN;
        float* d = block + p * kc * NR + s0 * NR;
        for (int64_t j = 0; j < NR; ++j) {
          const float* col = base + (j0 + j) * g.b.cols + k0 + s0;
          if (j < jn)
            for (int64_t k = 0; k < kn; ++k) d[k * NR + j] = col[k];
          else
            for (int64_t k = 0; k < kn; ++k) d[k * NR + j] = 0.0f;
        }
      }
    }
    return;
  }
  const int64_t full = g.b.cols == 1 ? (g.n / NR < p1 ? g.n / NR : p1) : p0;  // panels copied whole
  for (int64_t k = 0; k < kc; ++k) {
    const float* row = base + (k0 + k) * g.b.rows;
    for (int64_t p = p0; p < full; ++p) {
      float* d = block + p * kc * NR + k * NR;
      for (int64_t v = 0; v < NR; v += Vec::W) Vec::store(d + v, Vec::load(row + p * NR + v));
    }
    for (int64_t p = full > p0 ? full : p0; p < p1; ++p) {
      const int64_t j0 = p * NR, jn = g.n - j0 < NR ? g.n - j0 : NR;
      float* d = block + p * kc * NR + k * NR;
      for (int64_t j = 0; j < jn; ++j) d[j] = row[(j0 + j) * g.b.cols];
      for (int64_t j = jn; j < NR; ++j) d[j] = 0.0f;
    }
  }
}

// A strided A panel of `rows` (≤ MR) rows, k0 .. k0+kc, into MR-wide columns (zero rows past
// `rows`): dst[k·MR + r] = A[r][k0 + k].
static void pack_a_panel(const float* base, const vt::Strided& a, int64_t rows, int64_t k0, int64_t kc,
                         float* dst) {
  for (int64_t k = 0; k < kc; ++k) {
    const float* col = base + (k0 + k) * a.cols;
    float* d = dst + k * MR;
    for (int64_t r = 0; r < rows; ++r) d[r] = col[r * a.rows];
    for (int64_t r = rows; r < MR; ++r) d[r] = 0.0f;
  }
}

// Rows [0, rows) of A (from `base`), k0 .. k0+kc, as consecutive MR-row panels of kc·MR floats
// (the last one zero-padded). Read in the order memory holds them: along each row for row-major A
// (rows a few ahead prefetched: each row gives only kc floats), along each k for a transposed one
// (k a few ahead prefetched: each k row is a new page).
static void pack_a_block(const float* base, const vt::Strided& a, int64_t rows, int64_t k0, int64_t kc,
                         float* dst) {
  const int64_t panels = (rows + MR - 1) / MR;
  if (a.cols == 1 && a.rows != 1) {
    constexpr int64_t AHEAD = 4;
    for (int64_t i = 0; i < rows; ++i) {
      const float* row = base + i * a.rows + k0;
      float* d = dst + (i / MR) * kc * MR + i % MR;
      if (i + AHEAD < rows)
        for (int64_t k = 0; k < kc; k += 16) __builtin_prefetch(row + AHEAD * a.rows + k);
      for (int64_t k = 0; k < kc; ++k) d[k * MR] = row[k];
    }
  } else if (a.rows == 1 && a.cols != 1) {
    constexpr int64_t AHEAD = 8;
    for (int64_t k = 0; k < kc; ++k) {
      const float* col = base + (k0 + k) * a.cols;
      float* d = dst + k * MR;
      if (k0 + k + AHEAD < k0 + kc)
        for (int64_t i = 0; i < rows; i += 16) __builtin_prefetch(col + AHEAD * a.cols + i);
      for (int64_t p = 0; p < panels; ++p) {
        const int64_t pr = rows - p * MR < MR ? rows - p * MR : MR;
        for (int64_t r = 0; r < pr; ++r) d[p * kc * MR + r] = col[p * MR + r];
      }
    }
  } else {
    for (int64_t p = 0; p < panels; ++p) {
      const int64_t pr = rows - p * MR < MR ? rows - p * MR : MR;
      pack_a_panel(base + p * MR * a.rows, a, pr, k0, kc, dst + p * kc * MR);
    }
    return;
  }
  const int64_t tail = rows - (panels - 1) * MR;  // zero rows of the last panel
  float* last = dst + (panels - 1) * kc * MR;
  for (int64_t k = 0; k < kc; ++k)
    for (int64_t r = tail; r < MR; ++r) last[k * MR + r] = 0.0f;
}

// An MR × NR tile of C over one K block [k0, k0 + kc) (k0 a multiple of KC, so of CHAIN): for
// each CHAIN-long chain, acc = +0 (or the init row, for the chain at k = 0); acc[r][j] =
// fma(A[r][k], bp[k·NR + j], acc[r][j]) for k in the chain, in order; then C = acc (the chain at
// k = 0, `start`) or C = C + acc. So each element of C is the contract's (((c_0) + c_1) + c_2) +
// ..., whatever the blocking around this call. A[r][k] is a[r·a_rows + k·a_cols]: PACKED, an
// MR-wide packed panel (a_rows = 1, a_cols = MR, known to the compiler); otherwise A in place.
template <bool PACKED>
static inline void tile_kernel(int64_t kc, const float* __restrict a, int64_t a_rows, int64_t a_cols,
                               const float* __restrict bp, float* c, int64_t ldc, const float* init, bool start) {
  constexpr int64_t W = Vec::W, NV = NR / Vec::W;
  const int64_t ar = PACKED ? 1 : a_rows, ac = PACKED ? MR : a_cols;
  for (int64_t r = 0; r < MR; ++r)  // C is first read at the end of the first chain
    for (int64_t j = 0; j < NR; j += 16) __builtin_prefetch(c + r * ldc + j, 1);
  for (int64_t s0 = 0; s0 < kc; s0 += CHAIN) {
    const int64_t sc = kc - s0 < CHAIN ? kc - s0 : CHAIN;
    const bool first = start && s0 == 0;
    typename Vec::T acc[MR][NV];
#pragma GCC unroll 16
    for (int64_t r = 0; r < MR; ++r)
#pragma GCC unroll 16
      for (int64_t v = 0; v < NV; ++v) acc[r][v] = (first && init) ? Vec::load(init + v * W) : Vec::zero();
    const float* ak = a + s0 * ac;
    const float* b = bp + s0 * NR;
    for (int64_t k = 0; k < sc; ++k, ak += ac, b += NR) {
      typename Vec::T bv[NV];
#pragma GCC unroll 16
      for (int64_t v = 0; v < NV; ++v) bv[v] = Vec::load(b + v * W);
#pragma GCC unroll 16
      for (int64_t r = 0; r < MR; ++r) {
        const typename Vec::T av = Vec::set1(ak[r * ar]);
#pragma GCC unroll 16
        for (int64_t v = 0; v < NV; ++v) acc[r][v] = Vec::fma(av, bv[v], acc[r][v]);
      }
    }
#pragma GCC unroll 16
    for (int64_t r = 0; r < MR; ++r)
#pragma GCC unroll 16
      for (int64_t v = 0; v < NV; ++v) {
        float* out = c + r * ldc + v * W;
        Vec::store(out, first ? acc[r][v] : Vec::add(Vec::load(out), acc[r][v]));
      }
  }
}

// Per-thread packing scratch kept between calls (grown, never shrunk): no malloc per product,
// and no fresh pages to fault in when the heap was trimmed after the last one.
struct ThreadScratch {
  float* buf = nullptr;
  int64_t cap = 0;
  ~ThreadScratch() { std::free(buf); }
};

static float* thread_scratch(int64_t floats) {
  static thread_local ThreadScratch s;
  if (floats > s.cap) {
    std::free(s.buf);
    s.cap = (floats + 1023) / 1024 * 1024;
    s.buf = static_cast<float*>(std::aligned_alloc(64, sizeof(float) * s.cap));
    if (!s.buf) std::abort();
  }
  return s.buf;
}

// The cache lines of A's rows [r0, r0 + rows) × columns [k0, k0 + kc), in memory order: the
// next A block, prefetched a few lines per tile while this one is computed, so packing it reads
// L2 instead of memory (A is read once per item, and an N = 512 product does little work per
// element of it). None for A without a unit stride.
struct ALines {
  const float* base;
  int64_t outer, per, stride;
  int64_t count() const { return outer * per; }
  const float* line(int64_t q) const { return base + (q / per) * stride + (q % per) * 16; }
};

static ALines a_lines(const float* a_base, const vt::Strided& a, int64_t m, int64_t p0, int64_t p1, int64_t k0,
                      int64_t kc) {
  const int64_t r0 = p0 * MR, rows = (p1 * MR < m ? p1 * MR : m) - r0;
  if (a.cols == 1 && a.rows != 1) return {a_base + r0 * a.rows + k0, rows, (kc + 15) / 16, a.rows};
  if (a.rows == 1 && a.cols != 1) return {a_base + r0 + k0 * a.cols, kc, (rows + 15) / 16, a.cols};
  return {a_base, 0, 1, 0};
}

// One work item: the C block of row panels [pm0, pm1) × column panels [pn0, pn1) of one batch
// entry, from `pb`, its packed B. Goto/BLIS loops: column blocks of NC_PANELS; K blocks of KC in
// increasing k (the chunks of every element are added in k order); row blocks of MC_PANELS,
// their A rows packed into `ap` (MC_PANELS·MR·KC floats, stays in L2); then each B micro-panel
// (KC × NR, in L1) meets every A panel of the block. An item of fewer than PACK_A_PANELS column
// panels uses each A element too few times to pay for packing it: its full row panels read A in
// place (any strides), only a last partial one is packed (zero rows).
static constexpr int64_t PACK_A_PANELS = 8;
static constexpr int64_t PRIVATE_B_FLOATS = 1 << 18;  // a batch entry's B packed by its own item

static void matmul_block(const MatmulArgs& g, int64_t batch, int64_t pm0, int64_t pm1, int64_t pn0, int64_t pn1,
                         const float* pb, float* ap) {
  alignas(64) float tile[MR * NR];
  alignas(64) float init[NR];
  const int64_t panels = (g.n + NR - 1) / NR;
  const bool pack_a = pn1 - pn0 >= PACK_A_PANELS;
  const float* a_base = g.a.data + (batch / g.b2) * g.a.batch1 + (batch % g.b2) * g.a.batch2;
  float* c_base = g.c.data + (batch / g.b2) * g.c.batch1 + (batch % g.b2) * g.c.batch2;
  for (int64_t jc = pn0; jc < pn1; jc += NC_PANELS) {
    const int64_t jc1 = jc + NC_PANELS < pn1 ? jc + NC_PANELS : pn1;
    for (int64_t k0 = 0; k0 < g.k; k0 += KC) {
      const int64_t kc = g.k - k0 < KC ? g.k - k0 : KC;
      const bool start = k0 == 0;
      for (int64_t ic = pm0; ic < pm1; ic += MC_PANELS) {
        const int64_t ic1 = ic + MC_PANELS < pm1 ? ic + MC_PANELS : pm1;
        const int64_t block_rows = (ic1 * MR < g.m ? ic1 * MR : g.m) - ic * MR;
        ALines next_a{a_base, 0, 1, 0};
        if (pack_a) {
          pack_a_block(a_base + ic * MR * g.a.rows, g.a, block_rows, k0, kc, ap);
          if (ic1 < pm1) {
            next_a = a_lines(a_base, g.a, g.m, ic1, ic1 + MC_PANELS < pm1 ? ic1 + MC_PANELS : pm1, k0, kc);
          } else if (k0 + KC < g.k) {
            const int64_t kn = g.k - k0 - KC < KC ? g.k - k0 - KC : KC;
            next_a = a_lines(a_base, g.a, g.m, pm0, pm0 + MC_PANELS < pm1 ? pm0 + MC_PANELS : pm1, k0 + KC, kn);
          }
        } else if (block_rows % MR != 0) {  // only the last partial panel, into the first slot
          const int64_t last = (block_rows - 1) / MR;
          pack_a_panel(a_base + (ic + last) * MR * g.a.rows, g.a, block_rows - last * MR, k0, kc, ap);
        }
        const int64_t a_lines_per_tile = (next_a.count() + (ic1 - ic) * (jc1 - jc) - 1) / ((ic1 - ic) * (jc1 - jc));
        int64_t a_line = 0;
        for (int64_t p = jc; p < jc1; ++p) {
          const int64_t j0 = p * NR, cols = g.n - j0 < NR ? g.n - j0 : NR;
          const float* bp = pb + k0 * panels * NR + p * kc * NR;
          const float* bias = nullptr;
          if (start && g.bias) {
            if (cols == NR) {
              bias = g.bias + j0;
            } else {
              for (int64_t j = 0; j < NR; ++j) init[j] = j < cols ? g.bias[j0 + j] : 0.0f;
              bias = init;
            }
          }
          // The next micro-panel follows this one in memory: bring it towards L2 a slice per tile.
          const float* next = p + 1 < jc1 ? bp + kc * NR : nullptr;
          const int64_t slice = ((kc * NR + 15) / 16 + (ic1 - ic) - 1) / (ic1 - ic) * 16;
          for (int64_t i = ic; i < ic1; ++i) {
            const int64_t i0 = i * MR, rows = g.m - i0 < MR ? g.m - i0 : MR;
            if (next)
              for (int64_t q = (i - ic) * slice; q < (i - ic + 1) * slice && q < kc * NR; q += 16)
                __builtin_prefetch(next + q, 0, 2);
            for (int64_t e = a_line + a_lines_per_tile < next_a.count() ? a_line + a_lines_per_tile : next_a.count();
                 a_line < e; ++a_line)
              __builtin_prefetch(next_a.line(a_line), 0, 2);
            float* c = c_base + i0 * g.c.rows + j0;
            const bool in_place = !pack_a && rows == MR;
            const float* a = pack_a ? ap + (i - ic) * kc * MR : in_place ? a_base + i0 * g.a.rows + k0 * g.a.cols : ap;
            if (rows == MR && cols == NR) {
              if (in_place)
                tile_kernel<false>(kc, a, g.a.rows, g.a.cols, bp, c, g.c.rows, bias, start);
              else
                tile_kernel<true>(kc, a, 1, MR, bp, c, g.c.rows, bias, start);
              continue;
            }
            if (!start)
              for (int64_t r = 0; r < rows; ++r)
                for (int64_t j = 0; j < cols; ++j) tile[r * NR + j] = c[r * g.c.rows + j];
            if (in_place)
              tile_kernel<false>(kc, a, g.a.rows, g.a.cols, bp, tile, NR, bias, start);
            else
              tile_kernel<true>(kc, a, 1, MR, bp, tile, NR, bias, start);
            for (int64_t r = 0; r < rows; ++r)
              for (int64_t j = 0; j < cols; ++j) c[r * g.c.rows + j] = tile[r * NR + j];
          }
        }
      }
    }
  }
}

// Items handed out one at a time from a shared counter (not in fixed runs): a thread that the
// machine slows down takes fewer, so none waits at the join for a straggler. Which thread computes
// an item never matters to its bits.
template <class F>
static void run_dynamic(int64_t items, int64_t threads, F& body) {
  if (items <= 0) return;
  const int64_t workers = threads < 1 ? 1 : (threads < items ? threads : items);
  int64_t next = 0;
  auto work = [&](int64_t b, int64_t e) {
    for (int64_t w = b; w < e; ++w)
      for (int64_t it = __atomic_fetch_add(&next, 1, __ATOMIC_RELAXED); it < items;
           it = __atomic_fetch_add(&next, 1, __ATOMIC_RELAXED))
        body(it);
  };
  run_parallel(workers, 1, work);
}

// The product's items: each batch entry cut into mb × nb blocks of panels, sizes within one
// panel of each other (block i of mb: panels [pm·i/mb, pm·(i+1)/mb)), at most MC_PANELS ×
// NC_PANELS. With several threads: at least 8 items a thread where blocks of 4 panels allow it
// (for the counter to balance; else any cut that keeps every thread busy), and among those the
// cut with the least estimated time for the
// busiest thread: its items' fmas (16 a step), plus per item packing its A rows (one step an
// element) and streaming its B columns (half a step an element). Cutting rows re-reads B,
// cutting columns re-packs A: a wide B (512 × 4096 · 4096 × 2048) is cut both ways.
struct MatmulSplit {
  int64_t mb, nb;
};

static MatmulSplit choose_split(int64_t batches, int64_t pm, int64_t pn, int64_t k, int64_t threads) {
  auto ceil_div = [](int64_t x, int64_t y) { return (x + y - 1) / y; };
  const int64_t mb0 = ceil_div(pm, MC_PANELS), nb0 = ceil_div(pn, NC_PANELS);
  int64_t want = 8 * threads;
  if (threads <= 1 || batches * mb0 * nb0 >= want) return {mb0, nb0};
  int64_t mb_max = pm / 4 > mb0 ? pm / 4 : mb0, nb_max = pn / 4 > nb0 ? pn / 4 : nb0;
  if (batches * mb_max * nb_max < want) {  // small: any block size, every thread busy
    mb_max = pm;
    nb_max = pn;
    want = batches * pm * pn < threads ? batches * pm * pn : threads;
  }
  MatmulSplit best{mb0, nb0};
  double best_cost = -1.0;
  for (int64_t mb = mb0; mb <= mb_max && mb <= mb0 + 64; ++mb)
    for (int64_t nb = nb0; nb <= nb_max && nb <= nb0 + 64; ++nb) {
      const int64_t items = batches * mb * nb;
      if (items > 4 * want) break;
      if (items < want) continue;
      const double rows = (double)(ceil_div(pm, mb) * MR), cols = (double)(ceil_div(pn, nb) * NR);
      const double item = (double)k * (rows * cols / 16.0 + rows + 0.5 * cols);
      const double cost = (double)ceil_div(items, threads) * item;
      if (best_cost < 0.0 || cost < best_cost * 0.999) {
        best_cost = cost;
        best = {mb, nb};
      }
    }
  return best;
}

static void matmul(const MatmulArgs& g) {
  const int64_t batches = g.b1 * g.b2;
  const int64_t panels_n = (g.n + NR - 1) / NR, panels_m = (g.m + MR - 1) / MR;
  const int64_t work = batches * panels_m * panels_n * MR * NR * g.k;
  const int64_t threads = work < SMALL_WORK * 4 ? 1 : g.threads;
  const MatmulSplit s = choose_split(batches, panels_m, panels_n, g.k, threads);
  const int64_t a_floats = MC_PANELS * MR * (g.k < KC ? g.k : KC), b_floats = panels_n * g.k * NR;
  if (s.mb == 1 && s.nb == 1 && batches > 1 && b_floats <= PRIVATE_B_FLOATS) {
    // Each item is a whole small batch entry (attention): it packs its own B into its thread's
    // scratch, so the product is one parallel region, not two.
    auto compute = [&](int64_t batch) {
      float* scratch = thread_scratch(b_floats + a_floats);
      for (int64_t k0 = 0; k0 < g.k; k0 += KC)
        pack_b_block(g, batch, k0, g.k - k0 < KC ? g.k - k0 : KC, 0, panels_n, scratch);
      matmul_block(g, batch, 0, panels_m, 0, panels_n, scratch, scratch + b_floats);
    };
    run_dynamic(batches, threads, compute);
    return;
  }
  // B packing items: one K block × up to 64 panels.
  const int64_t kblocks = (g.k + KC - 1) / KC, pgroups = (panels_n + 63) / 64;
  auto pack = [&](int64_t q) {
    const int64_t batch = q / (kblocks * pgroups), kb = (q / pgroups) % kblocks, pg = q % pgroups;
    const int64_t k0 = kb * KC, kc = g.k - k0 < KC ? g.k - k0 : KC;
    const int64_t p0 = pg * 64, p1 = p0 + 64 < panels_n ? p0 + 64 : panels_n;
    pack_b_block(g, batch, k0, kc, p0, p1, g.packed_b + batch * b_floats);
  };
  run_dynamic(batches * kblocks * pgroups, threads, pack);
  auto compute = [&](int64_t it) {
    const int64_t batch = it / (s.mb * s.nb), i = (it / s.nb) % s.mb, j = it % s.nb;
    matmul_block(g, batch, panels_m * i / s.mb, panels_m * (i + 1) / s.mb, panels_n * j / s.nb,
                 panels_n * (j + 1) / s.nb, g.packed_b + batch * b_floats, thread_scratch(a_floats));
  };
  run_dynamic(batches * s.mb * s.nb, threads, compute);
}

// One tap's MR × NR tile of g · w_rows, every chain complete (chunks added in the tile), as
// matmul computes that element of g · w_rows.
static void conv_tap_tile(const float* a, int64_t a_rows, int64_t a_cols, const float* bp, int64_t k, float* tile) {
  tile_kernel<false>(k, a, a_rows, a_cols, bp, tile, NR, nullptr, true);
}

// The input gradient of a convolution, = col2im(g · w_rows) bit for bit (the reference's
// definition): per image, taps in kernel order, each tap's product tile added into a padded
// channels-last plane that stays in cache (no N·Ho·Wo × kh·kw·C matrix is written).
static void conv_input_grad(const float* g, const float* w_rows, int64_t n, int64_t h, int64_t w, int64_t c,
                            int64_t o, int64_t kh, int64_t kw, int64_t stride, int64_t padding, float* out) {
  const int64_t ho = out_size(h, kh, stride, padding), wo = out_size(w, kw, stride, padding);
  const int64_t hp = h + 2 * padding, wp = w + 2 * padding, taps = kh * kw, panels = (c + NR - 1) / NR;
  const int64_t positions = ho * wo;
  // Each tap's weights W[o, tap·C + c] packed as matmul packs a B operand (k = o, n = c).
  MatmulArgs pack{{}, {const_cast<float*>(w_rows), 0, c, taps * c, 1}, {}, 1, taps, 0, c, o, nullptr, nullptr, 1};
  float* packed = static_cast<float*>(std::malloc(sizeof(float) * packed_b_size(taps, c, o)));
  if (!packed) std::abort();
  for (int64_t tap = 0; tap < taps; ++tap) pack_b_block(pack, tap, 0, o, 0, panels, packed + tap * panels * o * NR);
  auto body = [&](int64_t b, int64_t e) {
    float* plane = static_cast<float*>(std::malloc(sizeof(float) * (hp * wp * c + MR * o)));
    if (!plane) std::abort();
    float* ap = plane + hp * wp * c;  // a last partial row panel, packed
    alignas(64) float tile[MR * NR];
    for (int64_t img = b; img < e; ++img) {
      for (int64_t q = 0; q < hp * wp * c; ++q) plane[q] = 0.0f;
      const vt::Strided g_rows{const_cast<float*>(g) + img * positions * o, 0, 0, o, 1};
      for (int64_t tap = 0; tap < taps; ++tap) {
        const int64_t i = tap / kw, j = tap % kw;
        for (int64_t r0 = 0; r0 < positions; r0 += MR) {
          const int64_t rows = positions - r0 < MR ? positions - r0 : MR;
          if (rows < MR) pack_a_panel(g_rows.data + r0 * o, g_rows, rows, 0, o, ap);
          const float* a = rows < MR ? ap : g_rows.data + r0 * o;
          for (int64_t p = 0; p < panels; ++p) {
            const int64_t j0 = p * NR, cols = c - j0 < NR ? c - j0 : NR;
            conv_tap_tile(a, rows < MR ? 1 : o, rows < MR ? MR : 1, packed + (tap * panels + p) * o * NR, o, tile);
            for (int64_t r = 0; r < rows; ++r) {
              const int64_t oy = (r0 + r) / wo, ox = (r0 + r) % wo;
              float* dst = plane + ((oy * stride + i) * wp + ox * stride + j) * c + j0;
              for (int64_t jj = 0; jj < cols; ++jj) dst[jj] += tile[r * NR + jj];
            }
          }
        }
      }
      for (int64_t y = 0; y < h; ++y)
        std::memcpy(out + (img * h + y) * w * c, plane + ((y + padding) * wp + padding) * c, sizeof(float) * w * c);
    }
    std::free(plane);
  };
  run_parallel(n, 1, body);
  std::free(packed);
}

static const vt::KernelTable TABLE = {
    VT_ISA_NAME, packed_b_size, matmul, sum16_rows, sum16_cols, segment_sum, exp_nonpositive,
    log_, tanh_, gelu_forward, gelu_backward, layer_norm_forward, layer_norm_backward_rows,
    softmax_rows, softmax_backward_rows, cross_entropy_rows, cross_entropy_backward, adamw,
    sgd, im2col, conv_input_grad, relu, relu_backward,
    // ONNX layers (fixed_order_layers.h)
    sigmoid_, tanh_backward, sigmoid_backward, avg_pool2d, avg_pool2d_backward, batch_norm_forward,
    batch_norm_backward,
};
