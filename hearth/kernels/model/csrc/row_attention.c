/* Causal attention of each query row over its own context in the paged KV cache: bf16 queries, keys, values
 * and output, float32 inside. Built and loaded by kernels/model/row_attention.py.
 *
 * A row at position p attends to keys 0..p of its sequence, read through its block table, in blocks of 64
 * keys counted from position 0, with an online softmax. The operations and their order depend on p and the
 * data alone, never on the other rows of the call, on where a prefill chunk starts or on the thread count:
 * a token's output is the same computed in a decode step or anywhere in a prefill chunk.
 *
 * Scores: q.k by `vdpbf16ps` (exact bf16 products, float32 sums), times the scale. Per block of keys, for
 * each query head: m' = max(m, max s), l = l e^(m - m') + e^(s - m') (16 lanes, summed at the end),
 * acc = acc e^(m - m') + sum e^(s - m') v; the output is acc / l. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "simd.h"

#define KEY_BLOCK 64  /* keys per softmax update, scored 16 at a time */
#define MAX_GROUP 16     /* query heads per KV head */
#define MAX_HEAD_DIM 256

/* Query heads [group * g, group * (g + 1)) of one row at position `position` over KV head g. Inlined with
 * constant group and head_dim for the common shapes, so the accumulators live in registers. */
static inline __attribute__((always_inline)) void attend_shape(
        const uint16_t *q_row, const uint16_t *kv, const int32_t *table, int64_t position, int64_t g,
        const int group, const int head_dim, int64_t num_kv_heads, int64_t block_size, float scale,
        uint16_t *out_row) {
    const int chunks = head_dim / 32;
    const int block_shift = __builtin_ctzll((unsigned long long)block_size);  /* a power of two */
    const int64_t slot_stride = 2 * num_kv_heads * head_dim;  /* elements from one slot to the next */
    vi q[MAX_GROUP][MAX_HEAD_DIM / 32];
    vf acc[MAX_GROUP][MAX_HEAD_DIM / 16];
    vf l[MAX_GROUP];  /* per lane; summed at the end */
    float m[MAX_GROUP];
    float weights[MAX_GROUP][KEY_BLOCK] __attribute__((aligned(64)));
    for (int h = 0; h < group; h++) {
        for (int c = 0; c < chunks; c++)
            q[h][c] = (vi)vi_load(q_row + (g * group + h) * head_dim + 32 * c);
        for (int i = 0; i < head_dim / 16; i++)
            acc[h][i] = vf_zero();
        l[h] = vf_zero();
        m[h] = -INFINITY;
    }
    for (int64_t first = 0; first <= position; first += KEY_BLOCK) {
        const int count = position + 1 - first < KEY_BLOCK ? (int)(position + 1 - first) : KEY_BLOCK;
        /* Lanes past the row's position read its last key (finite values, masked below). */
        const uint16_t *keys[KEY_BLOCK];
        if (block_size % KEY_BLOCK == 0) {  /* the block's keys lie in consecutive slots of one cache block */
            const int64_t slot = (int64_t)table[first >> block_shift] * block_size + (first & (block_size - 1));
            for (int j = 0; j < KEY_BLOCK; j++)
                keys[j] = kv + (slot + (j < count ? j : count - 1)) * slot_stride + g * head_dim;
        } else {
            for (int j = 0; j < KEY_BLOCK; j++) {
                const int64_t pos = first + (j < count ? j : count - 1);
                const int64_t slot = (int64_t)table[pos >> block_shift] * block_size + (pos & (block_size - 1));
                keys[j] = kv + slot * slot_stride + g * head_dim;
            }
        }
        for (int h = 0; h < group; h++) {
            vf scores[KEY_BLOCK / 16];
            vf block_max = vf_set1(-INFINITY);
            for (int part = 0; part < KEY_BLOCK / 16; part++) {
                const int in_part = count - 16 * part;
                const vmask valid = vmask_first(in_part);
                if (in_part <= 0) {
                    scores[part] = vf_set1(-INFINITY);
                    continue;
                }
                vf partial[16];
                for (int j = 0; j < 16; j++) {
                    partial[j] = vf_zero();
                    for (int c = 0; c < chunks; c++)
                        partial[j] = vf_dot2_bf16(partial[j], q[h][c],
                                                      (vi)vi_load(keys[16 * part + j] + 32 * c));
                }
                scores[part] = vf_select(valid, vf_mul(vf_sum_lanes16(partial), vf_set1(scale)), vf_set1(-INFINITY));
                block_max = vf_max(block_max, scores[part]);
            }
            const float top = vf_reduce_max(block_max);
            const float m_new = top > m[h] ? top : m[h];
            const vf correction = vf_set1(expf(m[h] - m_new));  /* 0 for the first block (m = -inf) */
            m[h] = m_new;
            l[h] = vf_mul(l[h], correction);
            for (int part = 0; part < KEY_BLOCK / 16; part++) {
                /* exp(-inf - m) is 0 exactly only by masking: vf_exp clamps its argument. */
                const vmask valid = vf_neq(scores[part], vf_set1(-INFINITY));
                const vf e = vf_select(valid, vf_exp(vf_sub(scores[part], vf_set1(m_new))), vf_zero());
                l[h] = vf_add(l[h], e);
                vf_store(weights[h] + 16 * part, e);
            }
            for (int i = 0; i < head_dim / 16; i++)
                acc[h][i] = vf_mul(acc[h][i], correction);
        }
        for (int j = 0; j < count; j++) {
            const uint16_t *value = keys[j] + num_kv_heads * head_dim;
            vf w[MAX_GROUP];
            for (int h = 0; h < group; h++)
                w[h] = vf_set1(weights[h][j]);
            for (int i = 0; i < head_dim / 16; i++) {
                const vf v = vf_load_bf16(value + 16 * i);
                for (int h = 0; h < group; h++)
                    acc[h][i] = vf_fmadd(w[h], v, acc[h][i]);
            }
        }
    }
    for (int h = 0; h < group; h++) {
        const vf inverse = vf_set1(1.0f / vf_reduce_add(l[h]));
        for (int i = 0; i < head_dim / 16; i++)
            vf_store_bf16_hw(out_row + (g * group + h) * head_dim + 16 * i, vf_mul(acc[h][i], inverse));
    }
}

