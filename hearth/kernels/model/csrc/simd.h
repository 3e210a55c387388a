/* The vector primitives every kernel in this folder is written against, and the helpers built from them.
 *
 * A kernel's text is the same at every instruction level; only the primitives differ: simd_avx512.h maps
 * each to AVX-512 (one instruction, mostly), simd_avx2.h to pairs of AVX2 halves, simd_neon.h to four NEON
 * quarters (aarch64 with dotprod). The level is the compiler's target (hearth/kernels/model/c_library.py
 * builds one library per level, with that level's flags). Vectors are 16 lanes at every level: vf
 * (float32), vi (int32 or 64 bytes), vmask.
 *
 * Included, so each source stays one translation unit; c_library.py hashes every header here into each
 * build. */
#ifndef HEARTH_SIMD_H
#define HEARTH_SIMD_H

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512VNNI__) && \
    defined(__AVX512BF16__)
#include "simd_avx512.h"
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include "simd_avx2.h"
#elif defined(__aarch64__) && defined(__ARM_FEATURE_DOTPROD)
#include "simd_neon.h"
#else
#error "hearth's C kernels need AVX2 + FMA + F16C, AVX-512 (VNNI, BF16) or aarch64 dotprod: build with that level's flags"
#endif

#ifndef HEARTH_SIMD_VQ8
/* A Q8 block's weights (16 outputs x 32 inputs, unsigned bytes as [8][16][4]) made ready for vq8_dot, once
 * per block for all the rows that use it. By default the bytes as they are, for vi_dot32_u8s8 (vpdpbusd at
 * avx512); a level whose header defines HEARTH_SIMD_VQ8 has its own form (simd_avx2.h). */
typedef struct { vi quad[8]; } vq8block;
/* The same from the quads already in registers (a record whose bytes are unpacked first: q5_linear's). */
static inline void vq8_prepare_quads(vq8block *block, const vi quad[8]) {
    for (int s = 0; s < 8; s++) block->quad[s] = quad[s];
}
static inline void vq8_prepare(vq8block *block, const uint8_t *bytes) {
    for (int s = 0; s < 8; s++) block->quad[s] = vi_load(bytes + 64 * s);
}
/* Lane j: sum over i of w[j][i] x16[i] for x16 = 256 hi + lo (the same 32 activations as 16-bit values and as
 * their two signed bytes; each level reads the form its instructions take), exact. */
static inline vi vq8_dot(const vq8block *block, const int8_t *hi, const int8_t *lo, const int16_t *x16) {
    (void)x16;
    return vi_add(vi_slli(vi_dot32_u8s8(block->quad, hi), 8), vi_dot32_u8s8(block->quad, lo));
}
/* vq8_dot over inputs 0..15 (half[0]) and 16..31 (half[1]) apart, for records whose scales cover 16 inputs
 * (GGUF's Q6_K). Exact: each half's sum is under 16 * 255 * 32768. */
static inline void vq8_dot_halves(const vq8block *block, const int8_t *hi, const int8_t *lo, const int16_t *x16,
                                  vi half[2]) {
    (void)x16;
    for (int h = 0; h < 2; h++)
        half[h] = vi_add(vi_slli(vi_dot16_u8s8(block->quad + 4 * h, hi + 16 * h), 8),
                         vi_dot16_u8s8(block->quad + 4 * h, lo + 16 * h));
}
#endif

/* Sixteen bf16 values, widened exactly to float32. */
static inline vf vf_load_bf16(const uint16_t *src) { return vi_as_vf(vi_slli(vi_load_u16(src), 16)); }

/* Sixteen float32 sums to out[offset..]: as they are when out_is_float32, else rounded to bf16. */
static inline void store_f32_or_bf16(void *out, int64_t offset, vf y, int out_is_float32) {
    if (out_is_float32)
        vf_store((float *)out + offset, y);
    else
        vf_store_bf16_hw((uint16_t *)out + offset, y);
}

/* e^x for x in [-87, 88] (clamped; Cephes' expf: x = n ln 2 + r, a degree-6 polynomial in r, times 2^n);
 * within 2 ulp. */
static inline vf vf_exp(vf x) {
    x = vf_min(vf_max(x, vf_set1(-87.0f)), vf_set1(88.0f));
    const vf n = vf_round(vf_mul(x, vf_set1(1.44269504088896341f)));
    vf r = vf_fnmadd(n, vf_set1(0.693359375f), x);
    r = vf_fnmadd(n, vf_set1(-2.12194440e-4f), r);
    vf p = vf_set1(1.9875691500e-4f);
    p = vf_fmadd(p, r, vf_set1(1.3981999507e-3f));
    p = vf_fmadd(p, r, vf_set1(8.3334519073e-3f));
    p = vf_fmadd(p, r, vf_set1(4.1665795894e-2f));
    p = vf_fmadd(p, r, vf_set1(1.6666665459e-1f));
    p = vf_fmadd(p, r, vf_set1(5.0000001201e-1f));
    p = vf_fmadd(p, vf_mul(r, r), vf_add(r, vf_set1(1.0f)));
    return vf_scale2(p, n);
}

/* Round to bf16 in float32 lanes, nearest even in integers (as torch's conversion; no NaN in these paths). */
static inline vf vf_round_bf16(vf x) {
    const vi bits = vf_as_vi(x);
    const vi lsb = vi_and(vi_srli(bits, 16), vi_set1(1));
    const vi rounded = vi_add(bits, vi_add(vi_set1(0x7FFF), lsb));
    return vi_as_vf(vi_and(rounded, vi_set1((int)0xFFFF0000u)));
}

/* x must be bf16-exact (vf_round_bf16's output): its high halves, stored. */
static inline void vf_store_bf16_exact(uint16_t *dst, vf x) { vi_store_u16(dst, vi_srli(vf_as_vi(x), 16)); }

#endif
