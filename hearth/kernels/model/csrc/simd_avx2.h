/* The primitives of simd.h on x86-64-v3 (AVX2, FMA, F16C): each 16-lane vector is two 8-lane halves.
 *
 * Float operations are the AVX-512 ones lane by lane (the same IEEE roundings, FMA fused), and reductions
 * add in the order of simd_avx512.h's (GCC's _mm512_reduce_add_ps tree), so a kernel's sums are the same at
 * both levels. The integer dot products are exact, as vpdpbusd's are. */
#ifndef HEARTH_SIMD_AVX2_H
#define HEARTH_SIMD_AVX2_H

#include <immintrin.h>
#include <stdint.h>

#define HEARTH_SIMD_LEVEL "avx2"

typedef struct { __m256 lo, hi; } vf;
typedef struct { __m256i lo, hi; } vi;
typedef struct { __m256 lo, hi; } vmask;  /* all-ones or zero lanes */

/* The cache line at p fetched into every cache level; never faults. */
static inline void hearth_prefetch(const void *p) { _mm_prefetch((const char *)p, _MM_HINT_T0); }

#define VF_MAP2(name, op) static inline vf name(vf a, vf b) { return (vf){op(a.lo, b.lo), op(a.hi, b.hi)}; }
#define VI_MAP2(name, op) static inline vi name(vi a, vi b) { return (vi){op(a.lo, b.lo), op(a.hi, b.hi)}; }

static inline vf vf_zero(void) { return (vf){_mm256_setzero_ps(), _mm256_setzero_ps()}; }
static inline vf vf_set1(float x) { return (vf){_mm256_set1_ps(x), _mm256_set1_ps(x)}; }
static inline vf vf_load(const float *p) { return (vf){_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)}; }
static inline void vf_store(float *p, vf x) { _mm256_storeu_ps(p, x.lo); _mm256_storeu_ps(p + 8, x.hi); }
VF_MAP2(vf_add, _mm256_add_ps)
VF_MAP2(vf_sub, _mm256_sub_ps)
VF_MAP2(vf_mul, _mm256_mul_ps)
VF_MAP2(vf_div, _mm256_div_ps)
VF_MAP2(vf_max, _mm256_max_ps)
VF_MAP2(vf_min, _mm256_min_ps)
static inline vf vf_abs(vf a) {
    const __m256 mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    return (vf){_mm256_and_ps(a.lo, mask), _mm256_and_ps(a.hi, mask)};
}
static inline vf vf_fmadd(vf a, vf b, vf c) { return (vf){_mm256_fmadd_ps(a.lo, b.lo, c.lo), _mm256_fmadd_ps(a.hi, b.hi, c.hi)}; }
static inline vf vf_fnmadd(vf a, vf b, vf c) { return (vf){_mm256_fnmadd_ps(a.lo, b.lo, c.lo), _mm256_fnmadd_ps(a.hi, b.hi, c.hi)}; }
static inline vf vf_round(vf a) {
    return (vf){_mm256_round_ps(a.lo, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC),
                _mm256_round_ps(a.hi, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)};
}
/* a 2^n for integral n in [-126, 127]: 2^n is a normal float, built from its exponent bits (one rounding, as
 * vscalefps, unless the product is subnormal). */
static inline __m256 scale2_half(__m256 a, __m256 n) {
    const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(a, _mm256_castsi256_ps(bits));
}
static inline vf vf_scale2(vf a, vf n) { return (vf){scale2_half(a.lo, n.lo), scale2_half(a.hi, n.hi)}; }
/* (c0 + c2) + (c1 + c3) per lane of the four 128-bit chunks, then (u0 + u2) + (u1 + u3). */
static inline __m128 reduce_chunks(vf a) {
    const __m256 t = _mm256_add_ps(a.hi, a.lo);
    return _mm_add_ps(_mm256_extractf128_ps(t, 1), _mm256_castps256_ps128(t));
}
static inline float vf_reduce_add(vf a) {
    const __m128 u = reduce_chunks(a);
    const __m128 v = _mm_add_ps(u, _mm_shuffle_ps(u, u, _MM_SHUFFLE(1, 0, 3, 2)));
    return _mm_cvtss_f32(_mm_add_ps(v, _mm_shuffle_ps(v, v, _MM_SHUFFLE(2, 3, 0, 1))));
}
static inline float vf_reduce_max(vf a) {
    const __m256 t = _mm256_max_ps(a.lo, a.hi);
    __m128 u = _mm_max_ps(_mm256_extractf128_ps(t, 1), _mm256_castps256_ps128(t));
    u = _mm_max_ps(u, _mm_shuffle_ps(u, u, _MM_SHUFFLE(1, 0, 3, 2)));
    return _mm_cvtss_f32(_mm_max_ps(u, _mm_shuffle_ps(u, u, _MM_SHUFFLE(2, 3, 0, 1))));
}
static inline vi vf_as_vi(vf a) { return (vi){_mm256_castps_si256(a.lo), _mm256_castps_si256(a.hi)}; }
static inline vf vi_as_vf(vi a) { return (vf){_mm256_castsi256_ps(a.lo), _mm256_castsi256_ps(a.hi)}; }
static inline vi vf_to_vi(vf a) { return (vi){_mm256_cvtps_epi32(a.lo), _mm256_cvtps_epi32(a.hi)}; }
static inline vf vi_to_vf(vi a) { return (vf){_mm256_cvtepi32_ps(a.lo), _mm256_cvtepi32_ps(a.hi)}; }
static inline vi vi_load_u16(const void *p) {
    return (vi){_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)),
                _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p + 1))};
}
static inline vf vf_load_f16(const void *p) {
    return (vf){_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)),
                _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p + 1))};
}