#define ATTEND_ARGS const uint16_t *q_row, const uint16_t *kv, const int32_t *table, int64_t position, int64_t g, \
    int64_t num_kv_heads, int64_t block_size, float scale, uint16_t *out_row
#define DEFINE_ATTEND(G, D) \
    static void attend_##G##_##D(ATTEND_ARGS) { \
        attend_shape(q_row, kv, table, position, g, G, D, num_kv_heads, block_size, scale, out_row); \
    }
DEFINE_ATTEND(1, 64) DEFINE_ATTEND(2, 64) DEFINE_ATTEND(3, 64) DEFINE_ATTEND(4, 64)
DEFINE_ATTEND(1, 128) DEFINE_ATTEND(2, 128) DEFINE_ATTEND(4, 128) DEFINE_ATTEND(8, 128)

typedef void (*attend_fn)(ATTEND_ARGS);

static attend_fn specialized(int64_t group, int64_t head_dim) {
    if (head_dim == 64)
        switch (group) { case 1: return attend_1_64; case 2: return attend_2_64; case 3: return attend_3_64;
                         case 4: return attend_4_64; }
    if (head_dim == 128)
        switch (group) { case 1: return attend_1_128; case 2: return attend_2_128; case 4: return attend_4_128;
                         case 8: return attend_8_128; }
    return NULL;
}

#ifdef __AMX_BF16__
/* The AMX path: a sequence's rows (up to 16 / group of them) and the query heads of one KV head are the rows
 * of one tile, t = i group + h. Per block of 64 keys: scores S [t][key] = Q K^T by tile dot products (K^T
 * read from the cache, which keeps it as the tile operand: kv_is_tiled), then each row's online softmax in float32 with
 * the vector path's operations, its weights rounded to bf16 (and summed as rounded), then the block's
 * weighted values P V by tile dot products, added to the row's accumulator as acc = acc c + PV.
 * A tile row's dot products depend on that row's operands alone, and the softmax is per row, so a row's
 * result is the same whichever rows share its tile: decode rows (a tile each) and a prefill chunk's rows
 * (sharing one) compute a token's output bit for bit alike. */
#include "amx_tiles.h"

