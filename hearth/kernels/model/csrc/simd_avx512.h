/* The primitives of simd.h on AVX-512 (F/BW/VL/DQ, VNNI, BF16): one instruction each, mostly. */
#ifndef HEARTH_SIMD_AVX512_H
#define HEARTH_SIMD_AVX512_H

#include <immintrin.h>
#include <stdint.h>

#define HEARTH_SIMD_LEVEL "avx512"

typedef __m512 vf;    /* 16 float32 */
typedef __m512i vi;   /* 16 int32, or 64 bytes */
typedef __mmask16 vmask;

/* The cache line at p fetched into every cache level; never faults. */
static inline void hearth_prefetch(const void *p) { _mm_prefetch((const char *)p, _MM_HINT_T0); }

static inline vf vf_zero(void) { return _mm512_setzero_ps(); }
static inline vf vf_set1(float x) { return _mm512_set1_ps(x); }
static inline vf vf_load(const float *p) { return _mm512_loadu_ps(p); }
static inline void vf_store(float *p, vf x) { _mm512_storeu_ps(p, x); }
static inline vf vf_add(vf a, vf b) { return _mm512_add_ps(a, b); }
static inline vf vf_sub(vf a, vf b) { return _mm512_sub_ps(a, b); }
static inline vf vf_mul(vf a, vf b) { return _mm512_mul_ps(a, b); }
static inline vf vf_div(vf a, vf b) { return _mm512_div_ps(a, b); }
static inline vf vf_max(vf a, vf b) { return _mm512_max_ps(a, b); }
static inline vf vf_min(vf a, vf b) { return _mm512_min_ps(a, b); }
static inline vf vf_abs(vf a) { return _mm512_abs_ps(a); }
static inline vf vf_fmadd(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
static inline vf vf_fnmadd(vf a, vf b, vf c) { return _mm512_fnmadd_ps(a, b, c); }
static inline vf vf_round(vf a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
/* a 2^n for integral n in [-126, 127]. */
static inline vf vf_scale2(vf a, vf n) { return _mm512_scalef_ps(a, n); }
static inline float vf_reduce_add(vf a) { return _mm512_reduce_add_ps(a); }
static inline float vf_reduce_max(vf a) { return _mm512_reduce_max_ps(a); }
static inline vi vf_as_vi(vf a) { return _mm512_castps_si512(a); }
static inline vf vi_as_vf(vi a) { return _mm512_castsi512_ps(a); }
static inline vi vf_to_vi(vf a) { return _mm512_cvtps_epi32(a); }
static inline vf vi_to_vf(vi a) { return _mm512_cvtepi32_ps(a); }
/* 16 uint16 at p, widened to int32 lanes. */
static inline vi vi_load_u16(const void *p) { return _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)); }
/* 16 float16 at p, widened. */
static inline vf vf_load_f16(const void *p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p)); }
/* 16 bf16 at p, as vcvtneps2bf16 rounds them (nearest even; denormals flushed). */
static inline void vf_store_bf16_hw(void *p, vf a) { _mm256_storeu_si256((__m256i *)p, (__m256i)_mm512_cvtneps_pbh(a)); }

static inline vmask vmask_first(int n) { return n >= 16 ? (vmask)0xFFFF : n <= 0 ? (vmask)0 : (vmask)((1u << n) - 1); }
static inline int vmask_any(vmask m) { return m != 0; }
static inline vmask vf_neq(vf a, vf b) { return _mm512_cmp_ps_mask(a, b, _CMP_NEQ_OQ); }
/* a where m, else otherwise. */
static inline vf vf_select(vmask m, vf a, vf otherwise) { return _mm512_mask_mov_ps(otherwise, m, a); }

