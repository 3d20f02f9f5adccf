/* check.h - the tiny assertion harness shared by the C test suites. Each
 * suite is one executable run by ctest; it prints one line per failed check
 * and ends with "N passed, M failed", exiting non-zero on any failure. */
#ifndef DMS_CHECK_H
#define DMS_CHECK_H

#include <math.h>
#include <stdio.h>
#include <string.h>

typedef struct { int passed, failed; } dms_check_state;
static dms_check_state dms_check_st; /* per test executable */

#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (cond) {                                                                   \
            dms_check_st.passed++;                                                    \
        } else {                                                                      \
            dms_check_st.failed++;                                                    \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);  \
        }                                                                             \
    } while (0)

#define CHECK_MSG(cond, ...)                                                          \
    do {                                                                              \
        if (cond) {                                                                   \
            dms_check_st.passed++;                                                    \
        } else {                                                                      \
            dms_check_st.failed++;                                                    \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);  \
            fprintf(stderr, __VA_ARGS__);                                             \
            fputc('\n', stderr);                                                      \
        }                                                                             \
    } while (0)

/* |a-b| <= atol + rtol*|b| */
#define CHECK_CLOSE(a, b, rtol, atol)                                                 \
    CHECK_MSG(fabs((double)(a) - (double)(b)) <= (atol) + (rtol)*fabs((double)(b)),   \
              "%.9g vs %.9g", (double)(a), (double)(b))

#define CHECK_STR(a, b) CHECK_MSG(strcmp((a), (b)) == 0, "\"%s\" vs \"%s\"", (a), (b))

/* max |a - b| / max |b|: the relative error of a whole tensor */
static inline double dms_rel_err(const float *a, const float *b, size_t n) {
    double mx = 0, sc = 0;
    for (size_t i = 0; i < n; i++) {
        mx = fmax(mx, fabs((double)a[i] - b[i]));
        sc = fmax(sc, fabs((double)b[i]));
    }
    return mx / (sc > 0 ? sc : 1);
}

static inline int dms_check_finish(void) {
    printf("%d passed, %d failed\n", dms_check_st.passed, dms_check_st.failed);
    return dms_check_st.failed ? 1 : 0;
}

#endif
