/* test_flash_emul.cpp - the tiled CUDA DMS attention kernels, fp32
 * (kernels/cuda/attention_flash.cu) and tensor-core bf16
 * (kernels/cuda/attention_mma.cu), run on the CPU, so that their logic
 * (tiling, masks, the log-keep bias, online softmax, the three backward
 * products, the mma fragment layouts) is checked on every machine, not
 * only where a GPU is lent.
 *
 * The kernels are compiled as host C++ (-DDMS_CUDA_EMUL): a CUDA block is
 * 128 std::threads, __syncthreads and __syncwarp are barriers, and a warp
 * shuffle or vote goes through a per-warp array between barriers, so every
 * thread runs the kernel's own code in the kernel's own order. mma.sync
 * m16n8k16 (bf16 in, fp32 accumulate) is a warp collective too: each lane
 * deposits its A, B fragments, every lane rebuilds the 16x16 and 16x8
 * matrices by the PTX ISA's fragment layout and takes its own C elements;
 * a wrong layout in the kernels gives wrong results here. ldmatrix (plain
 * and .trans) is a warp collective the same way: each lane deposits its
 * row address and takes its part of the four 8x8 matrices by the PTX
 * ISA's layout; cp.async is an immediate copy. Shared memory is
 * filled with 0xff bytes before each block (NaN as fp32 and as bf16: a
 * read of anything the kernel did not write poisons the result) and
 * checked byte by byte past the size the host code declares (a write
 * outside it is reported). The reference is a naive double-precision
 * forward and backward; the bf16 kernels are held to 1e-2 of the largest
 * value (bf16 operands: 8 bits of mantissa), the fp32 ones to 1e-5.
 * What this cannot see:
 * timing, occupancy and the device's own float rounding (test_ops cuda,
 * label gpu, compares the real kernels with the CPU backend). */
#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

using std::min;

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
static thread_local dim3 threadIdx, blockIdx;
static dim3 blockDim, gridDim;
static std::barrier<> *block_barrier;
static std::barrier<> *warp_barrier[32];
static float warp_f[32][32];
static int warp_i[32][32];

#define __global__
#define __launch_bounds__(n)
#define __device__
#define __forceinline__ inline
#define __shared__
static void __syncthreads() { block_barrier->arrive_and_wait(); }
static void __syncwarp(unsigned = 0xffffffffu) { warp_barrier[threadIdx.x >> 5]->arrive_and_wait(); }
static float __shfl_xor_sync(unsigned, float v, int lane_mask) {
    const int w = threadIdx.x >> 5, l = threadIdx.x & 31;
    __syncwarp();
    warp_f[w][l] = v;
    __syncwarp();
    const float r = warp_f[w][l ^ lane_mask];
    __syncwarp();
    return r;
}
/* how many lanes of the warp vote p != 0 */
static int warp_votes(int p) {
    const int w = threadIdx.x >> 5, l = threadIdx.x & 31;
    __syncwarp();
    warp_i[w][l] = p;
    __syncwarp();
    int n = 0;
    for (int x = 0; x < 32; x++) n += warp_i[w][x] != 0;
    __syncwarp();
    return n;
}
static int __any_sync(unsigned, int p) { return warp_votes(p) > 0; }
static int __all_sync(unsigned, int p) { return warp_votes(p) == 32; }
/* as in kernels/cuda/cuda_internal.cuh */
static float cu_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
static float cu_warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32: d += A B, by the
 * fragment layout of the PTX ISA (g = lane / 4, t = lane % 4) */
