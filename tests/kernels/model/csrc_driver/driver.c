/* Runs hearth's C kernels (hearth/kernels/model/csrc) on fixed inputs and writes their outputs' raw bytes,
 * so that one build's bits can be compared with another's: the x86 levels natively, aarch64 (simd_neon.h)
 * under qemu-aarch64 (tests/kernels/model/test_arm_cross_check.py).
 *
 * Built with the kernels' own sources and flags: cc FLAGS -I csrc driver.c primitives.c vnni_linear.c
 * bf16_linear.c fused_layer.c decode_layers.c -o driver. row_attention.c is a library of its own in hearth, so it is
 * included here with its set_amx renamed (vnni_linear.c exports one too).
 *
 * The inputs come from integer arithmetic alone (splitmix64, values built from their bits), so every build
 * feeds the kernels the same bytes. Output: per case, a 32-byte NUL-padded name, the byte count as a
 * little-endian uint64, then the bytes. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define set_amx row_attention_set_amx
#include "row_attention.c"
#undef set_amx

int q4_linear(const uint16_t *, int64_t, int64_t, const uint8_t *, int64_t, void *, int, int);
int q8_linear(const uint16_t *, int64_t, int64_t, const uint8_t *, int64_t, void *, int, int);
int q8k_linear(const uint16_t *, int64_t, int64_t, const uint8_t *, int64_t, void *, int, int);
int q5_linear(const uint16_t *, int64_t, int64_t, const uint8_t *, int64_t, void *, int, int);
int b16_linear(const uint16_t *, int64_t, int64_t, const uint8_t *, int64_t, void *, int, int);
void rms_norm_bf16(const float *, int64_t, int64_t, const uint16_t *, float, uint16_t *, int);
void silu_mul_bf16(const uint16_t *, int64_t, int64_t, uint16_t *, int);
void primitives(uint64_t (*next)(void), void (*emit)(const char *, const void *, int64_t));  /* primitives.c */
int decode_layers(float *, int64_t, int64_t, int64_t, const void *const *, const int32_t *, float, int64_t, int64_t,
                  int64_t, int64_t, const uint16_t *, const uint16_t *, uint16_t *, int64_t, const int64_t *,
                  const int32_t *, const int64_t *, const int64_t *, int64_t, float,
                  int (*)(const uint16_t *, const uint16_t *, const int32_t *, const int64_t *, const int64_t *,
                          int64_t, int64_t, int64_t, int64_t, int64_t, float, uint16_t *, int),
                  void (*)(uint16_t *, const uint16_t *, const uint16_t *, const int64_t *, int64_t, int64_t,
                           int64_t, int64_t),
                  int);

#define THREADS 2
static uint64_t state = 0x1234567887654321ull;
static FILE *out_file;
static int failures;

