/* Causal attention of each query row over its own context in the paged KV cache: bf16 queries, keys, values
 * and output, float32 inside. Built and loaded by kernels/row_attention.py.
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

#include "avx512_math.h"

#define KEY_BLOCK 64  /* keys per softmax update, scored 16 at a time */
#define MAX_GROUP 16     /* query heads per KV head */
#define MAX_HEAD_DIM 256

/* Sixteen dot products at once: lane j of the result is the sum of partial[j]'s 16 lanes, by the same fixed
 * tree of shuffles and adds whatever the inputs (it leaves vector 4 t + k in lane 4 k + t; one permutation
 * puts it back). */
static inline __m512 sum_lanes16(__m512 partial[16]) {
    __m512 level1[8], level2[4], level3[2];
    for (int i = 0; i < 8; i++) {  /* pairs of 8-lane halves */
        __m512 a = partial[2 * i], b = partial[2 * i + 1];
        level1[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xEE));
    }
    for (int i = 0; i < 4; i++) {
        __m512 a = level1[2 * i], b = level1[2 * i + 1];
        level2[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x88), _mm512_shuffle_f32x4(a, b, 0xDD));
    }
    for (int i = 0; i < 2; i++) {
        __m512 a = level2[2 * i], b = level2[2 * i + 1];
        level3[i] = _mm512_add_ps(_mm512_shuffle_ps(a, b, 0x44), _mm512_shuffle_ps(a, b, 0xEE));
    }
    const __m512 sums = _mm512_add_ps(_mm512_shuffle_ps(level3[0], level3[1], 0x88),
                                      _mm512_shuffle_ps(level3[0], level3[1], 0xDD));
    return _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), sums);
}

/* Query heads [group * g, group * (g + 1)) of one row at position `position` over KV head g. Inlined with
 * constant group and head_dim for the common shapes, so the accumulators live in registers. */
static inline __attribute__((always_inline)) void attend_shape(
        const uint16_t *q_row, const uint16_t *kv, const int32_t *table, int64_t position, int64_t g,
        const int group, const int head_dim, int64_t num_kv_heads, int64_t block_size, float scale,
        uint16_t *out_row) {
    const int chunks = head_dim / 32;
    const int block_shift = __builtin_ctzll((unsigned long long)block_size);  /* a power of two */
    const int64_t slot_stride = 2 * num_kv_heads * head_dim;  /* elements from one slot to the next */
    __m512bh q[MAX_GROUP][MAX_HEAD_DIM / 32];
    __m512 acc[MAX_GROUP][MAX_HEAD_DIM / 16];
    __m512 l[MAX_GROUP];  /* per lane; summed at the end */
    float m[MAX_GROUP];
    float weights[MAX_GROUP][KEY_BLOCK] __attribute__((aligned(64)));
    for (int h = 0; h < group; h++) {
        for (int c = 0; c < chunks; c++)
            q[h][c] = (__m512bh)_mm512_loadu_si512(q_row + (g * group + h) * head_dim + 32 * c);
        for (int i = 0; i < head_dim / 16; i++)
            acc[h][i] = _mm512_setzero_ps();
        l[h] = _mm512_setzero_ps();
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
            __m512 scores[KEY_BLOCK / 16];
            __m512 block_max = _mm512_set1_ps(-INFINITY);
            for (int part = 0; part < KEY_BLOCK / 16; part++) {
                const int in_part = count - 16 * part;
                const __mmask16 valid = in_part >= 16 ? 0xFFFF : in_part <= 0 ? 0 : (__mmask16)((1u << in_part) - 1);
                if (!valid) {
                    scores[part] = _mm512_set1_ps(-INFINITY);
                    continue;
                }
                __m512 partial[16];
                for (int j = 0; j < 16; j++) {
                    partial[j] = _mm512_setzero_ps();
                    for (int c = 0; c < chunks; c++)
                        partial[j] = _mm512_dpbf16_ps(partial[j], q[h][c],
                                                      (__m512bh)_mm512_loadu_si512(keys[16 * part + j] + 32 * c));
                }
                scores[part] = _mm512_mask_mov_ps(_mm512_set1_ps(-INFINITY), valid,
                                                  _mm512_mul_ps(sum_lanes16(partial), _mm512_set1_ps(scale)));
                block_max = _mm512_max_ps(block_max, scores[part]);
            }
            const float top = _mm512_reduce_max_ps(block_max);
            const float m_new = top > m[h] ? top : m[h];
            const __m512 correction = _mm512_set1_ps(expf(m[h] - m_new));  /* 0 for the first block (m = -inf) */
            m[h] = m_new;
            l[h] = _mm512_mul_ps(l[h], correction);
            for (int part = 0; part < KEY_BLOCK / 16; part++) {
                /* exp(-inf - m) is 0 exactly only by masking: exp_ps clamps its argument. */
                const __mmask16 valid = _mm512_cmp_ps_mask(scores[part], _mm512_set1_ps(-INFINITY), _CMP_NEQ_OQ);
                const __m512 e = _mm512_maskz_mov_ps(valid, exp_ps(_mm512_sub_ps(scores[part], _mm512_set1_ps(m_new))));
                l[h] = _mm512_add_ps(l[h], e);
                _mm512_store_ps(weights[h] + 16 * part, e);
            }
            for (int i = 0; i < head_dim / 16; i++)
                acc[h][i] = _mm512_mul_ps(acc[h][i], correction);
        }
        for (int j = 0; j < count; j++) {
            const uint16_t *value = keys[j] + num_kv_heads * head_dim;
            __m512 w[MAX_GROUP];
            for (int h = 0; h < group; h++)
                w[h] = _mm512_set1_ps(weights[h][j]);
            for (int i = 0; i < head_dim / 16; i++) {
                const __m512 v = load_bf16_ps(value + 16 * i);
                for (int h = 0; h < group; h++)
                    acc[h][i] = _mm512_fmadd_ps(w[h], v, acc[h][i]);
            }
        }
    }
    for (int h = 0; h < group; h++) {
        const __m512 inverse = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(l[h]));
        for (int i = 0; i < head_dim / 16; i++)
            _mm256_storeu_si256((__m256i *)(out_row + (g * group + h) * head_dim + 16 * i),
                                (__m256i)_mm512_cvtneps_pbh(_mm512_mul_ps(acc[h][i], inverse)));
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
 * laid out as the tile operand, dimension pairs by keys), then each row's online softmax in float32 with
 * the vector path's operations, its weights rounded to bf16 (and summed as rounded), then the block's
 * weighted values P V by tile dot products, added to the row's accumulator as acc = acc c + PV.
 * A tile row's dot products depend on that row's operands alone, and the softmax is per row, so a row's
 * result is the same whichever rows share its tile: decode rows (a tile each) and a prefill chunk's rows
 * (sharing one) compute a token's output bit for bit alike. */
