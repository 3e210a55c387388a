/* bf16 weights times bf16 activations, float32 accumulation (b16_linear), for the `bf16` weight mode: the
 * same weights as `none`, on the kernels and the one-call decode step the quantized modes use. Built into
 * kernels/model/vnni_linear.py's library (fused_layer.c's `linear` calls it for form 16).
 *
 * Every output element is computed by one thread, inputs in order, whatever the number of rows or threads:
 *   - where the CPU has AMX-BF16, every row goes through tiles (`tdpbf16ps`, 16 rows x 16 outputs x 32
 *     inputs), the call's rows padded with zero rows to whole groups of 16. A tile row's sums depend on that
 *     row alone, so a row's result is the same in any group, at any row count;
 *   - elsewhere, every row goes through `vdpbf16ps`, input pairs in order.
 * The two paths round their sums differently (measured: AMX's tile sums are not a sequence of vdpbf16ps
 * steps), so one machine takes one path for every row: set_amx_bf16 is decided once when the library loads.
 *
 * Packed layout (kernels.model.vnni_linear.pack_b16), one record per 16 outputs (a tile) and 32 inputs (a block):
 * uint8 [n / 16][k / 32][1024] = bf16 [16 input pairs][16 outputs][2], the operand of both instructions. */
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "simd.h"

#define B16_RECORD_BYTES 1024
#define B16_ROWS_PER_PASS 8
/* Records fetched ahead of the one in use: the weights stream from memory once per call. */
#define B16_PREFETCH_RECORDS 4

/* Past a tile's end this reads the next tile's records, which this thread computes next under a static
 * schedule (a prefetch never faults). */
static inline void prefetch_record(const uint8_t *record) {
    for (int line = 0; line < B16_RECORD_BYTES; line += 64)
        hearth_prefetch(record + B16_PREFETCH_RECORDS * B16_RECORD_BYTES + line);
}

/* Outputs 16 t .. 16 t + 15 of every row, on vdpbf16ps: per row, y += w[pair s] x[pair s], pairs in order. */
static void vector_tile(const uint16_t *x, int64_t rows, int64_t k, const uint8_t *wt, int64_t n, int64_t t,
                        void *out, int out_is_float32) {
    const int64_t blocks = k / 32;
    for (int64_t r0 = 0; r0 < rows; r0 += B16_ROWS_PER_PASS) {
        const int64_t count = rows - r0 < B16_ROWS_PER_PASS ? rows - r0 : B16_ROWS_PER_PASS;
        vf y[B16_ROWS_PER_PASS];
        for (int i = 0; i < B16_ROWS_PER_PASS; i++) y[i] = vf_zero();
        for (int64_t b = 0; b < blocks; b++) {
            const uint8_t *record = wt + b * B16_RECORD_BYTES;
            if (r0 == 0)
                prefetch_record(record);
            for (int s = 0; s < 16; s++) {
                const vi w = (vi)vi_load(record + s * 64);
                for (int64_t i = 0; i < count; i++) {
                    int32_t pair;
                    memcpy(&pair, x + (r0 + i) * k + b * 32 + 2 * s, 4);
                    y[i] = vf_dot2_bf16(y[i], w, (vi)vi_set1(pair));
                }
            }
        }
        for (int64_t i = 0; i < count; i++)
            store_f32_or_bf16(out, (r0 + i) * n + t * 16, y[i], out_is_float32);
    }
}

#ifdef __AMX_BF16__
#include "amx_tiles.h"

static int amx_bf16_is_enabled;

/* Turns the AMX path on or off; returns whether it is on. Rows of the two paths differ in their last bits:
 * kernels.model.vnni_linear sets it once when the library loads (tests switch it to reach the other path). */
int set_amx_bf16(int wanted) {
    amx_bf16_is_enabled = wanted && request_tile_state();
    return amx_bf16_is_enabled;
}

/* Per thread. tmm0, tmm1: two row groups' sums [16 rows][16 outputs] float32; tmm2, tmm3: their
 * activations [16 rows][32 inputs]; tmm4: a record [16 pairs][16 outputs][2]. */