static uint64_t next(void) {  /* splitmix64 */
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform in [-scale, scale), exact in float32 for a power-of-two scale. */
static float uniform(float scale) { return (float)((int32_t)(next() >> 40) - (1 << 23)) / (float)(1 << 23) * scale; }

static uint16_t bf16_bits(float f) {  /* truncated: any bf16 is an input */
    uint32_t bits;
    memcpy(&bits, &f, 4);
    return (uint16_t)(bits >> 16);
}

static uint16_t *bf16_array(int64_t n, float scale, float offset) {
    uint16_t *a = malloc(n * sizeof(uint16_t));
    for (int64_t i = 0; i < n; i++) a[i] = bf16_bits(offset + uniform(scale));
    return a;
}

static float *f32_array(int64_t n, float scale) {
    float *a = malloc(n * sizeof(float));
    for (int64_t i = 0; i < n; i++) a[i] = uniform(scale);
    return a;
}

/* A float16 scale 2^(e - 15) (1 + mantissa / 1024) with e in 8..11, negative when asked (Q4_1's m). */
static uint16_t f16_scale(int negative) {
    return (uint16_t)((negative ? 0x8000 : 0) | ((8 + next() % 4) << 10) | (next() & 0x3FF));
}

static int record_bytes(int form) { return form == 4 ? 320 : form == 5 ? 384 : form == 8 ? 544 : form == 9 ? 608 : 1024; }

/* Packed weights [n / 16][k / 32] records of `form` (vnni_linear.py's layouts): Q4_1 nibbles, d, m; Q5 nibbles
 * and fifth bits, d, m; Q8_0
 * bytes q + 128 with q in -127..127, d; Q8K bytes q + 128 with q in -128..127, a scale per 16 of either sign, m;
 * bf16 pairs. */
static uint8_t *packed(int form, int64_t n, int64_t k) {
    const int64_t records = n / 16 * (k / 32), size = record_bytes(form);
    uint8_t *w = malloc(records * size);
    for (int64_t r = 0; r < records; r++) {
        uint8_t *record = w + r * size;
        uint16_t *scales = (uint16_t *)(record + (form == 4 ? 256 : form == 5 ? 320 : 512));
        if (form == 4 || form == 5) {
            for (int i = 0; i < (form == 4 ? 256 : 320); i++) record[i] = (uint8_t)next();
            for (int i = 0; i < 32; i++) scales[i] = f16_scale(i >= 16);
        } else if (form == 8) {
            for (int i = 0; i < 512; i++) record[i] = (uint8_t)(1 + next() % 255);
            record[0] = 255;  /* q = 127, the largest byte */
            for (int i = 0; i < 16; i++) scales[i] = f16_scale(0);
        } else if (form == 9) {
            for (int i = 0; i < 512; i++) record[i] = (uint8_t)next();
            record[0] = 255;
            record[1] = 0;
            for (int i = 0; i < 48; i++) scales[i] = f16_scale(i < 32 ? (int)(next() % 2) : 1);
        } else {
            for (int i = 0; i < 512; i++) ((uint16_t *)record)[i] = bf16_bits(uniform(0.125f));
        }
    }
    return w;
}

static void emit(const char *name, const void *data, int64_t bytes) {
    char label[32] = {0};
    memcpy(label, name, strnlen(name, sizeof label - 1));
    const uint64_t count = (uint64_t)bytes;
    fwrite(label, 1, sizeof label, out_file);
    fwrite(&count, sizeof count, 1, out_file);
    fwrite(data, 1, bytes, out_file);
}

static void check(int failed, const char *name) {
    if (failed) {
        fprintf(stderr, "%s returned nonzero\n", name);
        failures++;
    }
}

/* Every linear form, float32 and bf16 out; 11 rows: a full pass of 8 and a partial one. */
static void linears(void) {
    const int64_t rows = 11, k = 256, n = 48;
    uint16_t *x = bf16_array(rows * k, 2.0f, 0.0f);
    memset(x, 0, 32 * sizeof(uint16_t));  /* a zero block */
    for (int64_t i = 0; i < k; i++) x[3 * k + i] = bf16_bits(uniform(i % 32 == 5 ? 512.0f : 0.0625f));
    float *y = malloc(rows * n * sizeof(float));
    const int forms[5] = {4, 5, 8, 9, 16};
    const char *names[5] = {"q4", "q5", "q8", "q8k", "b16"};
    for (int f = 0; f < 5; f++) {
        uint8_t *w = packed(forms[f], n, k);
        int (*linear)(const uint16_t *, int64_t, int64_t, const uint8_t *, int64_t, void *, int, int) =
            forms[f] == 4 ? q4_linear : forms[f] == 5 ? q5_linear : forms[f] == 8 ? q8_linear
            : forms[f] == 9 ? q8k_linear : b16_linear;
        for (int is_f32 = 1; is_f32 >= 0; is_f32--) {
            char name[32];
            snprintf(name, sizeof name, "%s_linear_%s", names[f], is_f32 ? "f32" : "bf16");
            check(linear(x, rows, k, w, n, y, is_f32, THREADS), name);
            emit(name, y, rows * n * (is_f32 ? 4 : 2));
        }
        free(w);
    }
    free(x);
    free(y);
}

/* rms_norm_bf16 and silu_mul_bf16, with tails past the last 16 lanes. */
static void norm_and_silu(void) {
    const int64_t rows = 3, dim = 200, inter = 72;
    float *hidden = f32_array(rows * dim, 4.0f);
    uint16_t *weight = bf16_array(dim, 0.25f, 1.0f), *x = malloc(rows * dim * sizeof(uint16_t));
    rms_norm_bf16(hidden, rows, dim, weight, 1e-5f, x, THREADS);
    emit("rms_norm_bf16", x, rows * dim * 2);
    uint16_t *gate_up = bf16_array(rows * 2 * inter, 8.0f, 0.0f), *act = malloc(rows * inter * sizeof(uint16_t));
    silu_mul_bf16(gate_up, rows, inter, act, THREADS);
    emit("silu_mul_bf16", act, rows * inter * 2);
    free(hidden); free(weight); free(x); free(gate_up); free(act);
}

/* One sequence's rows at `positions` over a paged cache whose table lists its blocks in reverse. */
static void attention(const char *name, int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t block,
                      const int64_t *positions, int64_t rows) {
    int64_t last = 0;
    for (int64_t r = 0; r < rows; r++) last = positions[r] > last ? positions[r] : last;
    const int64_t blocks = last / block + 1;
    int32_t *table = malloc(blocks * sizeof(int32_t));
    int64_t *starts = calloc(rows, sizeof(int64_t));
    for (int64_t b = 0; b < blocks; b++) table[b] = (int32_t)(blocks - 1 - b);
    uint16_t *kv = bf16_array(blocks * block * 2 * kv_heads * head_dim, 2.0f, 0.0f);
    uint16_t *q = bf16_array(rows * heads * head_dim, 2.0f, 0.0f), *o = malloc(rows * heads * head_dim * 2);
    check(row_attention(q, kv, table, starts, positions, rows, heads, kv_heads, head_dim, block,
                        1.0f / (float)(1 << 3), o, THREADS), name);
    emit(name, o, rows * heads * head_dim * 2);
    free(table); free(starts); free(kv); free(q); free(o);
}

/* Two layers (Q4/Q8/Q8K/bf16 in two orders, gate_up and down of different forms as in a mixed model), two
 * sequences at positions 5 and 70 with their earlier keys in the cache: the hidden rows after the stack, and
 * the cache with the new keys written. */
static void decode(void) {
    enum { LAYERS = 2, ROWS = 2, DIM = 64, HEADS = 2, KV_HEADS = 1, HEAD_DIM = 32, INTER = 128, BLOCK = 16 };
    const int64_t width = (HEADS + 2 * KV_HEADS) * HEAD_DIM, layer_slots = 8 * BLOCK;
    const int32_t forms[LAYERS * 4] = {4, 8, 16, 9, 5, 9, 8, 4};  /* qkv, o, gate_up, down per layer */
    const void *pointers[LAYERS * 6];
    for (int l = 0; l < LAYERS; l++) {
        const int32_t *f = forms + 4 * l;
        pointers[6 * l + 0] = bf16_array(DIM, 0.25f, 1.0f);
        pointers[6 * l + 1] = packed(f[0], width, DIM);
        pointers[6 * l + 2] = packed(f[1], DIM, HEADS * HEAD_DIM);
        pointers[6 * l + 3] = bf16_array(DIM, 0.25f, 1.0f);
        pointers[6 * l + 4] = packed(f[2], 2 * INTER, DIM);
        pointers[6 * l + 5] = packed(f[3], DIM, INTER);
    }
    const int32_t tables[6] = {7, 0, 3, 6, 1, 5};  /* sequence 0: block 7; sequence 1: blocks 0, 3, 6, 1, 5 */
    const int64_t starts[ROWS] = {0, 1}, positions[ROWS] = {5, 70};
    const int64_t slots[ROWS] = {7 * BLOCK + 5, 5 * BLOCK + 70 % BLOCK};
    float *hidden = f32_array(ROWS * DIM, 1.0f);
    uint16_t *cos = bf16_array(ROWS * HEAD_DIM, 1.0f, 0.0f), *sin = bf16_array(ROWS * HEAD_DIM, 1.0f, 0.0f);
    uint16_t *kv = bf16_array(LAYERS * layer_slots * 2 * KV_HEADS * HEAD_DIM, 2.0f, 0.0f);
    check(decode_layers(hidden, ROWS, DIM, LAYERS, pointers, forms, 1e-5f, HEADS, KV_HEADS, HEAD_DIM, INTER, cos,
                        sin, kv, layer_slots, slots, tables, starts, positions, BLOCK, 0.1767766952966369f,
                        row_attention, write_kv, THREADS), "decode_layers");
    emit("decode_layers_hidden", hidden, ROWS * DIM * 4);
    emit("decode_layers_kv", kv, LAYERS * layer_slots * 2 * KV_HEADS * HEAD_DIM * 2);
    for (int i = 0; i < LAYERS * 6; i++) free((void *)pointers[i]);
    free(hidden); free(cos); free(sin); free(kv);
}

int main(int argc, char **argv) {
    if (argc != 2 || !(out_file = fopen(argv[1], "wb"))) {
        fprintf(stderr, "usage: %s OUTPUT (the outputs' bytes)\n", argv[0]);
        return 2;
    }
    fprintf(stderr, "simd level: %s\n", HEARTH_SIMD_LEVEL);
    linears();
    norm_and_silu();
    const int64_t grouped[4] = {0, 63, 64, 150}, wide[2] = {1, 200}, odd[2] = {31, 100};
    attention("attention_g2_d64_b16", 4, 2, 64, 16, grouped, 4);
    attention("attention_g8_d128_b64", 8, 1, 128, 64, wide, 2);
    attention("attention_g3_d96_b32", 6, 2, 96, 32, odd, 2);  /* no specialized shape */
    decode();
    primitives(next, emit);
    return fclose(out_file) != 0 || failures != 0;
}