#include <sys/syscall.h>
#include <unistd.h>

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18
#define TILE_ROWS 16
/* gcc's tile load and store intrinsics are asm without a memory clobber: this orders the buffers' writes
 * before a tile load and their reads after a tile store. */
#define MEMORY_BARRIER() __asm__ volatile("" ::: "memory")
static int amx_is_enabled;

/* Turns the AMX path on (asking Linux for the tile state; granting it twice is harmless) or off. Returns
 * whether it is on. */
int set_amx(int wanted) {
    amx_is_enabled = wanted && syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
    return amx_is_enabled;
}

struct tile_config {
    uint8_t palette_id, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
};

/* Per thread, every tile 16 rows of 64 bytes. tmm0, tmm1: the A operands (Q's dimensions, or P's keys);
 * tmm2, tmm3: the B operands (K^T, or V); tmm4..7: the four products (S for 4 x 16 keys, or PV for 4 x 16
 * dimensions). */
static void configure_tiles(void) {
    struct tile_config config = {0};
    config.palette_id = 1;
    for (int tile = 0; tile < 8; tile++) {
        config.rows[tile] = TILE_ROWS;
        config.colsb[tile] = 64;
    }
    _tile_loadconfig(&config);
}

/* out[j] lane i = in[i] lane j, for 16 vectors of 16 32-bit lanes. */
static inline void transpose16(__m512i r[16]) {
    __m512i t[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        r[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
        r[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
        r[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
        r[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
    for (int i = 0; i < 4; i++) {
        t[i] = _mm512_shuffle_i32x4(r[i], r[4 + i], 0x88);
        t[4 + i] = _mm512_shuffle_i32x4(r[i], r[4 + i], 0xDD);
        t[8 + i] = _mm512_shuffle_i32x4(r[8 + i], r[12 + i], 0x88);
        t[12 + i] = _mm512_shuffle_i32x4(r[8 + i], r[12 + i], 0xDD);
    }
    for (int i = 0; i < 8; i++) {
        r[i] = _mm512_shuffle_i32x4(t[i], t[8 + i], 0x88);
        r[8 + i] = _mm512_shuffle_i32x4(t[i], t[8 + i], 0xDD);
    }
}

/* K^T for keys[0..16) and dimensions [32 c, 32 c + 32) as a B operand: [16 dimension pairs][16 keys][2]. */
static inline void keys_operand(const uint16_t *const *keys, int c, uint32_t operand[16][16]) {
    __m512i r[16];
    for (int j = 0; j < 16; j++)
        r[j] = _mm512_loadu_si512(keys[j] + 32 * c);
    transpose16(r);
    for (int p = 0; p < 16; p++)
        _mm512_store_si512(operand[p], r[p]);
}

/* Values of keys[0..32) (pairs 2 p, 2 p + 1), dimensions [32 c, 32 c + 32), as two B operands [16 key
 * pairs][16 dimensions][2]: dimensions 32 c.. (low) and 32 c + 16.. (high). */
static inline void values_operands(const uint16_t *const *values, int c, uint32_t low[16][16],
                                   uint32_t high[16][16]) {
    /* word 2 n from a (lane n), word 2 n + 1 from b (index bit 5) */
    static const uint16_t low_words[32] __attribute__((aligned(64))) = {
        0, 32, 1, 33, 2, 34, 3, 35, 4, 36, 5, 37, 6, 38, 7, 39, 8, 40, 9, 41, 10, 42, 11, 43, 12, 44, 13, 45, 14, 46, 15, 47};
    const __m512i low_index = _mm512_load_si512(low_words);
    const __m512i high_index = _mm512_add_epi16(low_index, _mm512_set1_epi16(16));
    for (int p = 0; p < 16; p++) {
        const __m512i a = _mm512_loadu_si512(values[2 * p] + 32 * c), b = _mm512_loadu_si512(values[2 * p + 1] + 32 * c);
        _mm512_store_si512(low[p], _mm512_permutex2var_epi16(a, low_index, b));
        _mm512_store_si512(high[p], _mm512_permutex2var_epi16(a, high_index, b));
    }
}

/* S for keys[16 j..16 j + 16) into `tile` (4 + j), over dimensions [64 pass, 64 pass + 64) (Q's in tmm0,
 * tmm1). Tile numbers are literals: the intrinsics take them as immediates. */
#define SCORE_GROUP(j, tile) do {                                    \
        keys_operand(keys + 16 * (j), 2 * pass, operand[0]);         \
        keys_operand(keys + 16 * (j), 2 * pass + 1, operand[1]);     \
        MEMORY_BARRIER();                                            \
        _tile_loadd(2, operand[0], 64);                              \
        _tile_loadd(3, operand[1], 64);                              \
        _tile_dpbf16ps(tile, 0, 2);                                  \
        _tile_dpbf16ps(tile, 1, 3);                                  \
    } while (0)

/* PV's dimensions [64 pass + 16 j, +16) into `tile` (4 + j), from P's keys [32 half, +32) in tmm0, V's
 * operand through `b_tile`. */
#define VALUE_GROUP(tile, b_tile, operand) do { \
        _tile_loadd(b_tile, operand, 64);        \
        _tile_dpbf16ps(tile, 0, b_tile);         \
    } while (0)

/* Rows q_rows[0..num_rows) of one sequence (its block table `table`), at positions[0..num_rows), query heads
 * of KV head g; q and out are [rows, num_heads, head_dim] from the first of these rows. head_dim a multiple
 * of 64. Tiles configured (configure_tiles). */
static void amx_attend(const uint16_t *q, const uint16_t *kv, const int32_t *table, const int64_t *positions,
                       int64_t num_rows, int64_t g, int64_t group, int64_t num_heads, int64_t num_kv_heads,
                       int64_t head_dim, int64_t block_size, float scale, uint16_t *out) {
    const int used = (int)(num_rows * group);
    const int block_shift = __builtin_ctzll((unsigned long long)block_size);
    const int64_t slot_stride = 2 * num_kv_heads * head_dim;
    uint16_t query[TILE_ROWS][MAX_HEAD_DIM] __attribute__((aligned(64)));
    float scores[TILE_ROWS][KEY_BLOCK] __attribute__((aligned(64)));
    uint16_t weights[TILE_ROWS][KEY_BLOCK] __attribute__((aligned(64)));
    uint32_t operand[4][16][16] __attribute__((aligned(64)));
    float block_out[TILE_ROWS][MAX_HEAD_DIM] __attribute__((aligned(64)));
    float acc[TILE_ROWS][MAX_HEAD_DIM] __attribute__((aligned(64)));
    __m512 l[TILE_ROWS];
    float m[TILE_ROWS], correction[TILE_ROWS];
    int64_t last = 0;
    for (int t = 0; t < TILE_ROWS; t++) {
        if (t < used) {
            const int64_t i = t / group, h = t % group;
            memcpy(query[t], q + (i * num_heads + g * group + h) * head_dim, head_dim * sizeof(uint16_t));
            if (positions[i] > last)
                last = positions[i];
        } else {
            memset(query[t], 0, head_dim * sizeof(uint16_t));
        }
        memset(acc[t], 0, head_dim * sizeof(float));
        l[t] = _mm512_setzero_ps();
        m[t] = -INFINITY;
    }
    for (int64_t first = 0; first <= last; first += KEY_BLOCK) {
        const int count = last + 1 - first < KEY_BLOCK ? (int)(last + 1 - first) : KEY_BLOCK;
        /* Keys past the last row's position read its last key (finite values, weighted 0). */
        const uint16_t *keys[KEY_BLOCK], *values[KEY_BLOCK];
        for (int j = 0; j < KEY_BLOCK; j++) {
            const int64_t pos = first + (j < count ? j : count - 1);
            const int64_t slot = (int64_t)table[pos >> block_shift] * block_size + (pos & (block_size - 1));
            keys[j] = kv + slot * slot_stride + g * head_dim;
            values[j] = keys[j] + num_kv_heads * head_dim;
        }
        _tile_zero(4);
        _tile_zero(5);
        _tile_zero(6);
        _tile_zero(7);
        MEMORY_BARRIER();
        for (int pass = 0; pass < head_dim / 64; pass++) {
            _tile_loadd(0, query[0] + 64 * pass, MAX_HEAD_DIM * sizeof(uint16_t));
            _tile_loadd(1, query[0] + 64 * pass + 32, MAX_HEAD_DIM * sizeof(uint16_t));
            SCORE_GROUP(0, 4);
            SCORE_GROUP(1, 5);
            SCORE_GROUP(2, 6);
            SCORE_GROUP(3, 7);
        }
        _tile_stored(4, scores[0], KEY_BLOCK * sizeof(float));
        _tile_stored(5, scores[0] + 16, KEY_BLOCK * sizeof(float));
        _tile_stored(6, scores[0] + 32, KEY_BLOCK * sizeof(float));
        _tile_stored(7, scores[0] + 48, KEY_BLOCK * sizeof(float));
        MEMORY_BARRIER();
        for (int t = 0; t < TILE_ROWS; t++) {
            const int row_count = t < used ? (int)(positions[t / group] + 1 - first) : 0;
            if (row_count <= 0) {  /* the row's context ended: it takes no part in this block */
                memset(weights[t], 0, sizeof(weights[t]));
                continue;
            }
            __m512 s[KEY_BLOCK / 16];
            __m512 block_max = _mm512_set1_ps(-INFINITY);
            for (int part = 0; part < KEY_BLOCK / 16; part++) {
                const int in_part = row_count - 16 * part;
                const __mmask16 valid = in_part >= 16 ? 0xFFFF : in_part <= 0 ? 0 : (__mmask16)((1u << in_part) - 1);
                s[part] = _mm512_mask_mov_ps(_mm512_set1_ps(-INFINITY), valid,
                                             _mm512_mul_ps(_mm512_load_ps(scores[t] + 16 * part), _mm512_set1_ps(scale)));
                block_max = _mm512_max_ps(block_max, s[part]);
            }
            const float top = _mm512_reduce_max_ps(block_max);
            const float m_new = top > m[t] ? top : m[t];
            correction[t] = expf(m[t] - m_new);  /* 0 for the first block (m = -inf) */
            m[t] = m_new;
            l[t] = _mm512_mul_ps(l[t], _mm512_set1_ps(correction[t]));
            for (int part = 0; part < KEY_BLOCK / 16; part++) {
                const __mmask16 valid = _mm512_cmp_ps_mask(s[part], _mm512_set1_ps(-INFINITY), _CMP_NEQ_OQ);
                const __m256i e = (__m256i)_mm512_cvtneps_pbh(
                    _mm512_maskz_mov_ps(valid, exp_ps(_mm512_sub_ps(s[part], _mm512_set1_ps(m_new)))));
                _mm256_store_si256((__m256i *)(weights[t] + 16 * part), e);
                l[t] = _mm512_add_ps(l[t], _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(e), 16)));
            }
        }
        for (int pass = 0; pass < head_dim / 64; pass++) {
            _tile_zero(4);
            _tile_zero(5);
            _tile_zero(6);
            _tile_zero(7);
            for (int half = 0; half < KEY_BLOCK / 32; half++) {
                values_operands(values + 32 * half, 2 * pass, operand[0], operand[1]);
                values_operands(values + 32 * half, 2 * pass + 1, operand[2], operand[3]);
                MEMORY_BARRIER();
                _tile_loadd(0, weights[0] + 32 * half, KEY_BLOCK * sizeof(uint16_t));
                VALUE_GROUP(4, 2, operand[0]);
                VALUE_GROUP(5, 3, operand[1]);
                VALUE_GROUP(6, 2, operand[2]);
                VALUE_GROUP(7, 3, operand[3]);
            }
            _tile_stored(4, block_out[0] + 64 * pass, MAX_HEAD_DIM * sizeof(float));
            _tile_stored(5, block_out[0] + 64 * pass + 16, MAX_HEAD_DIM * sizeof(float));
            _tile_stored(6, block_out[0] + 64 * pass + 32, MAX_HEAD_DIM * sizeof(float));
            _tile_stored(7, block_out[0] + 64 * pass + 48, MAX_HEAD_DIM * sizeof(float));
            MEMORY_BARRIER();
        }
        for (int t = 0; t < used; t++) {
            if (positions[t / group] < first)
                continue;
            const __m512 c = _mm512_set1_ps(correction[t]);
            for (int i = 0; i < head_dim / 16; i++)
                _mm512_store_ps(acc[t] + 16 * i, _mm512_add_ps(_mm512_mul_ps(_mm512_load_ps(acc[t] + 16 * i), c),
                                                             _mm512_load_ps(block_out[t] + 16 * i)));
        }
    }
    for (int t = 0; t < used; t++) {
        const int64_t i = t / group, h = t % group;
        const __m512 inverse = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(l[t]));
        for (int d = 0; d < head_dim / 16; d++)
            _mm256_storeu_si256((__m256i *)(out + (i * num_heads + g * group + h) * head_dim + 16 * d),
                                (__m256i)_mm512_cvtneps_pbh(_mm512_mul_ps(_mm512_load_ps(acc[t] + 16 * d), inverse)));
    }
}