#define TILE_ROWS 16
/* gcc's tile load and store intrinsics are asm without a memory clobber: this orders the buffers' writes
 * before a tile load and their reads after a tile store. */
#define MEMORY_BARRIER() __asm__ volatile("" ::: "memory")
static int amx_is_enabled;

/* Turns the AMX path on (asking Linux for the tile state; granting it twice is harmless) or off. Returns
 * whether it is on. */
int set_amx(int wanted) {
    amx_is_enabled = wanted && request_tile_state();
    return amx_is_enabled;
}

/* Whether a cache of this head_dim and block size is kept in the tiled layout (tiled_head), which the AMX
 * path reads in place (whole 16-key groups per block, 64-dimension passes); the AMX path runs exactly
 * there, the vector path elsewhere. */
int kv_is_tiled(int64_t head_dim, int64_t block_size) {
    return amx_is_enabled && head_dim % 64 == 0 && head_dim <= MAX_HEAD_DIM && block_size % 16 == 0;
}

/* Per thread: tmm0 Q's 32 dimensions, tmm1 K^T read from the cache (16 dimension pairs x 16 keys), tmm2
 * P's 16 keys (16 x 32 bytes), tmm3 V read from the cache (8 key pairs x 16 dimensions), tmm4..7 the products
 * (S for 4 x 16 keys, or PV for 4 x 16 dimensions). */
static void configure_tiles(void) {
    struct tile_config config = {0};
    config.palette_id = 1;
    for (int tile = 0; tile < 8; tile++) {
        config.rows[tile] = TILE_ROWS;
        config.colsb[tile] = 64;
    }
    config.colsb[2] = 32;
    config.rows[3] = 8;
    _tile_loadconfig(&config);
}

/* One tile's rows: rows [0, num_rows) of a sequence at positions[0..num_rows), the query heads of one KV head
 * (tile row t = i group + h), and their online softmax state. */
struct tile_run {
    const int64_t *positions;
    int64_t num_rows, last;
    int used;
    uint16_t *query;  /* [16][head_dim], rows past `used` zero */
    float *acc;       /* [16][head_dim] */
    __m512 l[TILE_ROWS];  /* per lane; summed at the end */
    float m[TILE_ROWS];
};

/* Per thread: one block's scores, weights and PV. */
struct tile_scratch {
    float *scores;     /* [16][KEY_BLOCK] */
    uint16_t *weights; /* [16][KEY_BLOCK] */
    float *block_out;  /* [16][head_dim] */
};

static void run_begin(struct tile_run *run, const uint16_t *q, const int64_t *positions, int64_t num_rows, int64_t g,
                      int64_t group, int64_t num_heads, int64_t head_dim) {
    run->positions = positions;
    run->num_rows = num_rows;
    run->used = (int)(num_rows * group);
    run->last = 0;
    for (int t = 0; t < TILE_ROWS; t++) {
        if (t < run->used) {
            const int64_t i = t / group, h = t % group;
            memcpy(run->query + t * head_dim, q + (i * num_heads + g * group + h) * head_dim, head_dim * sizeof(uint16_t));
            if (positions[i] > run->last)
                run->last = positions[i];
        } else {
            memset(run->query + t * head_dim, 0, head_dim * sizeof(uint16_t));
        }
        memset(run->acc + t * head_dim, 0, head_dim * sizeof(float));
        run->l[t] = _mm512_setzero_ps();
        run->m[t] = -INFINITY;
    }
}

/* Each row's online softmax over the block's scores (scratch->scores, [t][key]) into bf16 weights
 * (scratch->weights, zero past the row's position and for rows whose context ended) and correction[t]. */
