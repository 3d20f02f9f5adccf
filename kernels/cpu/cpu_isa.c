/* cpu_isa.c - which instruction sets the kept-dtype kernels
 * (kernels/cpu/quant.h) may use on this CPU, from CPUID: AVX2 needs AVX2
 * and FMA with the OS saving the YMM state (what __builtin_cpu_supports
 * reports) and F16C (CPUID leaf 1, ECX bit 29); the AVX-512 set needs
 * AVX512F, BW, VL and VNNI (reported only when the OS saves the ZMM state).
 * The backend asks once, when it is created, and keeps the table. */
#include "kernels/cpu/quant.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

const char *dms_cpu_isa_name(dms_cpu_isa isa) {
    switch (isa) {
    case DMS_CPU_ISA_PORTABLE: return "portable";
    case DMS_CPU_ISA_AVX2: return "avx2";
    case DMS_CPU_ISA_AVX512: return "avx512vnni";
    default: return "?";
    }
}

#if defined(__x86_64__) || defined(__i386__)
static int has_f16c(void) {
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
}
#endif

int dms_cpu_isa_available(dms_cpu_isa isa) {
    if (isa == DMS_CPU_ISA_PORTABLE) return 1;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    const int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && has_f16c();
    if (isa == DMS_CPU_ISA_AVX2) return avx2;
    if (isa == DMS_CPU_ISA_AVX512)
        return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
#endif
    return 0;
}

dms_cpu_isa dms_cpu_isa_best(void) {
    for (int i = DMS_CPU_ISA_COUNT - 1; i > 0; i--)
        if (dms_cpu_isa_available((dms_cpu_isa)i)) return (dms_cpu_isa)i;
    return DMS_CPU_ISA_PORTABLE;
}

int dms_cpu_kernels_init(dms_cpu_kernels *k, dms_cpu_isa isa) {
    if (!dms_cpu_isa_available(isa)) return -1;
    k->isa = isa;
    switch (isa) {
    case DMS_CPU_ISA_AVX2: return dms_cpu_kernels_avx2(k);
    case DMS_CPU_ISA_AVX512: return dms_cpu_kernels_avx512(k);
    default: dms_cpu_kernels_portable(k); return 0;
    }
}
