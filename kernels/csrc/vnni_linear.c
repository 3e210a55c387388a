/* 4-bit weights (GGUF's Q4_1 form, w = d q + m per block of 32 inputs; q4_linear) and 8-bit ones (Q8_0,
 * w = d q; q8_linear) times bf16 activations quantized to 16 bits per block of 32,
 * on AVX512-VNNI. Built and loaded by kernels/vnni_linear.py, which documents the packed layouts.
 *
 * Activations: x16 = round(x * 32639 / max|x|) per block, split into two signed bytes x16 = 256 hi + lo
 * (hi in -127..127, lo in -128..127), so that `vpdpbusd` (unsigned weight bytes times signed activation
 * bytes) gives each block's exact integer dot product as 256 dot(q, hi) + dot(q, lo). A block's float
 * contribution is then d dx dot + m dx sum(x16), accumulated in float32, blocks in order.
 *
 * Every output element is computed by one thread in that fixed order whatever the number of rows or
 * threads: a row's result does not depend on the other rows of the call. */
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>

#define ROWS_PER_PASS 8
#define BLOCK_BYTES 320
#define Q8_BLOCK_BYTES 544
#define PREFETCH_BLOCKS 8
/* 256 * 127 + 127: the largest x16 whose high byte stays within -127..127 under round-half-up. */
#define X16_MAX 32639.0f

static inline __m512 bf16x16_to_f32(const uint16_t *src) {
    __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)src));
    return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}

/* x [k] bf16 -> hi, lo [k] int8; dx [k / 32] the block's scale, sum [k / 32] sum(x16), exact. */
static void quantize_row(const uint16_t *x, int64_t k, int8_t *hi, int8_t *lo, float *dx, int32_t *sum) {
    for (int64_t b = 0; b < k / 32; b++) {
        __m512 first = bf16x16_to_f32(x + b * 32), second = bf16x16_to_f32(x + b * 32 + 16);
        float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(first), _mm512_abs_ps(second)));
        float inv = amax > 0.0f ? X16_MAX / amax : 0.0f;
        /* Round to nearest even (the default MXCSR mode). */
        __m512i q[2] = {_mm512_cvtps_epi32(_mm512_mul_ps(first, _mm512_set1_ps(inv))),
                        _mm512_cvtps_epi32(_mm512_mul_ps(second, _mm512_set1_ps(inv)))};
        for (int half = 0; half < 2; half++) {
            q[half] = _mm512_max_epi32(_mm512_min_epi32(q[half], _mm512_set1_epi32(32639)), _mm512_set1_epi32(-32639));
            __m512i high = _mm512_srai_epi32(_mm512_add_epi32(q[half], _mm512_set1_epi32(128)), 8);
            __m512i low = _mm512_sub_epi32(q[half], _mm512_slli_epi32(high, 8));
            _mm_storeu_si128((__m128i *)(hi + b * 32 + half * 16), _mm512_cvtepi32_epi8(high));
            _mm_storeu_si128((__m128i *)(lo + b * 32 + half * 16), _mm512_cvtepi32_epi8(low));
        }
        dx[b] = amax / X16_MAX;
        sum[b] = _mm512_reduce_add_epi32(_mm512_add_epi32(q[0], q[1]));
    }
}

static inline __m512i broadcast4(const int8_t *src) {
    int32_t four;
    __builtin_memcpy(&four, src, 4);
    return _mm512_set1_epi32(four);
}

/* A call's activations, quantized: per row, hi then lo bytes [2][k]; per row and block, dx and sum(x16). */
struct activations {
    int8_t *bytes;
    float *dx;
    int32_t *sum;
};

static int allocate(struct activations *a, int64_t rows, int64_t k) {
    a->bytes = malloc(rows * k * 2);
    a->dx = malloc(rows * (k / 32) * sizeof(float));
    a->sum = malloc(rows * (k / 32) * sizeof(int32_t));
    return a->bytes && a->dx && a->sum;
}

static void release(struct activations *a) {
    free(a->bytes); free(a->dx); free(a->sum);
}

/* Inside a parallel region: each thread quantizes its share of rows. */
static void quantize_rows(const uint16_t *x, int64_t rows, int64_t k, const struct activations *a) {
    #pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; r++)
        quantize_row(x + r * k, k, a->bytes + r * 2 * k, a->bytes + r * 2 * k + k, a->dx + r * (k / 32),
                     a->sum + r * (k / 32));
}

/* 256 dot(w, hi) + dot(w, lo) for one block of row r: quad[s] holds the 16 outputs' weight bytes for inputs
 * 32 b + 4 s .. + 3. Exact in int32 for both weight forms (bounds at each caller). */
static inline __m512i block_dot(const __m512i quad[8], const struct activations *a, int64_t r, int64_t k, int64_t b) {
    const int8_t *hi = a->bytes + r * 2 * k + b * 32, *lo = hi + k;
    __m512i dot_hi = _mm512_setzero_si512(), dot_lo = _mm512_setzero_si512();
    for (int s = 0; s < 8; s++) {
        dot_hi = _mm512_dpbusd_epi32(dot_hi, quad[s], broadcast4(hi + 4 * s));
        dot_lo = _mm512_dpbusd_epi32(dot_lo, quad[s], broadcast4(lo + 4 * s));
    }
    return _mm512_add_epi32(_mm512_slli_epi32(dot_hi, 8), dot_lo);
}

