/* test_ops.c - the op-parity suite: every op of the backend op table
 * (kernels/backend.h, DMS_OPS_INFER + DMS_OPS_TRAIN), forward and backward,
 * driven through the backend's own alloc/upload/download (so that device
 * memory paths are exercised) on fixed-seed random inputs at several shapes,
 * edge cases included, and compared with a reference:
 *
 *   test_ops cpu    the CPU backend against naive loops written here (double
 *                   accumulation, straight from backend.h's definitions and
 *                   independent of kernels/cpu), so that a bug in an
 *                   optimised CPU kernel (tiling, blocking, OpenMP) is caught;
 *   test_ops cuda   the CUDA backend against the CPU backend (the oracle).
 *                   Without a usable GPU it FAILS with a message; it never
 *                   skips.
 *
 * Backward ops are also checked against central finite differences of the
 * backend's own forward op (linear ops: the adjoint identity). An error is
 * max |got - ref| / max |ref| (absolute when the reference is all zero; NaN
 * or a missing infinity is an infinite error); the tolerances are the table
 * TOL below, and the largest error seen per op is printed at the end.
 * Outputs the header calls "overwritten" are NaN-filled before each call so
 * that an element left unwritten is caught. Supersedes test_gpu_backend.c. */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/half.h"
#include "kernels/backend_check.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/dms_rng.h"
#include "kernels/registry.h"
#include "tests/check.h"
#ifdef DMS_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

/* ---------------- tolerances ---------------- */

#define TOL_EXACT 0.0    /* copies, lookups, the RNG, decisions: bit-exact */
#define TOL_F32 1e-5     /* CPU fp32 kernels vs naive double loops */
#define TOL_F64 1e-12    /* double reductions and device scalars */
#define TOL_CU_EW 1e-5   /* CUDA elementwise fp32: same formula, device math ulps */
#define TOL_CU_RED 1e-4  /* CUDA fp32 reductions summed in another order */
#define TOL_CU_BF16 1e-2 /* CUDA bf16-weight GEMM: activations (forward) or dy (input gradient) rounded to bf16 too */
#define TOL_CU_RNG 1e-6  /* device logf may differ from the host's by an ulp */
#define TOL_CU_MMA 1e-2  /* CUDA tensor-core attention: q, k, v, dO, P and dS rounded to bf16 (errors seen
                          * in tests/test_flash_emul.cpp's emulation of the same kernels: up to 5e-3) */
#define TOL_FD 2e-3      /* analytic gradient vs central differences of fp32 forwards */
#define TOL_ADJ 1e-4     /* <A x, y> = <x, A^T y> in fp32 */

typedef struct {
    const char *op;
    double cpu, cuda; /* vs naive loops (cpu run), vs the CPU backend (cuda run) */
    double worst;     /* largest error seen */
    int checks;
} tol_row;

static tol_row TOL[] = {
    /* op                      cpu        cuda */
    {"memory", TOL_EXACT, TOL_EXACT, 0, 0},
    {"zero", TOL_EXACT, TOL_EXACT, 0, 0},
    {"zero_f64", TOL_EXACT, TOL_EXACT, 0, 0},
    {"scale", TOL_F32, TOL_CU_EW, 0, 0},
    {"add", TOL_F32, TOL_CU_EW, 0, 0},
    {"axpy", TOL_F32, TOL_CU_EW, 0, 0},
    {"matmul/f32", TOL_F32, TOL_CU_RED, 0, 0},
    {"matmul/bf16", TOL_F32, TOL_CU_BF16, 0, 0},
    {"matmul_multi", 0, 0, 0, 0}, /* against the same backend's matmul, weight by weight: the same bits */
    {"rmsnorm", TOL_F32, TOL_CU_RED, 0, 0},
    {"rope", TOL_F32, TOL_CU_RED, 0, 0},
    {"attention", TOL_F32, TOL_CU_RED, 0, 0},
    {"attention_paged", TOL_F32, TOL_CU_RED, 0, 0},
    {"swiglu", TOL_F32, TOL_CU_EW, 0, 0},
    {"embedding", TOL_EXACT, TOL_EXACT, 0, 0},
    {"dms_neuron_take", TOL_EXACT, TOL_EXACT, 0, 0},
    {"dms_neuron_put", TOL_EXACT, TOL_EXACT, 0, 0},
    {"attention_dms_fwd", TOL_F32, TOL_CU_RED, 0, 0},
    {"attention_dms_bwd", TOL_F32, TOL_CU_RED, 0, 0},
    {"attention_dms_fwd/bf16", TOL_F32, TOL_CU_MMA, 0, 0}, /* cuda: the default, tensor-core path */
    {"attention_dms_bwd/bf16", TOL_F32, TOL_CU_MMA, 0, 0},
    {"matmul_bwd_x/f32", TOL_F32, TOL_CU_RED, 0, 0},
    {"matmul_bwd_x/bf16", TOL_F32, TOL_CU_BF16, 0, 0}, /* CUDA rounds dy to bf16 too */
    {"matmul_bwd_w", TOL_F32, TOL_CU_RED, 0, 0},
    {"rmsnorm_bwd", TOL_F32, TOL_CU_RED, 0, 0},
    {"rope_bwd", TOL_F32, TOL_CU_RED, 0, 0},
    {"swiglu_bwd", TOL_F32, TOL_CU_EW, 0, 0},
    {"kd_chunk", TOL_F32, TOL_CU_RED, 0, 0},
    {"adamw", TOL_F32, TOL_CU_EW, 0, 0},
    {"sumsq", TOL_F64, TOL_F64, 0, 0},
    {"sum_acc", TOL_F64, TOL_F64, 0, 0},
    {"dms_noise", TOL_EXACT, TOL_CU_RNG, 0, 0},
    {"dms_decide", TOL_F32, TOL_CU_EW, 0, 0},
    {"dms_decide_bwd", TOL_F32, TOL_CU_EW, 0, 0},
    {"dms_comp_grad", TOL_F64, TOL_F64, 0, 0},
    {"attention_future_max", TOL_F32, TOL_CU_RED, 0, 0},
    {"dms_guide_grad", TOL_F32, TOL_CU_EW, 0, 0},
    /* derivative checks on the backend alone (same tolerance in both runs) */
    {"attention_dms_bwd/fd", TOL_FD, TOL_FD, 0, 0},
    {"rmsnorm_bwd/fd", TOL_FD, TOL_FD, 0, 0},
    {"swiglu_bwd/fd", TOL_FD, TOL_FD, 0, 0},
    {"kd_chunk/fd", TOL_FD, TOL_FD, 0, 0},
    {"dms_decide_bwd/fd", TOL_FD, TOL_FD, 0, 0},
    {"dms_guide_grad/fd", TOL_FD, TOL_FD, 0, 0},
    {"matmul_bwd/adjoint", TOL_ADJ, TOL_ADJ, 0, 0},
    {"rope_bwd/adjoint", TOL_ADJ, TOL_ADJ, 0, 0},
};
#define N_TOL (sizeof TOL / sizeof *TOL)

/* ---------------- state ---------------- */

static dms_backend be;     /* the backend under test (cuda: with DMS_CUDA_ATTENTION=fp32) */
static dms_backend be_tc;  /* cuda: the same with its default, tensor-core training attention; cpu: be */
static dms_backend oracle; /* cuda run: the CPU backend */
static int vs_cpu;         /* 1: references come from `oracle`; 0: from naive loops */
static char case_name[192];

