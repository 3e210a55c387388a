/* The primitives of simd.h on aarch64 with NEON and the dot-product extension (armv8.2-a+dotprod): each
 * 16-lane vector is four 128-bit quarters.
 *
 * Bit-identical to simd_avx2.h (and so to simd_avx512.h): the same IEEE operations lane by lane, FMA where
 * it fuses, reductions in its addition order (vaddvq_f32's pairwise order differs, so it is not used), max
 * and min with x86's operand rule (a signed zero or NaN gives the second operand), bf16 rounded in integers.
 * The integer dot products are exact: sdot for signed bytes, and for unsigned weight bytes w the signed
 * w - 128 plus 128 times the activations' sum. tests/kernels/model/test_arm_cross_check.py compares this
 * build under qemu-aarch64 with the x86 levels. */
#ifndef HEARTH_SIMD_NEON_H
#define HEARTH_SIMD_NEON_H

#include <arm_neon.h>
#include <stdint.h>

#define HEARTH_SIMD_LEVEL "neon"

typedef struct { float32x4_t q[4]; } vf;  /* lanes 4 i .. 4 i + 3 in q[i] */
typedef struct { int32x4_t q[4]; } vi;    /* or bytes 16 i .. 16 i + 15 */
typedef struct { uint32x4_t q[4]; } vmask;  /* all-ones or zero lanes */

/* The cache line at p fetched for reading into every cache level (x86's _MM_HINT_T0: locality 3); never
 * faults. */
static inline void hearth_prefetch(const void *p) { __builtin_prefetch(p, 0, 3); }

#define NEON_MAP1(type, a, op) ((type){{op((a).q[0]), op((a).q[1]), op((a).q[2]), op((a).q[3])}})
#define NEON_MAP2(type, a, b, op) \
    ((type){{op((a).q[0], (b).q[0]), op((a).q[1], (b).q[1]), op((a).q[2], (b).q[2]), op((a).q[3], (b).q[3])}})

