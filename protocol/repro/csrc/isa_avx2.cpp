// Fixed-order kernels for AVX2 + FMA: a 6 × 16 micro-kernel, the rest vectorised by the compiler.
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "table.h"

#if defined(__x86_64__)
#pragma GCC push_options
#pragma GCC target("avx2,fma,bmi,bmi2,f16c,popcnt")
#include <immintrin.h>

namespace vt {
namespace isa_avx2 {
#define VT_ISA_NAME "avx2"

static constexpr int64_t MR = 6, NR = 16;

static inline void micro_kernel(int64_t kc, const float* a, int64_t a_rows, int64_t a_cols, const float* bp,
                                float* c, int64_t ldc, const float* init, bool accumulate) {
  __m256 acc[MR][2];
  for (int64_t r = 0; r < MR; ++r) {
    acc[r][0] = init ? _mm256_loadu_ps(init) : _mm256_setzero_ps();
    acc[r][1] = init ? _mm256_loadu_ps(init + 8) : _mm256_setzero_ps();
  }
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_loadu_ps(bp + k * NR), b1 = _mm256_loadu_ps(bp + k * NR + 8);
    for (int64_t r = 0; r < MR; ++r) {
      const __m256 av = _mm256_broadcast_ss(a + r * a_rows + k * a_cols);
      acc[r][0] = _mm256_fmadd_ps(av, b0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(av, b1, acc[r][1]);
    }
  }
  for (int64_t r = 0; r < MR; ++r) {
    if (accumulate) {
      acc[r][0] = _mm256_add_ps(_mm256_loadu_ps(c + r * ldc), acc[r][0]);
      acc[r][1] = _mm256_add_ps(_mm256_loadu_ps(c + r * ldc + 8), acc[r][1]);
    }
    _mm256_storeu_ps(c + r * ldc, acc[r][0]);
    _mm256_storeu_ps(c + r * ldc + 8, acc[r][1]);
  }
}

#include "fixed_order.h"
#undef VT_ISA_NAME
}  // namespace isa_avx2

const KernelTable* table_avx2() { return &isa_avx2::TABLE; }
}  // namespace vt
#pragma GCC pop_options
#else
namespace vt {
const KernelTable* table_avx2() { return nullptr; }
}  // namespace vt
#endif
