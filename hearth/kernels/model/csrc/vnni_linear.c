/* 4-bit weights (GGUF's Q4_1 form, w = d q + m per block of 32 inputs; q4_linear) and 8-bit ones (Q8_0,
 * w = d q; q8_linear) times bf16 activations quantized to 16 bits per block of 32,
 * on simd.h's primitives (vpdpbusd at avx512, its exact AVX2 equivalent at avx2). Built and loaded by
 * hearth/kernels/model/vnni_linear.py, which documents the packed layouts.
 *
 * Activations: x16 = round(x * 32639 / max|x|) per block, split into two signed bytes x16 = 256 hi + lo
 * (hi in -127..127, lo in -128..127), so that `vpdpbusd` (unsigned weight bytes times signed activation
 * bytes) gives each block's exact integer dot product as 256 dot(q, hi) + dot(q, lo). A block's float
 * contribution is then d dx dot + m dx sum(x16), accumulated in float32, blocks in order.
 *
 * Every output element is computed by one thread in that fixed order whatever the number of rows or
 * threads: a row's result does not depend on the other rows of the call.
 *
 * On a CPU with AMX-INT8 (built with -mamx-tile -mamx-int8), each full group of 16 rows takes its blocks'
 * integer dot products from tile instructions instead (16 rows x 16 outputs x 32 inputs in one `tdpbssd`),
 * and applies the same float32 operations in the same order: bit-identical to the VNNI path, so which path
 * a row takes (its group's place in the call) cannot change its result. */
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>

#include "simd.h"

#define ROWS_PER_PASS 8
#define BLOCK_BYTES 320
#define Q8_BLOCK_BYTES 544
#define Q8K_BLOCK_BYTES 608
#define Q5_BLOCK_BYTES 384
#define PREFETCH_BLOCKS 8
/* 256 * 127 + 127: the largest x16 whose high byte stays within -127..127 under round-half-up. */
#define X16_MAX 32639.0f

/* x [k] bf16 -> hi, lo [k] int8 and x16 = 256 hi + lo [k] int16; dx [k / 32] the block's scale, sum [k / 32] sum(x16)
 * and sum16 [k / 32] the sum of its first 16, exact. */
static void quantize_row(const uint16_t *x, int64_t k, int8_t *hi, int8_t *lo, int16_t *x16, float *dx,
                         int32_t *sum, int32_t *sum16) {
    for (int64_t b = 0; b < k / 32; b++) {
        vf first = vf_load_bf16(x + b * 32), second = vf_load_bf16(x + b * 32 + 16);
        float amax = vf_reduce_max(vf_max(vf_abs(first), vf_abs(second)));
        float inv = amax > 0.0f ? X16_MAX / amax : 0.0f;
        /* Round to nearest even (the default MXCSR mode). */
        vi q[2] = {vf_to_vi(vf_mul(first, vf_set1(inv))),
                        vf_to_vi(vf_mul(second, vf_set1(inv)))};
        for (int half = 0; half < 2; half++) {
            q[half] = vi_max(vi_min(q[half], vi_set1(32639)), vi_set1(-32639));
            vi high = vi_srai(vi_add(q[half], vi_set1(128)), 8);
            vi low = vi_sub(q[half], vi_slli(high, 8));
            vi_store_i8(hi + b * 32 + half * 16, high);
            vi_store_i8(lo + b * 32 + half * 16, low);
            vi_store_i16(x16 + b * 32 + half * 16, q[half]);
        }
        dx[b] = amax / X16_MAX;
        sum[b] = vi_reduce_add(vi_add(q[0], q[1]));
        sum16[b] = vi_reduce_add(q[0]);
    }
}


/* A call's activations, quantized: per row, hi then lo bytes [2][k] and x16 [k]; per row and block, dx,
 * sum(x16) and the sum of its first 16 (for Q8K records' half-block scales). */
struct activations {
    int8_t *bytes;
    int16_t *x16;
    float *dx;
    int32_t *sum;
    int32_t *sum16;
    uint8_t *unpacked; /* per thread, a tile's Q4 weights as bytes [k / 32][512] for AMX; NULL when unused */
};