static void softmax_block(struct tile_run *run, int64_t first, int64_t group, float scale,
                          struct tile_scratch *scratch, float correction[TILE_ROWS]) {
    for (int t = 0; t < TILE_ROWS; t++) {
        const int row_count = t < run->used ? (int)(run->positions[t / group] + 1 - first) : 0;
        uint16_t *row_weights = scratch->weights + t * KEY_BLOCK;
        if (row_count <= 0) {  /* the row's context ended: it takes no part in this block */
            memset(row_weights, 0, KEY_BLOCK * sizeof(uint16_t));
            continue;
        }
        __m512 s[KEY_BLOCK / 16];
        __m512 block_max = _mm512_set1_ps(-INFINITY);
        for (int part = 0; part < KEY_BLOCK / 16; part++) {
            const int in_part = row_count - 16 * part;
            const __mmask16 valid = in_part >= 16 ? 0xFFFF : in_part <= 0 ? 0 : (__mmask16)((1u << in_part) - 1);
            s[part] = _mm512_mask_mov_ps(_mm512_set1_ps(-INFINITY), valid,
                                         _mm512_mul_ps(_mm512_load_ps(scratch->scores + t * KEY_BLOCK + 16 * part),
                                                       _mm512_set1_ps(scale)));
            block_max = _mm512_max_ps(block_max, s[part]);
        }
        const float top = _mm512_reduce_max_ps(block_max);
        const float m_new = top > run->m[t] ? top : run->m[t];
        correction[t] = expf(run->m[t] - m_new);  /* 0 for the first block (m = -inf) */
        run->m[t] = m_new;
        run->l[t] = _mm512_mul_ps(run->l[t], _mm512_set1_ps(correction[t]));
        for (int part = 0; part < KEY_BLOCK / 16; part++) {
            const __mmask16 valid = _mm512_cmp_ps_mask(s[part], _mm512_set1_ps(-INFINITY), _CMP_NEQ_OQ);
            const __m256i e = (__m256i)_mm512_cvtneps_pbh(
                _mm512_maskz_mov_ps(valid, vf_exp(_mm512_sub_ps(s[part], _mm512_set1_ps(m_new)))));
            _mm256_store_si256((__m256i *)(row_weights + 16 * part), e);
            run->l[t] = _mm512_add_ps(run->l[t], _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(e), 16)));
        }
    }
    MEMORY_BARRIER();
}

/* acc = acc c + PV for the rows the block reaches (PV in scratch->block_out, [t][head_dim]). */
static void accumulate_block(struct tile_run *run, int64_t first, int64_t group, int64_t head_dim,
                             const struct tile_scratch *scratch, const float correction[TILE_ROWS]) {
    for (int t = 0; t < run->used; t++) {
        if (run->positions[t / group] < first)
            continue;
        const __m512 c = _mm512_set1_ps(correction[t]);
        float *acc = run->acc + t * head_dim;
        for (int i = 0; i < head_dim / 16; i++)
            _mm512_store_ps(acc + 16 * i, _mm512_add_ps(_mm512_mul_ps(_mm512_load_ps(acc + 16 * i), c),
                                                       _mm512_load_ps(scratch->block_out + t * head_dim + 16 * i)));
    }
}

/* One KV head's keys and values inside a cache block in the tiled layout (write_kv): keys as [head_dim / 2
 * dimension pairs][block_size slots][2], then values as [block_size / 2 slot pairs][head_dim][2]; the block's
 * heads one after another. 16 keys from a multiple of 16 are then K^T as a tile's B operand (rows of dimension
 * pairs, block_size * 4 bytes apart), and 16 values V as one (rows of key pairs, head_dim * 4 bytes apart). */
static inline const uint16_t *tiled_head(const uint16_t *kv, const int32_t *table, int64_t position, int64_t g,
                                         int64_t num_kv_heads, int64_t head_dim, int64_t block_size) {
    const int block_shift = __builtin_ctzll((unsigned long long)block_size);
    return kv + (int64_t)table[position >> block_shift] * block_size * 2 * num_kv_heads * head_dim
              + g * 2 * head_dim * block_size;
}

/* S for keys [16 j, +16) into `tile` over dimensions [32 c, +32) (Q's in tmm0), K^T read from the cache. */
#define TILED_SCORE_GROUP(j, tile) do {                                                                        \
        if (first + 16 * (j) <= last) {                                                                        \
            const int64_t position = first + 16 * (j);                                                         \
            const uint16_t *head = tiled_head(kv, table, position, g, num_kv_heads, head_dim, block_size);    \
            _tile_loadd(1, head + (16 * c * block_size + (position & (block_size - 1))) * 2,                   \
                        block_size * 4);                                                                       \
            _tile_dpbf16ps(tile, 0, 1);                                                                        \
        }                                                                                                      \
    } while (0)