static inline vmask vmask_first(int n) {
    const __m256i limit = _mm256_set1_epi32(n);
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return (vmask){_mm256_castsi256_ps(_mm256_cmpgt_epi32(limit, lanes)),
                   _mm256_castsi256_ps(_mm256_cmpgt_epi32(limit, _mm256_add_epi32(lanes, _mm256_set1_epi32(8))))};
}
static inline int vmask_any(vmask m) { return _mm256_movemask_ps(m.lo) | _mm256_movemask_ps(m.hi); }
static inline vmask vf_neq(vf a, vf b) { return (vmask){_mm256_cmp_ps(a.lo, b.lo, _CMP_NEQ_OQ), _mm256_cmp_ps(a.hi, b.hi, _CMP_NEQ_OQ)}; }
static inline vf vf_select(vmask m, vf a, vf otherwise) {
    return (vf){_mm256_blendv_ps(otherwise.lo, a.lo, m.lo), _mm256_blendv_ps(otherwise.hi, a.hi, m.hi)};
}

static inline vi vi_zero(void) { return (vi){_mm256_setzero_si256(), _mm256_setzero_si256()}; }
static inline vi vi_set1(int32_t x) { return (vi){_mm256_set1_epi32(x), _mm256_set1_epi32(x)}; }
static inline vi vi_set1_epi8(int8_t x) { return (vi){_mm256_set1_epi8(x), _mm256_set1_epi8(x)}; }
static inline vi vi_load(const void *p) {
    return (vi){_mm256_loadu_si256((const __m256i *)p), _mm256_loadu_si256((const __m256i *)p + 1)};
}
VI_MAP2(vi_add, _mm256_add_epi32)
VI_MAP2(vi_sub, _mm256_sub_epi32)
VI_MAP2(vi_and, _mm256_and_si256)
VI_MAP2(vi_min, _mm256_min_epi32)
VI_MAP2(vi_max, _mm256_max_epi32)
#define vi_slli(a, n) ((vi){_mm256_slli_epi32((a).lo, (n)), _mm256_slli_epi32((a).hi, (n))})
#define vi_srli(a, n) ((vi){_mm256_srli_epi32((a).lo, (n)), _mm256_srli_epi32((a).hi, (n))})
#define vi_srai(a, n) ((vi){_mm256_srai_epi32((a).lo, (n)), _mm256_srai_epi32((a).hi, (n))})
#define vi_srli16(a, n) ((vi){_mm256_srli_epi16((a).lo, (n)), _mm256_srli_epi16((a).hi, (n))})
static inline int32_t vi_reduce_add(vi a) {
    const __m256i t = _mm256_add_epi32(a.lo, a.hi);
    __m128i u = _mm_add_epi32(_mm256_extracti128_si256(t, 1), _mm256_castsi256_si128(t));
    u = _mm_add_epi32(u, _mm_shuffle_epi32(u, _MM_SHUFFLE(1, 0, 3, 2)));
    return _mm_cvtsi128_si32(_mm_add_epi32(u, _mm_shuffle_epi32(u, _MM_SHUFFLE(2, 3, 0, 1))));
}
/* Truncations of 16 int32 lanes whose values fit: packs saturate, which for fitting values is the same. */
static inline void vi_store_i16(void *p, vi a) {
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packs_epi32(a.lo, a.hi), _MM_SHUFFLE(3, 1, 2, 0));
    _mm256_storeu_si256((__m256i *)p, packed);
}
static inline void vi_store_u16(void *p, vi a) {  /* values in 0..65535 */
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(a.lo, a.hi), _MM_SHUFFLE(3, 1, 2, 0));
    _mm256_storeu_si256((__m256i *)p, packed);
}
static inline void vi_store_i8(void *p, vi a) {
    const __m256i words = _mm256_permute4x64_epi64(_mm256_packs_epi32(a.lo, a.hi), _MM_SHUFFLE(3, 1, 2, 0));
    const __m128i bytes = _mm_packs_epi16(_mm256_castsi256_si128(words), _mm256_extracti128_si256(words, 1));
    _mm_storeu_si128((__m128i *)p, bytes);
}