static inline vf vf_zero(void) { return (vf){{vdupq_n_f32(0), vdupq_n_f32(0), vdupq_n_f32(0), vdupq_n_f32(0)}}; }
static inline vf vf_set1(float x) { const float32x4_t v = vdupq_n_f32(x); return (vf){{v, v, v, v}}; }
static inline vf vf_load(const float *p) { return (vf){{vld1q_f32(p), vld1q_f32(p + 4), vld1q_f32(p + 8), vld1q_f32(p + 12)}}; }
static inline void vf_store(float *p, vf x) { for (int i = 0; i < 4; i++) vst1q_f32(p + 4 * i, x.q[i]); }
static inline vf vf_add(vf a, vf b) { return NEON_MAP2(vf, a, b, vaddq_f32); }
static inline vf vf_sub(vf a, vf b) { return NEON_MAP2(vf, a, b, vsubq_f32); }
static inline vf vf_mul(vf a, vf b) { return NEON_MAP2(vf, a, b, vmulq_f32); }
static inline vf vf_div(vf a, vf b) { return NEON_MAP2(vf, a, b, vdivq_f32); }
/* maxps / minps: a > b ? a : b and a < b ? a : b. */
static inline float32x4_t max_x86(float32x4_t a, float32x4_t b) { return vbslq_f32(vcgtq_f32(a, b), a, b); }
static inline float32x4_t min_x86(float32x4_t a, float32x4_t b) { return vbslq_f32(vcltq_f32(a, b), a, b); }
static inline vf vf_max(vf a, vf b) { return NEON_MAP2(vf, a, b, max_x86); }
static inline vf vf_min(vf a, vf b) { return NEON_MAP2(vf, a, b, min_x86); }
static inline vf vf_abs(vf a) { return NEON_MAP1(vf, a, vabsq_f32); }
/* a b + c and c - a b, fused. */
static inline vf vf_fmadd(vf a, vf b, vf c) {
    vf r;
    for (int i = 0; i < 4; i++) r.q[i] = vfmaq_f32(c.q[i], a.q[i], b.q[i]);
    return r;
}
static inline vf vf_fnmadd(vf a, vf b, vf c) {
    vf r;
    for (int i = 0; i < 4; i++) r.q[i] = vfmsq_f32(c.q[i], a.q[i], b.q[i]);
    return r;
}
static inline vf vf_round(vf a) { return NEON_MAP1(vf, a, vrndnq_f32); }  /* nearest even */
/* a 2^n for integral n in [-126, 127], as simd_avx2.h: times 2^n built from its exponent bits. */
static inline float32x4_t scale2_quarter(float32x4_t a, float32x4_t n) {
    const int32x4_t bits = vshlq_n_s32(vaddq_s32(vcvtnq_s32_f32(n), vdupq_n_s32(127)), 23);
    return vmulq_f32(a, vreinterpretq_f32_s32(bits));
}
static inline vf vf_scale2(vf a, vf n) { return NEON_MAP2(vf, a, n, scale2_quarter); }
/* simd_avx2.h's reduce_chunks: (c0 + c2) + (c1 + c3) of the quarters, per lane. */
static inline float32x4_t reduce_quarters(vf a) {
    return vaddq_f32(vaddq_f32(a.q[0], a.q[2]), vaddq_f32(a.q[1], a.q[3]));
}
/* Then (u0 + u2) + (u1 + u3). */
static inline float vf_reduce_add(vf a) {
    const float32x4_t u = reduce_quarters(a);
    const float32x2_t v = vadd_f32(vget_low_f32(u), vget_high_f32(u));
    return vget_lane_f32(v, 0) + vget_lane_f32(v, 1);
}
/* simd_avx2.h's operand order: max(max(c1, c3), max(c0, c2)), then max(u0, u2) and max(u1, u3). */
static inline float vf_reduce_max(vf a) {
    const float32x4_t u = max_x86(max_x86(a.q[1], a.q[3]), max_x86(a.q[0], a.q[2]));
    const float32x2_t v = vbsl_f32(vcgt_f32(vget_low_f32(u), vget_high_f32(u)), vget_low_f32(u), vget_high_f32(u));
    const float x = vget_lane_f32(v, 0), y = vget_lane_f32(v, 1);
    return x > y ? x : y;
}
static inline vi vf_as_vi(vf a) { return NEON_MAP1(vi, a, vreinterpretq_s32_f32); }
static inline vf vi_as_vf(vi a) { return NEON_MAP1(vf, a, vreinterpretq_f32_s32); }
static inline vi vf_to_vi(vf a) { return NEON_MAP1(vi, a, vcvtnq_s32_f32); }  /* nearest even, as MXCSR's */
static inline vf vi_to_vf(vi a) { return NEON_MAP1(vf, a, vcvtq_f32_s32); }
static inline vi vi_load_u16(const void *p) {
    const uint16x8_t a = vld1q_u16((const uint16_t *)p), b = vld1q_u16((const uint16_t *)p + 8);
    return (vi){{vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(a))), vreinterpretq_s32_u32(vmovl_u16(vget_high_u16(a))),
                 vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(b))), vreinterpretq_s32_u32(vmovl_u16(vget_high_u16(b)))}};
}
static inline vf vf_load_f16(const void *p) {  /* exact widening */
    const float16_t *h = (const float16_t *)p;
    return (vf){{vcvt_f32_f16(vld1_f16(h)), vcvt_f32_f16(vld1_f16(h + 4)), vcvt_f32_f16(vld1_f16(h + 8)),
                 vcvt_f32_f16(vld1_f16(h + 12))}};
}

static inline vmask vmask_first(int n) {
    const int32x4_t limit = vdupq_n_s32(n), lanes = {0, 1, 2, 3};
    vmask m;
    for (int i = 0; i < 4; i++) m.q[i] = vcgtq_s32(limit, vaddq_s32(lanes, vdupq_n_s32(4 * i)));
    return m;
}
static inline int vmask_any(vmask m) {
    return vmaxvq_u32(vorrq_u32(vorrq_u32(m.q[0], m.q[1]), vorrq_u32(m.q[2], m.q[3]))) != 0;
}
/* _CMP_NEQ_OQ: ordered and unequal (false where either is NaN). */
static inline uint32x4_t neq_ordered(float32x4_t a, float32x4_t b) { return vorrq_u32(vcltq_f32(a, b), vcgtq_f32(a, b)); }
static inline vmask vf_neq(vf a, vf b) { return NEON_MAP2(vmask, a, b, neq_ordered); }
static inline vf vf_select(vmask m, vf a, vf otherwise) {
    vf r;
    for (int i = 0; i < 4; i++) r.q[i] = vbslq_f32(m.q[i], a.q[i], otherwise.q[i]);
    return r;
}

