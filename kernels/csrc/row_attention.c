/* Causal attention of each query row over its own context in the paged KV cache: bf16 queries, keys, values
 * and output, float32 inside. Built and loaded by kernels/row_attention.py.
 *
 * A row at position p attends to keys 0..p of its sequence, read through its block table, in blocks of 16
 * keys counted from position 0, with an online softmax. The operations and their order depend on p and the
 * data alone, never on the other rows of the call, on where a prefill chunk starts or on the thread count:
 * a token's output is the same computed in a decode step or anywhere in a prefill chunk.
 *
 * Scores: q.k by `vdpbf16ps` (exact bf16 products, float32 sums), times the scale. Per block of keys, for
 * each query head: m' = max(m, max s), l = l e^(m - m') + sum e^(s - m'), acc = acc e^(m - m') + sum
 * e^(s - m') v; the output is acc / l. */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>

#define KEY_BLOCK 16
#define MAX_GROUP 16     /* query heads per KV head */
#define MAX_HEAD_DIM 256

/* e^x for x <= 0 (Cephes' expf: x = n ln 2 + r, a degree-6 polynomial in r, times 2^n); within 2 ulp. */
static inline __m512 exp_ps(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

static inline __m512 bf16x16_to_f32(const uint16_t *src) {
    __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)src));
    return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}

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

/* Query heads [group * g, group * (g + 1)) of one row at position `position` over KV head g. */
static void attend(const uint16_t *q_row, const uint16_t *kv, const int32_t *table, int64_t position, int64_t g,
                   int64_t group, int64_t num_kv_heads, int64_t head_dim, int64_t block_size, float scale,
                   uint16_t *out_row) {
    const int chunks = (int)(head_dim / 32);
    __m512bh q[MAX_GROUP][MAX_HEAD_DIM / 32];
    float m[MAX_GROUP], l[MAX_GROUP];
    float acc[MAX_GROUP][MAX_HEAD_DIM] __attribute__((aligned(64)));
    float weights[MAX_GROUP][KEY_BLOCK] __attribute__((aligned(64)));
    for (int64_t h = 0; h < group; h++) {
        for (int c = 0; c < chunks; c++)
            q[h][c] = (__m512bh)_mm512_loadu_si512(q_row + (g * group + h) * head_dim + 32 * c);
        m[h] = -INFINITY;
        l[h] = 0.0f;
        for (int64_t i = 0; i < head_dim; i++) acc[h][i] = 0.0f;
    }
    for (int64_t first = 0; first <= position; first += KEY_BLOCK) {
        const int count = position + 1 - first < KEY_BLOCK ? (int)(position + 1 - first) : KEY_BLOCK;
        const __mmask16 valid = (__mmask16)((1u << count) - 1);
        const uint16_t *keys[KEY_BLOCK], *values[KEY_BLOCK];
        for (int j = 0; j < KEY_BLOCK; j++) {
            /* Lanes past the row's position read its last key (finite values, masked below). */
            const int64_t pos = first + (j < count ? j : count - 1);
            const int64_t slot = (int64_t)table[pos / block_size] * block_size + pos % block_size;
            keys[j] = kv + (slot * 2 * num_kv_heads + g) * head_dim;
            values[j] = kv + ((slot * 2 + 1) * num_kv_heads + g) * head_dim;
        }
        for (int64_t h = 0; h < group; h++) {
            __m512 partial[KEY_BLOCK];
            for (int j = 0; j < KEY_BLOCK; j++) {
                partial[j] = _mm512_setzero_ps();
                for (int c = 0; c < chunks; c++)
                    partial[j] = _mm512_dpbf16_ps(partial[j], q[h][c], (__m512bh)_mm512_loadu_si512(keys[j] + 32 * c));
            }
            const __m512 scores = _mm512_mask_mov_ps(_mm512_set1_ps(-INFINITY), valid,
                                                     _mm512_mul_ps(sum_lanes16(partial), _mm512_set1_ps(scale)));
            const float block_max = _mm512_reduce_max_ps(scores);
            const float m_new = block_max > m[h] ? block_max : m[h];
            const float correction = expf(m[h] - m_new);  /* 0 for the first block (m = -inf) */
            const __m512 e = _mm512_maskz_mov_ps(valid, exp_ps(_mm512_sub_ps(scores, _mm512_set1_ps(m_new))));
            l[h] = l[h] * correction + _mm512_reduce_add_ps(e);
            m[h] = m_new;
            _mm512_store_ps(weights[h], e);
            const __m512 c = _mm512_set1_ps(correction);
            for (int64_t i = 0; i < head_dim; i += 16)
                _mm512_store_ps(acc[h] + i, _mm512_mul_ps(_mm512_load_ps(acc[h] + i), c));
        }
        for (int j = 0; j < count; j++)
            for (int64_t i = 0; i < head_dim; i += 16) {
                const __m512 v = bf16x16_to_f32(values[j] + i);
                for (int64_t h = 0; h < group; h++)
                    _mm512_store_ps(acc[h] + i, _mm512_fmadd_ps(_mm512_set1_ps(weights[h][j]), v,
                                                                _mm512_load_ps(acc[h] + i)));
            }
    }
    for (int64_t h = 0; h < group; h++) {
        const __m512 inverse = _mm512_set1_ps(1.0f / l[h]);
        for (int64_t i = 0; i < head_dim; i += 16)
            _mm256_storeu_si256((__m256i *)(out_row + (g * group + h) * head_dim + i),
                                (__m256i)_mm512_cvtneps_pbh(_mm512_mul_ps(_mm512_load_ps(acc[h] + i), inverse)));
    }
}

/* out [rows, num_heads, head_dim] for q [rows, num_heads, head_dim] and one layer of the cache kv
 * [num_slots, 2, num_kv_heads, head_dim] (keys at [:, 0], values at [:, 1]). Row r attends to positions
 * 0..positions[r] through the block table at tables + table_starts[r]. Returns nonzero for a shape it does
 * not take (head_dim a multiple of 32 up to 256, at most 16 query heads per KV head). */
int row_attention(const uint16_t *q, const uint16_t *kv, const int32_t *tables, const int64_t *table_starts,
                  const int64_t *positions, int64_t rows, int64_t num_heads, int64_t num_kv_heads, int64_t head_dim,
                  int64_t block_size, float scale, uint16_t *out, int num_threads) {
    const int64_t group = num_heads / num_kv_heads;
    if (head_dim % 32 || head_dim > MAX_HEAD_DIM || num_heads % num_kv_heads || group > MAX_GROUP)
        return 1;
    /* Work grows with a row's position: hand out (row, KV head) pairs one at a time. */
    #pragma omp parallel for schedule(dynamic, 1) num_threads(num_threads)
    for (int64_t task = 0; task < rows * num_kv_heads; task++) {
        const int64_t r = task / num_kv_heads, g = task % num_kv_heads;
        attend(q + r * num_heads * head_dim, kv, tables + table_starts[r], positions[r], g, group, num_kv_heads,
               head_dim, block_size, scale, out + r * num_heads * head_dim);
    }
    return 0;
}