static void configure_bf16_tiles(void) {
    struct tile_config config = {0};
    config.palette_id = 1;
    for (int tile = 0; tile < 5; tile++) {
        config.rows[tile] = 16;
        config.colsb[tile] = 64;
    }
    _tile_loadconfig(&config);
}

static void release_bf16_tiles(void) {
    _tile_release();
}

/* Outputs 16 t .. 16 t + 15 of rows [0, rows), from xp [groups * 16][k] (the rows, then zero rows). Two row
 * groups share each record's load. */
static void amx_tile(const uint16_t *xp, int64_t rows, int64_t k, const uint8_t *wt, int64_t n, int64_t t,
                     void *out, int out_is_float32) {
    const int64_t blocks = k / 32, groups = (rows + 15) / 16;
    float sums[2][16][16] __attribute__((aligned(64)));
    for (int64_t g = 0; g < groups; g += 2) {
        const int has_second = g + 1 < groups;
        const uint16_t *first = xp + g * 16 * k, *second = first + 16 * k;
        _tile_zero(0);
        _tile_zero(1);
        for (int64_t b = 0; b < blocks; b++) {
            const uint8_t *record = wt + b * B16_RECORD_BYTES;
            if (g == 0)
                prefetch_record(record);
            _tile_loadd(4, record, 64);
            _tile_loadd(2, first + b * 32, 2 * k);
            _tile_dpbf16ps(0, 2, 4);
            if (has_second) {
                _tile_loadd(3, second + b * 32, 2 * k);
                _tile_dpbf16ps(1, 3, 4);
            }
        }
        _tile_stored(0, sums[0], 64);
        _tile_stored(1, sums[1], 64);
        for (int64_t r = g * 16; r < rows && r < (g + 2) * 16; r++)
            store_f32_or_bf16(out, r * n + t * 16, _mm512_load_ps(sums[(r - g * 16) / 16][r % 16]), out_is_float32);
    }
}
#else
int set_amx_bf16(int wanted) { (void)wanted; return 0; }
static const int amx_bf16_is_enabled = 0;
static void configure_bf16_tiles(void) {}
static void release_bf16_tiles(void) {}
static void amx_tile(const uint16_t *xp, int64_t rows, int64_t k, const uint8_t *wt, int64_t n, int64_t t,
                     void *out, int out_is_float32) {
    (void)xp; (void)rows; (void)k; (void)wt; (void)n; (void)t; (void)out; (void)out_is_float32;
}
#endif

/* out [rows, n] = x W^T (bf16, or the float32 sums when out_is_float32) for x [rows, k] bf16 and W packed as
 * above, on num_threads threads. Returns nonzero when out of memory. */
int b16_linear(const uint16_t *x, int64_t rows, int64_t k, const uint8_t *w, int64_t n, void *out,
               int out_is_float32, int num_threads) {
    const int64_t blocks = k / 32, tiles = n / 16, is_amx = amx_bf16_is_enabled;
    uint16_t *padded = NULL;
    if (is_amx) {
        const int64_t padded_rows = (rows + 15) / 16 * 16;
        padded = aligned_alloc(64, padded_rows * k * sizeof(uint16_t));  /* k % 32 == 0: whole lines */
        if (!padded)
            return 1;
        memcpy(padded, x, rows * k * sizeof(uint16_t));
        memset(padded + rows * k, 0, (padded_rows - rows) * k * sizeof(uint16_t));
    }
    #pragma omp parallel num_threads(num_threads)
    {
    if (is_amx)
        configure_bf16_tiles();
    #pragma omp for schedule(static)
    for (int64_t t = 0; t < tiles; t++) {
        const uint8_t *wt = w + t * blocks * B16_RECORD_BYTES;
        if (is_amx)
            amx_tile(padded, rows, k, wt, n, t, out, out_is_float32);
        else
            vector_tile(x, rows, k, wt, n, t, out, out_is_float32);
    }
    if (is_amx)
        release_bf16_tiles();
    }
    free(padded);
    return 0;
}
