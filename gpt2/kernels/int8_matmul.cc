// int8 weight-only matrix products for decoding on a CPU, called by XLA
// through its FFI (gpt2/int8.py registers the handler).
//
//   y (O, R) = diag(scale) W (O, I) x (I, R)
//
// W is int8, quantized per output row (symmetric: w = scale[o] * q);
// x and y are float32 with the rows as columns, the layout of
// gpt2/cpu_decoding.py. Decoding has few rows (the candidates being
// written), so each weight is read once, widened to float in registers and
// multiplied into every row's accumulator: the bytes read per step are a
// quarter of the float32 product's. The output rows are split over XLA's
// intra-op threads. The vector width is chosen at run time: AVX-512
// (avx512f + avx512bw), AVX2 + FMA, else plain C++.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include <immintrin.h>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// Rows of x handled together: each weight vector is loaded once per group.
constexpr int kGroup = 4;

// The width the latest product ran at (-1 before the first), set by each
// kernel itself: the tests read it to know which path they checked, since a
// CPU without a width silently runs a narrower one.
std::atomic<int> last_level{-1};

// y[o * R + r] for o in [o0, o1), r in [0, R); xt is x transposed, (R, I).
using Kernel = void (*)(const int8_t* w, const float* scale, const float* xt,
                        float* y, int64_t I, int64_t R, int64_t o0,
                        int64_t o1);

void MatmulScalar(const int8_t* w, const float* scale, const float* xt,
                  float* y, int64_t I, int64_t R, int64_t o0, int64_t o1) {
  last_level.store(0, std::memory_order_relaxed);
  for (int64_t o = o0; o < o1; ++o) {
    const int8_t* row = w + o * I;
    for (int64_t r = 0; r < R; ++r) {
      const float* xr = xt + r * I;
      float acc = 0.f;
      for (int64_t i = 0; i < I; ++i) acc += float(row[i]) * xr[i];
      y[o * R + r] = acc * scale[o];
    }
  }
}

__attribute__((target("avx2,fma"))) float Sum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

__attribute__((target("avx2,fma")))
void MatmulAvx2(const int8_t* w, const float* scale, const float* xt, float* y,
                int64_t I, int64_t R, int64_t o0, int64_t o1) {
  last_level.store(1, std::memory_order_relaxed);
  const int64_t I8 = I - I % 8;
  for (int64_t o = o0; o < o1; ++o) {
    const int8_t* row = w + o * I;
    for (int64_t r0 = 0; r0 < R; r0 += kGroup) {
      const int64_t g = std::min<int64_t>(kGroup, R - r0);
      __m256 acc[kGroup] = {_mm256_setzero_ps(), _mm256_setzero_ps(),
                            _mm256_setzero_ps(), _mm256_setzero_ps()};
      for (int64_t i = 0; i < I8; i += 8) {
        int64_t bytes;
        std::memcpy(&bytes, row + i, 8);
        const __m256 wv = _mm256_cvtepi32_ps(
            _mm256_cvtepi8_epi32(_mm_cvtsi64_si128(bytes)));
        for (int k = 0; k < g; ++k)
          acc[k] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xt + (r0 + k) * I + i),
                                   acc[k]);
      }
      for (int k = 0; k < g; ++k) {
        const float* xr = xt + (r0 + k) * I;
        float sum = Sum8(acc[k]);
        for (int64_t i = I8; i < I; ++i) sum += float(row[i]) * xr[i];
        y[o * R + r0 + k] = sum * scale[o];
      }
    }
  }
}

// G rows of x against one output row: each weight vector is widened once
// for all G.
template <int G>
__attribute__((target("avx512f,avx512bw"), always_inline)) inline
void Block512(const int8_t* row, const float* xt, int64_t I, int64_t I16,
              float* out, float s) {
  __m512 acc[G];
  for (int k = 0; k < G; ++k) acc[k] = _mm512_setzero_ps();
  for (int64_t i = 0; i < I16; i += 16) {
    const __m512 wv = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + i))));
    for (int k = 0; k < G; ++k)
      acc[k] = _mm512_fmadd_ps(wv, _mm512_loadu_ps(xt + k * I + i), acc[k]);
  }
  for (int k = 0; k < G; ++k) {
    const float* xr = xt + k * I;
    float t = _mm512_reduce_add_ps(acc[k]);
    for (int64_t i = I16; i < I; ++i) t += float(row[i]) * xr[i];
    out[k] = t * s;
  }
}