/* row_attention on the AMX path: runs of up to 16 / group consecutive rows sharing a block table (a
 * prefill chunk's rows) share a tile. Returns nonzero when out of memory. */
static int amx_row_attention(const uint16_t *q, const uint16_t *kv, const int32_t *tables,
                             const int64_t *table_starts, const int64_t *positions, int64_t rows, int64_t num_heads,
                             int64_t num_kv_heads, int64_t head_dim, int64_t block_size, float scale, uint16_t *out,
                             int num_threads) {
    const int64_t group = num_heads / num_kv_heads, per_tile = TILE_ROWS / group;
    int64_t *run_starts = malloc((rows + 1) * sizeof(int64_t));
    if (!run_starts)
        return 1;
    int64_t num_runs = 0;
    for (int64_t r = 0; r < rows; r++)
        if (r == 0 || table_starts[r] != table_starts[r - 1] || r - run_starts[num_runs - 1] == per_tile)
            run_starts[num_runs++] = r;
    run_starts[num_runs] = rows;
    #pragma omp parallel num_threads(num_threads)
    {
        configure_tiles();
        /* Work grows with a run's positions: hand out (run, KV head) pairs one at a time. */
        #pragma omp for schedule(dynamic, 1)
        for (int64_t task = 0; task < num_runs * num_kv_heads; task++) {
            const int64_t run = task / num_kv_heads, g = task % num_kv_heads, r = run_starts[run];
            amx_attend(q + r * num_heads * head_dim, kv, tables + table_starts[r], positions + r,
                       run_starts[run + 1] - r, g, group, num_heads, num_kv_heads, head_dim, block_size, scale,
                       out + r * num_heads * head_dim);
        }
        _tile_release();
    }
    free(run_starts);
    return 0;
}
#else
int set_amx(int wanted) {
    (void)wanted;
    return 0;
}
#endif

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
    if (amx_is_enabled && head_dim % 64 == 0)
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