static int allocate(struct activations *a, int64_t rows, int64_t k, int64_t unpacked_bytes) {
    a->bytes = malloc(rows * k * 2);
    a->x16 = malloc(rows * k * sizeof(int16_t));
    a->dx = malloc(rows * (k / 32) * sizeof(float));
    a->sum = malloc(rows * (k / 32) * sizeof(int32_t));
    a->sum16 = malloc(rows * (k / 32) * sizeof(int32_t));
    a->unpacked = unpacked_bytes ? aligned_alloc(64, unpacked_bytes) : NULL;
    return a->bytes && a->x16 && a->dx && a->sum && a->sum16 && (a->unpacked || !unpacked_bytes);
}

static void release(struct activations *a) {
    free(a->bytes); free(a->x16); free(a->dx); free(a->sum); free(a->sum16); free(a->unpacked);
}

/* Inside a parallel region: each thread quantizes its share of rows. */
static void quantize_rows(const uint16_t *x, int64_t rows, int64_t k, const struct activations *a) {
    #pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; r++)
        quantize_row(x + r * k, k, a->bytes + r * 2 * k, a->bytes + r * 2 * k + k, a->x16 + r * k,
                     a->dx + r * (k / 32), a->sum + r * (k / 32), a->sum16 + r * (k / 32));
}

/* 256 dot(w, hi) + dot(w, lo) for one Q4 block of row r: quad[s] holds the 16 outputs' nibbles for inputs
 * 32 b + 4 s .. + 3. Exact in int32 (bound at the caller). Q8 blocks go through vq8_dot. */
static inline vi block_dot(const vi quad[8], const struct activations *a, int64_t r, int64_t k, int64_t b) {
    const int8_t *hi = a->bytes + r * 2 * k + b * 32, *lo = hi + k;
    return vi_add(vi_slli(vi_dot32_u4s8(quad, hi), 8), vi_dot32_u4s8(quad, lo));
}

/* A tile's records are one stream: fetch PREFETCH_BLOCKS ahead (past the tile's end it reads the next
 * tile's, which this thread computes next under a static schedule). */
static inline void prefetch(const uint8_t *record, int record_bytes) {
    for (int line = 0; line < record_bytes; line += 64)
        hearth_prefetch(record + PREFETCH_BLOCKS * record_bytes + line);
}

/* Rows [0, amx_rows) of a call go through the AMX path: its full groups of 16, when tiles can run here. */
#ifdef __AMX_INT8__
#include "amx_tiles.h"

#define AMX_ROWS 16
static int amx_is_enabled;

/* Turns the AMX path on (asking Linux for the tile state, which oneDNN also asks for; granting it twice is
 * harmless) or off. Returns whether it is on. */
int set_amx(int wanted) {
    amx_is_enabled = wanted && request_tile_state();
    return amx_is_enabled;
}

static int64_t amx_row_count(int64_t rows) {
    return amx_is_enabled ? rows - rows % AMX_ROWS : 0;
}

/* Per thread. tmm0..3: two blocks' int32 dots of the high and low activation bytes [16 rows][16 outputs];
 * tmm4, tmm5: those bytes [16 rows][32 inputs]; tmm6: the block's weights [8][16 outputs][4 inputs]. */
static void configure_tiles(void) {
    struct tile_config config = {0};
    config.palette_id = 1;
    for (int tile = 0; tile < 6; tile++) {
        config.rows[tile] = AMX_ROWS;
        config.colsb[tile] = tile < 4 ? 64 : 32;
    }
    config.rows[6] = 8;
    config.colsb[6] = 64;
    _tile_loadconfig(&config);
}

static void release_tiles(void) {
    _tile_release();
}

/* A Q4 tile's nibble pairs as bytes, [k / 32][8][16][4]: the vpdpbusd quads, laid out as a tile operand. */
static void unpack_q4_tile(const uint8_t *wt, int64_t blocks, uint8_t *unpacked) {
    const __m512i low_nibbles = _mm512_set1_epi8(0x0F);
    for (int64_t b = 0; b < blocks; b++)
        for (int s = 0; s < 4; s++) {
            __m512i packed = _mm512_loadu_si512(wt + b * BLOCK_BYTES + s * 64);
            _mm512_store_si512(unpacked + b * 512 + s * 64, _mm512_and_si512(packed, low_nibbles));
            _mm512_store_si512(unpacked + b * 512 + (s + 4) * 64,
                               _mm512_and_si512(_mm512_srli_epi16(packed, 4), low_nibbles));
        }
}

