/* A decode step's whole layer stack in one call, for block-quantized or bf16 weights: per layer, fused_layer.c's
 * front, the new keys and values written to their cache slots, each row's attention (row_attention.c, handed
 * in as a function pointer since it lives in its own library), and fused_layer.c's back.
 *
 * Why: the same calls made from Python cost ~25 us of dispatch each (ctypes, argument checks, allocation of
 * q, k, v and the attention output, a torch stack and index_copy_ for the cache write), four per layer, ~3 ms
 * of a ~10 ms one-row step. The arithmetic is the functions the per-layer path calls, in the same order, so
 * both give the same bits. Built into the library of vnni_linear.c and fused_layer.c. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int layer_front(const float *hidden, int64_t rows, int64_t dim, const uint16_t *norm_weight, float eps, int form,
                const uint8_t *qkv_weight, int64_t num_heads, int64_t num_kv_heads, int64_t head_dim,
                const uint16_t *cos, const uint16_t *signed_sin, uint16_t *q, uint16_t *k, uint16_t *v,
                int num_threads);
int layer_back(float *hidden, int64_t rows, int64_t dim, const uint16_t *attn, int64_t attn_dim, int o_form,
               const uint8_t *o_weight, const uint16_t *norm_weight, float eps, int gate_up_form,
               const uint8_t *gate_up_weight, int64_t intermediate, int down_form, const uint8_t *down_weight,
               int num_threads);

typedef int (*row_attention_fn)(const uint16_t *q, const uint16_t *kv, const int32_t *tables,
                                const int64_t *table_starts, const int64_t *positions, int64_t rows,
                                int64_t num_heads, int64_t num_kv_heads, int64_t head_dim, int64_t block_size,
                                float scale, uint16_t *out, int num_threads);
typedef void (*write_kv_fn)(uint16_t *kv, const uint16_t *k, const uint16_t *v, const int64_t *slots, int64_t rows,
                            int64_t num_kv_heads, int64_t head_dim, int64_t block_size);

/* Pointers of one layer, in this order, LAYER_POINTERS per layer. */
enum { INPUT_NORM, QKV, O, POST_NORM, GATE_UP, DOWN, LAYER_POINTERS };
/* Forms of one layer (4: Q4_1, 8: Q8_0, 16: bf16 records), LAYER_FORMS per layer. */
enum { QKV_FORM, O_FORM, GATE_UP_FORM, DOWN_FORM, LAYER_FORMS };

/* hidden [rows, dim] float32, updated in place through every layer. kv is the cache, [num_layers,
 * layer_slots, 2, num_kv_heads, head_dim] bf16 (laid out within each block as row_attention.c keeps it:
 * write_kv); row r writes its key and value to slot slot_mapping[r] of each layer, then attends to positions 0..positions[r] through its block table at tables +
 * table_starts[r]. cos, signed_sin [rows, head_dim] bf16. Returns nonzero when out of memory or a kernel
 * fails (the cache may then hold some layers' new keys). */
int decode_layers(float *hidden, int64_t rows, int64_t dim, int64_t num_layers, const void *const *pointers,
                  const int32_t *forms, float eps, int64_t num_heads, int64_t num_kv_heads, int64_t head_dim,
                  int64_t intermediate, const uint16_t *cos, const uint16_t *signed_sin, uint16_t *kv,
                  int64_t layer_slots, const int64_t *slot_mapping, const int32_t *tables,
                  const int64_t *table_starts, const int64_t *positions, int64_t block_size, float scale,
                  row_attention_fn row_attention, write_kv_fn write_kv, int num_threads) {
    const int64_t q_width = num_heads * head_dim, kv_width = num_kv_heads * head_dim;
    uint16_t *q = malloc(rows * q_width * sizeof(uint16_t)), *attn = malloc(rows * q_width * sizeof(uint16_t));
    uint16_t *k = malloc(rows * kv_width * sizeof(uint16_t)), *v = malloc(rows * kv_width * sizeof(uint16_t));
    int failed = !q || !attn || !k || !v;
    for (int64_t layer = 0; layer < num_layers && !failed; layer++) {
        const void *const *w = pointers + layer * LAYER_POINTERS;
        const int32_t *form = forms + layer * LAYER_FORMS;
        uint16_t *kv_layer = kv + layer * layer_slots * 2 * kv_width;
        failed = layer_front(hidden, rows, dim, w[INPUT_NORM], eps, form[QKV_FORM], w[QKV], num_heads, num_kv_heads,
                             head_dim, cos, signed_sin, q, k, v, num_threads);
        if (failed)
            break;
        write_kv(kv_layer, k, v, slot_mapping, rows, num_kv_heads, head_dim, block_size);
        failed = row_attention(q, kv_layer, tables, table_starts, positions, rows, num_heads, num_kv_heads, head_dim,
                               block_size, scale, attn, num_threads)
              || layer_back(hidden, rows, dim, attn, q_width, form[O_FORM], w[O], w[POST_NORM], eps,
                            form[GATE_UP_FORM], w[GATE_UP], intermediate, form[DOWN_FORM], w[DOWN], num_threads);
    }
    free(q);
    free(attn);
    free(k);
    free(v);
    return failed;
}
