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