/* The tile ops of block b into the dot tiles (hi, lo) = (0, 1) or (2, 3), from the operand tiles 4..6.
 * Immediates: one macro per pair. */
#define AMX_BLOCK(hi_tile, lo_tile, is_q8, x_hi, k, w)          \
    do {                                                         \
        _tile_zero(hi_tile);                                     \
        _tile_zero(lo_tile);                                     \
        _tile_loadd(4, (x_hi), 2 * (k));                         \
        _tile_loadd(5, (x_hi) + (k), 2 * (k));                   \
        _tile_loadd(6, (w), 64);                                 \
        if (is_q8) {                                             \
            _tile_dpbsud(hi_tile, 4, 6);                         \
            _tile_dpbsud(lo_tile, 5, 6);                         \
        } else {                                                 \
            _tile_dpbssd(hi_tile, 4, 6);                         \
            _tile_dpbssd(lo_tile, 5, 6);                         \
        }                                                        \
    } while (0)

/* Block b's dots [2][16 rows][16 outputs] into y [16 rows]: the same int32 as block_dot's, then the same
 * float32 operations as the VNNI path's. */
static inline void amx_accumulate(__m512 y[AMX_ROWS], int32_t dots[2][AMX_ROWS][16], const uint8_t *record,
                                  int is_q8, const struct activations *a, int64_t r0, int64_t blocks, int64_t b) {
    const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(record + (is_q8 ? 512 : 256))));
    const __m512 m = is_q8 ? _mm512_setzero_ps() : _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(record + 288)));
    for (int i = 0; i < AMX_ROWS; i++) {
        const int64_t rb = (r0 + i) * blocks + b;
        __m512i dot = _mm512_add_epi32(_mm512_slli_epi32(_mm512_load_si512(dots[0][i]), 8), _mm512_load_si512(dots[1][i]));
        if (is_q8)
            dot = _mm512_sub_epi32(dot, _mm512_set1_epi32(128 * a->sum[rb]));
        __m512 scale = _mm512_mul_ps(d, _mm512_set1_ps(a->dx[rb]));
        y[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, y[i]);
        if (!is_q8)
            y[i] = _mm512_fmadd_ps(m, _mm512_set1_ps(a->dx[rb] * (float)a->sum[rb]), y[i]);
    }
}

/* Rows r0 .. r0 + 15, outputs 16 t .. 16 t + 15. weights: the block's 512 weight bytes every weight_stride
 * bytes (signed for Q4, q + 128 unsigned for Q8); records: the packed records, for the scales. Block b + 1's
 * tile ops are issued before block b's float work, into the other pair of dot tiles, so the two overlap. */