static uint32_t warp_frag[32][32][6];
static float bf16_float(uint32_t h) {
    const uint32_t u = h << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
static void mm_mma(float *d, const uint32_t *a, const uint32_t *b) {
    const int w = threadIdx.x >> 5, l = threadIdx.x & 31;
    __syncwarp();
    for (int x = 0; x < 4; x++) warp_frag[w][l][x] = a[x];
    warp_frag[w][l][4] = b[0];
    warp_frag[w][l][5] = b[1];
    __syncwarp();
    float A[16][16], B[16][8];
    for (int L = 0; L < 32; L++) {
        const int G = L >> 2, Tq = L & 3;
        for (int x = 0; x < 4; x++) { /* a0: (g, 2t) a1: (g+8, 2t) a2: (g, 2t+8) a3: (g+8, 2t+8) */
            const uint32_t r = warp_frag[w][L][x];
            const int row = G + (x & 1 ? 8 : 0), col = 2 * Tq + (x & 2 ? 8 : 0);
            A[row][col] = bf16_float(r & 0xffffu);
            A[row][col + 1] = bf16_float(r >> 16);
        }
        for (int x = 0; x < 2; x++) { /* b0: rows (2t, 2t+1), b1: rows (2t+8, 2t+9); column g */
            const uint32_t r = warp_frag[w][L][4 + x];
            const int row = 2 * Tq + (x ? 8 : 0);
            B[row][G] = bf16_float(r & 0xffffu);
            B[row + 1][G] = bf16_float(r >> 16);
        }
    }
    __syncwarp();
    const int g = l >> 2, t = l & 3;
    for (int e = 0; e < 4; e++) { /* c0, c1: row g; c2, c3: row g+8; columns 2t, 2t+1 */
        const int row = g + (e >> 1) * 8, col = 2 * t + (e & 1);
        double acc = 0;
        for (int x = 0; x < 16; x++) acc += (double)A[row][x] * B[x][col];
        d[e] = (float)(d[e] + acc);
    }
}

/* ldmatrix.sync.aligned.m8n8.x4(.trans).shared.b16: lane l gives the
 * address of row l % 8 of matrix l / 8 (8 bf16, 16 bytes); d[m] of lane l
 * is row l / 4, elements 2 (l % 4) and 2 (l % 4) + 1 of matrix m, or with
 * .trans rows 2 (l % 4) and 2 (l % 4) + 1 of column l / 4 */
static const uint32_t *warp_row[32][32];
static void ldsm(uint32_t *d, const uint32_t *p, int trans) {
    const int w = threadIdx.x >> 5, l = threadIdx.x & 31;
    __syncwarp();
    warp_row[w][l] = p;
    __syncwarp();
    for (int m = 0; m < 4; m++) {
        if (!trans) {
            d[m] = warp_row[w][8 * m + l / 4][l % 4];
        } else {
            uint16_t lo, hi; /* element l / 4 of rows 2 (l % 4) and 2 (l % 4) + 1 */
            std::memcpy(&lo, (const uint16_t *)warp_row[w][8 * m + 2 * (l % 4)] + l / 4, 2);
            std::memcpy(&hi, (const uint16_t *)warp_row[w][8 * m + 2 * (l % 4) + 1] + l / 4, 2);
            d[m] = (uint32_t)lo | ((uint32_t)hi << 16);
        }
    }
    __syncwarp();
}
static void mm_ldsm(uint32_t *d, const uint32_t *p) { ldsm(d, p, 0); }
static void mm_ldsm_t(uint32_t *d, const uint32_t *p) { ldsm(d, p, 1); }

#define SM_FLOATS (1 << 16) /* 256 KiB: more than any GPU gives a block */
static float sm_all[SM_FLOATS + 1024];
#define sm sm_all /* the kernels' `extern __shared__ float sm[]` */

#define DMS_CUDA_EMUL
#include "kernels/cuda/attention_flash.cu"
#include "kernels/cuda/attention_mma.cu"

static int failures;

/* Runs kernel f on grid g with the given shared bytes, one block at a time,
 * on one set of `threads` threads that goes from block to block (creating
 * them anew for every block cost more than most kernels' work): thread 0
 * poisons shared memory before a block and checks after it that nothing
 * was written past its bytes, each between two block barriers. */
template <typename F, typename... A>
static void launch(const char *name, F f, dim3 g, int threads, size_t smem, A... a) {
    if (smem > sizeof(float) * SM_FLOATS) {
        std::printf("FAIL %s: %zu shared bytes\n", name, smem);
        failures++;
        return;
    }
    gridDim = g;
    blockDim = dim3(threads);
    std::barrier<> bb(threads);
    block_barrier = &bb;
    std::vector<std::barrier<> *> wb;
    for (int w = 0; w < threads / 32; w++) wb.push_back(warp_barrier[w] = new std::barrier<>(32));
    auto check = [&](unsigned bx, unsigned by) {
        size_t bad = 0;
        const unsigned char *bytes = (const unsigned char *)sm_all;
        for (size_t x = smem; x < sizeof sm_all; x++) bad += bytes[x] != 0xff;
        if (bad) {
            std::printf("FAIL %s: block (%u, %u) wrote %zu bytes past its %zu shared bytes\n", name, bx, by, bad, smem);
            failures++;
        }
    };
    std::vector<std::thread> th;
    for (int t = 0; t < threads; t++)
        th.emplace_back([=, &bb] {
            threadIdx = dim3(t);
            for (unsigned by = 0; by < g.y; by++)
                for (unsigned bx = 0; bx < g.x; bx++) {
                    if (t == 0) std::memset(sm_all, 0xff, sizeof sm_all);
                    bb.arrive_and_wait(); /* shared memory poisoned; the previous block checked */
                    blockIdx = dim3(bx, by);
                    f(a...);
                    bb.arrive_and_wait(); /* every thread is done with the block */
                    if (t == 0) check(bx, by);
                }
        });
    for (auto &x : th) x.join();
    for (auto p : wb) delete p;
}

struct shape {
    int T, H, KV, hd, window, docs, log_keep; /* docs -1: interleaved documents */
    const char *what;
};

/* out, lse and every gradient of sum(dout * out), in double */
static void reference(const shape &s, float scale, const std::vector<float> &q, const std::vector<float> &k,
                      const std::vector<float> &v, const float *lk, const std::vector<int32_t> &seg,
                      const std::vector<float> &dout, std::vector<std::vector<double>> &r) {
    const int T = s.T, H = s.H, KV = s.KV, hd = s.hd, G = H / KV;
    r.assign(6, {});
    r[0].assign((size_t)T * H * hd, 0);
    r[1].assign((size_t)T * H, 0);
    r[2].assign((size_t)T * H * hd, 0);
    r[3].assign((size_t)T * KV * hd, 0);
    r[4].assign((size_t)T * KV * hd, 0);
    r[5].assign((size_t)T * KV, 0);
    for (int i = 0; i < T; i++)
        for (int h = 0; h < H; h++) {
            const int kh = h / G;
            const size_t qo = ((size_t)i * H + h) * hd;
            std::vector<double> sc(T, -INFINITY), P(T, 0.0);
            double mx = -INFINITY;
            for (int j = 0; j <= i; j++) {
                if (seg[j] != seg[i]) continue;
                double d = 0;
                for (int c = 0; c < hd; c++) d += (double)q[qo + c] * k[((size_t)j * KV + kh) * hd + c];
                d *= scale;
                if (lk && i - j > s.window) d += lk[(size_t)j * KV + kh];
                sc[j] = d;
                mx = std::max(mx, d);
            }
            if (mx == -INFINITY) {
                r[1][(size_t)i * H + h] = -INFINITY;
                continue;
            }
            double sum = 0;
            for (int j = 0; j <= i; j++) sum += P[j] = sc[j] == -INFINITY ? 0.0 : std::exp(sc[j] - mx);
            r[1][(size_t)i * H + h] = mx + std::log(sum);
            for (int j = 0; j <= i; j++) P[j] /= sum;
            double D = 0;
            for (int c = 0; c < hd; c++) {
                double o = 0;
                for (int j = 0; j <= i; j++) o += P[j] * v[((size_t)j * KV + kh) * hd + c];
                r[0][qo + c] = o;
                D += o * dout[qo + c];
            }
            for (int j = 0; j <= i; j++) {
                if (P[j] == 0.0) continue;
                const size_t ko = ((size_t)j * KV + kh) * hd;
                double dp = 0;
                for (int c = 0; c < hd; c++) dp += (double)dout[qo + c] * v[ko + c];
                const double g = P[j] * (dp - D);
                for (int c = 0; c < hd; c++) {
                    r[2][qo + c] += scale * g * k[ko + c];
                    r[3][ko + c] += scale * g * q[qo + c];
                    r[4][ko + c] += P[j] * dout[qo + c];
                }
                if (i - j > s.window) r[5][(size_t)j * KV + kh] += g;
            }
        }
}

/* largest |got - want| against tol of the largest |want| (at least 1) */
static void compare(const char *what, const char *name, const std::vector<float> &got,
                    const std::vector<double> &want, double tol) {
    double scale = 1e-30, err = 0;
    for (double w : want)
        if (std::isfinite(w)) scale = std::max(scale, std::fabs(w));
    for (size_t x = 0; x < want.size(); x++) {
        const double e = std::isinf(want[x]) && got[x] == want[x] ? 0.0 : std::fabs(got[x] - want[x]);
        if (!(e <= err)) err = e; /* NaN sticks */
    }
    const int ok = err <= tol * std::max(scale, 1.0);
    if (!ok) failures++;
    std::printf("%s %s [%s]: max error %.3g (largest value %.3g)\n", ok ? "ok  " : "FAIL", name, what, err, scale);
}

int main() {
    /* the shapes of test_ops' attention_dms cases that the tiled kernels take */
    static const shape shapes[] = {
        {130, 6, 2, 6, 4, 4, 1, "4 docs, window < doc, GQA 3"},
        {130, 6, 2, 6, 4, 4, 0, "4 docs, log_keep NULL"},
        {130, 2, 2, 16, 200, 1, 1, "one doc, window > doc"},
        {130, 3, 3, 6, 0, 2, 1, "window 0"},
        {1, 1, 1, 1, 0, 1, 1, "T=1"},
        {40, 2, 1, 4, 2, -1, 1, "interleaved documents"},
        {200, 4, 2, 64, 40, 2, 1, "hd 64, 2 docs, 4 query tiles"},
        {160, 2, 1, 128, 16, 1, 1, "hd 128, one doc"},
        /* the tensor-core kernels' head dims with the cases above */
        {130, 6, 2, 16, 4, 4, 1, "hd 16, 4 docs, window < doc, GQA 3"},
        {130, 6, 2, 32, 4, 4, 0, "hd 32, 4 docs, log_keep NULL"},
        {150, 3, 3, 16, 0, 2, 1, "hd 16, window 0, 3 query tiles"},
        {40, 2, 1, 16, 2, -1, 1, "hd 16, interleaved documents"},
        {1, 1, 1, 16, 0, 1, 1, "hd 16, T=1"},
        /* the other head-dim instances of the tensor-core kernels (ragged n-tile groups in their products) */
        {140, 2, 1, 48, 20, 2, 1, "hd 48, 2 docs, a 12-token tail past a block"},
        {150, 4, 2, 96, 70, 1, 1, "hd 96, one doc, GQA 2"},
    };
    std::mt19937 rng(1234);
    std::uniform_real_distribution<float> U(-1.5f, 1.5f), L(-3.0f, 4.0f);
    for (const shape &s : shapes) {
        char what[160];
        std::snprintf(what, sizeof what, "%s: T=%d H=%d KV=%d hd=%d window=%d", s.what, s.T, s.H, s.KV, s.hd,
                      s.window);
        const size_t nq = (size_t)s.T * s.H * s.hd, nk = (size_t)s.T * s.KV * s.hd, nl = (size_t)s.T * s.KV;
        std::vector<float> q(nq), k(nk), v(nk), lk(nl), dout(nq);
        for (auto *x : {&q, &k, &v, &dout})
            for (float &e : *x) e = U(rng);
        for (size_t x = 0; x < nl; x++) lk[x] = x % 11 == 5 ? -30.0f : -std::log1p(std::exp(-L(rng)));
        if (nl > 3) lk[3] = -INFINITY; /* a key nothing past the window sees */
        std::vector<int32_t> seg(s.T);
        for (int t = 0; t < s.T; t++) seg[t] = s.docs < 0 ? (t / 3 + t % 2) % 3 : t * s.docs / s.T;
        const float scale = 1.0f / std::sqrt((float)s.hd);
        const float *lkp = s.log_keep ? lk.data() : nullptr;
        std::vector<std::vector<double>> r;
        reference(s, scale, q, k, v, lkp, seg, dout, r);

        for (int mma = 0; mma < 2; mma++) {
            if (mma && (s.hd % 16 || s.hd > MM_MAX_HD)) continue; /* the tensor-core kernels' head dims */
            std::vector<float> out(nq), lse((size_t)s.T * s.H), D((size_t)s.T * s.H), dq(nq), dk(nk), dv(nk),
                dl(nl);
            const int bq = mma ? MM_BQ : FL_BQ, bk = mma ? MM_BKV : FL_BK, threads = mma ? MM_THREADS : FL_WARPS * 32;
            const dim3 gq((unsigned)((s.T + bq - 1) / bq), (unsigned)s.H);
            const dim3 gk((unsigned)((s.T + bk - 1) / bk), (unsigned)s.KV);
            const float *qp = q.data(), *kp = k.data(), *vp = v.data(), *dop = dout.data();
            const int32_t *sp = seg.data();
            /* the tensor-core kernels' bf16 copies, made by their own prep kernel */
            std::vector<uint32_t> qb, kb, vb, dob;
            auto prep = [&](std::vector<uint32_t> &row, const float *x, int heads) {
                const size_t words = mm_copy_words(s.T, heads, s.hd);
                row.assign(words, 0xdeadbeefu); /* every word must be written */
                launch("k_mma_prep", k_mma_prep, dim3(mm_prep_blocks(words)), MM_PREP_THREADS, 0, row.data(), x,
                       s.T, heads, s.hd, words);
                for (size_t w = 0; w < row.size(); w++)
                    if (row[w] == 0xdeadbeefu) {
                        std::printf("FAIL k_mma_prep [%s]: word %zu not written\n", what, w);
                        failures++;
                        break;
                    }
            };
            if (mma) {
                prep(qb, qp, s.H);
                prep(kb, kp, s.KV);
                prep(vb, vp, s.KV);
                launch("k_mma_fwd", MM_FOR_HD(k_mma_fwd, s.hd), gq, MM_FWD_THREADS, mm_fwd_smem(s.hd), out.data(),
                       lse.data(), (const uint32_t *)qb.data(), (const uint32_t *)kb.data(),
                       (const uint32_t *)vb.data(), lkp, sp, s.T, s.H, s.KV, s.window, scale);
            } else
                launch("k_flash_fwd", k_flash_fwd, gq, threads, fl_fwd_smem(s.hd), out.data(), lse.data(), qp, kp, vp,
                       lkp, sp, s.T, s.H, s.KV, s.hd, s.window, scale);
            for (size_t ih = 0; ih < D.size(); ih++) { /* attention_dms.cu's k_att_dms_D */
                float d = 0.0f;
                for (int c = 0; c < s.hd; c++) d += dout[ih * s.hd + c] * out[ih * s.hd + c];
                D[ih] = d;
            }
            const float *lp = lse.data(), *Dp = D.data();
            if (mma) {
                prep(dob, dop, s.H);
                const uint32_t *cqb = qb.data(), *ckb = kb.data(), *cvb = vb.data(), *cdob = dob.data();
                launch("k_mma_dq", MM_FOR_HD(k_mma_dq, s.hd), gq, threads, mm_dq_smem(s.hd), dq.data(), cdob, lp, Dp,
                       cqb, ckb, cvb, lkp, sp, s.T, s.H, s.KV, s.window, scale);
                launch("k_mma_dkv", MM_FOR_HD(k_mma_dkv, s.hd), gk, threads, mm_dkv_smem(s.hd), dk.data(), dv.data(),
                       dl.data(), cdob, lp, Dp, cqb, ckb, cvb, lkp, sp, s.T, s.H, s.KV, s.window, scale);
            } else {
                launch("k_flash_dq", k_flash_dq, gq, threads, fl_dq_smem(s.hd), dq.data(), dop, lp, Dp, qp, kp, vp,
                       lkp, sp, s.T, s.H, s.KV, s.hd, s.window, scale);
                launch("k_flash_dkv", k_flash_dkv, gk, threads, fl_dkv_smem(s.hd), dk.data(), dv.data(), dl.data(),
                       dop, lp, Dp, qp, kp, vp, lkp, sp, s.T, s.H, s.KV, s.hd, s.window, scale);
            }
            const std::vector<float> *got[] = {&out, &lse, &dq, &dk, &dv, &dl};
            static const char *const names[2][6] = {{"out", "lse", "dq", "dk", "dv", "dlog_keep"},
                                                    {"mma out", "mma lse", "mma dq", "mma dk", "mma dv",
                                                     "mma dlog_keep"}};
            for (int x = 0; x < 6; x++) compare(what, names[mma][x], *got[x], r[x], mma ? 1e-2 : 1e-5);
        }
    }
    if (failures) std::printf("%d check(s) failed\n", failures);
    else std::printf("all checks passed\n");
    return failures ? 1 : 0;
}