static inline void store(void *out, int64_t offset, __m512 y, int out_is_float32) {
    if (out_is_float32)
        _mm512_storeu_ps((float *)out + offset, y);
    else
        _mm256_storeu_si256((__m256i *)((uint16_t *)out + offset), (__m256i)_mm512_cvtneps_pbh(y));
}

/* A tile's records are one stream: fetch PREFETCH_BLOCKS ahead (past the tile's end it reads the next
 * tile's, which this thread computes next under a static schedule). */
static inline void prefetch(const uint8_t *record, int record_bytes) {
    for (int line = 0; line < record_bytes; line += 64)
        _mm_prefetch((const char *)(record + PREFETCH_BLOCKS * record_bytes + line), _MM_HINT_T0);
}

/* out [rows, n] = x W^T (bf16, or float32 when out_is_float32) for x [rows, k] bf16 and packed weights
 * w [n / 16][k / 32] records of BLOCK_BYTES: [4][16][4] nibble pairs, then d [16] and m [16] float16, on
 * num_threads threads (torch's count: the calling thread's OpenMP default may differ). Returns nonzero
 * when out of memory. */
int q4_linear(const uint16_t *x, int64_t rows, int64_t k, const uint8_t *w, int64_t n, void *out,
              int out_is_float32, int num_threads) {
    const int64_t blocks = k / 32, tiles = n / 16;
    const __m512i low_nibbles = _mm512_set1_epi8(0x0F);
    struct activations a;
    if (!allocate(&a, rows, k)) {
        release(&a);
        return 1;
    }
    #pragma omp parallel num_threads(num_threads)
    {
    quantize_rows(x, rows, k, &a);
    #pragma omp for schedule(static)
    for (int64_t t = 0; t < tiles; t++) {
        const uint8_t *wt = w + t * blocks * BLOCK_BYTES;
        for (int64_t r0 = 0; r0 < rows; r0 += ROWS_PER_PASS) {
            const int64_t count = rows - r0 < ROWS_PER_PASS ? rows - r0 : ROWS_PER_PASS;
            __m512 y[ROWS_PER_PASS];
            for (int i = 0; i < ROWS_PER_PASS; i++) y[i] = _mm512_setzero_ps();
            for (int64_t b = 0; b < blocks; b++) {
                const uint8_t *record = wt + b * BLOCK_BYTES;
                if (r0 == 0)
                    prefetch(record, BLOCK_BYTES);
                __m512i quad[8];
                for (int s = 0; s < 4; s++) {
                    __m512i packed = _mm512_loadu_si512(record + s * 64);
                    quad[s] = _mm512_and_si512(packed, low_nibbles);
                    quad[s + 4] = _mm512_and_si512(_mm512_srli_epi16(packed, 4), low_nibbles);
                }
                const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(record + 256)));
                const __m512 m = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(record + 288)));
                for (int64_t i = 0; i < count; i++) {
                    const int64_t rb = (r0 + i) * blocks + b;
                    /* Exact: |dot| <= 32 * 15 * 32639 < 2^31. */
                    __m512i dot = block_dot(quad, &a, r0 + i, k, b);
                    __m512 scale = _mm512_mul_ps(d, _mm512_set1_ps(a.dx[rb]));
                    y[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, y[i]);
                    y[i] = _mm512_fmadd_ps(m, _mm512_set1_ps(a.dx[rb] * (float)a.sum[rb]), y[i]);
                }
            }
            for (int64_t i = 0; i < count; i++)
                store(out, (r0 + i) * n + t * 16, y[i], out_is_float32);
        }
    }
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
    const int64_t blocks = k / 32, tiles = n / 16;
    struct activations a;
    if (!allocate(&a, rows, k)) {
        release(&a);
        return 1;
    }
    #pragma omp parallel num_threads(num_threads)
    {
    quantize_rows(x, rows, k, &a);
    #pragma omp for schedule(static)
    for (int64_t t = 0; t < tiles; t++) {
        const uint8_t *wt = w + t * blocks * Q8_BLOCK_BYTES;
        for (int64_t r0 = 0; r0 < rows; r0 += ROWS_PER_PASS) {
            const int64_t count = rows - r0 < ROWS_PER_PASS ? rows - r0 : ROWS_PER_PASS;
            __m512 y[ROWS_PER_PASS];
            for (int i = 0; i < ROWS_PER_PASS; i++) y[i] = _mm512_setzero_ps();
            for (int64_t b = 0; b < blocks; b++) {
                const uint8_t *record = wt + b * Q8_BLOCK_BYTES;
                if (r0 == 0)
                    prefetch(record, Q8_BLOCK_BYTES);
                __m512i quad[8];
                for (int s = 0; s < 8; s++)
                    quad[s] = _mm512_loadu_si512(record + s * 64);
                const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(record + 512)));
                for (int64_t i = 0; i < count; i++) {
                    const int64_t rb = (r0 + i) * blocks + b;
                    /* Exact: |256 dot_hi| <= 256 * 32 * 255 * 127, |dot_lo| <= 32 * 255 * 128,
                     * |128 sum| <= 128 * 32 * 32639: under 2^31 together. */
                    __m512i dot = _mm512_sub_epi32(block_dot(quad, &a, r0 + i, k, b), _mm512_set1_epi32(128 * a.sum[rb]));
                    __m512 scale = _mm512_mul_ps(d, _mm512_set1_ps(a.dx[rb]));
                    y[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, y[i]);
                }
            }
            for (int64_t i = 0; i < count; i++)
                store(out, (r0 + i) * n + t * 16, y[i], out_is_float32);
        }
    }
    }
    release(&a);
    return 0;
}