static inline void amx_pass(const uint8_t *weights, int64_t weight_stride, const uint8_t *records, int is_q8,
                            const struct activations *a, int64_t r0, int64_t k, int64_t n, int64_t t, void *out,
                            int out_is_float32) {
    const int64_t blocks = k / 32, record_bytes = is_q8 ? Q8_BLOCK_BYTES : BLOCK_BYTES;
    const int8_t *x_hi = a->bytes + r0 * 2 * k;
    int32_t dots[2][AMX_ROWS][16] __attribute__((aligned(64)));
    __m512 y[AMX_ROWS];
    for (int i = 0; i < AMX_ROWS; i++) y[i] = _mm512_setzero_ps();
    AMX_BLOCK(0, 1, is_q8, x_hi, k, weights);
    for (int64_t b = 0; b < blocks; b += 2) {
        if (b + 1 < blocks)
            AMX_BLOCK(2, 3, is_q8, x_hi + (b + 1) * 32, k, weights + (b + 1) * weight_stride);
        _tile_stored(0, dots[0], 64);
        _tile_stored(1, dots[1], 64);
        amx_accumulate(y, dots, records + b * record_bytes, is_q8, a, r0, blocks, b);
        if (b + 1 >= blocks)
            break;
        if (b + 2 < blocks)
            AMX_BLOCK(0, 1, is_q8, x_hi + (b + 2) * 32, k, weights + (b + 2) * weight_stride);
        _tile_stored(2, dots[0], 64);
        _tile_stored(3, dots[1], 64);
        amx_accumulate(y, dots, records + (b + 1) * record_bytes, is_q8, a, r0, blocks, b + 1);
    }
    for (int i = 0; i < AMX_ROWS; i++)
        store_f32_or_bf16(out, (r0 + i) * n + t * 16, y[i], out_is_float32);
}
#else
#define AMX_ROWS 16
int set_amx(int wanted) { (void)wanted; return 0; }
static int64_t amx_row_count(int64_t rows) { (void)rows; return 0; }
static void configure_tiles(void) {}
static void release_tiles(void) {}
static void unpack_q4_tile(const uint8_t *wt, int64_t blocks, uint8_t *unpacked) { (void)wt; (void)blocks; (void)unpacked; }
static inline void amx_pass(const uint8_t *weights, int64_t weight_stride, const uint8_t *records, int is_q8,
                            const struct activations *a, int64_t r0, int64_t k, int64_t n, int64_t t, void *out,
                            int out_is_float32) {
    (void)weights; (void)weight_stride; (void)records; (void)is_q8; (void)a; (void)r0; (void)k; (void)n; (void)t;
    (void)out; (void)out_is_float32;
}
#endif

/* out [rows, n] = x W^T (bf16, or float32 when out_is_float32) for x [rows, k] bf16 and packed weights
 * w [n / 16][k / 32] records of BLOCK_BYTES: [4][16][4] nibble pairs, then d [16] and m [16] float16, on
 * num_threads threads (torch's count: the calling thread's OpenMP default may differ). Returns nonzero
 * when out of memory. */
int q4_linear(const uint16_t *x, int64_t rows, int64_t k, const uint8_t *w, int64_t n, void *out,
              int out_is_float32, int num_threads) {
    const int64_t blocks = k / 32, tiles = n / 16, amx_rows = amx_row_count(rows);
    const vi low_nibbles = vi_set1_epi8(0x0F);
    struct activations a;
    if (!allocate(&a, rows, k, amx_rows ? num_threads * blocks * 512 : 0)) {
        release(&a);
        return 1;
    }
    #pragma omp parallel num_threads(num_threads)
    {
    quantize_rows(x, rows, k, &a);
    if (amx_rows)
        configure_tiles();
    #pragma omp for schedule(static)
    for (int64_t t = 0; t < tiles; t++) {
        const uint8_t *wt = w + t * blocks * BLOCK_BYTES;
        if (amx_rows) {
            uint8_t *unpacked = a.unpacked + omp_get_thread_num() * blocks * 512;
            unpack_q4_tile(wt, blocks, unpacked);
            for (int64_t r0 = 0; r0 < amx_rows; r0 += AMX_ROWS)
                amx_pass(unpacked, 512, wt, 0, &a, r0, k, n, t, out, out_is_float32);
        }
        for (int64_t r0 = amx_rows; r0 < rows; r0 += ROWS_PER_PASS) {
            const int64_t count = rows - r0 < ROWS_PER_PASS ? rows - r0 : ROWS_PER_PASS;
            vf y[ROWS_PER_PASS];
            for (int i = 0; i < ROWS_PER_PASS; i++) y[i] = vf_zero();
            for (int64_t b = 0; b < blocks; b++) {
                const uint8_t *record = wt + b * BLOCK_BYTES;
                if (r0 == amx_rows)
                    prefetch(record, BLOCK_BYTES);
                vi quad[8];
                for (int s = 0; s < 4; s++) {
                    vi packed = vi_load(record + s * 64);
                    quad[s] = vi_and(packed, low_nibbles);
                    quad[s + 4] = vi_and(vi_srli16(packed, 4), low_nibbles);
                }
                const vf d = vf_load_f16(record + 256);
                const vf m = vf_load_f16(record + 288);
                for (int64_t i = 0; i < count; i++) {
                    const int64_t rb = (r0 + i) * blocks + b;
                    /* Exact: |dot| <= 32 * 15 * 32639 < 2^31. */
                    vi dot = block_dot(quad, &a, r0 + i, k, b);
                    vf scale = vf_mul(d, vf_set1(a.dx[rb]));
                    y[i] = vf_fmadd(vi_to_vf(dot), scale, y[i]);
                    y[i] = vf_fmadd(m, vf_set1(a.dx[rb] * (float)a.sum[rb]), y[i]);
                }
            }
            for (int64_t i = 0; i < count; i++)
                store_f32_or_bf16(out, (r0 + i) * n + t * 16, y[i], out_is_float32);
        }
    }
    if (amx_rows)
        release_tiles();
    }
    release(&a);
    return 0;
}

