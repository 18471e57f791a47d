// Fixed-order kernels for the ONNX layers (tanh and sigmoid with their backwards, average pooling,
// batch normalisation). Included by fixed_order.h inside each ISA unit's namespace, after the
// helpers it uses (sum16, elementwise, by_rows, exp_nonpositive_one, tanh_one); the same rules
// apply: plain loops, no contraction, every output element computed start to finish by one
// thread in the contract's order (protocol/repro/reference.py has the definitions).

// --- tanh and sigmoid -------------------------------------------------------------------------

// sigmoid x = (x >= 0 ? 1 : e) / (1 + e), e = exp(−|x|): never exp of a positive number.
static inline float sigmoid_one(float x) {
  const float e = exp_nonpositive_one(-__builtin_fabsf(x));
  return (x >= 0.0f ? 1.0f : e) / (1.0f + e);
}

static void sigmoid_(const float* x, int64_t n, float* out) {
  elementwise(n, [=](int64_t i) { out[i] = sigmoid_one(x[i]); });
}

// d tanh = grad · (1 − t·t), t the forward's output.
static void tanh_backward(const float* grad, const float* t, int64_t n, float* out) {
  elementwise(n, [=](int64_t i) {
    const float th = t[i];
    out[i] = grad[i] * (1.0f - th * th);
  });
}

// d sigmoid = grad · ((1 − s)·s), s the forward's output.
static void sigmoid_backward(const float* grad, const float* s, int64_t n, float* out) {
  elementwise(n, [=](int64_t i) {
    const float v = s[i];
    out[i] = grad[i] * ((1.0f - v) * v);
  });
}

// --- average pooling (channels-last, no padding, windows that do not overlap) ------------------

// x (N, H, W, C) → (N, Ho, Wo, C): each output = sum16 over its window's kh·kw positions in
// row-major order, ÷ kh·kw (one correctly rounded division). stride >= kernel (checked by the
// binding), so every input lies in at most one window.
static void avg_pool2d(const float* x, int64_t n, int64_t h, int64_t w, int64_t c, int64_t kh, int64_t kw,
                       int64_t sh, int64_t sw, float* out) {
  const int64_t ho = (h - kh) / sh + 1, wo = (w - kw) / sw + 1, taps = kh * kw;
  const float count = (float)taps;
  auto body = [&](int64_t b, int64_t e) {
    float* lanes = static_cast<float*>(std::malloc(sizeof(float) * LANES * (c > 0 ? c : 1)));
    if (!lanes) std::abort();
    for (int64_t row = b; row < e; ++row) {
      const int64_t img = row / (ho * wo), oy = (row / wo) % ho, ox = row % wo;
      for (int64_t q = 0; q < LANES * c; ++q) lanes[q] = 0.0f;
      for (int64_t t = 0; t < taps; ++t) {
        const float* src = x + ((img * h + oy * sh + t / kw) * w + ox * sw + t % kw) * c;
        float* acc = lanes + (t % LANES) * c;
        for (int64_t ch = 0; ch < c; ++ch) acc[ch] += src[ch];
      }
      for (int64_t half = LANES / 2; half >= 1; half /= 2)
        for (int64_t l = 0; l < half; ++l)
          for (int64_t ch = 0; ch < c; ++ch) lanes[l * c + ch] += lanes[(l + half) * c + ch];
      float* dst = out + row * c;
      for (int64_t ch = 0; ch < c; ++ch) dst[ch] = lanes[ch] / count;
    }
    std::free(lanes);
  };
  run_parallel(n * ho * wo, grain_for(n * ho * wo, taps * c), body);
}

// The adjoint: an input in a window gets that window's gradient ÷ kh·kw (a copy, no sum: the
// windows do not overlap), any other input +0.
static void avg_pool2d_backward(const float* grad, int64_t n, int64_t h, int64_t w, int64_t c, int64_t kh,
                                int64_t kw, int64_t sh, int64_t sw, float* out) {
  const int64_t ho = (h - kh) / sh + 1, wo = (w - kw) / sw + 1;
  const float count = (float)(kh * kw);
  by_rows(n * h, w * c, [=](int64_t row) {
    const int64_t img = row / h, y = row % h, oy = y / sh;
    const bool row_in = y % sh < kh && oy < ho;
    for (int64_t xx = 0; xx < w; ++xx) {
      const int64_t ox = xx / sw;
      float* dst = out + (row * w + xx) * c;
      if (row_in && xx % sw < kw && ox < wo) {
        const float* src = grad + ((img * ho + oy) * wo + ox) * c;
        for (int64_t ch = 0; ch < c; ++ch) dst[ch] = src[ch] / count;
      } else {
        for (int64_t ch = 0; ch < c; ++ch) dst[ch] = 0.0f;
      }
    }
  });
}

