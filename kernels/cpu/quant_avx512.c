/* quant_avx512.c - the dot and widening kernels of kernels/cpu/quant.h
 * with AVX-512 VNNI (quant_x86.h is the body): u8 x s8 products summed four
 * at a time into int32 by vpdpbusd on 256-bit vectors (AVX512VL), one
 * instruction where AVX2 needs vpmaddubsw + vpmaddwd, then vpmulld by a
 * sub-block scale where the block has them. Chosen at run time (cpu_isa.c)
 * on CPUs with AVX512F, BW, VL and VNNI; compiled for them whatever the
 * build's -march. */
#include "kernels/cpu/quant.h"

#if defined(__x86_64__) || defined(__i386__)

#define QK_FN(name) name##_avx512
#define QK_TARGET __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))
#define QK_DOT4(u, s) _mm256_dpbusd_epi32(_mm256_setzero_si256(), (u), (s))
#define QK_DOT4_SC(u, s, lo, hi)                                                                                   \
    _mm256_mullo_epi32(_mm256_dpbusd_epi32(_mm256_setzero_si256(), (u), (s)),                                    \
                       _mm256_set_m128i(_mm_set1_epi32(hi), _mm_set1_epi32(lo)))
#include "kernels/cpu/quant_x86.h"

int dms_cpu_kernels_avx512(dms_cpu_kernels *k) {
    fill_avx512(k);
    return 0;
}

#else

int dms_cpu_kernels_avx512(dms_cpu_kernels *k) {
    (void)k;
    return -1;
}

#endif