/* out [rows, n] = x W^T for 8-bit weights (GGUF's Q8_0 form, w = d q per block of 32 inputs, q in
 * -127..127) packed as w [n / 16][k / 32] records of Q8_BLOCK_BYTES: [8][16][4] bytes q + 128 (unsigned, for
 * vpdpbusd), then d [16] float16. The + 128 comes back out exactly: dot(q, x16) = dot(q + 128, x16) -
 * 128 sum(x16). Same threads and order as q4_linear. */
int q8_linear(const uint16_t *x, int64_t rows, int64_t k, const uint8_t *w, int64_t n, void *out,
              int out_is_float32, int num_threads) {
    const int64_t blocks = k / 32, tiles = n / 16, amx_rows = amx_row_count(rows);
    struct activations a;
    if (!allocate(&a, rows, k, 0)) {
        release(&a);
        return 1;
    }
    #pragma omp parallel num_threads(num_threads)
    {
    quantize_rows(x, rows, k, &a);
    if (amx_rows)
        configure_tiles();
    #pragma omp for schedule(static)
    for (int64_t t = 0; t < tiles; t++) {
        const uint8_t *wt = w + t * blocks * Q8_BLOCK_BYTES;
        for (int64_t r0 = 0; r0 < amx_rows; r0 += AMX_ROWS)
            amx_pass(wt, Q8_BLOCK_BYTES, wt, 1, &a, r0, k, n, t, out, out_is_float32);
        for (int64_t r0 = amx_rows; r0 < rows; r0 += ROWS_PER_PASS) {
            const int64_t count = rows - r0 < ROWS_PER_PASS ? rows - r0 : ROWS_PER_PASS;
            vf y[ROWS_PER_PASS];
            for (int i = 0; i < ROWS_PER_PASS; i++) y[i] = vf_zero();
            for (int64_t b = 0; b < blocks; b++) {
                const uint8_t *record = wt + b * Q8_BLOCK_BYTES;
                if (r0 == amx_rows)
                    prefetch(record, Q8_BLOCK_BYTES);
                vq8block block;
                vq8_prepare(&block, record);
                const vf d = vf_load_f16(record + 512);
                for (int64_t i = 0; i < count; i++) {
                    const int64_t rb = (r0 + i) * blocks + b;
                    /* Exact: |256 dot_hi| <= 256 * 32 * 255 * 127, |dot_lo| <= 32 * 255 * 128,
                     * |128 sum| <= 128 * 32 * 32639: under 2^31 together. */
                    const int8_t *hi = a.bytes + (r0 + i) * 2 * k + b * 32;
                    vi dot = vi_sub(vq8_dot(&block, hi, hi + k, a.x16 + (r0 + i) * k + b * 32),
                                    vi_set1(128 * a.sum[rb]));
                    vf scale = vf_mul(d, vf_set1(a.dx[rb]));
                    y[i] = vf_fmadd(vi_to_vf(dot), scale, y[i]);
                }
            }
            for (int64_t i = 0; i < count; i++)
                store_f32_or_bf16(out, (r0 + i) * n + t * 16, y[i], out_is_float32);
        }
    }
    if (amx_rows)
        release_tiles();
    }
    release(&a);
    return 0;
}

