/* AVX-512 helpers shared by the kernels in this folder (included, so each source stays one translation unit;
 * kernels/model/c_library.py hashes this header into every build). */
#ifndef HEARTH_AVX512_MATH_H
#define HEARTH_AVX512_MATH_H

#include <immintrin.h>
#include <stdint.h>

/* Sixteen bf16 values, widened exactly to float32. */
static inline __m512 load_bf16_ps(const uint16_t *src) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)src)), 16));
}

/* Sixteen float32 sums to out[offset..]: as they are when out_is_float32, else rounded to bf16. */
static inline void store_f32_or_bf16(void *out, int64_t offset, __m512 y, int out_is_float32) {
    if (out_is_float32)
        _mm512_storeu_ps((float *)out + offset, y);
    else
        _mm256_storeu_si256((__m256i *)((uint16_t *)out + offset), (__m256i)_mm512_cvtneps_pbh(y));
}

/* e^x for x in [-87, 88] (clamped; Cephes' expf: x = n ln 2 + r, a degree-6 polynomial in r, times 2^n);
 * within 2 ulp. */
static inline __m512 exp_ps(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
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

#endif