static inline vi vi_zero(void) { return (vi){{vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0)}}; }
static inline vi vi_set1(int32_t x) { const int32x4_t v = vdupq_n_s32(x); return (vi){{v, v, v, v}}; }
static inline vi vi_set1_epi8(int8_t x) { const int32x4_t v = vreinterpretq_s32_s8(vdupq_n_s8(x)); return (vi){{v, v, v, v}}; }
static inline vi vi_load(const void *p) {
    const int32_t *w = (const int32_t *)p;
    return (vi){{vld1q_s32(w), vld1q_s32(w + 4), vld1q_s32(w + 8), vld1q_s32(w + 12)}};
}
static inline vi vi_add(vi a, vi b) { return NEON_MAP2(vi, a, b, vaddq_s32); }
static inline vi vi_sub(vi a, vi b) { return NEON_MAP2(vi, a, b, vsubq_s32); }
static inline vi vi_and(vi a, vi b) { return NEON_MAP2(vi, a, b, vandq_s32); }
static inline vi vi_min(vi a, vi b) { return NEON_MAP2(vi, a, b, vminq_s32); }
static inline vi vi_max(vi a, vi b) { return NEON_MAP2(vi, a, b, vmaxq_s32); }
/* Shift counts are immediates (1..31 here). */
#define vi_slli(a, n) ((vi){{vshlq_n_s32((a).q[0], (n)), vshlq_n_s32((a).q[1], (n)), vshlq_n_s32((a).q[2], (n)), \
                             vshlq_n_s32((a).q[3], (n))}})
#define NEON_SRLI(x, n) vreinterpretq_s32_u32(vshrq_n_u32(vreinterpretq_u32_s32(x), (n)))
#define vi_srli(a, n) ((vi){{NEON_SRLI((a).q[0], n), NEON_SRLI((a).q[1], n), NEON_SRLI((a).q[2], n), NEON_SRLI((a).q[3], n)}})
#define vi_srai(a, n) ((vi){{vshrq_n_s32((a).q[0], (n)), vshrq_n_s32((a).q[1], (n)), vshrq_n_s32((a).q[2], (n)), \
                             vshrq_n_s32((a).q[3], (n))}})
#define NEON_SRLI16(x, n) vreinterpretq_s32_u16(vshrq_n_u16(vreinterpretq_u16_s32(x), (n)))
#define vi_srli16(a, n) \
    ((vi){{NEON_SRLI16((a).q[0], n), NEON_SRLI16((a).q[1], n), NEON_SRLI16((a).q[2], n), NEON_SRLI16((a).q[3], n)}})
static inline int32_t vi_reduce_add(vi a) {  /* exact (wrapping), so any order */
    return vaddvq_s32(vaddq_s32(vaddq_s32(a.q[0], a.q[1]), vaddq_s32(a.q[2], a.q[3])));
}
/* Truncations of the 16 int32 lanes (their values fit). */
static inline int16x8_t narrow_pair(int32x4_t a, int32x4_t b) { return vcombine_s16(vmovn_s32(a), vmovn_s32(b)); }
static inline void vi_store_i16(void *p, vi a) {
    vst1q_s16((int16_t *)p, narrow_pair(a.q[0], a.q[1]));
    vst1q_s16((int16_t *)p + 8, narrow_pair(a.q[2], a.q[3]));
}
static inline void vi_store_u16(void *p, vi a) { vi_store_i16(p, a); }  /* values in 0..65535: the low halves */
static inline void vi_store_i8(void *p, vi a) {
    vst1q_s8((int8_t *)p, vcombine_s8(vmovn_s16(narrow_pair(a.q[0], a.q[1])), vmovn_s16(narrow_pair(a.q[2], a.q[3]))));
}

/* The 32-input integer dot product of a block (simd_avx512.h says what it computes), exact. quad[s].q[c]
 * holds outputs 4 c .. 4 c + 3, four weight bytes each, for inputs 4 s .. 4 s + 3: one sdot each.
 * - _u4 (weights 0..15): the bytes are the same read as signed;
 * - _u8 (any byte): w x = (w - 128) x + 128 x, with w - 128 = w ^ 0x80 signed; the sdot sums stay under
 *   32 * 128 * 128 and the activations' sum under 32 * 128. */