/* out [rows, n] = x W^T for 8-bit weights with a scale per 16 inputs and a minimum per 32 (the form every GGUF
 * K-quant and Q5_1 block takes: w = s_h q + m for inputs 16 h .. 16 h + 15 of a block, q in -128..127; Q6_K's
 * q - 32 with m = 0, Q5_K's and Q5_1's q with their minimum), packed as w [n / 16][k / 32] records of
 * Q8K_BLOCK_BYTES: [8][16][4] bytes q + 128 as q8_linear's, then s [2][16] and m [16] float16. Per row and
 * block, in this order: dot_0 s_0 dx + dot_1 s_1 dx + m dx sum(x16), dot_h = dot(q, x16) over half h (the + 128
 * taken back out with the half's activation sum), exact. No AMX path: every row takes this one, so a row's
 * result is the same at any row count. Same threads and order as q4_linear otherwise. */
int q8k_linear(const uint16_t *x, int64_t rows, int64_t k, const uint8_t *w, int64_t n, void *out,
               int out_is_float32, int num_threads) {
    const int64_t blocks = k / 32, tiles = n / 16;
    struct activations a;
    if (!allocate(&a, rows, k, 0)) {
        release(&a);
        return 1;
    }
    #pragma omp parallel num_threads(num_threads)
    {
    quantize_rows(x, rows, k, &a);
    #pragma omp for schedule(static)
    for (int64_t t = 0; t < tiles; t++) {
        const uint8_t *wt = w + t * blocks * Q8K_BLOCK_BYTES;
        for (int64_t r0 = 0; r0 < rows; r0 += ROWS_PER_PASS) {
            const int64_t count = rows - r0 < ROWS_PER_PASS ? rows - r0 : ROWS_PER_PASS;
            vf y[ROWS_PER_PASS];
            for (int i = 0; i < ROWS_PER_PASS; i++) y[i] = vf_zero();
            for (int64_t b = 0; b < blocks; b++) {
                const uint8_t *record = wt + b * Q8K_BLOCK_BYTES;
                if (r0 == 0)
                    prefetch(record, Q8K_BLOCK_BYTES);
                vq8block block;
                vq8_prepare(&block, record);
                const vf s0 = vf_load_f16(record + 512), s1 = vf_load_f16(record + 544);
                const vf m = vf_load_f16(record + 576);
                for (int64_t i = 0; i < count; i++) {
                    const int64_t rb = (r0 + i) * blocks + b;
                    const int8_t *hi = a.bytes + (r0 + i) * 2 * k + b * 32;
                    vi half[2];
                    vq8_dot_halves(&block, hi, hi + k, a.x16 + (r0 + i) * k + b * 32, half);
                    /* Exact: |dot_h| <= 16 * 255 * 32639 + 128 * 16 * 32639 < 2^31. */
                    const vi dot0 = vi_sub(half[0], vi_set1(128 * a.sum16[rb]));
                    const vi dot1 = vi_sub(half[1], vi_set1(128 * (a.sum[rb] - a.sum16[rb])));
                    y[i] = vf_fmadd(vi_to_vf(dot0), vf_mul(s0, vf_set1(a.dx[rb])), y[i]);
                    y[i] = vf_fmadd(vi_to_vf(dot1), vf_mul(s1, vf_set1(a.dx[rb])), y[i]);
                    y[i] = vf_fmadd(m, vf_set1(a.dx[rb] * (float)a.sum[rb]), y[i]);
                }
            }
            for (int64_t i = 0; i < count; i++)
                store_f32_or_bf16(out, (r0 + i) * n + t * 16, y[i], out_is_float32);
        }
    }
    }
    release(&a);
    return 0;
}

/* A Q5 record's 5-bit q as quads of bytes [8][16][4] (vq8_prepare_quads' operand): Q4's nibble pairs hold q's
 * low 4 bits; in the 64 bytes after them [lane][j], bit s is q's bit 4 at input 4 s + j of that lane (s = quad,
 * 0..7). Moving bit s of each byte to bit 4 is a 32-bit shift by 4 - s, then a mask: no bit of another byte
 * reaches bit 4. */