// --- batch normalisation (training mode) over the rows of an (M, C) channels-last matrix -------

// out[j] = sum16 over rows r < m of value(r, j), per column: lane l takes rows l, l+16, … (lanes,
// not row ranges, are what threads share out), then the 16 lane vectors are folded as in sum16.
template <class V>
static void sum16_cols_of(int64_t m, int64_t d, V value, float* out) {
  float* lanes = static_cast<float*>(std::calloc(LANES * (d > 0 ? d : 1), sizeof(float)));
  if (!lanes) std::abort();
  auto body = [&](int64_t b, int64_t e) {
    for (int64_t l = b; l < e; ++l) {
      float* acc = lanes + l * d;
      for (int64_t r = l; r < m; r += LANES)
        for (int64_t j = 0; j < d; ++j) acc[j] += value(r, j);
    }
  };
  run_parallel(LANES, grain_for(LANES, (m / LANES + 1) * d), body);
  for (int64_t half = LANES / 2; half >= 1; half /= 2)
    for (int64_t l = 0; l < half; ++l)
      for (int64_t j = 0; j < d; ++j) lanes[l * d + j] += lanes[(l + half) * d + j];
  std::memcpy(out, lanes, sizeof(float) * d);
  std::free(lanes);
}

// Per column j: mean = sum16(x)/m; c = x − mean; v = sum16(c·c); inv_std = 1/sqrt(v/m + eps);
// normalized = c·inv_std; out = normalized·w + b; and v/(m − 1), the unbiased variance.
static void batch_norm_forward(const float* x, const float* w, const float* b, float eps, int64_t m, int64_t d,
                               float* out, float* normalized, float* mean, float* inv_std, float* var_unbiased) {
  const float mf = (float)m, m1 = (float)(m - 1);
  sum16_cols_of(m, d, [x, d](int64_t r, int64_t j) { return x[r * d + j]; }, mean);
  for (int64_t j = 0; j < d; ++j) mean[j] = mean[j] / mf;
  const float* mu = mean;
  sum16_cols_of(m, d, [x, d, mu](int64_t r, int64_t j) {
    const float centered = x[r * d + j] - mu[j];
    return centered * centered;
  }, var_unbiased);
  for (int64_t j = 0; j < d; ++j) {
    const float total = var_unbiased[j];
    inv_std[j] = 1.0f / __builtin_sqrtf(total / mf + eps);
    var_unbiased[j] = total / m1;
  }
  const float* inv = inv_std;
  by_rows(m, d, [=](int64_t r) {
    const float* xr = x + r * d;
    float* nr = normalized + r * d;
    float* orow = out + r * d;
    for (int64_t j = 0; j < d; ++j) {
      nr[j] = (xr[j] - mu[j]) * inv[j];
      orow[j] = nr[j] * w[j] + b[j];
    }
  });
}

// grad_b = sum16(g), grad_w = sum16(g·normalized) per column; grad_x = ((g − grad_b/m) −
// normalized·(grad_w/m))·(w·inv_std).
static void batch_norm_backward(const float* grad, const float* normalized, const float* inv_std, const float* w,
                                int64_t m, int64_t d, float* grad_x, float* grad_w, float* grad_b) {
  const float mf = (float)m;
  sum16_cols_of(m, d, [grad, d](int64_t r, int64_t j) { return grad[r * d + j]; }, grad_b);
  sum16_cols_of(m, d, [grad, normalized, d](int64_t r, int64_t j) {
    return grad[r * d + j] * normalized[r * d + j];
  }, grad_w);
  float* coef = static_cast<float*>(std::malloc(sizeof(float) * 3 * (d > 0 ? d : 1)));
  if (!coef) std::abort();
  for (int64_t j = 0; j < d; ++j) {
    coef[j] = grad_b[j] / mf;
    coef[d + j] = grad_w[j] / mf;
    coef[2 * d + j] = w[j] * inv_std[j];
  }
  const float* k = coef;
  by_rows(m, d, [=](int64_t r) {
    const float* g = grad + r * d;
    const float* nr = normalized + r * d;
    float* gx = grad_x + r * d;
    for (int64_t j = 0; j < d; ++j) gx[j] = ((g[j] - k[j]) - nr[j] * k[d + j]) * k[2 * d + j];
  });
  std::free(coef);
}