static inline vi dot_signed(const vi *quad, int quads, const int8_t *x, int8_t flip) {
    const int8x16_t top = vdupq_n_s8(flip);
    vi acc = vi_zero();
    for (int s = 0; s < quads; s++) {
        int32_t four;
        __builtin_memcpy(&four, x + 4 * s, 4);
        const int8x16_t xs = vreinterpretq_s8_s32(vdupq_n_s32(four));
        for (int c = 0; c < 4; c++)
            acc.q[c] = vdotq_s32(acc.q[c], veorq_s8(vreinterpretq_s8_s32(quad[s].q[c]), top), xs);
    }
    return acc;
}
static inline vi vi_dot32_u4s8(const vi quad[8], const int8_t *x) { return dot_signed(quad, 8, x, 0); }
static inline vi vi_dot32_u8s8(const vi quad[8], const int8_t *x) {
    const int32_t sum = vaddlvq_s8(vld1q_s8(x)) + vaddlvq_s8(vld1q_s8(x + 16));
    return vi_add(dot_signed(quad, 8, x, (int8_t)0x80), vi_set1(128 * sum));
}
/* vi_dot32_u8s8 over 16 inputs: quad[0..3] and x[0..15]. */
static inline vi vi_dot16_u8s8(const vi quad[4], const int8_t *x) {
    return vi_add(dot_signed(quad, 4, x, (int8_t)0x80), vi_set1(128 * (int32_t)vaddlvq_s8(vld1q_s8(x))));
}
/* simd_avx2.h's vdpbf16ps: the odd pair's product, then the even one's, each an FMA of exact products. */
static inline float32x4_t dot2_bf16_quarter(float32x4_t acc, int32x4_t w, int32x4_t x) {
    const int32x4_t high = vdupq_n_s32((int32_t)0xFFFF0000u);
    acc = vfmaq_f32(acc, vreinterpretq_f32_s32(vandq_s32(w, high)), vreinterpretq_f32_s32(vandq_s32(x, high)));
    return vfmaq_f32(acc, vreinterpretq_f32_s32(vshlq_n_s32(w, 16)), vreinterpretq_f32_s32(vshlq_n_s32(x, 16)));
}
static inline vf vf_dot2_bf16(vf acc, vi w, vi x) {
    vf r;
    for (int i = 0; i < 4; i++) r.q[i] = dot2_bf16_quarter(acc.q[i], w.q[i], x.q[i]);
    return r;
}

/* Lane j: vf_reduce_add(partial[j]), in its order: four 4 x 4 transposes of the quarter sums. */
static inline vf vf_sum_lanes16(const vf partial[16]) {
    vf sums;
    for (int j = 0; j < 4; j++) {
        const float32x4x2_t t01 = vtrnq_f32(reduce_quarters(partial[4 * j]), reduce_quarters(partial[4 * j + 1]));
        const float32x4x2_t t23 = vtrnq_f32(reduce_quarters(partial[4 * j + 2]), reduce_quarters(partial[4 * j + 3]));
        /* r_e: element e of the four u's */
        const float32x4_t r0 = vcombine_f32(vget_low_f32(t01.val[0]), vget_low_f32(t23.val[0]));
        const float32x4_t r1 = vcombine_f32(vget_low_f32(t01.val[1]), vget_low_f32(t23.val[1]));
        const float32x4_t r2 = vcombine_f32(vget_high_f32(t01.val[0]), vget_high_f32(t23.val[0]));
        const float32x4_t r3 = vcombine_f32(vget_high_f32(t01.val[1]), vget_high_f32(t23.val[1]));
        sums.q[j] = vaddq_f32(vaddq_f32(r0, r2), vaddq_f32(r1, r3));
    }
    return sums;
}

/* 16 bf16 at p, rounded to nearest even in integers, as simd_avx2.h (denormals kept). */
static inline void vf_store_bf16_hw(void *p, vf a) {
    const vi bits = vf_as_vi(a);
    const vi rounded = vi_add(bits, vi_add(vi_set1(0x7FFF), vi_and(vi_srli(bits, 16), vi_set1(1))));
    vi_store_u16(p, vi_srli(rounded, 16));
}

#endif