/* PV's dimensions [64 pass + 16 d, +16) into `tile` from P's keys [16 j, +16) (tmm2), V read from the cache. */
#define TILED_VALUE_GROUP(d, tile) do {                                                           \
        _tile_loadd(3, values + (64 * pass + 16 * (d)) * 2, head_dim * 4);                      \
        _tile_dpbf16ps(tile, 2, 3);                                                              \
    } while (0)

/* The run's rows over keys [first, first + 64), operands read in place from the tiled cache. Keys past `last` in a
 * 16-key group the run reaches are read as the cache holds them (finite: written by a forward or zero) and
 * weighted 0; groups wholly past it are skipped. Tiles configured. */
static void run_block(struct tile_run *run, const uint16_t *kv, const int32_t *table, int64_t first,
                            int64_t last, int64_t g, int64_t group, int64_t num_kv_heads, int64_t head_dim,
                            int64_t block_size, float scale, struct tile_scratch *scratch) {
    float *scores = scratch->scores, *block_out = scratch->block_out;
    float correction[TILE_ROWS];
    _tile_zero(4);
    _tile_zero(5);
    _tile_zero(6);
    _tile_zero(7);
    MEMORY_BARRIER();
    for (int64_t c = 0; c < head_dim / 32; c++) {
        _tile_loadd(0, run->query + 32 * c, head_dim * sizeof(uint16_t));
        TILED_SCORE_GROUP(0, 4);
        TILED_SCORE_GROUP(1, 5);
        TILED_SCORE_GROUP(2, 6);
        TILED_SCORE_GROUP(3, 7);
    }
    _tile_stored(4, scores, KEY_BLOCK * sizeof(float));
    _tile_stored(5, scores + 16, KEY_BLOCK * sizeof(float));
    _tile_stored(6, scores + 32, KEY_BLOCK * sizeof(float));
    _tile_stored(7, scores + 48, KEY_BLOCK * sizeof(float));
    MEMORY_BARRIER();
    softmax_block(run, first, group, scale, scratch, correction);
    for (int pass = 0; pass < head_dim / 64; pass++) {
        _tile_zero(4);
        _tile_zero(5);
        _tile_zero(6);
        _tile_zero(7);
        for (int j = 0; j < KEY_BLOCK / 16 && first + 16 * j <= last; j++) {
            const int64_t position = first + 16 * j;
            const uint16_t *values = tiled_head(kv, table, position, g, num_kv_heads, head_dim, block_size)
                                     + head_dim * block_size + (position & (block_size - 1)) / 2 * head_dim * 2;
            _tile_loadd(2, scratch->weights + 16 * j, KEY_BLOCK * sizeof(uint16_t));
            TILED_VALUE_GROUP(0, 4);
            TILED_VALUE_GROUP(1, 5);
            TILED_VALUE_GROUP(2, 6);
            TILED_VALUE_GROUP(3, 7);
        }
        _tile_stored(4, block_out + 64 * pass, head_dim * sizeof(float));
        _tile_stored(5, block_out + 64 * pass + 16, head_dim * sizeof(float));
        _tile_stored(6, block_out + 64 * pass + 32, head_dim * sizeof(float));
        _tile_stored(7, block_out + 64 * pass + 48, head_dim * sizeof(float));
        MEMORY_BARRIER();
    }
    accumulate_block(run, first, group, head_dim, scratch, correction);
}

static void run_end(const struct tile_run *run, uint16_t *out, int64_t g, int64_t group, int64_t num_heads,
                    int64_t head_dim) {
    for (int t = 0; t < run->used; t++) {
        const int64_t i = t / group, h = t % group;
        const __m512 inverse = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(run->l[t]));
        for (int d = 0; d < head_dim / 16; d++)
            _mm256_storeu_si256((__m256i *)(out + (i * num_heads + g * group + h) * head_dim + 16 * d),
                                (__m256i)_mm512_cvtneps_pbh(_mm512_mul_ps(_mm512_load_ps(run->acc + t * head_dim + 16 * d),
                                                                          inverse)));
    }
}

/* Runs per task: a task walks its sequence's keys once for all its runs (they stay in cache between runs). */
#define RUNS_PER_TASK 8

