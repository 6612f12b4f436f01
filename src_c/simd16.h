/* simd16.h: AVX-512 helpers on 16 floats that several kernel families share. They are
 * compiled for that target only (inlined into functions with the same target attribute)
 * and called where the CPU has it (__builtin_cpu_supports("avx512f")), so the package
 * still builds and runs on CPUs without it. FASTNN_SIMD16 is 0 where the compiler or the
 * architecture cannot build them. */
#ifndef FASTNN_SIMD16_H
#define FASTNN_SIMD16_H

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define FASTNN_SIMD16 1
#include <immintrin.h>
#define SIMD16_INLINE static inline __attribute__((always_inline, target("avx512f")))

/* exp_nonpositive_f32 on 16 lanes: the same operations in the same order (no fused
 * multiply-adds), so each lane has the scalar function's bits. */
SIMD16_INLINE __m512 exp_nonpositive_x16(__m512 x)
{
    const __m512 shift = _mm512_set1_ps(12582912.0f), lowest = _mm512_set1_ps(-87.33f);
    __m512 xc = _mm512_max_ps(lowest, x); /* NaN stays NaN: max returns its second operand */
    __m512 n = _mm512_sub_ps(_mm512_add_ps(_mm512_mul_ps(xc, _mm512_set1_ps(1.44269504088896341f)),
                                           shift), shift);
    __m512 r = _mm512_sub_ps(xc, _mm512_mul_ps(n, _mm512_set1_ps(0.693359375f)));
    r = _mm512_sub_ps(r, _mm512_mul_ps(n, _mm512_set1_ps(-2.12194440e-4f)));
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(5.0000001201e-1f));
    __m512 e = _mm512_add_ps(_mm512_add_ps(_mm512_mul_ps(_mm512_mul_ps(p, r), r), r),
                             _mm512_set1_ps(1.0f));
    __m512 n_defined = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(n, n, _CMP_ORD_Q), n);
    __m512i bits = _mm512_slli_epi32(
        _mm512_add_epi32(_mm512_cvttps_epi32(n_defined), _mm512_set1_epi32(127)), 23);
    __m512 value = _mm512_mul_ps(e, _mm512_castsi512_ps(bits));
    return _mm512_maskz_mov_ps(~_mm512_cmp_ps_mask(x, lowest, _CMP_LT_OQ), value);
}

/* exp_nonpositive_f64 (activations.h) on 8 doubles: the same operations in the same order
 * (no fused multiply-adds), so each lane has the scalar function's bits. */
SIMD16_INLINE __m512d exp_nonpositive_x8(__m512d x)
{
    const __m512d shift = _mm512_set1_pd(6755399441055744.0), lowest = _mm512_set1_pd(-708.39);
    static const double coef[11] = {1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0,
                                    1.0 / 362880.0,    1.0 / 40320.0,    1.0 / 5040.0,
                                    1.0 / 720.0,       1.0 / 120.0,      1.0 / 24.0,
                                    1.0 / 6.0,         0.5};
    __m512d xc = _mm512_max_pd(lowest, x); /* NaN stays NaN: max returns its second operand */
    __m512d t = _mm512_add_pd(_mm512_mul_pd(xc, _mm512_set1_pd(1.4426950408889634)), shift);
    __m512d n = _mm512_sub_pd(t, shift);
    __m512d r = _mm512_sub_pd(xc, _mm512_mul_pd(n, _mm512_set1_pd(6.93147180369123816490e-01)));
    r = _mm512_sub_pd(r, _mm512_mul_pd(n, _mm512_set1_pd(1.90821492927058770002e-10)));
    __m512d p = _mm512_set1_pd(1.0 / 6227020800.0);
    for (int i = 0; i < 11; i++)
        p = _mm512_add_pd(_mm512_mul_pd(p, r), _mm512_set1_pd(coef[i]));
    __m512d e = _mm512_add_pd(_mm512_add_pd(_mm512_mul_pd(_mm512_mul_pd(p, r), r), r),
                              _mm512_set1_pd(1.0));
    /* t = 1.5 * 2^52 + n exactly, so its bits are shift's plus n: 2^n's exponent bits from
     * integer arithmetic (a conversion to int64 would need AVX-512DQ); a NaN lane's e is
     * NaN whatever they hold */
    __m512i bits = _mm512_slli_epi64(
        _mm512_add_epi64(_mm512_sub_epi64(_mm512_castpd_si512(t), _mm512_castpd_si512(shift)),
                         _mm512_set1_epi64(1023)), 52);
    __m512d value = _mm512_mul_pd(e, _mm512_castsi512_pd(bits));
    return _mm512_maskz_mov_pd(~_mm512_cmp_pd_mask(x, lowest, _CMP_LT_OQ), value);
}

/* Transposes 16 x 16 floats in registers: r[i] holds row i before, column i after.
 * Unpacks interleave rows in pairs (32-bit) and quads (64-bit) within each 128-bit lane,
 * leaving r[4q + c] with quad q's values of columns c, c + 4, c + 8, c + 12 in lanes
 * 0-3; two rounds of 128-bit lane shuffles then gather each column's four quads. */
SIMD16_INLINE void transpose_16x16_f32(__m512 r[16])
{
    __m512 t[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int q = 0; q < 4; q++) {
        __m512d lo = _mm512_castps_pd(t[4 * q]), lo2 = _mm512_castps_pd(t[4 * q + 2]);
        __m512d hi = _mm512_castps_pd(t[4 * q + 1]), hi2 = _mm512_castps_pd(t[4 * q + 3]);
        r[4 * q] = _mm512_castpd_ps(_mm512_unpacklo_pd(lo, lo2));
        r[4 * q + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(lo, lo2));
        r[4 * q + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(hi, hi2));
        r[4 * q + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(hi, hi2));
    }
    for (int c = 0; c < 4; c++) {
        t[c] = _mm512_shuffle_f32x4(r[c], r[4 + c], 0x88);
        t[4 + c] = _mm512_shuffle_f32x4(r[c], r[4 + c], 0xdd);
        t[8 + c] = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0x88);
        t[12 + c] = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0xdd);
    }
    for (int c = 0; c < 4; c++) {
        r[c] = _mm512_shuffle_f32x4(t[c], t[8 + c], 0x88);
        r[c + 8] = _mm512_shuffle_f32x4(t[c], t[8 + c], 0xdd);
        r[c + 4] = _mm512_shuffle_f32x4(t[4 + c], t[12 + c], 0x88);
        r[c + 12] = _mm512_shuffle_f32x4(t[4 + c], t[12 + c], 0xdd);
    }
}

#else
#define FASTNN_SIMD16 0
#endif

#endif