static inline vi vi_zero(void) { return _mm512_setzero_si512(); }
static inline vi vi_set1(int32_t x) { return _mm512_set1_epi32(x); }
static inline vi vi_set1_epi8(int8_t x) { return _mm512_set1_epi8(x); }
static inline vi vi_load(const void *p) { return _mm512_loadu_si512(p); }
static inline vi vi_add(vi a, vi b) { return _mm512_add_epi32(a, b); }
static inline vi vi_sub(vi a, vi b) { return _mm512_sub_epi32(a, b); }
static inline vi vi_and(vi a, vi b) { return _mm512_and_si512(a, b); }
static inline vi vi_min(vi a, vi b) { return _mm512_min_epi32(a, b); }
static inline vi vi_max(vi a, vi b) { return _mm512_max_epi32(a, b); }
#define vi_slli(a, n) _mm512_slli_epi32((a), (n))
#define vi_srli(a, n) _mm512_srli_epi32((a), (n))
#define vi_srai(a, n) _mm512_srai_epi32((a), (n))
/* Shifts each 16-bit lane. */
#define vi_srli16(a, n) _mm512_srli_epi16((a), (n))
static inline int32_t vi_reduce_add(vi a) { return _mm512_reduce_add_epi32(a); }
/* The 16 int32 lanes, truncated to bytes (values in -128..127) or to 16 bits, at p. */
static inline void vi_store_i8(void *p, vi a) { _mm_storeu_si128((__m128i *)p, _mm512_cvtepi32_epi8(a)); }
static inline void vi_store_i16(void *p, vi a) { _mm256_storeu_si256((__m256i *)p, _mm512_cvtepi32_epi16(a)); }
static inline void vi_store_u16(void *p, vi a) { _mm256_storeu_si256((__m256i *)p, _mm512_cvtepi32_epi16(a)); }

/* The 32-input integer dot product of a block: lane j (of 16 outputs) = sum over inputs i of w[j][i] x[i],
 * exact. quad[s] holds the 16 outputs' unsigned weight bytes for inputs 4 s .. 4 s + 3 ([16][4]); x is the
 * block's 32 signed activation bytes. _u4: every weight byte in 0..15 (the AVX2 build takes a shorter path
 * for it); _u8: any byte. */
static inline vi dot_quads(const vi *quad, int quads, const int8_t *x) {
    vi acc = _mm512_setzero_si512();
    for (int s = 0; s < quads; s++) {
        int32_t four;
        __builtin_memcpy(&four, x + 4 * s, 4);
        acc = _mm512_dpbusd_epi32(acc, quad[s], _mm512_set1_epi32(four));
    }
    return acc;
}
static inline vi vi_dot32_u8s8(const vi quad[8], const int8_t *x) { return dot_quads(quad, 8, x); }
static inline vi vi_dot32_u4s8(const vi quad[8], const int8_t *x) { return dot_quads(quad, 8, x); }
/* vi_dot32_u8s8 over 16 inputs: quad[0..3] and x[0..15]. */
static inline vi vi_dot16_u8s8(const vi quad[4], const int8_t *x) { return dot_quads(quad, 4, x); }
/* acc + per float32 lane w[2j+1] x[2j+1] + w[2j] x[2j] for bf16 pairs w, x (vdpbf16ps). */
static inline vf vf_dot2_bf16(vf acc, vi w, vi x) { return _mm512_dpbf16_ps(acc, (__m512bh)w, (__m512bh)x); }

/* Lane j: vf_reduce_add(partial[j]), in the same order of additions, by a fixed tree of shuffles and adds
 * (it leaves vector 4 t + k in lane 4 k + t; one permutation puts it back). */
static inline vf vf_sum_lanes16(const vf partial[16]) {
    vf level1[8], level2[4], level3[2];
    for (int i = 0; i < 8; i++) {
        vf a = partial[2 * i], b = partial[2 * i + 1];
        level1[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xEE));
    }
    for (int i = 0; i < 4; i++) {
        vf a = level1[2 * i], b = level1[2 * i + 1];
        level2[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x88), _mm512_shuffle_f32x4(a, b, 0xDD));
    }
    for (int i = 0; i < 2; i++) {
        vf a = level2[2 * i], b = level2[2 * i + 1];
        level3[i] = _mm512_add_ps(_mm512_shuffle_ps(a, b, 0x44), _mm512_shuffle_ps(a, b, 0xEE));
    }
    const vf sums = _mm512_add_ps(_mm512_shuffle_ps(level3[0], level3[1], 0x88),
                                  _mm512_shuffle_ps(level3[0], level3[1], 0xDD));
    return _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), sums);
}

#endif