/* The 32-input integer dot product of a block (simd_avx512.h says what it computes), exact:
 * - _u4 (weights 0..15): vpmaddubsw's 16-bit pair sums are at most 2 * 15 * 128 = 3,840, so the 8 steps add
 *   up in 16 bits (30,720 < 2^15) and one vpmaddwd widens them;
 * - _u8 (any weight byte): w = 128 w7 + w6 with w7 its top bit; vpmaddubsw is exact for w6 (2 * 127 * 128 <
 *   2^15), widened at each step, and for w7 (0 or 1), summed in 16 bits. */
static inline vi vi_dot32_u4s8(const vi quad[8], const int8_t *x) {
    __m256i lo = _mm256_setzero_si256(), hi = _mm256_setzero_si256();
    for (int s = 0; s < 8; s++) {
        int32_t four;
        __builtin_memcpy(&four, x + 4 * s, 4);
        const __m256i xs = _mm256_set1_epi32(four);
        lo = _mm256_add_epi16(lo, _mm256_maddubs_epi16(quad[s].lo, xs));
        hi = _mm256_add_epi16(hi, _mm256_maddubs_epi16(quad[s].hi, xs));
    }
    const __m256i ones = _mm256_set1_epi16(1);
    return (vi){_mm256_madd_epi16(lo, ones), _mm256_madd_epi16(hi, ones)};
}
static inline __m256i dot32_u8s8_half(const vi quad[8], const int8_t *x, int upper) {
    const __m256i low7 = _mm256_set1_epi8(0x7F), bit = _mm256_set1_epi8(1), ones = _mm256_set1_epi16(1);
    __m256i acc = _mm256_setzero_si256(), tops = _mm256_setzero_si256();
    for (int s = 0; s < 8; s++) {
        int32_t four;
        __builtin_memcpy(&four, x + 4 * s, 4);
        const __m256i xs = _mm256_set1_epi32(four), w = upper ? quad[s].hi : quad[s].lo;
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_and_si256(w, low7), xs), ones));
        tops = _mm256_add_epi16(tops, _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(w, 7), bit), xs));
    }
    return _mm256_add_epi32(acc, _mm256_madd_epi16(tops, _mm256_set1_epi16(128)));
}
static inline vi vi_dot32_u8s8(const vi quad[8], const int8_t *x) {
    return (vi){dot32_u8s8_half(quad, x, 0), dot32_u8s8_half(quad, x, 1)};
}
/* simd_avx512.h's vq8block and vq8_dot. Here the weights are widened once per block to 16-bit pairs,
 * pair[p][half] lane j = (w[8 half + j][2p], w[8 half + j][2p + 1]), so each of a row's 16 input pairs is one
 * vpmaddwd per 8 outputs against the 16-bit activations: a quarter of the instructions of two
 * vi_dot32_u8s8 calls. Exact: |pair sum| <= 2 * 255 * 32768 and the 32-input sum < 2^31. */
