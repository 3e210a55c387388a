/* A Llama layer's per-row work around attention, for block-quantized or bf16 weights (vnni_linear.c's and
 * bf16_linear.c's kernels) and a float32 residual stream, in two calls instead of ~25 torch ops and 4 kernel
 * calls. Built into one library with vnni_linear.c; loaded by kernels/model/fused_layer.py.
 *
 *   layer_front: x = norm(hidden); q, k, v = split(qkv(x)); q, k rotated
 *   layer_back:  hidden += o(attn); x = norm(hidden); hidden += down(silu(gate(x)) * up(x))
 *
 * Rounding follows the torch path's (engine/model/models/llama.py): the norm in float32, rounded to bf16,
 * times the bf16 weight, rounded; rotary and silu * up in bf16 steps; o and down hand their float32
 * accumulators to the residual. The norm and silu * up are exported on their own too (rms_norm_bf16,
 * silu_mul_bf16), for that torch path to compute them the same way. Every row is computed on its own. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "simd.h"

int q4_linear(const uint16_t *x, int64_t rows, int64_t k, const uint8_t *w, int64_t n, void *out, int out_is_float32,
              int num_threads);
int q8_linear(const uint16_t *x, int64_t rows, int64_t k, const uint8_t *w, int64_t n, void *out, int out_is_float32,
              int num_threads);
int b16_linear(const uint16_t *x, int64_t rows, int64_t k, const uint8_t *w, int64_t n, void *out,
               int out_is_float32, int num_threads);
int q8k_linear(const uint16_t *x, int64_t rows, int64_t k, const uint8_t *w, int64_t n, void *out,
               int out_is_float32, int num_threads);
int q5_linear(const uint16_t *x, int64_t rows, int64_t k, const uint8_t *w, int64_t n, void *out,
              int out_is_float32, int num_threads);

/* form: 4 (Q4_1 records), 5 (Q5 records), 8 (Q8_0 records), 9 (Q8K records) or 16 (bf16 records), as
 * kernels.model.vnni_linear packs them. */
static int linear(int form, const uint16_t *x, int64_t rows, int64_t k, const uint8_t *w, int64_t n, void *out,
                  int out_is_float32, int num_threads) {
    return (form == 16 ? b16_linear : form == 9 ? q8k_linear : form == 8 ? q8_linear : form == 5 ? q5_linear
            : q4_linear)(
        x, rows, k, w, n, out, out_is_float32, num_threads);
}