/* row_attention on the AMX path. Runs of up to 16 / group consecutive rows sharing a block table (a prefill
 * chunk's rows) share a tile; a task is up to RUNS_PER_TASK runs of one sequence and one KV head, walking
 * its keys once, 64 at a time, read in place from the tiled cache (kv_is_tiled) by every run that reaches
 * them. Returns nonzero when out of memory. */
static int amx_row_attention(const uint16_t *q, const uint16_t *kv, const int32_t *tables,
                             const int64_t *table_starts, const int64_t *positions, int64_t rows, int64_t num_heads,
                             int64_t num_kv_heads, int64_t head_dim, int64_t block_size, float scale, uint16_t *out,
                             int num_threads) {
    const int64_t group = num_heads / num_kv_heads, per_tile = TILE_ROWS / group;
    /* run_starts[k]: the first row of run k; task_runs[k]: the first run of task group k. */
    int64_t *run_starts = malloc((rows + 1) * sizeof(int64_t)), *task_runs = malloc((rows + 1) * sizeof(int64_t));
    if (!run_starts || !task_runs) {
        free(run_starts);
        free(task_runs);
        return 1;
    }
    int64_t num_runs = 0, num_groups = 0;
    for (int64_t r = 0; r < rows; r++) {
        const int is_new_seq = r == 0 || table_starts[r] != table_starts[r - 1];
        if (is_new_seq || r - run_starts[num_runs - 1] == per_tile) {
            if (is_new_seq || num_runs - task_runs[num_groups - 1] == RUNS_PER_TASK)
                task_runs[num_groups++] = num_runs;
            run_starts[num_runs++] = r;
        }
    }
    run_starts[num_runs] = rows;
    task_runs[num_groups] = num_runs;
    int failed = 0;
    #pragma omp parallel num_threads(num_threads)
    {
        struct tile_run runs[RUNS_PER_TASK];
        struct tile_scratch scratch = {0};
        const size_t run_bytes = TILE_ROWS * head_dim * (sizeof(uint16_t) + sizeof(float));
        const size_t scratch_bytes = TILE_ROWS * (KEY_BLOCK * (sizeof(float) + sizeof(uint16_t)) + head_dim * sizeof(float));
        uint8_t *memory = aligned_alloc(64, RUNS_PER_TASK * run_bytes + scratch_bytes);
        if (!memory) {
            #pragma omp atomic write
            failed = 1;
        } else {
            for (int k = 0; k < RUNS_PER_TASK; k++) {
                runs[k].query = (uint16_t *)(memory + k * run_bytes);
                runs[k].acc = (float *)(memory + k * run_bytes + TILE_ROWS * head_dim * sizeof(uint16_t));
            }
            uint8_t *base = memory + RUNS_PER_TASK * run_bytes;
            scratch.scores = (float *)base;
            scratch.block_out = scratch.scores + TILE_ROWS * KEY_BLOCK;
            scratch.weights = (uint16_t *)(scratch.block_out + TILE_ROWS * head_dim);
            configure_tiles();
        }
        /* Work grows with a task's positions: hand out (task group, KV head) pairs one at a time. */
        #pragma omp for schedule(dynamic, 1)
        for (int64_t task = 0; task < num_groups * num_kv_heads; task++) {
            if (!memory)
                continue;
            const int64_t k0 = task_runs[task / num_kv_heads], k1 = task_runs[task / num_kv_heads + 1];
            const int64_t g = task % num_kv_heads;
            const int32_t *table = tables + table_starts[run_starts[k0]];
            int64_t last = 0;
            for (int64_t k = k0; k < k1; k++) {
                const int64_t r = run_starts[k];
                run_begin(&runs[k - k0], q + r * num_heads * head_dim, positions + r, run_starts[k + 1] - r, g, group,
                          num_heads, head_dim);
                last = runs[k - k0].last > last ? runs[k - k0].last : last;
            }
            for (int64_t first = 0; first <= last; first += KEY_BLOCK)
                for (int64_t k = k0; k < k1; k++)
                    if (runs[k - k0].last >= first)
                        run_block(&runs[k - k0], kv, table, first, runs[k - k0].last, g, group, num_kv_heads, head_dim,
                                  block_size, scale, &scratch);
            for (int64_t k = k0; k < k1; k++)
                run_end(&runs[k - k0], out + run_starts[k] * num_heads * head_dim, g, group, num_heads, head_dim);
        }
        if (memory)
            _tile_release();
        free(memory);
    }
    free(run_starts);
    free(task_runs);
    return failed;
}
#else
int set_amx(int wanted) {
    (void)wanted;
    return 0;
}

