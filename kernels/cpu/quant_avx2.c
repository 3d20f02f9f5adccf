/* quant_avx2.c - the dot and widening kernels of kernels/cpu/quant.h for
 * AVX2 + FMA + F16C (quant_x86.h is the body): u8 x s8 products through
 * vpmaddubsw (pairs into int16) and vpmaddwd (into int32, times a
 * sub-block scale where the block has them). Chosen at run time
 * (cpu_isa.c); compiled for those instructions whatever the build's
 * -march. */
#include "kernels/cpu/quant.h"

#if defined(__x86_64__) || defined(__i386__)

#define QK_FN(name) name##_avx2
#define QK_TARGET __attribute__((target("avx2,fma,f16c")))
#define QK_DOT4(u, s) _mm256_madd_epi16(_mm256_maddubs_epi16((u), (s)), _mm256_set1_epi16(1))
#define QK_DOT4_SC(u, s, lo, hi)                                                                                   \
    _mm256_madd_epi16(_mm256_maddubs_epi16((u), (s)),                                                            \
                      _mm256_set_m128i(_mm_set1_epi16((short)(hi)), _mm_set1_epi16((short)(lo))))
#include "kernels/cpu/quant_x86.h"

int dms_cpu_kernels_avx2(dms_cpu_kernels *k) {
    fill_avx2(k);
    return 0;
}

#else

int dms_cpu_kernels_avx2(dms_cpu_kernels *k) {
    (void)k;
    return -1;
}

#endif
