// Fixed-order kernels for AVX-512 (F, DQ, BW, VL: torch's AVX512 level): an 8 × 32 micro-kernel,
// the rest vectorised by the compiler.
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "table.h"

#if defined(__x86_64__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma,bmi,bmi2,f16c,popcnt")
#include <immintrin.h>

namespace vt {
namespace isa_avx512 {
#define VT_ISA_NAME "avx512"

static constexpr int64_t MR = 8, NR = 32;

static inline void micro_kernel(int64_t kc, const float* a, int64_t a_rows, int64_t a_cols, const float* bp,
                                float* c, int64_t ldc, const float* init, bool accumulate) {
  __m512 acc[MR][2];
  for (int64_t r = 0; r < MR; ++r) {
    acc[r][0] = init ? _mm512_loadu_ps(init) : _mm512_setzero_ps();
    acc[r][1] = init ? _mm512_loadu_ps(init + 16) : _mm512_setzero_ps();
  }
  for (int64_t k = 0; k < kc; ++k) {
    const __m512 b0 = _mm512_loadu_ps(bp + k * NR), b1 = _mm512_loadu_ps(bp + k * NR + 16);
    for (int64_t r = 0; r < MR; ++r) {
      const __m512 av = _mm512_set1_ps(a[r * a_rows + k * a_cols]);
      acc[r][0] = _mm512_fmadd_ps(av, b0, acc[r][0]);
      acc[r][1] = _mm512_fmadd_ps(av, b1, acc[r][1]);
    }
  }
  for (int64_t r = 0; r < MR; ++r) {
    if (accumulate) {
      acc[r][0] = _mm512_add_ps(_mm512_loadu_ps(c + r * ldc), acc[r][0]);
      acc[r][1] = _mm512_add_ps(_mm512_loadu_ps(c + r * ldc + 16), acc[r][1]);
    }
    _mm512_storeu_ps(c + r * ldc, acc[r][0]);
    _mm512_storeu_ps(c + r * ldc + 16, acc[r][1]);
  }
}

#include "fixed_order.h"
#undef VT_ISA_NAME
}  // namespace isa_avx512

const KernelTable* table_avx512() { return &isa_avx512::TABLE; }
}  // namespace vt
#pragma GCC pop_options
#else
namespace vt {
const KernelTable* table_avx512() { return nullptr; }
}  // namespace vt
#endif
