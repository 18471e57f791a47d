// Fixed-order kernels for AVX2 + FMA: a 6 × 16 micro-kernel, the rest vectorised by the
// compiler.
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
// Blocking: K blocks of KC (a multiple of the 64-term chain; a 256 × 16 B micro-panel is 16 KiB,
// L1), A blocks of MC_PANELS · MR rows (120 × 256: 120 KiB, L2), C column blocks of NC_PANELS · NR.
static constexpr int64_t KC = 256, MC_PANELS = 20, NC_PANELS = 128;

struct Vec {
  using T = __m256;
  static constexpr int64_t W = 8;
  static T zero() { return _mm256_setzero_ps(); }
  static T load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, T v) { _mm256_storeu_ps(p, v); }
  static T set1(float x) { return _mm256_set1_ps(x); }
  static T fma(T a, T b, T c) { return _mm256_fmadd_ps(a, b, c); }
  static T add(T a, T b) { return _mm256_add_ps(a, b); }
};

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