__attribute__((target("avx512f,avx512bw")))
void MatmulAvx512(const int8_t* w, const float* scale, const float* xt,
                  float* y, int64_t I, int64_t R, int64_t o0, int64_t o1) {
  last_level.store(2, std::memory_order_relaxed);
  const int64_t I16 = I - I % 16;
  for (int64_t o = o0; o < o1; ++o) {
    const int8_t* row = w + o * I;
    float* out = y + o * R;
    int64_t r = 0;
    for (; r + 8 <= R; r += 8)
      Block512<8>(row, xt + r * I, I, I16, out + r, scale[o]);
    if (r + 4 <= R) {
      Block512<4>(row, xt + r * I, I, I16, out + r, scale[o]);
      r += 4;
    }
    if (r + 2 <= R) {
      Block512<2>(row, xt + r * I, I, I16, out + r, scale[o]);
      r += 2;
    }
    if (r < R) Block512<1>(row, xt + r * I, I, I16, out + r, scale[o]);
  }
}

int Level() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw"))
    return 2;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    return 1;
  return 0;
}

int forced_level = -1;  // set by tests (int8_set_level) to compare paths

// The width in use: the CPU's widest, or the tests' cap where lower.
int InUse() {
  static const int level = Level();
  return forced_level >= 0 ? std::min(forced_level, level) : level;
}

Kernel Chosen() {
  const int use = InUse();
  return use == 2 ? MatmulAvx512 : use == 1 ? MatmulAvx2 : MatmulScalar;
}

ffi::Error Int8MatmulImpl(ffi::ThreadPool pool,
                          ffi::Buffer<ffi::S8> w, ffi::Buffer<ffi::F32> scale,
                          ffi::Buffer<ffi::F32> x,
                          ffi::ResultBuffer<ffi::F32> y) {
  const auto wd = w.dimensions();
  const auto xd = x.dimensions();
  if (wd.size() != 2 || xd.size() != 2 || scale.dimensions().size() != 1)
    return ffi::Error::InvalidArgument("int8_matmul: w (O, I), scale (O,), "
                                       "x (I, R)");
  const int64_t O = wd[0], I = wd[1], R = xd[1];
  if (xd[0] != I || scale.dimensions()[0] != O)
    return ffi::Error::InvalidArgument("int8_matmul: shapes do not agree");
  // x as rows (R, I): each row's inputs contiguous for the vector loads.
  std::vector<float> xt(static_cast<size_t>(R * I));
  const float* xs = x.typed_data();
  for (int64_t i = 0; i < I; ++i)
    for (int64_t r = 0; r < R; ++r) xt[r * I + i] = xs[i * R + r];
  const Kernel kernel = Chosen();
  const int8_t* wp = w.typed_data();
  const float* sp = scale.typed_data();
  float* yp = y->typed_data();
  const float* xp = xt.data();
  // The rows in chunks, taken from a shared counter by this thread and by
  // tasks on XLA's pool. This thread takes chunks too and only waits for
  // chunks another thread has taken and is working on: a task still queued
  // (the pool busy with other work of the program) finds none left.
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  const int64_t chunks = std::min<int64_t>(4 * (threads + 1),
                                           std::max<int64_t>(1, O / 16));
  const int64_t per = (O + chunks - 1) / chunks;
  struct Shared {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
  };
  auto shared = std::make_shared<Shared>();
  auto work = [=] {
    int64_t c;
    while ((c = shared->next.fetch_add(1, std::memory_order_relaxed)) <
           chunks) {
      const int64_t o0 = c * per, o1 = std::min(O, o0 + per);
      if (o0 < o1) kernel(wp, sp, xp, yp, I, R, o0, o1);
      shared->done.fetch_add(1, std::memory_order_release);
    }
  };
  for (int64_t t = 0; t < std::min(threads, chunks - 1); ++t)
    pool.Schedule([work] { work(); });
  work();
  while (shared->done.load(std::memory_order_acquire) < chunks) {
    // Chunks taken by other threads, being written now.
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    Int8Matmul, Int8MatmulImpl,
    ffi::Ffi::Bind()
        .Ctx<ffi::ThreadPool>()
        .Arg<ffi::Buffer<ffi::S8>>()
        .Arg<ffi::Buffer<ffi::F32>>()
        .Arg<ffi::Buffer<ffi::F32>>()
        .Ret<ffi::Buffer<ffi::F32>>());

extern "C" {
// The vector width in use: 2 AVX-512, 1 AVX2, 0 plain C++.
int int8_level() { return InUse(); }
// The widest this CPU has.
int int8_cpu_level() { return Level(); }
// Caps the width (tests compare the paths); -1 lifts the cap. Returns the
// width now in use: lower than asked where the CPU lacks it.
int int8_set_level(int level) {
  forced_level = level;
  return InUse();
}
// The width the latest product ran at; -1 before the first.
int int8_last_level() { return last_level.load(); }
}