#define HEARTH_SIMD_VQ8
typedef struct { __m256i pair[16][2]; } vq8block;
/* simd.h's vq8_prepare_quads: quad[s] is bytes 64 s .. 64 s + 63 of the block, as two halves. */
static inline void vq8_prepare_quads(vq8block *block, const vi quad[8]) {
    const __m256i even = _mm256_setr_epi8(0, -1, 1, -1, 4, -1, 5, -1, 8, -1, 9, -1, 12, -1, 13, -1,
                                          0, -1, 1, -1, 4, -1, 5, -1, 8, -1, 9, -1, 12, -1, 13, -1);
    const __m256i odd = _mm256_setr_epi8(2, -1, 3, -1, 6, -1, 7, -1, 10, -1, 11, -1, 14, -1, 15, -1,
                                         2, -1, 3, -1, 6, -1, 7, -1, 10, -1, 11, -1, 14, -1, 15, -1);
    for (int s = 0; s < 8; s++)
        for (int half = 0; half < 2; half++) {
            const __m256i w = half ? quad[s].hi : quad[s].lo;
            block->pair[2 * s][half] = _mm256_shuffle_epi8(w, even);
            block->pair[2 * s + 1][half] = _mm256_shuffle_epi8(w, odd);
        }
}
static inline void vq8_prepare(vq8block *block, const uint8_t *bytes) {
    vi quad[8];
    for (int s = 0; s < 8; s++) quad[s] = vi_load(bytes + 64 * s);
    vq8_prepare_quads(block, quad);
}
static inline vi vq8_dot(const vq8block *block, const int8_t *hi, const int8_t *lo, const int16_t *x16) {
    (void)hi; (void)lo;
    __m256i lower = _mm256_setzero_si256(), upper = _mm256_setzero_si256();
    for (int p = 0; p < 16; p++) {
        int32_t two;
        __builtin_memcpy(&two, x16 + 2 * p, 4);
        const __m256i xs = _mm256_set1_epi32(two);
        lower = _mm256_add_epi32(lower, _mm256_madd_epi16(block->pair[p][0], xs));
        upper = _mm256_add_epi32(upper, _mm256_madd_epi16(block->pair[p][1], xs));
    }
    return (vi){lower, upper};
}
/* simd.h's vq8_dot_halves: vq8_dot's pairs 0..7 (inputs 0..15) and 8..15 (inputs 16..31) summed apart. */
static inline void vq8_dot_halves(const vq8block *block, const int8_t *hi, const int8_t *lo, const int16_t *x16,
                                  vi half[2]) {
    (void)hi; (void)lo;
    for (int h = 0; h < 2; h++) {
        __m256i lower = _mm256_setzero_si256(), upper = _mm256_setzero_si256();
        for (int p = 8 * h; p < 8 * h + 8; p++) {
            int32_t two;
            __builtin_memcpy(&two, x16 + 2 * p, 4);
            const __m256i xs = _mm256_set1_epi32(two);
            lower = _mm256_add_epi32(lower, _mm256_madd_epi16(block->pair[p][0], xs));
            upper = _mm256_add_epi32(upper, _mm256_madd_epi16(block->pair[p][1], xs));
        }
        half[h] = (vi){lower, upper};
    }
}
/* vdpbf16ps: the odd pair's product, then the even one's (each exact in float32, so fused or not alike). */
static inline __m256 dot2_bf16_half(__m256 acc, __m256i w, __m256i x) {
    const __m256i high = _mm256_set1_epi32((int)0xFFFF0000u);
    acc = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(w, high)), _mm256_castsi256_ps(_mm256_and_si256(x, high)), acc);
    return _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(w, 16)), _mm256_castsi256_ps(_mm256_slli_epi32(x, 16)), acc);
}
static inline vf vf_dot2_bf16(vf acc, vi w, vi x) { return (vf){dot2_bf16_half(acc.lo, w.lo, x.lo), dot2_bf16_half(acc.hi, w.hi, x.hi)}; }

/* Lane j: vf_reduce_add(partial[j]), in its order: four 4 x 4 transposes of the chunk sums. */
static inline vf vf_sum_lanes16(const vf partial[16]) {
    float sums[16] __attribute__((aligned(32)));
    for (int j = 0; j < 16; j += 4) {
        __m128 r0 = reduce_chunks(partial[j]), r1 = reduce_chunks(partial[j + 1]);
        __m128 r2 = reduce_chunks(partial[j + 2]), r3 = reduce_chunks(partial[j + 3]);
        _MM_TRANSPOSE4_PS(r0, r1, r2, r3);  /* r_e: element e of the four u's */
        _mm_store_ps(sums + j, _mm_add_ps(_mm_add_ps(r0, r2), _mm_add_ps(r1, r3)));
    }
    return (vf){_mm256_load_ps(sums), _mm256_load_ps(sums + 8)};
}

/* 16 bf16 at p, rounded to nearest even in integers (no NaN in these paths; denormals kept, where
 * vcvtneps2bf16 flushes them). */
static inline void vf_store_bf16_hw(void *p, vf a) {
    const vi bits = vf_as_vi(a);
    const vi rounded = vi_add(bits, vi_add(vi_set1(0x7FFF), vi_and(vi_srli(bits, 16), vi_set1(1))));
    vi_store_u16(p, vi_srli(rounded, 16));
}

#endif