int kv_is_tiled(int64_t head_dim, int64_t block_size) {
    (void)head_dim, (void)block_size;
    return 0;
}
#endif

/* Rows' keys and values k, v [rows, num_kv_heads, head_dim] into one cache layer kv at slots[r]: as
 * [slot][2][head][dim], or in the tiled layout where kv_is_tiled (tiled_head). Every writer of a cache the
 * row kernel reads goes through here, so the layout is the kernel's business alone. */
void write_kv(uint16_t *kv, const uint16_t *k, const uint16_t *v, const int64_t *slots, int64_t rows,
              int64_t num_kv_heads, int64_t head_dim, int64_t block_size) {
    const int64_t width = num_kv_heads * head_dim;
    const int is_tiled = kv_is_tiled(head_dim, block_size);
    for (int64_t r = 0; r < rows; r++) {
        const int64_t slot = slots[r];
        if (!is_tiled) {
            memcpy(kv + slot * 2 * width, k + r * width, width * sizeof(uint16_t));
            memcpy(kv + slot * 2 * width + width, v + r * width, width * sizeof(uint16_t));
            continue;
        }
        const int64_t block = slot / block_size, offset = slot % block_size;
        for (int64_t g = 0; g < num_kv_heads; g++) {
            uint16_t *head = kv + block * block_size * 2 * width + g * 2 * head_dim * block_size;
            const uint32_t *key_pairs = (const uint32_t *)(k + r * width + g * head_dim);
            uint32_t *keys = (uint32_t *)head;
            for (int64_t p = 0; p < head_dim / 2; p++)
                keys[p * block_size + offset] = key_pairs[p];
            uint16_t *values = head + head_dim * block_size + offset / 2 * head_dim * 2 + (offset & 1);
            for (int64_t d = 0; d < head_dim; d++)
                values[2 * d] = v[r * width + g * head_dim + d];
        }
    }
}

/* out [rows, num_heads, head_dim] for q [rows, num_heads, head_dim] and one layer of the cache kv
 * [num_slots, 2, num_kv_heads, head_dim] (keys at [:, 0], values at [:, 1]). Row r attends to positions
 * 0..positions[r] through the block table at tables + table_starts[r]. Returns nonzero for a shape it does
 * not take (head_dim a multiple of 32 up to 256, at most 16 query heads per KV head, block_size a power of
 * two). */
int row_attention(const uint16_t *q, const uint16_t *kv, const int32_t *tables, const int64_t *table_starts,
                  const int64_t *positions, int64_t rows, int64_t num_heads, int64_t num_kv_heads, int64_t head_dim,
                  int64_t block_size, float scale, uint16_t *out, int num_threads) {
    const int64_t group = num_heads / num_kv_heads;
    if (head_dim % 32 || head_dim > MAX_HEAD_DIM || num_heads % num_kv_heads || group > MAX_GROUP ||
        block_size < 1 || block_size & (block_size - 1))
        return 1;
#ifdef __AMX_BF16__
    if (kv_is_tiled(head_dim, block_size))  /* else the vector path, on a plain cache */
        return amx_row_attention(q, kv, tables, table_starts, positions, rows, num_heads, num_kv_heads, head_dim,
                                 block_size, scale, out, num_threads);
#endif
    const attend_fn attend = specialized(group, head_dim);
    /* Work grows with a row's position: hand out (row, KV head) pairs one at a time. */
    #pragma omp parallel for schedule(dynamic, 1) num_threads(num_threads)
    for (int64_t task = 0; task < rows * num_kv_heads; task++) {
        const int64_t r = task / num_kv_heads, g = task % num_kv_heads;
        if (attend)
            attend(q + r * num_heads * head_dim, kv, tables + table_starts[r], positions[r], g, num_kv_heads,
                   block_size, scale, out + r * num_heads * head_dim);
        else
            attend_shape(q + r * num_heads * head_dim, kv, tables + table_starts[r], positions[r], g, (int)group,
                         (int)head_dim, num_kv_heads, block_size, scale, out + r * num_heads * head_dim);
    }
    return 0;
}