static inline void q5_unpack(const uint8_t *record, vi quad[8]) {
    const vi low_nibbles = vi_set1_epi8(0x0F), bit4 = vi_set1_epi8(0x10);
    const vi plane = vi_load(record + 256);
    const vi high[8] = {vi_and(vi_slli(plane, 4), bit4), vi_and(vi_slli(plane, 3), bit4),
                        vi_and(vi_slli(plane, 2), bit4), vi_and(vi_slli(plane, 1), bit4), vi_and(plane, bit4),
                        vi_and(vi_srli(plane, 1), bit4), vi_and(vi_srli(plane, 2), bit4),
                        vi_and(vi_srli(plane, 3), bit4)};
    for (int s = 0; s < 4; s++) {
        const vi packed = vi_load(record + s * 64);
        /* Byte sums of at most 15 + 16: no carry between bytes. */
        quad[s] = vi_add(vi_and(packed, low_nibbles), high[s]);
        quad[s + 4] = vi_add(vi_and(vi_srli16(packed, 4), low_nibbles), high[s + 4]);
    }
}

/* out [rows, n] = x W^T for 5-bit weights (w = d q + m per block of 32 inputs, q in 0..31: GGUF's Q5_1 and
 * Q5_K as they are, Q5_0 as q + 16 with m = -16 d) packed as w [n / 16][k / 32] records of Q5_BLOCK_BYTES:
 * q's low nibbles as Q4 records hold them, its fifth bits (q5_unpack), then d [16] and m [16] float16; 6 bits a
 * weight. Each block's dot product is vq8_dot's on the unpacked bytes, exact, then q4_linear's float32
 * operations in its order: for q in 0..15 the result is q4_linear's, bit for bit. No AMX path, so every row
 * takes this one. Same threads and order as q4_linear otherwise. */
int q5_linear(const uint16_t *x, int64_t rows, int64_t k, const uint8_t *w, int64_t n, void *out,
              int out_is_float32, int num_threads) {
    const int64_t blocks = k / 32, tiles = n / 16;
    struct activations a;
    if (!allocate(&a, rows, k, 0)) {
        release(&a);
        return 1;
    }
    #pragma omp parallel num_threads(num_threads)
    {
    quantize_rows(x, rows, k, &a);
    #pragma omp for schedule(static)
    for (int64_t t = 0; t < tiles; t++) {
        const uint8_t *wt = w + t * blocks * Q5_BLOCK_BYTES;
        for (int64_t r0 = 0; r0 < rows; r0 += ROWS_PER_PASS) {
            const int64_t count = rows - r0 < ROWS_PER_PASS ? rows - r0 : ROWS_PER_PASS;
            vf y[ROWS_PER_PASS];
            for (int i = 0; i < ROWS_PER_PASS; i++) y[i] = vf_zero();
            for (int64_t b = 0; b < blocks; b++) {
                const uint8_t *record = wt + b * Q5_BLOCK_BYTES;
                if (r0 == 0)
                    prefetch(record, Q5_BLOCK_BYTES);
                vi quad[8];
                q5_unpack(record, quad);
                vq8block block;
                vq8_prepare_quads(&block, quad);
                const vf d = vf_load_f16(record + 320);
                const vf m = vf_load_f16(record + 352);
                for (int64_t i = 0; i < count; i++) {
                    const int64_t rb = (r0 + i) * blocks + b;
                    const int8_t *hi = a.bytes + (r0 + i) * 2 * k + b * 32;
                    /* Exact: |dot| <= 32 * 31 * 32639 < 2^31. */
                    vi dot = vq8_dot(&block, hi, hi + k, a.x16 + (r0 + i) * k + b * 32);
                    vf scale = vf_mul(d, vf_set1(a.dx[rb]));
                    y[i] = vf_fmadd(vi_to_vf(dot), scale, y[i]);
                    y[i] = vf_fmadd(m, vf_set1(a.dx[rb] * (float)a.sum[rb]), y[i]);
                }
            }
            for (int64_t i = 0; i < count; i++)
                store_f32_or_bf16(out, (r0 + i) * n + t * 16, y[i], out_is_float32);
        }
    }
    }
    release(&a);
    return 0;
}