static void setcase(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void setcase(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(case_name, sizeof case_name, fmt, ap);
    va_end(ap);
}

static void fatal(const char *what) {
    fprintf(stderr, "test_ops: %s [%s]\n", what, case_name);
    CHECK_MSG(0, "fatal: %s", what);
    dms_check_finish();
    exit(1);
}

/* Host buffers of one test case, freed together. */
static void *host_live[256];
static int n_host_live;
static void *hmem(size_t bytes) {
    if (n_host_live == (int)(sizeof host_live / sizeof *host_live)) fatal("too many host buffers");
    void *p = calloc(1, bytes ? bytes : 1);
    if (!p) fatal("out of host memory");
    return host_live[n_host_live++] = p;
}
static float *hf(size_t n) { return hmem(sizeof(float) * n); }
static double *hd(size_t n) { return hmem(sizeof(double) * n); }
static void hfree_all(void) {
    while (n_host_live) free(host_live[--n_host_live]);
}

/* splitmix64 over a counter: a fixed sequence for a fixed start */
static uint64_t rng_ctr = 0x0d5a11ce5eedull;
static uint64_t rnd_u64(void) { return dms_mix64(rng_ctr++); }
static float uni(float lo, float hi) { return lo + (hi - lo) * (float)((double)(rnd_u64() >> 40) * 0x1p-24); }
static int rnd_int(int n) { return (int)(rnd_u64() % (uint64_t)n); }
static float *rnd(size_t n, float lo, float hi) {
    float *p = hf(n);
    for (size_t i = 0; i < n; i++) p[i] = uni(lo, hi);
    return p;
}
static float *nans(size_t n) {
    float *p = hf(n);
    for (size_t i = 0; i < n; i++) p[i] = NAN;
    return p;
}
static float *dupf(const float *x, size_t n) {
    float *p = hf(n);
    memcpy(p, x, sizeof(float) * n);
    return p;
}
/* seg for documents of the given lengths (the last one takes the rest) */
static int32_t *make_seg(int T, const int *lens, int nlens) {
    int32_t *s = hmem(sizeof(int32_t) * (size_t)T);
    for (int t = 0, d = 0, left = nlens ? lens[0] : T; t < T; t++) {
        while (left == 0 && d + 1 < nlens) left = lens[++d];
        s[t] = d;
        left--;
    }
    return s;
}

/* Backend buffers of one run, freed by run_end. */
typedef struct {
    const dms_backend *b;
    void *p;
} dev_buf;
static dev_buf dev_live[64];
static int n_dev_live;
static void *dalloc(const dms_backend *b, size_t bytes) {
    if (n_dev_live == (int)(sizeof dev_live / sizeof *dev_live)) fatal("too many backend buffers");
    void *p = b->alloc(b->ctx, bytes);
    if (!p) fatal("backend alloc failed");
    dev_live[n_dev_live++] = (dev_buf){b, p};
    return p;
}
static float *put_f(const dms_backend *b, const float *h, size_t n) {
    float *d = dalloc(b, sizeof(float) * n);
    if (h && n) dms_upload_f32(b, d, h, n);
    return d;
}
/* n floats of NaN: an output the op must overwrite */
static float *put_nan(const dms_backend *b, size_t n) {
    static float *nan_src;
    static size_t nan_len;
    if (n > nan_len) {
        free(nan_src);
        nan_src = malloc(sizeof(float) * n);
        if (!nan_src) fatal("out of host memory");
        for (size_t i = 0; i < n; i++) nan_src[i] = NAN;
        nan_len = n;
    }
    return put_f(b, nan_src, n);
}
static int32_t *put_i(const dms_backend *b, const int32_t *h, size_t n) {
    int32_t *d = dalloc(b, sizeof(int32_t) * n);
    if (n) dms_upload_i32(b, d, h, n);
    return d;
}
static double *put_d(const dms_backend *b, const double *h, size_t n) {
    double *d = dalloc(b, sizeof(double) * n);
    if (n) b->upload(b->ctx, d, h, sizeof(double) * n);
    return d;
}
static void get_f(const dms_backend *b, float *h, const float *d, size_t n) {
    b->sync(b->ctx);
    if (n) dms_download_f32(b, h, d, n);
}
static void get_d(const dms_backend *b, double *h, const double *d, size_t n) {
    b->sync(b->ctx);
    if (n) dms_download_f64(b, h, d, n);
}
/* Every run ends here: the sticky status must be clean after normal ops. */
static void run_end(const dms_backend *b, const char *op) {
    char msg[256] = "";
    const int st = b->status(b->ctx, msg, sizeof msg);
    CHECK_MSG(st == 0, "%s on %s [%s]: status %d: %s", op, b->name, case_name, st, msg);
    while (n_dev_live) {
        dev_buf d = dev_live[--n_dev_live];
        d.b->free(d.b->ctx, d.p);
    }
}

/* ---------------- comparison ---------------- */

typedef struct {
    double diff, ref_max, got, ref;
    size_t at;
} errs;
static errs errs_new(void) { return (errs){-1.0, 0.0, 0.0, 0.0, 0}; }
static void errs_add(errs *e, size_t i, double got, double ref) {
    double d = got == ref ? 0.0 : fabs(got - ref);
    if (d != d) d = INFINITY;
    if (d > e->diff) *e = (errs){d, e->ref_max, got, ref, i};
    if (isfinite(ref) && fabs(ref) > e->ref_max) e->ref_max = fabs(ref);
}
static tol_row *tol_of(const char *op) {
    for (size_t r = 0; r < N_TOL; r++)
        if (!strcmp(TOL[r].op, op)) return &TOL[r];
    fatal("op missing from the tolerance table");
    return NULL;
}
static void errs_check(const char *op, const char *field, const errs *e) {
    tol_row *r = tol_of(op);
    const double err = e->diff <= 0 ? 0.0 : e->diff / (e->ref_max > 0 ? e->ref_max : 1.0);
    const double tol = vs_cpu ? r->cuda : r->cpu;
    if (!(err <= r->worst)) r->worst = err;
    r->checks++;
    CHECK_MSG(err <= tol, "%s [%s] %s: error %.3g (max |ref| %.3g) > tol %.3g; at [%zu] got %.9g want %.9g", op,
              case_name, field, err, e->ref_max, tol, e->at, e->got, e->ref);
}
static void cmp(const char *op, const char *field, const float *got, const float *ref, size_t n) {
    errs e = errs_new();
    for (size_t i = 0; i < n; i++) errs_add(&e, i, got[i], ref[i]);
    errs_check(op, field, &e);
}
static void cmp1(const char *op, const char *field, double got, double ref) {
    errs e = errs_new();
    errs_add(&e, 0, got, ref);
    errs_check(op, field, &e);
}

/* Central differences of loss() at `probes` entries of x (all if more),
 * against the analytic gradient g; x is a host input the loss reads. */
typedef double (*loss_fn)(void *st);
static void fd_compare(const char *op, const char *field, float *x, const float *g, size_t n, size_t probes,
                       float h, loss_fn loss, void *st) {
    errs e = errs_new();
    for (size_t p = 0; p < (probes < n ? probes : n); p++) {
        const size_t i = probes < n ? (size_t)rnd_int((int)n) : p;
        const float x0 = x[i], xp = x0 + h, xm = x0 - h;
        x[i] = xp;
        const double lp = loss(st);
        x[i] = xm;
        const double lm = loss(st);
        x[i] = x0;
        errs_add(&e, i, g[i], (lp - lm) / ((double)xp - (double)xm));
    }
    errs_check(op, field, &e);
}
static double dot_hf(const float *a, const float *b, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}
static double sigm(double x) { return 1.0 / (1.0 + exp(-x)); }
static double log_sigm(double x) { return x >= 0 ? -log1p(exp(-x)) : x - log1p(exp(x)); }

/* ---------------- op table: require ---------------- */

#define COUNT_OP(op) +1
enum { N_OPS = 0 DMS_OPS_INFER(COUNT_OP) DMS_OPS_TRAIN(COUNT_OP) };
#ifdef DMS_OPS_RUNTIME /* ops beyond require()'s two lists: counted, not required */
enum { N_OPS_ALL = N_OPS DMS_OPS_RUNTIME(COUNT_OP) };
#else
enum { N_OPS_ALL = N_OPS };
#endif

/* A table without `op` must be refused (when op is needed) naming exactly it. */
static void expect_refusal(const dms_backend *t, const char *op, int need_train, int needed) {
    dms_err err = {{0}};
    const int rc = dms_backend_require(t, need_train, &err);
    if (!needed) {
        CHECK_MSG(rc == 0, "without %s (not needed, train=%d): %s", op, need_train, err.msg);
        return;
    }
    char tail[64];
    snprintf(tail, sizeof tail, ": %s", op);
    const size_t lm = strlen(err.msg), lt = strlen(tail);
    CHECK_MSG(rc == -1 && lm > lt && !strcmp(err.msg + lm - lt, tail), "without %s (train=%d): rc %d, \"%s\"",
              op, need_train, rc, err.msg);
}

static void test_require(void) {
    setcase("require");
    dms_err err = {{0}};
    CHECK_MSG(dms_backend_require(&be, 1, &err) == 0, "%s", err.msg);
    int total = 0;
    const int have = dms_backend_count_ops(&be, &total);
    CHECK_MSG(have >= N_OPS && have <= N_OPS_ALL, "%d ops implemented of %d", have, total);
    CHECK_MSG(total == N_OPS_ALL, "count_ops says %d ops exist, the X-macros list %d", total, (int)N_OPS_ALL);
    /* an inference op is needed by both checks, a training op only by need_train */
#define DROP_OP(op, train_only)                       \
    {                                                 \
        dms_backend t = be;                           \
        t.op = NULL;                                  \
        expect_refusal(&t, #op, 0, !(train_only));    \
        expect_refusal(&t, #op, 1, 1);                \
    }
#define DROP_INFER(op) DROP_OP(op, 0)
#define DROP_TRAIN(op) DROP_OP(op, 1)
    DMS_OPS_INFER(DROP_INFER)
    DMS_OPS_TRAIN(DROP_TRAIN)
#undef DROP_INFER
#undef DROP_TRAIN
#undef DROP_OP
}

/* ---------------- memory, status ---------------- */

static void test_memory(void) {
    static const size_t sizes[] = {0, 1, 3, 64, 1000, (size_t)1 << 20};
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        const size_t n = sizes[s];
        setcase("alloc %zu bytes", n);
        unsigned char *d = dalloc(&be, n), *h = hmem(n), *pat = hmem(n);
        memset(h, 0xab, n);
        be.sync(be.ctx);
        if (n) be.download(be.ctx, h, d, n);
        size_t nonzero = 0;
        for (size_t i = 0; i < n; i++) nonzero += h[i] != 0;
        CHECK_MSG(nonzero == 0, "alloc(%zu) is not zero-filled: %zu bytes set", n, nonzero);
        for (size_t i = 0; i < n; i++) pat[i] = (unsigned char)rnd_u64();
        if (n) be.upload(be.ctx, d, pat, n);
        memset(h, 0, n);
        if (n) be.download(be.ctx, h, d, n);
        CHECK_MSG(!memcmp(h, pat, n), "upload/download round trip of %zu bytes", n);
        run_end(&be, "memory");
        hfree_all();
    }
    /* device-to-device copy into the middle of another buffer */
    setcase("copy 500 floats at offsets 3 -> 17");
    const size_t n = 1001;
    float *x = rnd(n, -1, 1), *y = rnd(n, -1, 1), *got = hf(n), *ref = dupf(y, n);
    float *dx = put_f(&be, x, n), *dy = put_f(&be, y, n);
    dms_copy_f32(&be, dy + 17, dx + 3, 500);
    get_f(&be, got, dy, n);
    memcpy(ref + 17, x + 3, sizeof(float) * 500);
    cmp("memory", "copy", got, ref, n);
    run_end(&be, "memory");
    hfree_all();
}

static void test_status(void) {
    setcase("status");
    char msg[256] = "";
    CHECK(be.status(be.ctx, NULL, 0) == 0);
    CHECK(be.status(be.ctx, msg, sizeof msg) == 0);
    if (strcmp(be.name, "cpu")) return; /* failures can be injected only into the CPU backend */
    dms_cpu_fail(be.ctx, "matmul", "injected failure");
    dms_cpu_fail(be.ctx, "rope", "a later failure"); /* sticky: the first one is kept */
    CHECK(be.status(be.ctx, msg, sizeof msg) == -1);
    CHECK_STR(msg, "matmul: injected failure");
    CHECK(be.status(be.ctx, msg, sizeof msg) == 0); /* reading it cleared it */
}

/* ---------------- elementwise and reductions ---------------- */

enum { EW_ZERO, EW_SCALE, EW_ADD, EW_AXPY };
static const char *const ew_name[] = {"zero", "scale", "add", "axpy"};

/* y[lo, lo+len) op= x[lo, lo+len): the rest of y must stay as it was */
static void run_ew(const dms_backend *b, int op, float *y, const float *x, float a, size_t n, size_t lo,
                   size_t len) {
    float *dy = put_f(b, y, n), *dx = put_f(b, x, n);
    if (op == EW_ZERO) b->zero(b->ctx, dy + lo, len);
    if (op == EW_SCALE) b->scale(b->ctx, dy + lo, a, len);
    if (op == EW_ADD) b->add(b->ctx, dy + lo, dx + lo, len);
    if (op == EW_AXPY) b->axpy(b->ctx, dy + lo, a, dx + lo, len);
    get_f(b, y, dy, n);
    run_end(b, ew_name[op]);
}
static void naive_ew(int op, float *y, const float *x, float a, size_t lo, size_t len) {
    for (size_t i = lo; i < lo + len; i++)
        y[i] = (float)(op == EW_ZERO    ? 0.0
                       : op == EW_SCALE ? (double)y[i] * a
                       : op == EW_ADD   ? (double)y[i] + x[i]
                                        : (double)y[i] + (double)a * x[i]);
}

static void run_zero_f64(const dms_backend *b, double *y, size_t n, size_t lo, size_t len) {
    double *d = put_d(b, y, n);
    b->zero_f64(b->ctx, d + lo, len);
    get_d(b, y, d, n);
    run_end(b, "zero_f64");
}

static double run_sumsq(const dms_backend *b, const float *x, size_t n) {
    const double s = b->sumsq(b->ctx, put_f(b, x, n), n);
    run_end(b, "sumsq");
    return s;
}
static double naive_sumsq(const float *x, size_t n) { return dot_hf(x, x, n); }

/* acc0, then += x.w, then += sum(x2): the device accumulator must accumulate */
static double run_sum_acc(const dms_backend *b, double acc0, const float *x, const float *w, const float *x2,
                          size_t n) {
    double *acc = put_d(b, &acc0, 1), r = NAN;
    b->sum_acc(b->ctx, acc, put_f(b, x, n), w ? put_f(b, w, n) : NULL, n);
    b->sum_acc(b->ctx, acc, put_f(b, x2, n), NULL, n);
    get_d(b, &r, acc, 1);
    run_end(b, "sum_acc");
    return r;
}
static double naive_sum_acc(double acc0, const float *x, const float *w, const float *x2, size_t n) {
    double s = acc0;
    for (size_t i = 0; i < n; i++) s += (double)x[i] * (w ? w[i] : 1.0f);
    for (size_t i = 0; i < n; i++) s += x2[i];
    return s;
}

static void test_elementwise(void) {
    static const size_t ns[] = {1, 2, 1001, 70001}; /* 70001: past the CPU's OpenMP threshold */
    for (size_t c = 0; c < sizeof ns / sizeof *ns; c++) {
        const size_t n = ns[c], lo = n > 2 ? 1 : 0, len = n > 2 ? n - 2 : n;
        for (int op = EW_ZERO; op <= EW_AXPY; op++) {
            const float a = op == EW_AXPY ? -1.75f : 0.37f;
            setcase("n=%zu range [%zu, %zu) a=%g", n, lo, lo + len, a);
            float *x = rnd(n, -2, 2), *y = rnd(n, -2, 2), *got = dupf(y, n), *ref = dupf(y, n);
            run_ew(&be, op, got, x, a, n, lo, len);
            if (vs_cpu) run_ew(&oracle, op, ref, x, a, n, lo, len);
            else naive_ew(op, ref, x, a, lo, len);
            cmp(ew_name[op], "y", got, ref, n);
            hfree_all();
        }
        setcase("zero_f64 n=%zu range [%zu, %zu)", n, lo, lo + len);
        double *got = hd(n), *ref = hd(n);
        for (size_t i = 0; i < n; i++) got[i] = ref[i] = uni(-1, 1) * 1e3;
        run_zero_f64(&be, got, n, lo, len);
        if (vs_cpu) run_zero_f64(&oracle, ref, n, lo, len);
        else memset(ref + lo, 0, sizeof(double) * len);
        errs e = errs_new();
        for (size_t i = 0; i < n; i++) errs_add(&e, i, got[i], ref[i]);
        errs_check("zero_f64", "y", &e);
        hfree_all();
    }
    static const size_t rn[] = {0, 1, 1000, 20001}; /* 20001: several of the CPU's 8192-element blocks */
    for (size_t c = 0; c < sizeof rn / sizeof *rn; c++) {
        const size_t n = rn[c];
        setcase("n=%zu", n);
        float *x = rnd(n, -3, 3), *w = rnd(n, -1, 1), *x2 = rnd(n, -1, 2);
        cmp1("sumsq", "sum", run_sumsq(&be, x, n), vs_cpu ? run_sumsq(&oracle, x, n) : naive_sumsq(x, n));
        for (int wn = 0; wn < 2; wn++) {
            setcase("n=%zu w %s", n, wn ? "NULL" : "given");
            const float *ww = wn ? NULL : w;
            cmp1("sum_acc", "acc", run_sum_acc(&be, 1.25, x, ww, x2, n),
                 vs_cpu ? run_sum_acc(&oracle, 1.25, x, ww, x2, n) : naive_sum_acc(1.25, x, ww, x2, n));
        }
        hfree_all();
    }
}

/* ---------------- matmul and its backward ---------------- */

/* A host weight: its values as fp32 (bf16-rounded for DMS_BF16) and, for
 * DMS_BF16, the bf16 bits that go to the backend. */
typedef struct {
    dms_dtype dt;
    int rows, cols;
    float *f;
    uint16_t *bits;
} hmat;
static hmat make_hmat(dms_dtype dt, int rows, int cols) {
    const size_t n = (size_t)rows * cols;
    hmat w = {dt, rows, cols, rnd(n, -1, 1), NULL};
    if (dt == DMS_BF16) {
        w.bits = hmem(sizeof(uint16_t) * n);
        for (size_t i = 0; i < n; i++) w.f[i] = dms_bf16_to_f32(w.bits[i] = dms_f32_to_bf16(w.f[i]));
    }
    return w;
}
static dms_mat put_mat(const dms_backend *b, const hmat *w) {
    const size_t bytes = dms_dtype_bytes(w->dt, (size_t)w->rows * w->cols);
    dms_mat m = {dalloc(b, bytes), w->dt, w->rows, w->cols};
    b->upload(b->ctx, m.data, w->dt == DMS_BF16 ? (const void *)w->bits : (const void *)w->f, bytes);
    return m;
}
static const char *dt_name(dms_dtype dt) { return dt == DMS_BF16 ? "bf16" : "f32"; }

static void run_matmul(const dms_backend *b, float *out, const float *x, const hmat *w, const float *bias, int n) {
    const dms_mat m = put_mat(b, w);
    float *d = put_nan(b, (size_t)n * w->rows);
    b->matmul(b->ctx, d, put_f(b, x, (size_t)n * w->cols), &m, bias ? put_f(b, bias, w->rows) : NULL, n);
    get_f(b, out, d, (size_t)n * w->rows);
    run_end(b, "matmul");
}
static void naive_matmul(float *out, const float *x, const hmat *w, const float *bias, int n) {
    for (int i = 0; i < n; i++)
        for (int r = 0; r < w->rows; r++) {
            double s = bias ? bias[r] : 0.0;
            for (int c = 0; c < w->cols; c++) s += (double)x[(size_t)i * w->cols + c] * w->f[(size_t)r * w->cols + c];
            out[(size_t)i * w->rows + r] = (float)s;
        }
}

/* dx[n, cols] (in: the accumulate base) */
static void run_matmul_bwd_x(const dms_backend *b, float *dx, const float *dy, const hmat *w, int n, int acc) {
    const dms_mat m = put_mat(b, w);
    float *d = put_f(b, dx, (size_t)n * w->cols);
    b->matmul_bwd_x(b->ctx, d, put_f(b, dy, (size_t)n * w->rows), &m, n, acc);
    get_f(b, dx, d, (size_t)n * w->cols);
    run_end(b, "matmul_bwd_x");
}
static void naive_matmul_bwd_x(float *dx, const float *dy, const hmat *w, int n, int acc) {
    for (int i = 0; i < n; i++)
        for (int c = 0; c < w->cols; c++) {
            double s = acc ? dx[(size_t)i * w->cols + c] : 0.0;
            for (int r = 0; r < w->rows; r++) s += (double)dy[(size_t)i * w->rows + r] * w->f[(size_t)r * w->cols + c];
            dx[(size_t)i * w->cols + c] = (float)s;
        }
}

/* dw[rows, cols], db[rows] (NULL: none) accumulate */
static void run_matmul_bwd_w(const dms_backend *b, float *dw, float *db, const float *dy, const float *x, int n,
                             int rows, int cols) {
    float *ddw = put_f(b, dw, (size_t)rows * cols), *ddb = db ? put_f(b, db, rows) : NULL;
    b->matmul_bwd_w(b->ctx, ddw, ddb, put_f(b, dy, (size_t)n * rows), put_f(b, x, (size_t)n * cols), n, rows, cols);
    get_f(b, dw, ddw, (size_t)rows * cols);
    if (db) get_f(b, db, ddb, rows);
    run_end(b, "matmul_bwd_w");
}
static void naive_matmul_bwd_w(float *dw, float *db, const float *dy, const float *x, int n, int rows, int cols) {
    for (int r = 0; r < rows; r++) {
        for (int c = 0; c < cols; c++) {
            double s = dw[(size_t)r * cols + c];
            for (int i = 0; i < n; i++) s += (double)dy[(size_t)i * rows + r] * x[(size_t)i * cols + c];
            dw[(size_t)r * cols + c] = (float)s;
        }
        if (db) {
            double s = db[r];
            for (int i = 0; i < n; i++) s += dy[(size_t)i * rows + r];
            db[r] = (float)s;
        }
    }
}

static void test_matmul(void) {
    /* n, cols (k), rows (m): n=1 is the CPU's gemv path; 300 rows cross its
     * 256-row bf16 widening blocks */
    static const int shapes[][3] = {{1, 7, 5}, {2, 1, 1}, {3, 96, 80}, {13, 33, 300}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (int dt = DMS_F32; dt <= DMS_BF16; dt++) {
            const int n = shapes[s][0], k = shapes[s][1], m = shapes[s][2];
            const hmat w = make_hmat((dms_dtype)dt, m, k);
            float *x = rnd((size_t)n * k, -1, 1), *bias = rnd(m, -1, 1), *dy = rnd((size_t)n * m, -1, 1);
            char op[32];
            for (int bi = 0; bi < 2; bi++) {
                setcase("n=%d k=%d m=%d %s bias=%s", n, k, m, dt_name(w.dt), bi ? "given" : "NULL");
                float *got = hf((size_t)n * m), *ref = hf((size_t)n * m);
                run_matmul(&be, got, x, &w, bi ? bias : NULL, n);
                if (vs_cpu) run_matmul(&oracle, ref, x, &w, bi ? bias : NULL, n);
                else naive_matmul(ref, x, &w, bi ? bias : NULL, n);
                snprintf(op, sizeof op, "matmul/%s", dt_name(w.dt));
                cmp(op, "out", got, ref, (size_t)n * m);
            }
            for (int acc = 0; acc < 2; acc++) {
                setcase("n=%d k=%d m=%d %s accumulate=%d", n, k, m, dt_name(w.dt), acc);
                /* overwrite: NaN going in must not come out */
                float *base = acc ? rnd((size_t)n * k, -1, 1) : nans((size_t)n * k);
                float *got = dupf(base, (size_t)n * k), *ref = dupf(base, (size_t)n * k);
                run_matmul_bwd_x(&be, got, dy, &w, n, acc);
                if (vs_cpu) run_matmul_bwd_x(&oracle, ref, dy, &w, n, acc);
                else naive_matmul_bwd_x(ref, dy, &w, n, acc);
                snprintf(op, sizeof op, "matmul_bwd_x/%s", dt_name(w.dt));
                cmp(op, "dx", got, ref, (size_t)n * k);
            }
            hfree_all();
        }
    /* n, rows, cols; 70 rows cross the CPU's 64-column bias chunks */
    static const int wshapes[][3] = {{1, 5, 7}, {3, 1, 1}, {130, 70, 33}};
    for (size_t s = 0; s < sizeof wshapes / sizeof *wshapes; s++)
        for (int bi = 0; bi < 2; bi++) {
            const int n = wshapes[s][0], rows = wshapes[s][1], cols = wshapes[s][2];
            setcase("n=%d rows=%d cols=%d db=%s", n, rows, cols, bi ? "given" : "NULL");
            float *dy = rnd((size_t)n * rows, -1, 1), *x = rnd((size_t)n * cols, -1, 1);
            float *dw0 = rnd((size_t)rows * cols, -1, 1), *db0 = rnd(rows, -1, 1);
            float *gw = dupf(dw0, (size_t)rows * cols), *rw = dupf(dw0, (size_t)rows * cols);
            float *gb = bi ? dupf(db0, rows) : NULL, *rb = bi ? dupf(db0, rows) : NULL;
            run_matmul_bwd_w(&be, gw, gb, dy, x, n, rows, cols);
            if (vs_cpu) run_matmul_bwd_w(&oracle, rw, rb, dy, x, n, rows, cols);
            else naive_matmul_bwd_w(rw, rb, dy, x, n, rows, cols);
            cmp("matmul_bwd_w", "dw", gw, rw, (size_t)rows * cols);
            if (bi) cmp("matmul_bwd_w", "db", gb, rb, rows);
            hfree_all();
        }
    /* the backward is the adjoint of the forward: <x W^T, dy> = <x, dy W> = <W, dy^T x> */
    {
        const int n = 4, k = 20, m = 12;
        setcase("adjoint n=%d k=%d m=%d f32", n, k, m);
        const hmat w = make_hmat(DMS_F32, m, k);
        float *x = rnd((size_t)n * k, -1, 1), *dy = rnd((size_t)n * m, -1, 1);
        float *y = hf((size_t)n * m), *dx = hf((size_t)n * k), *dw = hf((size_t)m * k);
        run_matmul(&be, y, x, &w, NULL, n);
        run_matmul_bwd_x(&be, dx, dy, &w, n, 0);
        run_matmul_bwd_w(&be, dw, NULL, dy, x, n, m, k);
        const double ydy = dot_hf(y, dy, (size_t)n * m);
        cmp1("matmul_bwd/adjoint", "<x, dx>", dot_hf(x, dx, (size_t)n * k), ydy);
        cmp1("matmul_bwd/adjoint", "<W, dW>", dot_hf(w.f, dw, (size_t)m * k), ydy);
        hfree_all();
    }
}

/* matmul_multi: the products of one input with up to three weights (some
 * bf16, some fp32, some with a bias; or no bias array) give what matmul
 * gives weight by weight on the same backend, bit for bit (the CUDA
 * backend rounds x to bf16 once for all of them instead of once per
 * weight); matmul itself is checked against the oracle above. */
static void test_matmul_multi(void) {
    static const int shapes[][5] = {/* n, k, rows of the three weights */
                                    {1, 7, 5, 3, 9}, {13, 33, 300, 40, 40}, {70, 96, 80, 16, 16}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (int mix = 0; mix < 3; mix++) { /* 0: all bf16, 1: all f32, 2: bf16, f32, bf16 */
            const int n = shapes[s][0], k = shapes[s][1], count = 3;
            hmat w[3];
            float *bias[3], *got[3];
            float *x = rnd((size_t)n * k, -1, 1);
            for (int i = 0; i < count; i++) {
                const dms_dtype dt = mix == 1 || (mix == 2 && i == 1) ? DMS_F32 : DMS_BF16;
                w[i] = make_hmat(dt, shapes[s][2 + i], k);
                bias[i] = i == 1 ? NULL : rnd(w[i].rows, -1, 1);
            }
            for (int with_bias = 0; with_bias < 2; with_bias++) {
                setcase("n=%d k=%d rows=%d,%d,%d mix=%d biases=%s", n, k, w[0].rows, w[1].rows, w[2].rows, mix,
                        with_bias ? "given" : "NULL");
                dms_mat m[3];
                const dms_mat *ws[3];
                const float *dbias[3];
                float *outs[3];
                for (int i = 0; i < count; i++) {
                    m[i] = put_mat(&be, &w[i]);
                    ws[i] = &m[i];
                    dbias[i] = with_bias && bias[i] ? put_f(&be, bias[i], w[i].rows) : NULL;
                    outs[i] = put_nan(&be, (size_t)n * w[i].rows);
                }
                be.matmul_multi(be.ctx, count, outs, put_f(&be, x, (size_t)n * k), ws, with_bias ? dbias : NULL, n);
                for (int i = 0; i < count; i++) get_f(&be, got[i] = hf((size_t)n * w[i].rows), outs[i],
                                                     (size_t)n * w[i].rows);
                run_end(&be, "matmul_multi"); /* the device buffers go; run_matmul below makes its own */
                for (int i = 0; i < count; i++) {
                    const size_t no = (size_t)n * w[i].rows;
                    float *ref = hf(no);
                    run_matmul(&be, ref, x, &w[i], with_bias ? bias[i] : NULL, n);
                    cmp("matmul_multi", "out", got[i], ref, no); /* tolerance 0 on both backends */
                }
            }
            hfree_all();
        }
}

/* The bf16 GEMMs run through one cuBLASLt plan per shape (kernels/cuda/
 * gemm_lt.cu): the same shape again, on other buffers of the same
 * alignment, makes no new plan; a new shape makes one; and the results of
 * a reused plan are right (the comparisons above ran each shape twice). */
static void test_gemm_plans(void) {
#ifdef DMS_HAVE_CUDA
    if (strcmp(be.name, "cuda")) return;
    setcase("gemm plan cache");
    const int n = 9, k = 64, m = 48;
    const hmat w = make_hmat(DMS_BF16, m, k);
    float *x = rnd((size_t)n * k, -1, 1), *got = hf((size_t)n * m), *ref = hf((size_t)n * m);
    run_matmul(&be, got, x, &w, NULL, n);
    const int after_first = dms_backend_cuda_gemm_plans(&be, NULL);
    for (int rep = 0; rep < 3; rep++) {
        run_matmul(&be, got, x, &w, NULL, n);
        CHECK_MSG(dms_backend_cuda_gemm_plans(&be, NULL) == after_first, "call %d of one shape made a new plan (%d -> %d)",
                  rep + 2, after_first, dms_backend_cuda_gemm_plans(&be, NULL));
    }
    run_matmul(&oracle, ref, x, &w, NULL, n);
    cmp("matmul/bf16", "out (cached plan)", got, ref, (size_t)n * m);
    run_matmul(&be, got, x, &w, NULL, n - 1);
    CHECK_MSG(dms_backend_cuda_gemm_plans(&be, NULL) == after_first + 1, "a new shape made %d plans, want 1",
              dms_backend_cuda_gemm_plans(&be, NULL) - after_first);
    int fallbacks = -1;
    const int plans = dms_backend_cuda_gemm_plans(&be, &fallbacks);
    printf("gemm plans: %d shapes, %d on cublasGemmEx (no cuBLASLt algorithm)\n", plans, fallbacks);
    hfree_all();
#endif
}

/* ---------------- rmsnorm ---------------- */

static const float NORM_EPS = 1e-6f;

static void run_rmsnorm(const dms_backend *b, float *out, const float *x, const float *w, int rows, int dim) {
    const size_t n = (size_t)rows * dim;
    float *d = put_nan(b, n);
    b->rmsnorm(b->ctx, d, put_f(b, x, n), put_f(b, w, dim), rows, dim, NORM_EPS);
    get_f(b, out, d, n);
    run_end(b, "rmsnorm");
}
static void naive_rmsnorm(float *out, const float *x, const float *w, int rows, int dim) {
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * dim;
        const double inv = 1.0 / sqrt(dot_hf(xr, xr, dim) / dim + NORM_EPS);
        for (int i = 0; i < dim; i++) out[(size_t)r * dim + i] = (float)(xr[i] * inv * w[i]);
    }
}

/* dx out; dw (NULL: none) accumulates; alias: dx is written over dy's buffer */
static void run_rmsnorm_bwd(const dms_backend *b, float *dx, float *dw, const float *dy, const float *x,
                            const float *w, int rows, int dim, int alias) {
    const size_t n = (size_t)rows * dim;
    float *ddy = put_f(b, dy, n), *ddx = alias ? ddy : put_nan(b, n), *ddw = dw ? put_f(b, dw, dim) : NULL;
    b->rmsnorm_bwd(b->ctx, ddx, ddw, ddy, put_f(b, x, n), put_f(b, w, dim), rows, dim, NORM_EPS);
    get_f(b, dx, ddx, n);
    if (dw) get_f(b, dw, ddw, dim);
    run_end(b, "rmsnorm_bwd");
}
/* y_i = x_i w_i r, r = (mean x^2 + eps)^-1/2:
 * dx_i = r w_i dy_i - x_i r^3 / dim * sum_k w_k dy_k x_k; dw_i += dy_i x_i r */
static void naive_rmsnorm_bwd(float *dx, float *dw, const float *dy, const float *x, const float *w, int rows,
                              int dim) {
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * dim, *dr = dy + (size_t)r * dim;
        const double ri = 1.0 / sqrt(dot_hf(xr, xr, dim) / dim + NORM_EPS);
        double wdx = 0.0;
        for (int i = 0; i < dim; i++) wdx += (double)w[i] * dr[i] * xr[i];
        for (int i = 0; i < dim; i++)
            dx[(size_t)r * dim + i] = (float)(ri * w[i] * dr[i] - xr[i] * ri * ri * ri / dim * wdx);
    }
    if (dw)
        for (int i = 0; i < dim; i++) {
            double s = dw[i];
            for (int r = 0; r < rows; r++) {
                const float *xr = x + (size_t)r * dim;
                s += (double)dy[(size_t)r * dim + i] * xr[i] / sqrt(dot_hf(xr, xr, dim) / dim + NORM_EPS);
            }
            dw[i] = (float)s;
        }
}

typedef struct {
    float *x, *w, *R, *out;
    int rows, dim;
} norm_fd;
static double norm_loss(void *p) {
    norm_fd *s = p;
    run_rmsnorm(&be, s->out, s->x, s->w, s->rows, s->dim);
    return dot_hf(s->out, s->R, (size_t)s->rows * s->dim);
}

static void test_rmsnorm(void) {
    /* dim 1: forward only (its gradient is eps-sized, all fp32 cancellation) */
    static const int shapes[][2] = {{1, 1}, {1, 7}, {5, 6}, {7, 96}, {33, 130}, {2, 1000}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        const int rows = shapes[s][0], dim = shapes[s][1];
        const size_t n = (size_t)rows * dim;
        float *x = rnd(n, -2, 2), *w = rnd(dim, -1.5f, 1.5f), *dy = rnd(n, -1, 1), *dw0 = rnd(dim, -1, 1);
        setcase("rows=%d dim=%d", rows, dim);
        float *got = hf(n), *ref = hf(n);
        run_rmsnorm(&be, got, x, w, rows, dim);
        if (vs_cpu) run_rmsnorm(&oracle, ref, x, w, rows, dim);
        else naive_rmsnorm(ref, x, w, rows, dim);
        cmp("rmsnorm", "out", got, ref, n);
        for (int alias = 0; alias < 2 && dim > 1; alias++)
            for (int withdw = 0; withdw < 2; withdw++) {
                setcase("rows=%d dim=%d dx%sdy dw=%s", rows, dim, alias ? "==" : "!=", withdw ? "given" : "NULL");
                float *gx = hf(n), *rx = hf(n);
                float *gw = withdw ? dupf(dw0, dim) : NULL, *rw = withdw ? dupf(dw0, dim) : NULL;
                run_rmsnorm_bwd(&be, gx, gw, dy, x, w, rows, dim, alias);
                if (vs_cpu) run_rmsnorm_bwd(&oracle, rx, rw, dy, x, w, rows, dim, alias);
                else naive_rmsnorm_bwd(rx, rw, dy, x, w, rows, dim);
                cmp("rmsnorm_bwd", "dx", gx, rx, n);
                if (withdw) cmp("rmsnorm_bwd", "dw", gw, rw, dim);
            }
        hfree_all();
    }
    /* finite differences of sum(R * rmsnorm(x; w)) */
    norm_fd st = {NULL, NULL, NULL, NULL, 3, 6};
    const size_t n = (size_t)st.rows * st.dim;
    setcase("fd rows=%d dim=%d", st.rows, st.dim);
    st.x = rnd(n, -2, 2), st.w = rnd(st.dim, -1.5f, 1.5f), st.R = rnd(n, -1, 1), st.out = hf(n);
    float *gx = hf(n), *gw = hf(st.dim);
    run_rmsnorm_bwd(&be, gx, gw, st.R, st.x, st.w, st.rows, st.dim, 0);
    fd_compare("rmsnorm_bwd/fd", "dx", st.x, gx, n, n, 1e-2f, norm_loss, &st);
    fd_compare("rmsnorm_bwd/fd", "dw", st.w, gw, st.dim, st.dim, 1e-2f, norm_loss, &st);
    hfree_all();
}

/* ---------------- rope ---------------- */

static void run_rope(const dms_backend *b, float *x, const int32_t *pos, const float *inv, int n, int H, int hd,
                     int bwd) {
    const size_t len = (size_t)n * H * hd;
    float *d = put_f(b, x, len);
    int32_t *dp = put_i(b, pos, n);
    float *di = put_f(b, inv, hd / 2);
    if (bwd) b->rope_bwd(b->ctx, d, dp, di, n, H, hd);
    else b->rope(b->ctx, d, dp, di, n, H, hd);
    get_f(b, x, d, len);
    run_end(b, bwd ? "rope_bwd" : "rope");
}
/* rotate-half: pair (i, i + hd/2) turned by dir * pos * inv_freq[i]; the
 * angle is an fp32 product (as Hugging Face computes it), sin/cos in double */
static void naive_rope(float *x, const int32_t *pos, const float *inv, int n, int H, int hd, double dir) {
    const int half = hd / 2;
    for (int t = 0; t < n; t++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < half; i++) {
                const float ang = (float)pos[t] * inv[i];
                const double c = cos(ang), s = dir * sin(ang);
                float *v = x + ((size_t)t * H + h) * hd;
                const double a = v[i], bb = v[i + half];
                v[i] = (float)(a * c - bb * s);
                v[i + half] = (float)(bb * c + a * s);
            }
}

static void test_rope(void) {
    static const int shapes[][3] = {{1, 1, 2}, {5, 3, 6}, {7, 4, 16}}; /* n, heads, head_dim */
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        const int n = shapes[s][0], H = shapes[s][1], hd = shapes[s][2];
        const size_t len = (size_t)n * H * hd;
        int32_t *pos = hmem(sizeof(int32_t) * n);
        for (int t = 0; t < n; t++) pos[t] = t == 0 ? 0 : t == 1 ? 4000 : rnd_int(5000);
        float *inv = hf(hd / 2);
        for (int i = 0; i < hd / 2; i++) inv[i] = (float)pow(10000.0, -2.0 * i / hd);
        float *x = rnd(len, -1, 1), *y = rnd(len, -1, 1);
        for (int bwd = 0; bwd < 2; bwd++) {
            setcase("n=%d heads=%d head_dim=%d", n, H, hd);
            float *got = dupf(x, len), *ref = dupf(x, len);
            run_rope(&be, got, pos, inv, n, H, hd, bwd);
            if (vs_cpu) run_rope(&oracle, ref, pos, inv, n, H, hd, bwd);
            else naive_rope(ref, pos, inv, n, H, hd, bwd ? -1.0 : 1.0);
            cmp(bwd ? "rope_bwd" : "rope", "x", got, ref, len);
        }
        /* rope_bwd undoes rope, and is its transpose */
        float *rx = dupf(x, len), *by = dupf(y, len);
        run_rope(&be, rx, pos, inv, n, H, hd, 0);
        run_rope(&be, by, pos, inv, n, H, hd, 1);
        cmp1("rope_bwd/adjoint", "<rope(x), y> vs <x, rope_bwd(y)>", dot_hf(x, by, len), dot_hf(rx, y, len));
        run_rope(&be, rx, pos, inv, n, H, hd, 1);
        cmp("rope_bwd", "rope_bwd(rope(x)) vs x", rx, x, len);
        hfree_all();
    }
}

/* ---------------- attention over a KV cache ---------------- */

typedef struct {
    int nq, nkv, H, KV, hd;
    const char *what;
} att_shape;

static void run_attention(const dms_backend *b, float *out, const float *q, const float *k, const float *v,
                          const int32_t *qpos, const att_shape *s, float scale) {
    const size_t no = (size_t)s->nq * s->H * s->hd, nk = (size_t)s->nkv * s->KV * s->hd;
    float *d = put_nan(b, no);
    b->attention(b->ctx, d, put_f(b, q, no), put_f(b, k, nk), put_f(b, v, nk), put_i(b, qpos, s->nq), s->nq, s->nkv,
                 s->H, s->KV, s->hd, scale);
    get_f(b, out, d, no);
    run_end(b, "attention");
}
static void naive_attention(float *out, const float *q, const float *k, const float *v, const int32_t *qpos,
                            const att_shape *s, float scale) {
    const int group = s->H / s->KV;
    double *p = hd((size_t)s->nkv);
    for (int i = 0; i < s->nq; i++)
        for (int h = 0; h < s->H; h++) {
            const float *qi = q + ((size_t)i * s->H + h) * s->hd;
            const int kh = h / group, last = qpos[i] < s->nkv - 1 ? qpos[i] : s->nkv - 1;
            double mx = -INFINITY, sum = 0.0;
            for (int j = 0; j <= last; j++) {
                p[j] = scale * dot_hf(qi, k + ((size_t)j * s->KV + kh) * s->hd, s->hd);
                mx = p[j] > mx ? p[j] : mx;
            }
            for (int j = 0; j <= last; j++) sum += p[j] = exp(p[j] - mx);
            for (int d = 0; d < s->hd; d++) {
                double o = 0.0;
                for (int j = 0; j <= last; j++) o += p[j] / sum * v[((size_t)j * s->KV + kh) * s->hd + d];
                out[((size_t)i * s->H + h) * s->hd + d] = (float)o;
            }
        }
}

static void test_attention(void) {
    static const att_shape shapes[] = {
        {9, 9, 6, 2, 6, "prefill, GQA group 3, head_dim 6"},
        {1, 37, 4, 4, 16, "decode one token, no GQA"},
        {5, 25, 4, 1, 8, "chunk after a cache, group 4"},
        {3, 4, 2, 1, 5, "positions past the cache"},
    };
    for (size_t c = 0; c < sizeof shapes / sizeof *shapes; c++) {
        const att_shape *s = &shapes[c];
        setcase("%s: n_q=%d n_kv=%d H=%d KV=%d hd=%d", s->what, s->nq, s->nkv, s->H, s->KV, s->hd);
        const size_t no = (size_t)s->nq * s->H * s->hd, nk = (size_t)s->nkv * s->KV * s->hd;
        int32_t *qpos = hmem(sizeof(int32_t) * s->nq);
        for (int i = 0; i < s->nq; i++) qpos[i] = c == 3 ? (int32_t[]){2, 10, 100}[i] : s->nkv - s->nq + i;
        float *q = rnd(no, -1.5f, 1.5f), *k = rnd(nk, -1.5f, 1.5f), *v = rnd(nk, -1, 1);
        float *got = hf(no), *ref = hf(no);
        const float scale = 1.0f / sqrtf((float)s->hd);
        run_attention(&be, got, q, k, v, qpos, s, scale);
        if (vs_cpu) run_attention(&oracle, ref, q, k, v, qpos, s, scale);
        else naive_attention(ref, q, k, v, qpos, s, scale);
        cmp("attention", "out", got, ref, no);
        hfree_all();
    }
}

/* ---------------- attention_paged ---------------- */

/* A sequence's ragged per-KV-head caches: lane h holds n[h] keys in blocks
 * of bs rows; keys sit at shuffled positions (lanes are not in position
 * order after evictions) with random flags. */
typedef struct {
    int KV, hd, bs, n[4];
    float *k[4], *v[4];   /* host [n, hd] */
    int32_t *pos[4];
    uint8_t *flag[4];
} paged_case;

static void run_attention_paged(const dms_backend *b, float *out, float *score_out, const float *q, const int32_t *qpos,
                                int nq, int H, const paged_case *pc, int window, float scale, int with_scores) {
    dms_kv_lane_view views[4];
    float **blk[4][2];
    for (int h = 0; h < pc->KV; h++) {
        const int nb = (pc->n[h] + pc->bs - 1) / pc->bs;
        for (int j = 0; j < 2; j++) {
            blk[h][j] = hmem(sizeof(float *) * (size_t)(nb ? nb : 1));
            for (int bi = 0; bi < nb; bi++) { /* every block its own allocation, rows past n stay NaN */
                float *dev = put_nan(b, (size_t)pc->bs * pc->hd);
                const int rows = pc->n[h] - bi * pc->bs < pc->bs ? pc->n[h] - bi * pc->bs : pc->bs;
                b->upload(b->ctx, dev, (j ? pc->v[h] : pc->k[h]) + (size_t)bi * pc->bs * pc->hd,
                          sizeof(float) * (size_t)rows * pc->hd);
                blk[h][j][bi] = dev;
            }
        }
        /* the bookkeeping is host memory (as the runtime keeps it); the blocks are the backend's */
        views[h] = (dms_kv_lane_view){(const void *const *)blk[h][0], (const void *const *)blk[h][1], pc->pos[h],
                                      pc->flag[h], with_scores ? score_out + h * 64 : NULL, pc->n[h], DMS_F32};
    }
    float *d = put_nan(b, (size_t)nq * H * pc->hd);
    b->attention_paged(b->ctx, d, put_f(b, q, (size_t)nq * H * pc->hd), put_i(b, qpos, (size_t)nq), nq, views, H,
                       pc->KV, pc->hd, pc->bs, window, scale);
    get_f(b, out, d, (size_t)nq * H * pc->hd);
    run_end(b, "attention_paged");
}

static void naive_attention_paged(float *out, float *score, const float *q, const int32_t *qpos, int nq, int H,
                                  const paged_case *pc, int window, float scale) {
    const int G = H / pc->KV;
    for (int i = 0; i < nq; i++)
        for (int h = 0; h < H; h++) {
            const int kh = h / G, n = pc->n[kh];
            double w[64], mx = -INFINITY, sum = 0;
            for (int s = 0; s < n; s++) {
                const int p = pc->pos[kh][s];
                const int vis = p <= qpos[i] && (qpos[i] - p <= window || !pc->flag[kh][s]);
                double dot = 0;
                for (int c = 0; c < pc->hd; c++)
                    dot += (double)q[((size_t)i * H + h) * pc->hd + c] * pc->k[kh][(size_t)s * pc->hd + c];
                w[s] = vis ? dot * scale : -INFINITY;
                mx = w[s] > mx ? w[s] : mx;
            }
            for (int s = 0; s < n; s++) sum += w[s] = w[s] == -INFINITY ? 0.0 : exp(w[s] - mx);
            for (int c = 0; c < pc->hd; c++) {
                double o = 0;
                for (int s = 0; s < n; s++) o += w[s] / sum * pc->v[kh][(size_t)s * pc->hd + c];
                out[((size_t)i * H + h) * pc->hd + c] = (float)o;
            }
            for (int s = 0; score && s < n; s++) score[kh * 64 + s] += (float)(w[s] / sum);
        }
}

static void test_attention_paged(void) {
    if (!be.attention_paged) { /* the paged runtime cannot run on this backend: say so, as a failure */
        CHECK_MSG(0, "attention_paged: not implemented by backend '%s' (the paged KV runtime needs it)", be.name);
        return;
    }
    static const struct {
        int nq, H, KV, hd, bs, window, n[4];
        const char *what;
    } cases[] = {
        {1, 6, 2, 8, 4, 5, {13, 7}, "decode, ragged lanes, blocks of 4"},
        {4, 4, 1, 6, 3, 2, {20}, "prefill chunk of 4, window 2"},
        {3, 8, 4, 5, 8, 1000, {9, 1, 17, 30}, "window past every key"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        setcase("%s", cases[c].what);
        paged_case pc = {cases[c].KV, cases[c].hd, cases[c].bs, {0}, {0}, {0}, {0}, {0}};
        const int nq = cases[c].nq, H = cases[c].H, top = 40;
        for (int h = 0; h < pc.KV; h++) {
            const int n = pc.n[h] = cases[c].n[h];
            pc.k[h] = rnd((size_t)n * pc.hd, -1.5f, 1.5f);
            pc.v[h] = rnd((size_t)n * pc.hd, -1, 1);
            pc.pos[h] = hmem(sizeof(int32_t) * (size_t)(n ? n : 1));
            pc.flag[h] = hmem((size_t)(n ? n : 1));
            for (int s = 0; s < n; s++) {
                pc.pos[h][s] = top - nq - 3 * s % (top - nq); /* distinct, not sorted */
                pc.flag[h][s] = (uint8_t)(rnd_int(3) == 0);
            }
            pc.pos[h][n - 1] = top - nq; /* the first query's own key is always there */
            pc.flag[h][n - 1] = 0;
        }
        int32_t qpos[4];
        for (int i = 0; i < nq; i++) qpos[i] = top - nq + i;
        const size_t no = (size_t)nq * H * pc.hd;
        float *q = rnd(no, -1.5f, 1.5f), *got = hf(no), *ref = hf(no);
        float *sg = hf(4 * 64), *sr = hf(4 * 64);
        for (int i = 0; i < 4 * 64; i++) sg[i] = sr[i] = 0.25f; /* scores accumulate onto what is there */
        const float scale = 1.0f / sqrtf((float)pc.hd);
        run_attention_paged(&be, got, sg, q, qpos, nq, H, &pc, cases[c].window, scale, 1);
        if (vs_cpu) run_attention_paged(&oracle, ref, sr, q, qpos, nq, H, &pc, cases[c].window, scale, 1);
        else naive_attention_paged(ref, sr, q, qpos, nq, H, &pc, cases[c].window, scale);
        cmp("attention_paged", "out", got, ref, no);
        cmp("attention_paged", "score", sg, sr, 4 * 64);
        hfree_all();
    }
}

/* ---------------- swiglu ---------------- */

static void run_swiglu(const dms_backend *b, float *out, const float *g, const float *u, size_t n) {
    float *d = put_nan(b, n);
    b->swiglu(b->ctx, d, put_f(b, g, n), put_f(b, u, n), n);
    get_f(b, out, d, n);
    run_end(b, "swiglu");
}
/* alias: dgate written over gate's buffer, dup over up's */
static void run_swiglu_bwd(const dms_backend *b, float *dg, float *du, const float *dout, const float *g,
                           const float *u, size_t n, int alias) {
    float *dgt = put_f(b, g, n), *dup = put_f(b, u, n);
    float *ddg = alias ? dgt : put_nan(b, n), *ddu = alias ? dup : put_nan(b, n);
    b->swiglu_bwd(b->ctx, ddg, ddu, put_f(b, dout, n), dgt, dup, n);
    get_f(b, dg, ddg, n);
    get_f(b, du, ddu, n);
    run_end(b, "swiglu_bwd");
}
static void naive_swiglu(float *out, float *dg, float *du, const float *dout, const float *g, const float *u,
                         size_t n) {
    for (size_t i = 0; i < n; i++) {
        const double sg = sigm(g[i]);
        if (out) out[i] = (float)(g[i] * sg * u[i]);
        if (du) du[i] = (float)(dout[i] * g[i] * sg);
        if (dg) dg[i] = (float)(dout[i] * u[i] * (sg + g[i] * sg * (1.0 - sg)));
    }
}

typedef struct {
    float *g, *u, *R, *out;
    size_t n;
} swiglu_fd;
static double swiglu_loss(void *p) {
    swiglu_fd *s = p;
    run_swiglu(&be, s->out, s->g, s->u, s->n);
    return dot_hf(s->out, s->R, s->n);
}

static void test_swiglu(void) {
    static const size_t ns[] = {1, 1001, 70001};
    for (size_t c = 0; c < sizeof ns / sizeof *ns; c++) {
        const size_t n = ns[c];
        float *g = rnd(n, -6, 6), *u = rnd(n, -2, 2), *dout = rnd(n, -1, 1);
        setcase("n=%zu", n);
        float *got = hf(n), *ref = hf(n);
        run_swiglu(&be, got, g, u, n);
        if (vs_cpu) run_swiglu(&oracle, ref, g, u, n);
        else naive_swiglu(ref, NULL, NULL, NULL, g, u, n);
        cmp("swiglu", "out", got, ref, n);
        for (int alias = 0; alias < 2; alias++) {
            setcase("n=%zu %s", n, alias ? "dgate==gate dup==up" : "separate outputs");
            float *gg = hf(n), *gu = hf(n), *rg = hf(n), *ru = hf(n);
            run_swiglu_bwd(&be, gg, gu, dout, g, u, n, alias);
            if (vs_cpu) run_swiglu_bwd(&oracle, rg, ru, dout, g, u, n, alias);
            else naive_swiglu(NULL, rg, ru, dout, g, u, n);
            cmp("swiglu_bwd", "dgate", gg, rg, n);
            cmp("swiglu_bwd", "dup", gu, ru, n);
        }
        hfree_all();
    }
    swiglu_fd st = {NULL, NULL, NULL, NULL, 16};
    setcase("fd n=%zu", st.n);
    st.g = rnd(st.n, -4, 4), st.u = rnd(st.n, -2, 2), st.R = rnd(st.n, -1, 1), st.out = hf(st.n);
    float *dg = hf(st.n), *du = hf(st.n);
    run_swiglu_bwd(&be, dg, du, st.R, st.g, st.u, st.n, 0);
    fd_compare("swiglu_bwd/fd", "dgate", st.g, dg, st.n, st.n, 1e-2f, swiglu_loss, &st);
    fd_compare("swiglu_bwd/fd", "dup", st.u, du, st.n, st.n, 1e-2f, swiglu_loss, &st);
    hfree_all();
}

/* ---------------- embedding ---------------- */

static void run_embedding(const dms_backend *b, float *out, const hmat *tab, const int32_t *ids, int n) {
    const dms_mat m = put_mat(b, tab);
    float *d = put_nan(b, (size_t)n * tab->cols);
    b->embedding(b->ctx, d, &m, put_i(b, ids, n), n);
    get_f(b, out, d, (size_t)n * tab->cols);
    run_end(b, "embedding");
}

static void test_embedding(void) {
    static const int dims[] = {6, 33};
    const int vocab = 50;
    static const int32_t ids[] = {0, 49, 7, 7, 13, 0, 48, 25, 1};
    for (size_t c = 0; c < 2; c++)
        for (int dt = DMS_F32; dt <= DMS_BF16; dt++)
            for (int n = 1; n <= 9; n += 8) {
                const int dim = dims[c];
                setcase("vocab=%d dim=%d %s n=%d", vocab, dim, dt_name((dms_dtype)dt), n);
                const hmat tab = make_hmat((dms_dtype)dt, vocab, dim);
                float *got = hf((size_t)n * dim), *ref = hf((size_t)n * dim);
                run_embedding(&be, got, &tab, ids + (n == 1), n);
                if (vs_cpu) run_embedding(&oracle, ref, &tab, ids + (n == 1), n);
                else
                    for (int i = 0; i < n; i++)
                        for (int d = 0; d < dim; d++)
                            ref[(size_t)i * dim + d] = tab.f[(size_t)ids[i + (n == 1)] * dim + d];
                cmp("embedding", "out", got, ref, (size_t)n * dim);
                hfree_all();
            }
}

/* ---------------- DMS neuron channel ---------------- */

/* in == NULL: take (out may be NULL) scaling the channel by keep; else put */
static void run_neuron(const dms_backend *b, float *out, float *q, const float *in, int T, int H, int KV, int hd,
                       float keep) {
    const size_t nq = (size_t)T * H * hd, no = (size_t)T * KV;
    float *dq = put_f(b, q, nq), *dout = out ? put_nan(b, no) : NULL;
    if (in) b->dms_neuron_put(b->ctx, dq, put_f(b, in, no), T, H, KV, hd, keep);
    else b->dms_neuron_take(b->ctx, dout, dq, T, H, KV, hd, keep);
    get_f(b, q, dq, nq);
    if (out) get_f(b, out, dout, no);
    run_end(b, in ? "dms_neuron_put" : "dms_neuron_take");
}
static void naive_neuron(float *out, float *q, const float *in, int T, int H, int KV, int hd, float keep) {
    for (int t = 0; t < T; t++)
        for (int h = 0; h < KV; h++) {
            float *ch = q + (size_t)t * H * hd + (size_t)h * (H / KV) * hd + hd - 1;
            if (in) *ch = keep * *ch + in[(size_t)t * KV + h];
            if (!in && out) out[(size_t)t * KV + h] = *ch;
            if (!in) *ch *= keep;
        }
}

static void test_neuron(void) {
    static const int shapes[][4] = {{1, 1, 1, 1}, {5, 6, 2, 6}, {3, 4, 4, 8}}; /* T, H, KV, hd */
    static const struct {
        const char *name;
        int take_out, put;
        float keep;
    } modes[] = {{"take", 1, 0, 1.0f},          {"take+zero", 1, 0, 0.0f}, {"take+fade", 1, 0, 0.3f},
                 {"zero only", 0, 0, 0.0f},     {"fade only", 0, 0, 0.7f}, {"put", 0, 1, 0.0f},
                 {"put onto faded", 0, 1, 0.6f}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (size_t mode = 0; mode < sizeof modes / sizeof *modes; mode++) {
            const int T = shapes[s][0], H = shapes[s][1], KV = shapes[s][2], hd = shapes[s][3];
            const size_t nq = (size_t)T * H * hd, no = (size_t)T * KV;
            const float keep = modes[mode].keep;
            setcase("T=%d H=%d KV=%d hd=%d %s (keep %g)", T, H, KV, hd, modes[mode].name, keep);
            float *q = rnd(nq, -1, 1), *in = modes[mode].put ? rnd(no, -1, 1) : NULL;
            float *gq = dupf(q, nq), *rq = dupf(q, nq), *go = modes[mode].take_out ? hf(no) : NULL,
                  *ro = modes[mode].take_out ? hf(no) : NULL;
            run_neuron(&be, go, gq, in, T, H, KV, hd, keep);
            if (vs_cpu) run_neuron(&oracle, ro, rq, in, T, H, KV, hd, keep);
            else naive_neuron(ro, rq, in, T, H, KV, hd, keep);
            const char *op = in ? "dms_neuron_put" : "dms_neuron_take";
            cmp(op, "q", gq, rq, nq);
            if (go) cmp(op, "out", go, ro, no);
            hfree_all();
        }
}

/* ---------------- DMS attention ---------------- */

typedef struct {
    int T, H, KV, hd, window;
    int lens[4], nlens; /* documents (nlens = -1: interleaved, not contiguous) */
    int log_keep, dlog_keep;
    const char *what;
} dms_shape;

typedef struct {
    const dms_shape *s;
    const int32_t *seg;
    float *q, *k, *v, *lk, scale;
} dms_in;

static void run_att_dms_fwd(const dms_backend *b, float *out, float *lse, const dms_in *a) {
    const dms_shape *s = a->s;
    const size_t nq = (size_t)s->T * s->H * s->hd, nk = (size_t)s->T * s->KV * s->hd, nl = (size_t)s->T * s->H;
    float *dout = put_nan(b, nq), *dlse = put_nan(b, nl);
    b->attention_dms_fwd(b->ctx, dout, dlse, put_f(b, a->q, nq), put_f(b, a->k, nk), put_f(b, a->v, nk),
                         a->lk ? put_f(b, a->lk, (size_t)s->T * s->KV) : NULL, put_i(b, a->seg, s->T), s->T, s->H,
                         s->KV, s->hd, s->window, a->scale);
    get_f(b, out, dout, nq);
    get_f(b, lse, dlse, nl);
    run_end(b, "attention_dms_fwd");
}
/* dlk NULL: dlog_keep not asked for */
static void run_att_dms_bwd(const dms_backend *b, float *dq, float *dk, float *dv, float *dlk, const float *dout,
                            const float *out, const float *lse, const dms_in *a) {
    const dms_shape *s = a->s;
    const size_t nq = (size_t)s->T * s->H * s->hd, nk = (size_t)s->T * s->KV * s->hd, nl = (size_t)s->T * s->KV;
    float *ddq = put_nan(b, nq), *ddk = put_nan(b, nk), *ddv = put_nan(b, nk);
    float *ddl = dlk ? put_nan(b, nl) : NULL;
    b->attention_dms_bwd(b->ctx, ddq, ddk, ddv, ddl, put_f(b, dout, nq), put_f(b, out, nq),
                         put_f(b, lse, (size_t)s->T * s->H), put_f(b, a->q, nq), put_f(b, a->k, nk),
                         put_f(b, a->v, nk), a->lk ? put_f(b, a->lk, nl) : NULL, put_i(b, a->seg, s->T), s->T, s->H,
                         s->KV, s->hd, s->window, a->scale);
    get_f(b, dq, ddq, nq);
    get_f(b, dk, ddk, nk);
    get_f(b, dv, ddv, nk);
    if (dlk) get_f(b, dlk, ddl, nl);
    run_end(b, "attention_dms_bwd");
}

/* Probabilities p[0..T) of query i, head h (0 where masked); returns the lse. */
static double naive_dms_probs(double *p, int i, int h, const dms_in *a) {
    const dms_shape *s = a->s;
    const int kh = h / (s->H / s->KV);
    double mx = -INFINITY, sum = 0.0;
    for (int j = 0; j < s->T; j++) {
        p[j] = -INFINITY;
        if (j > i || a->seg[j] != a->seg[i]) continue;
        p[j] = a->scale * dot_hf(a->q + ((size_t)i * s->H + h) * s->hd, a->k + ((size_t)j * s->KV + kh) * s->hd, s->hd);
        if (a->lk && i - j > s->window) p[j] += a->lk[(size_t)j * s->KV + kh];
        mx = p[j] > mx ? p[j] : mx;
    }
    for (int j = 0; j < s->T; j++) sum += exp(p[j] - mx);
    const double lse = mx + log(sum);
    for (int j = 0; j < s->T; j++) p[j] = exp(p[j] - lse);
    return lse;
}
static void naive_att_dms_fwd(float *out, float *lse, const dms_in *a) {
    const dms_shape *s = a->s;
    double *p = hd(s->T);
    for (int i = 0; i < s->T; i++)
        for (int h = 0; h < s->H; h++) {
            lse[(size_t)i * s->H + h] = (float)naive_dms_probs(p, i, h, a);
            const int kh = h / (s->H / s->KV);
            for (int d = 0; d < s->hd; d++) {
                double o = 0.0;
                for (int j = 0; j <= i; j++) o += p[j] * a->v[((size_t)j * s->KV + kh) * s->hd + d];
                out[((size_t)i * s->H + h) * s->hd + d] = (float)o;
            }
        }
}
/* dS_ij = P_ij (dO_i.V_j - sum_j' P_ij' dO_i.V_j'); dq_i = scale sum_j dS_ij K_j;
 * dk_j = scale sum_i dS_ij Q_i; dv_j = sum_i P_ij dO_i; dlog_keep_j = sum of
 * dS_ij over the biased (i - j > window) entries of the group's heads. */
static void naive_att_dms_bwd(float *dq, float *dk, float *dv, float *dlk, const float *dout, const dms_in *a) {
    const dms_shape *s = a->s;
    const size_t nq = (size_t)s->T * s->H * s->hd, nk = (size_t)s->T * s->KV * s->hd;
    double *p = hd(s->T), *dp = hd(s->T), *gq = hd(nq), *gk = hd(nk), *gv = hd(nk), *gl = hd((size_t)s->T * s->KV);
    for (int h = 0; h < s->H; h++)
        for (int i = 0; i < s->T; i++) {
            naive_dms_probs(p, i, h, a);
            const int kh = h / (s->H / s->KV);
            const float *doi = dout + ((size_t)i * s->H + h) * s->hd, *qi = a->q + ((size_t)i * s->H + h) * s->hd;
            double Di = 0.0;
            for (int j = 0; j <= i; j++)
                Di += p[j] * (dp[j] = dot_hf(doi, a->v + ((size_t)j * s->KV + kh) * s->hd, s->hd));
            for (int j = 0; j <= i; j++) {
                if (p[j] == 0.0) continue;
                const double ds = p[j] * (dp[j] - Di);
                const size_t ko = ((size_t)j * s->KV + kh) * s->hd;
                for (int d = 0; d < s->hd; d++) {
                    gq[((size_t)i * s->H + h) * s->hd + d] += a->scale * ds * a->k[ko + d];
                    gk[ko + d] += a->scale * ds * qi[d];
                    gv[ko + d] += p[j] * doi[d];
                }
                if (i - j > s->window) gl[(size_t)j * s->KV + kh] += ds;
            }
        }
    for (size_t x = 0; x < nq; x++) dq[x] = (float)gq[x];
    for (size_t x = 0; x < nk; x++) dk[x] = (float)gk[x], dv[x] = (float)gv[x];
    if (dlk)
        for (size_t x = 0; x < (size_t)s->T * s->KV; x++) dlk[x] = (float)gl[x];
}

static void run_future_max(const dms_backend *b, float *imp, const float *lse, const dms_in *a, int with_v, int mean) {
    const dms_shape *s = a->s;
    const size_t nq = (size_t)s->T * s->H * s->hd, nk = (size_t)s->T * s->KV * s->hd, nl = (size_t)s->T * s->KV;
    float *di = put_nan(b, nl);
    b->attention_future_max(b->ctx, di, put_f(b, a->q, nq), put_f(b, a->k, nk), with_v ? put_f(b, a->v, nk) : NULL,
                            put_f(b, lse, (size_t)s->T * s->H), put_i(b, a->seg, s->T), s->T, s->H, s->KV, s->hd,
                            s->window, a->scale, mean);
    get_f(b, imp, di, nl);
    run_end(b, "attention_future_max");
}
/* imp[j, kh] = max (mean: the mean) over the group's heads h and the
 * queries i of j's document with i - j > window of exp(scale q_i.k_j -
 * lse[i, h]); 0 if none; with_v: times sum_d |v[j, kh, d]| */
static void naive_future_max(float *imp, const float *lse, const dms_in *a, int with_v, int mean) {
    const dms_shape *s = a->s;
    const int group = s->H / s->KV;
    for (int j = 0; j < s->T; j++)
        for (int kh = 0; kh < s->KV; kh++) {
            double m = 0.0, sum = 0.0;
            int cnt = 0;
            for (int i = j + s->window + 1; i < s->T; i++) {
                if (a->seg[i] != a->seg[j]) continue;
                for (int h = kh * group; h < (kh + 1) * group; h++) {
                    const double li = lse[(size_t)i * s->H + h];
                    if (li == -INFINITY) continue;
                    const double p = exp(a->scale * dot_hf(a->q + ((size_t)i * s->H + h) * s->hd,
                                                           a->k + ((size_t)j * s->KV + kh) * s->hd, s->hd) - li);
                    m = p > m ? p : m;
                    sum += p;
                    cnt++;
                }
            }
            if (mean) m = cnt ? sum / cnt : 0.0;
            double w = 1.0;
            if (with_v) {
                w = 0.0;
                for (int d = 0; d < s->hd; d++) w += fabs(a->v[((size_t)j * s->KV + kh) * s->hd + d]);
            }
            imp[(size_t)j * s->KV + kh] = (float)(m * w);
        }
}

static dms_in make_dms_in(const dms_shape *s) {
    dms_in a = {s, NULL, NULL, NULL, NULL, NULL, 1.0f / sqrtf((float)s->hd)};
    if (s->nlens >= 0) {
        a.seg = make_seg(s->T, s->lens, s->nlens);
    } else { /* interleaved documents: seg is not monotone */
        int32_t *seg = hmem(sizeof(int32_t) * s->T);
        for (int t = 0; t < s->T; t++) seg[t] = (t / 3 + t % 2) % 3;
        a.seg = seg;
    }
    a.q = rnd((size_t)s->T * s->H * s->hd, -1.5f, 1.5f);
    a.k = rnd((size_t)s->T * s->KV * s->hd, -1.5f, 1.5f);
    a.v = rnd((size_t)s->T * s->KV * s->hd, -1, 1);
    if (s->log_keep) { /* log-probabilities, some of them very small */
        a.lk = hf((size_t)s->T * s->KV);
        for (int x = 0; x < s->T * s->KV; x++) a.lk[x] = x % 11 == 5 ? -30.0f : (float)log_sigm(uni(-3, 4));
    }
    return a;
}

typedef struct {
    dms_in a;
    float *R, *out, *lse;
} dms_fd;
static double dms_loss(void *p) {
    dms_fd *st = p;
    run_att_dms_fwd(&be, st->out, st->lse, &st->a);
    return dot_hf(st->out, st->R, (size_t)st->a.s->T * st->a.s->H * st->a.s->hd);
}

/* One attention_dms case on backend b against the reference: forward
 * (out, lse), with guide the guidance statistic from that forward's lse,
 * and the backward; tolerance rows "attention_dms_fwd<tag>" and
 * "attention_dms_bwd<tag>". */
static void check_dms_case(const dms_backend *b, const dms_shape *s, const char *tag, int guide) {
    char fwd_op[48], bwd_op[48];
    snprintf(fwd_op, sizeof fwd_op, "attention_dms_fwd%s", tag);
    snprintf(bwd_op, sizeof bwd_op, "attention_dms_bwd%s", tag);
    const dms_in a = make_dms_in(s);
    const size_t nq = (size_t)s->T * s->H * s->hd, nk = (size_t)s->T * s->KV * s->hd, nl = (size_t)s->T * s->KV;
    float *out = hf(nq), *lse = hf((size_t)s->T * s->H), *rout = hf(nq), *rlse = hf((size_t)s->T * s->H);
    run_att_dms_fwd(b, out, lse, &a);
    if (vs_cpu) run_att_dms_fwd(&oracle, rout, rlse, &a);
    else naive_att_dms_fwd(rout, rlse, &a);
    cmp(fwd_op, "out", out, rout, nq);
    cmp(fwd_op, "lse", lse, rlse, (size_t)s->T * s->H);
    for (int gv = 0; guide && gv < 4; gv++) { /* the guidance statistic, from this forward's lse */
        static const char *const what[] = {"imp", "imp x |v|_1", "mean imp", "mean imp x |v|_1"};
        const int with_v = gv & 1, mean = gv >> 1;
        float *imp = hf(nl), *rimp = hf(nl);
        run_future_max(b, imp, lse, &a, with_v, mean);
        if (vs_cpu) run_future_max(&oracle, rimp, lse, &a, with_v, mean);
        else naive_future_max(rimp, lse, &a, with_v, mean);
        cmp("attention_future_max", what[gv], imp, rimp, nl);
        int some = 0; /* the case must exercise the op: a key with later queries past the window */
        for (size_t x = 0; x < nl; x++) some |= rimp[x] > 0.0f;
        CHECK_MSG(some || s->T == 1 || s->window >= 200, "attention_future_max [%s]: every entry 0", case_name);
    }
    float *dout = rnd(nq, -1, 1);
    float *g[4] = {hf(nq), hf(nk), hf(nk), s->dlog_keep ? hf(nl) : NULL};
    float *r[4] = {hf(nq), hf(nk), hf(nk), s->dlog_keep ? hf(nl) : NULL};
    run_att_dms_bwd(b, g[0], g[1], g[2], g[3], dout, out, lse, &a);
    if (vs_cpu) run_att_dms_bwd(&oracle, r[0], r[1], r[2], r[3], dout, out, lse, &a);
    else naive_att_dms_bwd(r[0], r[1], r[2], r[3], dout, &a);
    static const char *const names[] = {"dq", "dk", "dv", "dlog_keep"};
    const size_t lens[] = {nq, nk, nk, nl};
    for (int x = 0; x < 4; x++)
        if (g[x]) cmp(bwd_op, names[x], g[x], r[x], lens[x]);
    hfree_all();
}

static void test_attention_dms(void) {
    /* T=130 and 300 cross the CPU's 128-query and 64-key tiles */
    static const dms_shape shapes[] = {
        {130, 6, 2, 6, 4, {50, 1, 70, 9}, 4, 1, 1, "4 docs, window < doc, GQA 3"},
        {130, 6, 2, 6, 4, {50, 1, 70, 9}, 4, 0, 0, "4 docs, log_keep NULL, no dlog_keep"},
        {130, 2, 2, 16, 200, {0}, 0, 1, 1, "one doc, window > doc"},
        {130, 3, 3, 6, 0, {64, 66}, 2, 1, 1, "window 0"},
        {300, 3, 1, 5, 32, {140, 160}, 2, 1, 1, "3 query tiles, group 3 of one KV head"},
        {1, 1, 1, 1, 0, {0}, 0, 1, 1, "T=1"},
        {40, 2, 1, 4, 2, {0}, -1, 1, 1, "interleaved documents"},
        /* head dims of real models: CUDA's tiled kernels with every lane
         * busy (64, 128); 130 takes CUDA's reference kernels */
        {200, 4, 2, 64, 40, {90, 110}, 2, 1, 1, "hd 64, 2 docs, 4 query tiles of the CUDA kernel"},
        {160, 2, 1, 128, 16, {0}, 0, 1, 1, "hd 128, one doc"},
        {70, 2, 1, 130, 8, {30, 40}, 2, 1, 1, "hd 130, past the tiled kernels"},
    };
    for (size_t c = 0; c < sizeof shapes / sizeof *shapes; c++) {
        setcase("%s: T=%d H=%d KV=%d hd=%d window=%d", shapes[c].what, shapes[c].T, shapes[c].H, shapes[c].KV,
                shapes[c].hd, shapes[c].window);
        check_dms_case(&be, &shapes[c], "", 1);
    }
    /* finite differences of sum(R * out) through the backend's own forward */
    static const dms_shape fs = {24, 6, 2, 6, 3, {10, 14}, 2, 1, 1, "fd"};
    setcase("fd: T=%d H=%d KV=%d hd=%d window=%d docs 10+14", fs.T, fs.H, fs.KV, fs.hd, fs.window);
    dms_fd st = {make_dms_in(&fs), NULL, NULL, NULL};
    const size_t nq = (size_t)fs.T * fs.H * fs.hd, nk = (size_t)fs.T * fs.KV * fs.hd, nl = (size_t)fs.T * fs.KV;
    for (size_t x = 0; x < nl; x++) st.a.lk[x] = (float)log_sigm(uni(-3, 4)); /* smooth: no -30 */
    st.R = rnd(nq, -1, 1), st.out = hf(nq), st.lse = hf((size_t)fs.T * fs.H);
    float *dq = hf(nq), *dk = hf(nk), *dv = hf(nk), *dl = hf(nl);
    run_att_dms_fwd(&be, st.out, st.lse, &st.a);
    run_att_dms_bwd(&be, dq, dk, dv, dl, st.R, st.out, st.lse, &st.a);
    fd_compare("attention_dms_bwd/fd", "dq", st.a.q, dq, nq, 24, 1e-2f, dms_loss, &st);
    fd_compare("attention_dms_bwd/fd", "dk", st.a.k, dk, nk, 24, 1e-2f, dms_loss, &st);
    fd_compare("attention_dms_bwd/fd", "dv", st.a.v, dv, nk, 24, 1e-2f, dms_loss, &st);
    fd_compare("attention_dms_bwd/fd", "dlog_keep", st.a.lk, dl, nl, nl, 1e-2f, dms_loss, &st);
    hfree_all();
}

/* The CUDA backend's default training attention: bf16 products on the
 * tensor cores (kernels/cuda/attention_mma.cu) for head dims that are
 * multiples of 16 up to 128, against the oracle at bf16 tolerance. No T=1
 * case: a one-token row's outputs are near zero by cancellation, where a
 * relative bf16 error means nothing (tests/test_flash_emul.cpp has it). */
static void test_attention_dms_tc(void) {
    static const dms_shape shapes[] = {
        {130, 6, 2, 16, 4, {50, 1, 70, 9}, 4, 1, 1, "hd 16, 4 docs, window < doc, GQA 3"},
        {130, 6, 2, 32, 4, {50, 1, 70, 9}, 4, 0, 0, "hd 32, log_keep NULL, no dlog_keep"},
        {130, 2, 2, 16, 200, {0}, 0, 1, 1, "hd 16, one doc, window > doc"},
        {300, 3, 1, 16, 32, {140, 160}, 2, 1, 1, "hd 16, 5 query tiles, group 3 of one KV head"},
        {40, 2, 1, 16, 2, {0}, -1, 1, 1, "hd 16, interleaved documents"},
        {70, 2, 2, 48, 8, {30, 40}, 2, 1, 1, "hd 48"},
        {200, 4, 2, 64, 40, {90, 110}, 2, 1, 1, "hd 64, 2 docs"},
        {160, 2, 1, 128, 16, {0}, 0, 1, 1, "hd 128, one doc"},
        /* Qwen3's head dim over several 128-query blocks: tiles wholly past the window (the branch-free path),
         * the next tile loading while one is computed, 22 query tiles a head in dk/dv */
        {700, 8, 2, 128, 64, {300, 400}, 2, 1, 1, "hd 128, 2 docs, GQA 4, 6 query blocks"},
    };
    for (size_t c = 0; c < sizeof shapes / sizeof *shapes; c++) {
        setcase("tensor cores, %s: T=%d H=%d KV=%d hd=%d window=%d", shapes[c].what, shapes[c].T, shapes[c].H,
                shapes[c].KV, shapes[c].hd, shapes[c].window);
        check_dms_case(&be_tc, &shapes[c], "/bf16", 0);
    }
}

/* ---------------- distillation ---------------- */

static void run_kd(const dms_backend *b, float *loss, float *dzs, const float *zs, const float *zt, const float *w,
                   int rows, int V, int alias, int forward) {
    const size_t n = (size_t)rows * V;
    float *dzsrc = put_f(b, zs, n), *dl = loss ? put_nan(b, rows) : NULL;
    float *dg = !dzs ? NULL : alias ? dzsrc : put_nan(b, n);
    b->kd_chunk(b->ctx, dl, dg, dzsrc, put_f(b, zt, n), w ? put_f(b, w, rows) : NULL, rows, V, forward);
    if (loss) get_f(b, loss, dl, rows);
    if (dzs) get_f(b, dzs, dg, n);
    run_end(b, "kd_chunk");
}
/* forward 0: loss_r = KL(p_s || p_t), dzs = w_r p_s (log p_s - log p_t - loss_r);
 * forward 1: loss_r = KL(p_t || p_s), dzs = w_r (p_s - p_t) */
static void naive_kd(float *loss, float *dzs, const float *zs, const float *zt, const float *w, int rows, int V,
                     int forward) {
    for (int r = 0; r < rows; r++) {
        const float *s = zs + (size_t)r * V, *t = zt + (size_t)r * V;
        double ms = -INFINITY, mt = -INFINITY, ss = 0.0, st = 0.0, kl = 0.0;
        for (int v = 0; v < V; v++) ms = s[v] > ms ? s[v] : ms, mt = t[v] > mt ? t[v] : mt;
        for (int v = 0; v < V; v++) ss += exp(s[v] - ms), st += exp(t[v] - mt);
        const double ls = ms + log(ss), lt = mt + log(st);
        for (int v = 0; v < V; v++)
            kl += forward ? exp(t[v] - lt) * ((t[v] - lt) - (s[v] - ls)) : exp(s[v] - ls) * ((s[v] - ls) - (t[v] - lt));
        if (loss) loss[r] = (float)kl;
        for (int v = 0; dzs && v < V; v++)
            dzs[(size_t)r * V + v] =
                (float)((w ? w[r] : 1.0) * (forward ? exp(s[v] - ls) - exp(t[v] - lt)
                                                    : exp(s[v] - ls) * ((s[v] - ls) - (t[v] - lt) - kl)));
    }
}

typedef struct {
    float *zs, *zt, *w, *loss;
    int rows, V, forward;
} kd_fd;
static double kd_loss(void *p) {
    kd_fd *s = p;
    run_kd(&be, s->loss, NULL, s->zs, s->zt, NULL, s->rows, s->V, 0, s->forward);
    return dot_hf(s->loss, s->w, s->rows);
}

static void test_kd(void) {
    static const struct {
        int rows, V, weight, alias, loss, dzs;
    } cases[] = {{1, 1, 0, 0, 1, 1}, {3, 7, 1, 0, 1, 1}, {4, 1000, 1, 0, 1, 1},
                 {2, 5000, 0, 1, 1, 1}, {3, 7, 0, 0, 0, 1}, {3, 7, 1, 0, 1, 0}};
    for (int fwd = 0; fwd < 2; fwd++)
        for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
            const int rows = cases[c].rows, V = cases[c].V;
            const size_t n = (size_t)rows * V;
            setcase("%s rows=%d V=%d weight=%s%s%s%s", fwd ? "KL(t||s)" : "KL(s||t)", rows, V,
                    cases[c].weight ? "given" : "NULL", cases[c].alias ? " dzs==zs" : "",
                    cases[c].loss ? "" : " loss=NULL", cases[c].dzs ? "" : " dzs=NULL");
            float *zs = rnd(n, -4, 4), *zt = rnd(n, -4, 4), *w = cases[c].weight ? rnd(rows, 0.1f, 2) : NULL;
            float *gl = cases[c].loss ? hf(rows) : NULL, *rl = cases[c].loss ? hf(rows) : NULL;
            float *gg = cases[c].dzs ? hf(n) : NULL, *rg = cases[c].dzs ? hf(n) : NULL;
            run_kd(&be, gl, gg, zs, zt, w, rows, V, cases[c].alias, fwd);
            if (vs_cpu) run_kd(&oracle, rl, rg, zs, zt, w, rows, V, cases[c].alias, fwd);
            else naive_kd(rl, rg, zs, zt, w, rows, V, fwd);
            if (gl) cmp("kd_chunk", "loss", gl, rl, rows);
            if (gg) cmp("kd_chunk", "dzs", gg, rg, n);
            hfree_all();
        }
    /* d(sum_r w_r loss_r)/dzs = dzs, both directions */
    for (int fwd = 0; fwd < 2; fwd++) {
        kd_fd st = {NULL, NULL, NULL, NULL, 3, 7, fwd};
        const size_t n = (size_t)st.rows * st.V;
        setcase("fd %s rows=%d V=%d", fwd ? "KL(t||s)" : "KL(s||t)", st.rows, st.V);
        st.zs = rnd(n, -3, 3), st.zt = rnd(n, -3, 3), st.w = rnd(st.rows, 0.1f, 2), st.loss = hf(st.rows);
        float *g = hf(n), *l = hf(st.rows);
        run_kd(&be, l, g, st.zs, st.zt, st.w, st.rows, st.V, 0, fwd);
        fd_compare("kd_chunk/fd", "dzs", st.zs, g, n, n, 1e-2f, kd_loss, &st);
        hfree_all();
    }
}

/* ---------------- AdamW ---------------- */

typedef struct {
    float lr, b1, b2, eps, wd, gs;
} adam_hp;

/* Two steps (t = 1 with g1, t = 2 with g2) on state kept in the backend;
 * p, m, v in: the start, out: after step 2; s1[3n]: p, m, v after step 1. */
static void run_adamw(const dms_backend *b, float *p, float *m, float *v, float *s1, const float *g1,
                      const float *g2, size_t n, const adam_hp *h) {
    float *dp = put_f(b, p, n), *dm = put_f(b, m, n), *dv = put_f(b, v, n);
    b->adamw(b->ctx, dp, put_f(b, g1, n), dm, dv, n, h->lr, h->b1, h->b2, h->eps, h->wd, 1, h->gs);
    get_f(b, s1, dp, n);
    get_f(b, s1 + n, dm, n);
    get_f(b, s1 + 2 * n, dv, n);
    b->adamw(b->ctx, dp, put_f(b, g2, n), dm, dv, n, h->lr, h->b1, h->b2, h->eps, h->wd, 2, h->gs);
    get_f(b, p, dp, n);
    get_f(b, m, dm, n);
    get_f(b, v, dv, n);
    run_end(b, "adamw");
}
static void naive_adamw(float *p, float *m, float *v, float *s1, const float *g1, const float *g2, size_t n,
                        const adam_hp *h) {
    for (size_t i = 0; i < n; i++) {
        double pi = p[i], mi = m[i], vi = v[i];
        for (int t = 1; t <= 2; t++) {
            const double g = (double)(t == 1 ? g1 : g2)[i] * h->gs;
            pi -= (double)h->lr * h->wd * pi;
            mi = h->b1 * mi + (1.0 - h->b1) * g;
            vi = h->b2 * vi + (1.0 - h->b2) * g * g;
            pi -= h->lr * (mi / (1.0 - pow(h->b1, t))) / (sqrt(vi / (1.0 - pow(h->b2, t))) + h->eps);
            if (t == 1) s1[i] = (float)pi, s1[n + i] = (float)mi, s1[2 * n + i] = (float)vi;
        }
        p[i] = (float)pi, m[i] = (float)mi, v[i] = (float)vi;
    }
}

static void test_adamw(void) {
    static const size_t ns[] = {1, 1000, 70001};
    const adam_hp h = {1e-2f, 0.9f, 0.999f, 1e-8f, 0.1f, 0.5f};
    for (size_t c = 0; c < sizeof ns / sizeof *ns; c++) {
        const size_t n = ns[c];
        setcase("n=%zu two steps", n);
        float *p = rnd(n, -1, 1), *g1 = rnd(n, -2, 2), *g2 = rnd(n, -2, 2);
        float *gp = dupf(p, n), *gm = hf(n), *gv = hf(n), *gs1 = hf(3 * n);
        float *rp = dupf(p, n), *rm = hf(n), *rv = hf(n), *rs1 = hf(3 * n);
        run_adamw(&be, gp, gm, gv, gs1, g1, g2, n, &h);
        if (vs_cpu) run_adamw(&oracle, rp, rm, rv, rs1, g1, g2, n, &h);
        else naive_adamw(rp, rm, rv, rs1, g1, g2, n, &h);
        cmp("adamw", "p after step 1", gs1, rs1, n);
        cmp("adamw", "m after step 1", gs1 + n, rs1 + n, n);
        cmp("adamw", "v after step 1", gs1 + 2 * n, rs1 + 2 * n, n);
        cmp("adamw", "p", gp, rp, n);
        cmp("adamw", "m", gm, rm, n);
        cmp("adamw", "v", gv, rv, n);
        hfree_all();
    }
}

/* ---------------- DMS decisions ---------------- */

static void run_noise(const dms_backend *b, float *out, int T, int KV, uint64_t seed, int64_t step, int layer,
                      int64_t tok0) {
    float *d = put_nan(b, (size_t)T * KV);
    b->dms_noise(b->ctx, d, T, KV, seed, step, layer, tok0);
    get_f(b, out, d, (size_t)T * KV);
    run_end(b, "dms_noise");
}

static void test_noise(void) {
    static const struct {
        int T, KV;
        uint64_t seed;
        int64_t step;
        int layer;
        int64_t tok0;
    } cases[] = {{1, 1, 0, 0, 0, 0}, {37, 3, 0xdeadbeefcafeull, 12345, 27, (int64_t)1 << 40}, {5, 8, 7, 1, 3, 999}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        const int T = cases[c].T, KV = cases[c].KV;
        setcase("T=%d KV=%d seed=%llu step=%lld layer=%d tok0=%lld", T, KV, (unsigned long long)cases[c].seed,
                (long long)cases[c].step, cases[c].layer, (long long)cases[c].tok0);
        float *got = hf((size_t)T * KV), *ref = hf((size_t)T * KV);
        run_noise(&be, got, T, KV, cases[c].seed, cases[c].step, cases[c].layer, cases[c].tok0);
        /* the definition, in both runs: the counter RNG of kernels/dms_rng.h */
        for (int t = 0; t < T; t++)
            for (int h = 0; h < KV; h++)
                ref[(size_t)t * KV + h] = dms_rng_logistic(dms_rng_key(cases[c].seed, (uint64_t)cases[c].step,
                                                                       (uint64_t)cases[c].layer, (uint64_t)h,
                                                                       (uint64_t)(cases[c].tok0 + t)));
        cmp("dms_noise", "noise", got, ref, (size_t)T * KV);
        hfree_all();
    }
}

typedef struct {
    int T, KV, per_layer;
    float scale, offset, tau;
    int sinks; /* keys at document positions below it are never evicted */
} decide_hp;

/* positions within each document, as the trainer passes them */
static int32_t *doc_pos(const int32_t *seg, int T) {
    int32_t *pos = hmem(sizeof(int32_t) * (size_t)T);
    for (int t = 0; t < T; t++) pos[t] = t > 0 && seg[t] == seg[t - 1] ? pos[t - 1] + 1 : 0;
    return pos;
}
static int void_decision(const int32_t *seg, const int32_t *pos, int sinks, int t) {
    return sinks > 0 && t > 0 && seg[t - 1] == seg[t] && pos[t - 1] < sinks;
}

/* noise, hard may be NULL */
static void run_decide(const dms_backend *b, float *u, float *lk, float *hard, const float *z, const float *noise,
                       const int32_t *seg, const decide_hp *h) {
    const size_t n = (size_t)h->T * h->KV;
    float *du = put_nan(b, n), *dl = put_nan(b, n), *dh = hard ? put_nan(b, n) : NULL;
    b->dms_decide(b->ctx, du, dl, dh, put_f(b, z, n), noise ? put_f(b, noise, n) : NULL, put_i(b, seg, h->T),
                  put_i(b, doc_pos(seg, h->T), h->T), h->sinks, h->T, h->KV, h->scale, h->offset, h->tau, h->per_layer);
    get_f(b, u, du, n);
    get_f(b, lk, dl, n);
    if (hard) get_f(b, hard, dh, n);
    run_end(b, "dms_decide");
}
static void naive_decide(float *u, float *lk, float *hard, const float *z, const float *noise, const int32_t *seg,
                         const decide_hp *h) {
    double *ud = hd((size_t)h->T * h->KV);
    const int32_t *pos = doc_pos(seg, h->T);
    for (int t = 0; t < h->T; t++)
        for (int k = 0; k < h->KV; k++) {
            const size_t src = (size_t)t * h->KV + (h->per_layer ? 0 : k), x = (size_t)t * h->KV + k;
            ud[x] = ((double)h->scale * z[src] - h->offset + (noise ? noise[src] : 0.0)) / h->tau;
            u[x] = (float)ud[x];
            if (hard) hard[x] = ud[x] > 0 && !void_decision(seg, pos, h->sinks, t) ? 1.0f : 0.0f;
        }
    for (int j = 0; j < h->T; j++)
        for (int k = 0; k < h->KV; k++)
            lk[(size_t)j * h->KV + k] = j + 1 < h->T && seg[j + 1] == seg[j] && !void_decision(seg, pos, h->sinks, j + 1)
                                            ? (float)log_sigm(-ud[(size_t)(j + 1) * h->KV + k])
                                            : 0.0f;
}

/* the straight-through gradient of KV head k: distinct per head, so that a
 * kernel reading the wrong head's entry fails */
static float head_dhard(float dhard, int k) { return dhard * (1.0f + 0.5f * (float)k); }

static void run_decide_bwd(const dms_backend *b, float *dz, const float *u, const float *dlk, float dhard,
                           const int32_t *seg, const decide_hp *h) {
    const size_t n = (size_t)h->T * h->KV;
    float *d = put_nan(b, n), *dh = hf((size_t)h->KV);
    for (int k = 0; k < h->KV; k++) dh[k] = head_dhard(dhard, k);
    b->dms_decide_bwd(b->ctx, d, put_f(b, u, n), put_f(b, dlk, n), put_f(b, dh, (size_t)h->KV), put_i(b, seg, h->T),
                      put_i(b, doc_pos(seg, h->T), h->T), h->sinks, h->T, h->KV, h->scale, h->tau, h->per_layer);
    get_f(b, dz, d, n);
    run_end(b, "dms_decide_bwd");
}
/* L = sum dlog_keep * log_keep + sum_k dhard_k * sum_t sigmoid(u[t, k]) (the
 * straight-through alpha); log_keep[t-1] = logsigmoid(-u[t]) inside a document */
static void naive_decide_bwd(float *dz, const float *u, const float *dlk, float dhard, const int32_t *seg,
                             const decide_hp *h) {
    double *g = hd((size_t)h->T * h->KV);
    const int32_t *pos = doc_pos(seg, h->T);
    for (int t = 0; t < h->T; t++)
        for (int k = 0; k < h->KV; k++) {
            if (void_decision(seg, pos, h->sinks, t)) continue;
            const double a = sigm(u[(size_t)t * h->KV + k]);
            double du = head_dhard(dhard, k) * a * (1.0 - a);
            if (t > 0 && seg[t - 1] == seg[t]) du -= a * dlk[(size_t)(t - 1) * h->KV + k];
            g[(size_t)t * h->KV + (h->per_layer ? 0 : k)] += du * h->scale / h->tau;
        }
    for (size_t x = 0; x < (size_t)h->T * h->KV; x++) dz[x] = (float)g[x];
}

typedef struct {
    decide_hp h;
    const int32_t *seg;
    float *z, *noise, *dlk, *u, *lk, dhard;
} decide_fd;
static double decide_loss(void *p) {
    decide_fd *s = p;
    run_decide(&be, s->u, s->lk, NULL, s->z, s->noise, s->seg, &s->h);
    double L = 0.0;
    for (int x = 0; x < s->h.T * s->h.KV; x++)
        L += (double)s->dlk[x] * s->lk[x] + head_dhard(s->dhard, x % s->h.KV) * sigm(s->u[x]);
    return L;
}

static void test_decide(void) {
    static const struct {
        decide_hp h;
        int noise, hard, lens[4], nlens;
        float dhard;
    } cases[] = {
        {{1, 1, 0, 2.5f, 1.0f, 0.5f, 0}, 1, 1, {0}, 0, 0.7f},
        {{37, 3, 0, 2.5f, 1.0f, 0.5f, 0}, 1, 1, {5, 1, 20, 11}, 4, 0.7f},
        {{37, 3, 0, 2.5f, 1.0f, 0.5f, 3}, 1, 1, {5, 1, 20, 11}, 4, 0.7f},
        {{37, 4, 1, 3.0f, -0.5f, 0.25f, 0}, 1, 1, {5, 1, 20, 11}, 4, 0.3f},
        {{37, 4, 1, 3.0f, -0.5f, 0.25f, 1}, 1, 1, {5, 1, 20, 11}, 4, 0.3f},
        {{16, 2, 0, 1.0f, 0.0f, 1.0f, 0}, 0, 0, {16}, 1, 0.0f},
        {{16, 2, 1, 1.0f, 2.0f, 0.1f, 4}, 0, 1, {3, 13}, 2, 1.0f},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        const decide_hp *h = &cases[c].h;
        const size_t n = (size_t)h->T * h->KV;
        setcase("T=%d KV=%d per_layer=%d sinks=%d noise=%s hard=%s docs=%d", h->T, h->KV, h->per_layer, h->sinks,
                cases[c].noise ? "given" : "NULL", cases[c].hard ? "given" : "NULL", cases[c].nlens);
        const int32_t *seg = make_seg(h->T, cases[c].lens, cases[c].nlens);
        float *z = rnd(n, -2, 2), *noise = cases[c].noise ? rnd(n, -3, 3) : NULL;
        float *gu = hf(n), *gl = hf(n), *gh = cases[c].hard ? hf(n) : NULL;
        float *ru = hf(n), *rl = hf(n), *rh = cases[c].hard ? hf(n) : NULL;
        run_decide(&be, gu, gl, gh, z, noise, seg, h);
        if (vs_cpu) run_decide(&oracle, ru, rl, rh, z, noise, seg, h);
        else naive_decide(ru, rl, rh, z, noise, seg, h);
        cmp("dms_decide", "u", gu, ru, n);
        cmp("dms_decide", "log_keep", gl, rl, n);
        if (gh) cmp("dms_decide", "hard", gh, rh, n);
        setcase("T=%d KV=%d per_layer=%d dhard=%g docs=%d", h->T, h->KV, h->per_layer, cases[c].dhard, cases[c].nlens);
        float *u = rnd(n, -6, 6), *dlk = rnd(n, -1, 1), *gz = hf(n), *rz = hf(n);
        run_decide_bwd(&be, gz, u, dlk, cases[c].dhard, seg, h);
        if (vs_cpu) run_decide_bwd(&oracle, rz, u, dlk, cases[c].dhard, seg, h);
        else naive_decide_bwd(rz, u, dlk, cases[c].dhard, seg, h);
        cmp("dms_decide_bwd", "dz_raw", gz, rz, n);
        hfree_all();
    }
    /* finite differences through the backend's dms_decide */
    for (int pl = 0; pl < 2; pl++) {
        static const int lens[] = {5, 7};
        decide_fd st = {{12, 3, pl, 2.5f, 1.0f, 0.5f, 0}, NULL, NULL, NULL, NULL, NULL, NULL, 0.7f};
        const size_t n = (size_t)st.h.T * st.h.KV;
        setcase("fd T=%d KV=%d per_layer=%d docs 5+7", st.h.T, st.h.KV, pl);
        st.seg = make_seg(st.h.T, lens, 2);
        st.z = rnd(n, -2, 2), st.noise = rnd(n, -3, 3), st.dlk = rnd(n, -1, 1), st.u = hf(n), st.lk = hf(n);
        float *dz = hf(n);
        run_decide(&be, st.u, st.lk, NULL, st.z, st.noise, st.seg, &st.h);
        run_decide_bwd(&be, dz, st.u, st.dlk, st.dhard, st.seg, &st.h);
        fd_compare("dms_decide_bwd/fd", "dz_raw", st.z, dz, n, n, 1e-2f, decide_loss, &st);
        hfree_all();
    }
}

/* device values in and out: dhard[n] (float), comp_acc, count (double) */
static void run_comp_grad(const dms_backend *b, float *dhard, int n, double *acc, double *count, double denom,
                          float target, float weight, float coef) {
    float *dh = put_f(b, dhard, (size_t)n);
    double *da = put_d(b, acc, 1), *dc = put_d(b, count, 1);
    b->dms_comp_grad(b->ctx, dh, n, da, dc, denom, target, weight, coef);
    get_f(b, dhard, dh, (size_t)n);
    get_d(b, acc, da, 1);
    get_d(b, count, dc, 1);
    run_end(b, "dms_comp_grad");
}

static void test_comp_grad(void) {
    static const struct {
        double count, denom;
        float target;
        const char *what;
    } cases[] = {{3, 10, 0.5f, "comp > 0"}, {8, 10, 0.5f, "comp == 0 (frac > target)"},
                 {5, 10, 0.5f, "comp == 0 (frac == target)"}, {2, 7, 0.9f, "comp > 0, denom 7"}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        setcase("%s: count=%g denom=%g target=%g", cases[c].what, cases[c].count, cases[c].denom, cases[c].target);
        const float weight = 0.25f, coef = 2.0f;
        enum { N = 5 }; /* every one of the n_dhard entries is written */
        float gh[N + 1], rh[N + 1];
        for (int i = 0; i <= N; i++) gh[i] = rh[i] = 7.0f; /* entry N: must stay untouched */
        double ga = 1.5, ra = 1.5, gc = cases[c].count, rc = cases[c].count;
        run_comp_grad(&be, gh, N, &ga, &gc, cases[c].denom, cases[c].target, weight, coef);
        if (vs_cpu) {
            run_comp_grad(&oracle, rh, N, &ra, &rc, cases[c].denom, cases[c].target, weight, coef);
        } else {
            const double frac = cases[c].count / cases[c].denom;
            const double comp = frac < cases[c].target ? cases[c].target - frac : 0.0;
            ra += weight * comp, rc = 0.0;
            for (int i = 0; i < N; i++) rh[i] = comp > 0 ? coef : 0.0f;
        }
        cmp("dms_comp_grad", "dhard", gh, rh, N);
        CHECK_MSG(gh[N] == 7.0f, "dms_comp_grad [%s]: wrote past n_dhard", case_name);
        cmp1("dms_comp_grad", "comp_acc", ga, ra);
        cmp1("dms_comp_grad", "count", gc, rc);
        CHECK_MSG(gc == 0.0, "dms_comp_grad [%s]: count not reset: %g", case_name, gc);
    }
}

/* ---------------- attention guidance loss ---------------- */

typedef struct {
    int T, KV, per_layer;
    float scale, offset, coef;
    float *z, *y, *mask;
} guide_in;
/* dz_raw (accumulated into) and *loss (added to) */
static void run_guide(const dms_backend *b, float *dz, double *loss, const guide_in *g) {
    const size_t n = (size_t)g->T * g->KV;
    float *ddz = put_f(b, dz, n);
    double *dl = put_d(b, loss, 1);
    b->dms_guide_grad(b->ctx, ddz, dl, put_f(b, g->z, n), put_f(b, g->y, n), put_f(b, g->mask, n), g->T, g->KV,
                      g->scale, g->offset, g->coef, g->per_layer);
    get_f(b, dz, ddz, n);
    get_d(b, loss, dl, 1);
    run_end(b, "dms_guide_grad");
}
/* loss += coef sum_masked softplus(x) - y x, x = scale z - offset (per_layer:
 * column 0's z for every head); dz += coef (sigmoid(x) - y) scale */
static void naive_guide(float *dz, double *loss, const guide_in *g) {
    for (int t = 0; t < g->T; t++)
        for (int h = 0; h < g->KV; h++) {
            const size_t i = (size_t)t * g->KV + h, src = (size_t)t * g->KV + (g->per_layer ? 0 : h);
            if (g->mask[i] == 0.0f) continue;
            const double x = (double)g->scale * g->z[src] - g->offset;
            *loss += g->coef * ((x > 0 ? x + log1p(exp(-x)) : log1p(exp(x))) - g->y[i] * x);
            dz[src] += (float)(g->coef * (sigm(x) - g->y[i]) * g->scale);
        }
}
typedef struct {
    guide_in g;
    float *dz;
} guide_fd;
static double guide_loss(void *p) {
    guide_fd *st = p;
    double loss = 0.0;
    memset(st->dz, 0, sizeof(float) * (size_t)st->g.T * st->g.KV);
    run_guide(&be, st->dz, &loss, &st->g);
    return loss;
}

static void test_guide(void) {
    for (int pl = 0; pl < 2; pl++) {
        guide_in g = {37, 3, pl, 10.0f, 0.5f, 0.03f, NULL, NULL, NULL};
        const size_t n = (size_t)g.T * g.KV;
        setcase("T=%d KV=%d per_layer=%d", g.T, g.KV, pl);
        g.z = rnd(n, -1, 1), g.y = hf(n), g.mask = hf(n);
        for (size_t i = 0; i < n; i++) g.y[i] = (float)rnd_int(2), g.mask[i] = i % 5 ? 1.0f : 0.0f;
        float *gz = rnd(n, -1, 1), *rz = dupf(gz, n);
        double gl = 1.5, rl = 1.5;
        run_guide(&be, gz, &gl, &g);
        if (vs_cpu) run_guide(&oracle, rz, &rl, &g);
        else naive_guide(rz, &rl, &g);
        cmp("dms_guide_grad", "dz_raw", gz, rz, n);
        cmp1("dms_guide_grad", "loss", gl, rl);
        CHECK_MSG(fabs(gl - 1.5) > 1e-3, "dms_guide_grad [%s]: no loss added", case_name);
        /* the gradient is the loss's: central differences through the backend */
        guide_fd st = {g, hf(n)};
        float *dz = hf(n);
        double l0 = 0.0;
        run_guide(&be, dz, &l0, &g);
        fd_compare("dms_guide_grad/fd", "dz_raw", g.z, dz, n, n, 1e-3f, guide_loss, &st);
        hfree_all();
    }
}

/* ---------------- main ---------------- */

int main(int argc, char **argv) {
    if (argc != 2 || (strcmp(argv[1], "cpu") && strcmp(argv[1], "cuda"))) {
        fprintf(stderr, "usage: test_ops cpu|cuda\n"
                        "  cpu:  the CPU backend against naive loops\n"
                        "  cuda: the CUDA backend against the CPU backend (needs a GPU)\n");
        return 2;
    }
    dms_err err = {{0}};
    setcase("open");
    const int cuda = !strcmp(argv[1], "cuda");
    if (cuda) { /* a bad attention precision is refused at open, naming the variable */
        setenv("DMS_CUDA_ATTENTION", "fp16", 1);
        const int rc = dms_backend_open(&be, "cuda", 0, &err);
        CHECK_MSG(rc != 0 && strstr(err.msg, "DMS_CUDA_ATTENTION=fp16"), "DMS_CUDA_ATTENTION=fp16: rc %d, '%s'", rc,
                  err.msg);
        if (rc == 0) dms_backend_close(&be);
        setenv("DMS_CUDA_ATTENTION", "fp32", 1); /* `be`: the fp32 kernels, held to fp32 tolerances */
    }
    const int opened = dms_backend_open(&be, argv[1], 0, &err);
    if (cuda) unsetenv("DMS_CUDA_ATTENTION");
    if (opened == 0 && cuda && dms_backend_open(&be_tc, "cuda", 0, &err) != 0) {
        CHECK_MSG(0, "the second CUDA backend did not open: %s", err.msg);
        dms_backend_close(&be);
        return dms_check_finish();
    }
    if (opened == 0 && !cuda) be_tc = be;
    if (opened != 0) {
        fprintf(stderr, "test_ops: cannot open backend '%s': %s\n", argv[1], err.msg);
        CHECK_MSG(0, "backend '%s' must open for this suite%s", argv[1],
                  strcmp(argv[1], "cuda") ? ""
                                          : " (test_gpu_ops, label gpu, needs a GPU: run it on a machine with one, "
                                            "or exclude the label: ctest -LE gpu)");
        return dms_check_finish();
    }
    vs_cpu = strcmp(be.name, "cpu") != 0;
    if (vs_cpu && dms_backend_open(&oracle, "cpu", 0, &err) != 0) {
        CHECK_MSG(0, "the CPU oracle did not open: %s", err.msg);
        dms_backend_close(&be);
        return dms_check_finish();
    }
    printf("test_ops: backend '%s' against %s\n", be.name, vs_cpu ? "the CPU backend" : "naive loops");

    test_require();
    test_memory();
    test_elementwise();
    test_matmul();
    test_matmul_multi();
    test_gemm_plans();
    test_rmsnorm();
    test_rope();
    test_attention();
    test_attention_paged();
    test_swiglu();
    test_embedding();
    test_neuron();
    test_attention_dms();
    test_attention_dms_tc();
    test_kd();
    test_adamw();
    test_noise();
    test_decide();
    test_comp_grad();
    test_guide();
    test_status();

    printf("%-22s %9s %11s %6s\n", "op", "tol", "max error", "checks");
    for (size_t r = 0; r < N_TOL; r++)
        printf("%-22s %9.1e %11.3e %6d\n", TOL[r].op, vs_cpu ? TOL[r].cuda : TOL[r].cpu, TOL[r].worst, TOL[r].checks);
    dms_backend_close(&be);
    if (vs_cpu) dms_backend_close(&oracle);
    if (cuda) dms_backend_close(&be_tc);
    return dms_check_finish();
}
