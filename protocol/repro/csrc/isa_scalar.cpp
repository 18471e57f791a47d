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
static constexpr int64_t KC = 256, MC_PANELS = 16, NC_PANELS = 128;  // matrix-product blocking

struct Vec {
  using T = float;
  static constexpr int64_t W = 1;
  static T zero() { return 0.0f; }
  static T load(const float* p) { return *p; }
  static void store(float* p, T v) { *p = v; }
  static T set1(float x) { return x; }
  static T fma(T a, T b, T c) { return __builtin_fmaf(a, b, c); }
  static T add(T a, T b) { return a + b; }
};

#include "fixed_order.h"
#undef VT_ISA_NAME
}  // namespace isa_scalar

const KernelTable* table_scalar() { return &isa_scalar::TABLE; }
}  // namespace vt
