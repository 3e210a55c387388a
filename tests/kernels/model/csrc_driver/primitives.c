/* simd.h's primitives on their own, float32 and integer results as they are: the kernels' outputs are
 * mostly bf16, which hides a last-bit difference in a sum's order or a fused step nearly always, so each
 * primitive's exact result is compared here too (driver.c writes them with its other cases).
 *
 * Inputs stay where the x86 levels agree with each other: normal floats (vcvtneps2bf16 flushes denormals,
 * and avx2's vf_scale2 rounds a subnormal product twice), no NaN, conversions in range. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "simd.h"

#define VECTORS 512

typedef void (*emit_fn)(const char *name, const void *data, int64_t bytes);

static uint64_t (*rand64)(void);

/* A normal float: random sign and mantissa, magnitude 2^(e - 10) for e in 0..19, or zero of either sign. */
static float any_float(int zeros) {
    const uint64_t r = rand64();
    uint32_t bits = (uint32_t)(r & 0x807FFFFFu) | (uint32_t)(117 + (r >> 32) % 20) << 23;
    if (zeros && (r >> 40) % 8 == 0)
        bits &= 0x80000000u;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static vf any_vf(int zeros) {
    float lanes[16];
    for (int i = 0; i < 16; i++) lanes[i] = any_float(zeros);
    return vf_load(lanes);
}

static float in_range(float low, float high) {
    return low + (float)(rand64() >> 40) / (float)(1 << 24) * (high - low);
}

static vi any_bytes(unsigned mask) {
    uint8_t b[64];
    for (int i = 0; i < 64; i++) b[i] = (uint8_t)(rand64() & mask);
    return vi_load(b);
}

void primitives(uint64_t (*next)(void), emit_fn emit) {
    rand64 = next;
    float *f = malloc(VECTORS * 16 * 8 * sizeof(float));
    int32_t *n = malloc(VECTORS * 104 * sizeof(int32_t));
    uint16_t *h = malloc(VECTORS * 16 * 2 * sizeof(uint16_t));

    /* Horizontal sums and maxima (vf_sum_lanes16 beside 16 vf_reduce_add). */
    for (int g = 0; g < VECTORS / 16; g++) {
        vf partial[16];
        for (int j = 0; j < 16; j++) {
            partial[j] = any_vf(0);
            f[VECTORS + 16 * g + j] = vf_reduce_add(partial[j]);
            f[2 * VECTORS + 16 * g + j] = vf_reduce_max(partial[j]);
        }
        vf_store(f + 16 * g, vf_sum_lanes16(partial));
    }
    emit("prim_sums_and_maxima", f, 3 * VECTORS * sizeof(float));

    /* Lane-wise float arithmetic; max and min with signed zeros (x86's second-operand rule); c is never 0. */
    for (int v = 0; v < VECTORS; v++) {
        const vf a = any_vf(1), b = any_vf(1), c = any_vf(0);
        const vf results[8] = {vf_fmadd(a, b, c), vf_fnmadd(a, b, c), vf_div(a, c), vf_max(a, b), vf_min(a, b),
                               vf_add(vf_mul(a, b), c), vf_abs(vf_sub(a, c)),
                               vf_select(vf_neq(a, b), vf_set1(1.0f), vf_set1(-1.0f))};
        for (int k = 0; k < 8; k++) vf_store(f + (8 * v + k) * 16, results[k]);
    }
    emit("prim_float_lanes", f, VECTORS * 8 * 16 * sizeof(float));

    /* e^x over its clamped range, rounding, conversions and 2^n scaling (ties at halves included). */
    for (int v = 0; v < VECTORS; v++) {
        float x[16], half[16], power[16];
        for (int i = 0; i < 16; i++) {
            x[i] = in_range(-95.0f, 95.0f);
            half[i] = (float)((int)(rand64() % 2001) - 1000) * 0.5f;
            power[i] = (float)((int)(rand64() % 60) - 30);
        }
        vf_store(f + (4 * v) * 16, vf_exp(vf_load(x)));
        vf_store(f + (4 * v + 1) * 16, vf_round(vf_load(half)));
        vf_store(f + (4 * v + 2) * 16, vf_scale2(any_vf(0), vf_load(power)));
        vf_store(f + (4 * v + 3) * 16, vi_to_vf(vi_add(vf_to_vi(vf_load(half)), vi_set1(3))));
    }
    emit("prim_exp_round_scale", f, VECTORS * 4 * 16 * sizeof(float));

    /* bf16 and float16: pair products, loads, stores and rounding. */
    for (int v = 0; v < VECTORS; v++) {
        uint16_t w[32], x[32], half[16];
        for (int i = 0; i < 32; i++) {
            /* normal, below 2 (vdpbf16ps reads denormals as zero) */
            w[i] = (uint16_t)(0x3000 | (rand64() & 0x8FFF));
            x[i] = (uint16_t)(0x3000 | (rand64() & 0x8FFF));
        }
        for (int i = 0; i < 16; i++) half[i] = (uint16_t)((rand64() & 0x83FF) | (1 + rand64() % 30) << 10);
        const vf acc = vf_load_bf16(w);
        vf_store(f + (3 * v) * 16, vf_dot2_bf16(acc, vi_load(w), vi_load(x)));
        vf_store(f + (3 * v + 1) * 16, vf_load_f16(half));
        vf_store(f + (3 * v + 2) * 16, vf_round_bf16(any_vf(0)));
        vf_store_bf16_hw(h + (2 * v) * 16, any_vf(0));
        vf_store_bf16_exact(h + (2 * v + 1) * 16, vf_round_bf16(vf_mul(vf_load_bf16(x), vf_load_bf16(w + 16))));
    }
    emit("prim_bf16_f16", f, VECTORS * 3 * 16 * sizeof(float));
    emit("prim_bf16_stores", h, VECTORS * 2 * 16 * sizeof(uint16_t));

    /* The integer dot products (4-bit and 8-bit weights; vq8_dot's activations as 16 bits and as two bytes),
     * shifts, narrowing stores, masks. Per vector, ROW int32s. */
    enum { ROW = 104 };
    for (int v = 0; v < VECTORS; v++) {
        vi quad4[8], quad8[8];
        uint8_t bytes[512];
        int8_t x[32], hi[32], lo[32];
        int16_t x16[32];
        for (int s = 0; s < 8; s++) {
            quad4[s] = any_bytes(0x0F);
            quad8[s] = any_bytes(0xFF);
        }
        for (int i = 0; i < 512; i++) bytes[i] = (uint8_t)rand64();
        for (int i = 0; i < 32; i++) {
            x[i] = (int8_t)rand64();
            hi[i] = (int8_t)((int)(rand64() % 255) - 127);
            lo[i] = (int8_t)rand64();
            x16[i] = (int16_t)(256 * hi[i] + lo[i]);
        }
        vq8block block;
        vq8_prepare(&block, bytes);
        const vi dot8 = vi_dot32_u8s8(quad8, x);
        const vi results[5] = {vi_dot32_u4s8(quad4, x), dot8, vq8_dot(&block, hi, lo, x16),
                               vi_add(vi_srai(dot8, 3), vi_slli(vi_srli16(quad8[0], 4), 2)),
                               vf_as_vi(vf_select(vmask_first(v % 18), vf_set1(1.0f), vf_set1(-2.0f)))};
        int32_t *row = n + ROW * v;
        for (int k = 0; k < 5; k++) vf_store((float *)row + 16 * k, vi_as_vf(results[k]));
        vi_store_i8(row + 80, vi_srai(dot8, 13));                  /* |dot8| < 2^20: fits a byte */
        vi_store_i16(row + 84, vi_srai(dot8, 5));
        vi_store_u16(row + 92, vi_and(dot8, vi_set1(0xFFFF)));
        row[100] = vi_reduce_add(dot8);
        row[101] = vmask_any(vmask_first(v % 3 - 1));
        row[102] = row[103] = 0;
    }
    emit("prim_integers", n, VECTORS * ROW * sizeof(int32_t));
    free(f);
    free(n);
    free(h);
}
