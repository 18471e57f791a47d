// Fixed-order kernels for AVX-512 (F, DQ, BW, VL: torch's AVX512 level): a 12 × 32 micro-kernel, the rest vectorised by the
// compiler.
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

static constexpr int64_t MR = 12, NR = 32;  // 24 zmm accumulators, 2 for B, 1 broadcast
// Blocking: K blocks of KC (a multiple of the 64-term chain; a 128 × 32 B micro-panel is 16 KiB,
// L1), A blocks of MC_PANELS · MR rows (192 × 128: 96 KiB, L2), C column blocks of NC_PANELS · NR.
static constexpr int64_t KC = 128, MC_PANELS = 16, NC_PANELS = 64;

struct Vec {
  using T = __m512;
  static constexpr int64_t W = 16;
  static T zero() { return _mm512_setzero_ps(); }
  static T load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, T v) { _mm512_storeu_ps(p, v); }
  static T set1(float x) { return _mm512_set1_ps(x); }
  static T fma(T a, T b, T c) { return _mm512_fmadd_ps(a, b, c); }
  static T add(T a, T b) { return _mm512_add_ps(a, b); }
};

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
