/* dms_rng.h - the counter-based RNG behind the eviction noise. Each value
 * is a pure function of (seed, step, layer, head, global token index), so a
 * run gives the same noise whatever the number of ranks, the batch split or
 * a resume, and the CPU and CUDA backends draw identical numbers. Usable
 * from C and CUDA (host and device). */
#ifndef DMS_RNG_H
#define DMS_RNG_H

#include <math.h>
#include <stdint.h>

#ifdef __CUDACC__
#define DMS_HD __host__ __device__
#else
#define DMS_HD
#endif

/* splitmix64 finaliser: a bijective 64-bit mixer */
static inline DMS_HD uint64_t dms_mix64(uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Hash of the key tuple; each field goes through the mixer in turn. */
static inline DMS_HD uint64_t dms_rng_key(uint64_t seed, uint64_t step, uint64_t layer, uint64_t head,
                                          uint64_t token) {
    uint64_t h = dms_mix64(seed);
    h = dms_mix64(h ^ step);
    h = dms_mix64(h ^ (layer << 32 | head));
    return dms_mix64(h ^ token);
}

/* Uniform in (0, 1), 24 bits (exactly representable in fp32, never 0 or 1). */
static inline DMS_HD float dms_rng_uniform(uint64_t h) {
    return ((float)(h >> 40) + 0.5f) * (1.0f / 16777216.0f);
}

/* Logistic(0, 1) sample: the difference of two Gumbel(0, 1) samples. */
static inline DMS_HD float dms_rng_logistic(uint64_t h) {
    float u = dms_rng_uniform(h);
    return logf(u) - logf(1.0f - u);
}

#endif
