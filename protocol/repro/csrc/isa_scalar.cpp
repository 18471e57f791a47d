// Portable fixed-order kernels: no ISA extension assumed (x86-64 baseline, or any other CPU).
// On x86-64 without FMA hardware in the target, fma is glibc's correctly rounded fmaf.
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "table.h"

namespace vt {
namespace isa_scalar {
#define VT_ISA_NAME "scalar"

static constexpr int64_t MR = 4, NR = 8;

static inline void micro_kernel(int64_t kc, const float* a, int64_t a_rows, int64_t a_cols, const float* bp,
                                float* c, int64_t ldc, const float* init, bool accumulate) {
  float acc[MR][NR];
  for (int64_t r = 0; r < MR; ++r)
    for (int64_t j = 0; j < NR; ++j) acc[r][j] = init ? init[j] : 0.0f;
  for (int64_t k = 0; k < kc; ++k)
    for (int64_t r = 0; r < MR; ++r)
      for (int64_t j = 0; j < NR; ++j) acc[r][j] = __builtin_fmaf(a[r * a_rows + k * a_cols], bp[k * NR + j], acc[r][j]);
  for (int64_t r = 0; r < MR; ++r)
    for (int64_t j = 0; j < NR; ++j) c[r * ldc + j] = accumulate ? c[r * ldc + j] + acc[r][j] : acc[r][j];
}

#include "fixed_order.h"
#undef VT_ISA_NAME
}  // namespace isa_scalar

const KernelTable* table_scalar() { return &isa_scalar::TABLE; }
}  // namespace vt