static inline float bf16_to_f32(uint16_t b) {
    uint32_t bits = (uint32_t)b << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* Round to nearest even, as torch's bf16 conversion (no NaN in these paths). */
static inline uint16_t f32_to_bf16(float f) {
    uint32_t bits;
    memcpy(&bits, &f, 4);
    return (uint16_t)((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
}

/* x [rows, dim] bf16 = bf16(bf16(h rsqrt(mean(h^2) + eps)) w) for hidden h [rows, dim] float32. */
static void rms_norm_rows(const float *hidden, int64_t rows, int64_t dim, const uint16_t *weight, float eps,
                          uint16_t *x, int num_threads) {
    #pragma omp parallel for schedule(static) num_threads(num_threads) if (rows > 8)
    for (int64_t r = 0; r < rows; r++) {
        const float *h = hidden + r * dim;
        vf squares = vf_zero();
        int64_t i = 0;
        for (; i + 16 <= dim; i += 16) {
            const vf v = vf_load(h + i);
            squares = vf_fmadd(v, v, squares);
        }
        float sum = vf_reduce_add(squares);
        for (; i < dim; i++)
            sum += h[i] * h[i];
        const float scale = 1.0f / sqrtf(sum / (float)dim + eps);
        for (i = 0; i + 16 <= dim; i += 16) {
            const vf normed = vf_round_bf16(vf_mul(vf_load(h + i), vf_set1(scale)));
            vf_store_bf16_exact(x + r * dim + i, vf_round_bf16(vf_mul(normed, vf_load_bf16(weight + i))));
        }
        for (; i < dim; i++)
            x[r * dim + i] = f32_to_bf16(bf16_to_f32(f32_to_bf16(h[i] * scale)) * bf16_to_f32(weight[i]));
    }
}

/* q [rows, num_heads, head_dim], k and v [rows, num_kv_heads, head_dim] bf16 from the layer's fused qkv
 * projection; q and k rotated: bf16(bf16(x cos) + bf16(roll(x, head_dim / 2) signed_sin)), with cos and
 * signed_sin [rows, head_dim] the rows' rotary tables (the sign of rotate_half folded into signed_sin).
 * Returns nonzero when out of memory or a kernel fails. */
int layer_front(const float *hidden, int64_t rows, int64_t dim, const uint16_t *norm_weight, float eps, int form,
                const uint8_t *qkv_weight, int64_t num_heads, int64_t num_kv_heads, int64_t head_dim,
                const uint16_t *cos, const uint16_t *signed_sin, uint16_t *q, uint16_t *k, uint16_t *v,
                int num_threads) {
    const int64_t width = (num_heads + 2 * num_kv_heads) * head_dim, half = head_dim / 2;
    uint16_t *x = malloc(rows * dim * sizeof(uint16_t)), *qkv = malloc(rows * width * sizeof(uint16_t));
    int failed = !x || !qkv;
    if (!failed) {
        rms_norm_rows(hidden, rows, dim, norm_weight, eps, x, num_threads);
        failed = linear(form, x, rows, dim, qkv_weight, width, qkv, 0, num_threads);
    }
    if (!failed) {
        #pragma omp parallel for schedule(static) num_threads(num_threads) if (rows > 8)
        for (int64_t r = 0; r < rows; r++) {
            const uint16_t *row = qkv + r * width, *c = cos + r * head_dim, *s = signed_sin + r * head_dim;
            for (int64_t head = 0; head < num_heads + num_kv_heads; head++) {
                const uint16_t *src = row + head * head_dim;
                uint16_t *dst = head < num_heads ? q + (r * num_heads + head) * head_dim
                                                 : k + (r * num_kv_heads + head - num_heads) * head_dim;
                int64_t i = 0;
                if (half % 16 == 0)  /* the rolled halves start on 16-element boundaries */
                    for (; i < head_dim; i += 16) {
                        const vf straight = vf_round_bf16(vf_mul(vf_load_bf16(src + i), vf_load_bf16(c + i)));
                        const vf rolled = vf_round_bf16(vf_mul(vf_load_bf16(src + (i + half) % head_dim),
                                                                          vf_load_bf16(s + i)));
                        vf_store_bf16_exact(dst + i, vf_round_bf16(vf_add(straight, rolled)));
                    }
                for (; i < head_dim; i++) {
                    const float straight = bf16_to_f32(f32_to_bf16(bf16_to_f32(src[i]) * bf16_to_f32(c[i])));
                    const float rolled = bf16_to_f32(f32_to_bf16(bf16_to_f32(src[(i + half) % head_dim]) *
                                                                 bf16_to_f32(s[i])));
                    dst[i] = f32_to_bf16(straight + rolled);
                }
            }
            memcpy(v + r * num_kv_heads * head_dim, row + (num_heads + num_kv_heads) * head_dim,
                   num_kv_heads * head_dim * sizeof(uint16_t));
        }
    }
    free(x);
    free(qkv);
    return failed;
}

/* silu(x) = x / (1 + e^-x), sixteen at a time (e^-x clamped to [e^-87, e^88]). */
static inline vf silu_ps(vf x) {
    return vf_div(x, vf_add(vf_set1(1.0f), vf_exp(vf_sub(vf_zero(), x))));
}

/* act [rows, intermediate] = bf16(bf16(silu(gate)) up) for gate_up [rows, 2 intermediate] bf16 (gate first). */
static void silu_mul_rows(const uint16_t *gate_up, int64_t rows, int64_t intermediate, uint16_t *act, int num_threads) {
    #pragma omp parallel for schedule(static) num_threads(num_threads) if (rows > 8)
    for (int64_t r = 0; r < rows; r++) {
        const uint16_t *gate = gate_up + r * 2 * intermediate, *up = gate + intermediate;
        int64_t i = 0;
        for (; i + 16 <= intermediate; i += 16) {
            const vf activated = vf_round_bf16(silu_ps(vf_load_bf16(gate + i)));
            vf_store_bf16_exact(act + r * intermediate + i, vf_round_bf16(vf_mul(activated, vf_load_bf16(up + i))));
        }
        if (i < intermediate) {  /* the tail, through a zero-padded buffer: the same operations */
            uint16_t tail_gate[16] = {0}, tail_up[16] = {0}, tail_act[16];
            memcpy(tail_gate, gate + i, (intermediate - i) * sizeof(uint16_t));
            memcpy(tail_up, up + i, (intermediate - i) * sizeof(uint16_t));
            const vf activated = vf_round_bf16(silu_ps(vf_load_bf16(tail_gate)));
            vf_store_bf16_exact(tail_act, vf_round_bf16(vf_mul(activated, vf_load_bf16(tail_up))));
            memcpy(act + r * intermediate + i, tail_act, (intermediate - i) * sizeof(uint16_t));
        }
    }
}

/* The two per-row operations above on their own, for the torch path of the same models (so that it computes
 * what the fused calls compute). */
void rms_norm_bf16(const float *hidden, int64_t rows, int64_t dim, const uint16_t *weight, float eps, uint16_t *x,
                   int num_threads) {
    rms_norm_rows(hidden, rows, dim, weight, eps, x, num_threads);
}

void silu_mul_bf16(const uint16_t *gate_up, int64_t rows, int64_t intermediate, uint16_t *act, int num_threads) {
    silu_mul_rows(gate_up, rows, intermediate, act, num_threads);
}

/* hidden [rows, dim] float32, in place: hidden += o(attn); hidden += down(bf16(bf16(silu(gate)) up)) with
 * gate, up = gate_up(norm(hidden)) in bf16. Returns nonzero when out of memory or a kernel fails. */
int layer_back(float *hidden, int64_t rows, int64_t dim, const uint16_t *attn, int64_t attn_dim, int o_form,
               const uint8_t *o_weight, const uint16_t *norm_weight, float eps, int gate_up_form,
               const uint8_t *gate_up_weight, int64_t intermediate, int down_form, const uint8_t *down_weight,
               int num_threads) {
    float *update = malloc(rows * dim * sizeof(float));
    uint16_t *x = malloc(rows * dim * sizeof(uint16_t));
    uint16_t *gate_up = malloc(rows * 2 * intermediate * sizeof(uint16_t));
    uint16_t *act = malloc(rows * intermediate * sizeof(uint16_t));
    int failed = !update || !x || !gate_up || !act;
    if (!failed)
        failed = linear(o_form, attn, rows, attn_dim, o_weight, dim, update, 1, num_threads);
    if (!failed) {
        for (int64_t i = 0; i < rows * dim; i++)
            hidden[i] += update[i];
        rms_norm_rows(hidden, rows, dim, norm_weight, eps, x, num_threads);
        failed = linear(gate_up_form, x, rows, dim, gate_up_weight, 2 * intermediate, gate_up, 0, num_threads);
    }
    if (!failed) {
        silu_mul_rows(gate_up, rows, intermediate, act, num_threads);
        failed = linear(down_form, act, rows, intermediate, down_weight, dim, update, 1, num_threads);
    }
    if (!failed)
        for (int64_t i = 0; i < rows * dim; i++)
            hidden[i] += update[i];
    free(update);
    free(x);
    free(gate_up);
    free(act);
    return failed;
}
