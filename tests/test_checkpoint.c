/* test_checkpoint.c - training checkpoints (train/checkpoint.h): a
 * bit-exact round trip (NaN payloads, -0, denormals included), keep_last
 * pruning, newest-checkpoint discovery that ignores .tmp leftovers, entry
 * errors, and failure safety: a save that hits a full disk (RLIMIT_FSIZE in
 * a forked child, so writes fail with EFBIG) returns an error, leaves no
 * file behind and the previous checkpoint loads bit-exactly. A truncated
 * checkpoint gives a one-line error naming it. Checksums: one flipped bit
 * in a tensor, an integer or a string is refused naming the dataset; a file
 * written before checksums (attributes removed here) still loads,
 * unverified; dms_ckpt_latest_before finds the fallback of a resume. */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <hdf5.h>

#include "tests/check.h"
#include "train/checkpoint.h"

static char dir[64];

static int one_line(const char *s) { return s[0] && !strchr(s, '\n'); }

static int file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

static float from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

#define NA 15
#define NB 7
#define NBIG (1 << 20)

static float A[NA], B[NB];
static float *BIG;
static const char *CONFIG = "{\n  \"lr\": 3e-05,\n  \"steps\": 1000\n}";

static void fill(int64_t step) {
    const uint32_t special[] = {0x7fc00001u, 0xffc12345u, 0x80000000u, 0x00000001u, 0x007fffffu, 0x7f800000u,
                                0xff800000u, 0x7f800001u /* signalling NaN */};
    for (int i = 0; i < NA; i++) A[i] = i < 8 ? from_bits(special[i]) : (float)(i * 0.1 + step);
    for (int i = 0; i < NB; i++) B[i] = (float)(1.0 / (i + 3) + step);
}

static dms_ckpt *make_state(int64_t step, int big) {
    fill(step);
    dms_ckpt *ck = dms_ckpt_new();
    const int64_t sa[2] = {3, 5}, sb[1] = {NB}, sbig[1] = {NBIG};
    dms_ckpt_add_tensor(ck, "params/model.layers.0.self_attn.dms_proj_alpha.weight", A, 2, sa);
    dms_ckpt_add_tensor(ck, "adam_m/model.layers.0.self_attn.dms_proj_alpha_norm.weight", B, 1, sb);
    if (big) dms_ckpt_add_tensor(ck, "adam_v/big", BIG, 1, sbig);
    dms_ckpt_add_tensor(ck, "scalar_tensor", B, 0, NULL);
    dms_ckpt_add_i64(ck, "step", step);
    dms_ckpt_add_i64(ck, "rng/counter", INT64_MIN + 7);
    dms_ckpt_add_i64(ck, "data/cursor", 123456789012345LL);
    dms_ckpt_add_str(ck, "config", CONFIG);
    dms_ckpt_add_str(ck, "git_revision", "abc1234-dirty");
    dms_ckpt_add_str(ck, "empty", "");
    return ck;
}

/* Loads path and checks every entry against make_state(step). */
static void check_file(const char *path, int64_t step, int big) {
    dms_err err = {0};
    dms_ckpt *ck = dms_ckpt_load(path, &err);
    CHECK_MSG(ck != NULL, "%s", err.msg);
    if (!ck) return;
    fill(step);
    float a[NA], b[NB], one;
    CHECK(dms_ckpt_step(ck) == step);
    CHECK_MSG(dms_ckpt_read_tensor(ck, "params/model.layers.0.self_attn.dms_proj_alpha.weight", a, NA, &err) == 0,
              "%s", err.msg);
    CHECK(memcmp(a, A, sizeof a) == 0);
    CHECK(dms_ckpt_read_tensor(ck, "adam_m/model.layers.0.self_attn.dms_proj_alpha_norm.weight", b, NB, &err) == 0);
    CHECK(memcmp(b, B, sizeof b) == 0);
    CHECK(dms_ckpt_read_tensor(ck, "scalar_tensor", &one, 1, &err) == 0 && memcmp(&one, B, 4) == 0);
    if (big) {
        float *x = malloc(sizeof(float) * NBIG);
        CHECK(dms_ckpt_read_tensor(ck, "adam_v/big", x, NBIG, &err) == 0);
        CHECK(memcmp(x, BIG, sizeof(float) * NBIG) == 0);
        free(x);
    }
    int nd = 0;
    int64_t shape[DMS_CKPT_MAX_DIMS];
    CHECK(dms_ckpt_tensor_shape(ck, "params/model.layers.0.self_attn.dms_proj_alpha.weight", &nd, shape, &err) == 0);
    CHECK(nd == 2 && shape[0] == 3 && shape[1] == 5);
    int64_t v = 0;
    CHECK(dms_ckpt_read_i64(ck, "step", &v, &err) == 0 && v == step);
    CHECK(dms_ckpt_read_i64(ck, "rng/counter", &v, &err) == 0 && v == INT64_MIN + 7);
    CHECK(dms_ckpt_read_i64(ck, "data/cursor", &v, &err) == 0 && v == 123456789012345LL);
    char *s = dms_ckpt_read_str(ck, "config", &err);
    CHECK(s && !strcmp(s, CONFIG));
    free(s);
    s = dms_ckpt_read_str(ck, "git_revision", &err);
    CHECK(s && !strcmp(s, "abc1234-dirty"));
    free(s);
    s = dms_ckpt_read_str(ck, "empty", &err);
    CHECK(s && !strcmp(s, ""));
    free(s);
    CHECK(dms_ckpt_has(ck, "rng/counter") && dms_ckpt_has(ck, "params") && !dms_ckpt_has(ck, "rng/nope") &&
          !dms_ckpt_has(ck, "nope/x"));

    /* wrong size / missing / wrong type: errors naming file and entry */
    CHECK(dms_ckpt_read_tensor(ck, "params/model.layers.0.self_attn.dms_proj_alpha.weight", a, NA - 1, &err) == -1);
    CHECK_MSG(strstr(err.msg, path) && strstr(err.msg, "dms_proj_alpha.weight' has 15 elements [3x5], expected 14") &&
                  one_line(err.msg),
              "%s", err.msg);
    CHECK(dms_ckpt_read_tensor(ck, "params/missing", a, NA, &err) == -1);
    CHECK_MSG(strstr(err.msg, path) && strstr(err.msg, "no tensor 'params/missing'"), "%s", err.msg);
    CHECK(dms_ckpt_read_tensor(ck, "step", a, 1, &err) == -1 && strstr(err.msg, "not a float32 tensor"));
    CHECK(dms_ckpt_read_i64(ck, "config", &v, &err) == -1 && strstr(err.msg, "not an integer"));
    CHECK(dms_ckpt_read_str(ck, "step", &err) == NULL && strstr(err.msg, "not a string"));
    dms_ckpt_free(ck);
}

static void ckpt_path(char *out, size_t cap, int64_t step) { dms_ckpt_path(out, cap, dir, step); }

static int copy_file(const char *src, const char *dst) {
    FILE *a = fopen(src, "rb"), *b = fopen(dst, "wb");
    int rc = a && b ? 0 : -1;
    for (int c; rc == 0 && (c = fgetc(a)) != EOF;) rc = fputc(c, b) == EOF ? -1 : 0;
    if (a) fclose(a);
    if (b && fclose(b) != 0) rc = -1;
    return rc;
}

/* The file offset of a dataset's stored bytes (contiguous layout). */
static long data_offset(const char *path, const char *name) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t d = f >= 0 ? H5Dopen2(f, name, H5P_DEFAULT) : -1;
    haddr_t off = d >= 0 ? H5Dget_offset(d) : HADDR_UNDEF;
    if (d >= 0) H5Dclose(d);
    if (f >= 0) H5Fclose(f);
    return off == HADDR_UNDEF ? -1 : (long)off;
}

/* A copy of src with one bit flipped `byte` bytes into dataset `name`. */
static int flip_copy(const char *src, const char *dst, const char *name, long byte) {
    long off = data_offset(src, name);
    if (off < 0 || copy_file(src, dst) != 0) return -1;
    FILE *f = fopen(dst, "r+b");
    if (!f || fseek(f, off + byte, SEEK_SET) != 0) return -1;
    int c = fgetc(f);
    int rc = c != EOF && fseek(f, off + byte, SEEK_SET) == 0 && fputc(c ^ 0x10, f) != EOF ? 0 : -1;
    return fclose(f) == 0 ? rc : -1;
}

static herr_t drop_crc(hid_t g, const char *name, const H5L_info_t *info, void *op) {
    (void)info, (void)op;
    hid_t o = H5Oopen(g, name, H5P_DEFAULT);
    if (o >= 0 && H5Iget_type(o) == H5I_DATASET && H5Aexists(o, DMS_CKPT_CRC_ATTR) > 0) H5Adelete(o, DMS_CKPT_CRC_ATTR);
    if (o >= 0) H5Oclose(o);
    return 0;
}

/* The checksum of every dataset: flips are refused, old files still load. */
static void test_checksums(const char *good, int64_t step) {
    dms_err err = {0};
    dms_ckpt *ck = dms_ckpt_load(good, &err);
    CHECK_MSG(ck && dms_ckpt_verified(ck), "%s", err.msg);
    dms_ckpt_free(ck);
    char bad[160];
    snprintf(bad, sizeof bad, "%s/flipped.h5", dir);
    const struct {
        const char *name;
        long byte;
    } flips[] = {{"params/model.layers.0.self_attn.dms_proj_alpha.weight", 37},
                 {"rng/counter", 3},
                 {"config", 5},
                 {"git_revision", 0}};
    for (size_t i = 0; i < sizeof flips / sizeof flips[0]; i++) {
        CHECK_MSG(flip_copy(good, bad, flips[i].name, flips[i].byte) == 0, "cannot flip a bit of '%s'", flips[i].name);
        ck = dms_ckpt_load(bad, &err);
        char want[200];
        snprintf(want, sizeof want, "checksum mismatch in '%s'", flips[i].name);
        CHECK_MSG(ck == NULL && strstr(err.msg, bad) && strstr(err.msg, want) && one_line(err.msg), "%s: %s",
                  flips[i].name, ck ? "loaded" : err.msg);
        if (i == 0) printf("bit flip: %s\n", err.msg);
        dms_ckpt_free(ck);
    }
    /* a file written before checksums existed: no root "checksum", no
     * "crc32" on the datasets; it loads (unverified) and reads back */
    char old[160];
    snprintf(old, sizeof old, "%s/old.h5", dir);
    CHECK(copy_file(good, old) == 0);
    hid_t f = H5Fopen(old, H5F_ACC_RDWR, H5P_DEFAULT);
    CHECK(f >= 0 && H5Adelete(f, "checksum") >= 0);
    CHECK(H5Lvisit(f, H5_INDEX_NAME, H5_ITER_INC, drop_crc, NULL) >= 0);
    H5Fclose(f);
    ck = dms_ckpt_load(old, &err);
    CHECK_MSG(ck && !dms_ckpt_verified(ck), "old checkpoint: %s", ck ? "reported as verified" : err.msg);
    dms_ckpt_free(ck);
    check_file(old, step, 0);
    /* a file with checksums that lost one of them is corrupt */
    CHECK(copy_file(good, old) == 0);
    f = H5Fopen(old, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t d = f >= 0 ? H5Dopen2(f, "data/cursor", H5P_DEFAULT) : -1;
    CHECK(d >= 0 && H5Adelete(d, DMS_CKPT_CRC_ATTR) >= 0);
    if (d >= 0) H5Dclose(d);
    if (f >= 0) H5Fclose(f);
    ck = dms_ckpt_load(old, &err);
    CHECK_MSG(ck == NULL && strstr(err.msg, "'data/cursor' has no checksum"), "%s", ck ? "loaded" : err.msg);
    dms_ckpt_free(ck);
    unlink(old);
    unlink(bad);
}

static int count_files(void) {
    char cmd[160];
    snprintf(cmd, sizeof cmd, "ls '%s' | wc -l", dir);
    FILE *p = popen(cmd, "r");
    int n = -1;
    if (p) {
        if (fscanf(p, "%d", &n) != 1) n = -1;
        pclose(p);
    }
    return n;
}

/* Checkpoints that are well-formed HDF5 but not what dms_ckpt_save writes
 * (found by fuzz/checkpoint.c): root attributes that are arrays, read into
 * one value, were written past it (the stack); a tensor declaring more data
 * than the file holds (chunked, never written) is refused before anything
 * sizes a buffer or a read by it (docs/fuzzing.md, "Limits"). */
static void hostile_file(const char *path, hsize_t n_format, hsize_t n_step, hsize_t tensor_elems) {
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, strlen(DMS_CKPT_FORMAT) + 1);
    char fmt[100][16];
    for (int i = 0; i < 100; i++) snprintf(fmt[i], sizeof fmt[i], "%s", DMS_CKPT_FORMAT);
    hid_t sp = H5Screate_simple(1, &n_format, NULL);
    hid_t a = H5Acreate2(f, "format", t, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, t, fmt);
    H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
    int64_t v[64];
    for (int i = 0; i < 64; i++) v[i] = 1;
    hid_t one = H5Screate(H5S_SCALAR);
    a = H5Acreate2(f, "format_version", H5T_STD_I64LE, one, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_INT64, v);
    H5Aclose(a);
    sp = H5Screate_simple(1, &n_step, NULL);
    a = H5Acreate2(f, "step", H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_INT64, v);
    H5Aclose(a);
    H5Sclose(sp);
    H5Sclose(one);
    sp = H5Screate_simple(1, &tensor_elems, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    hsize_t chunk = tensor_elems < 1024 ? tensor_elems : 1024;
    H5Pset_chunk(dcpl, 1, &chunk);
    hid_t d = H5Dcreate2(f, "t", H5T_IEEE_F32LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5Dclose(d);
    H5Pclose(dcpl);
    H5Sclose(sp);
    H5Fclose(f);
}

static void test_hostile(void) {
    char p[140];
    snprintf(p, sizeof p, "%s/hostile.h5", dir);
    dms_err err = {0};
    hostile_file(p, 1, 1, 16); /* the baseline loads */
    dms_ckpt *ck = dms_ckpt_load(p, &err);
    CHECK_MSG(ck != NULL, "%s", err.msg);
    float buf[16];
    CHECK_MSG(ck && dms_ckpt_read_tensor(ck, "t", buf, 16, &err) == 0, "%s", err.msg);
    dms_ckpt_free(ck);
    hostile_file(p, 100, 1, 16);
    ck = dms_ckpt_load(p, &err);
    CHECK_MSG(ck == NULL && strstr(err.msg, "not a dms checkpoint") && one_line(err.msg), "format array: %s", err.msg);
    dms_ckpt_free(ck);
    hostile_file(p, 1, 64, 16);
    ck = dms_ckpt_load(p, &err);
    CHECK_MSG(ck == NULL && strstr(err.msg, "has no step attribute"), "step array: %s", err.msg);
    dms_ckpt_free(ck);
    /* a valid checkpoint plus a dataset of variable-length strings under a
     * checksum: verifying it read every string into memory HDF5 allocated
     * and never freed (fuzzing: a 20-byte leak per element) and summed
     * pointers; such data is refused, dms never writes it */
    char pv[160];
    snprintf(pv, sizeof pv, "%s/vlen", dir);
    mkdir(pv, 0755);
    ck = make_state(5, 1);
    CHECK_MSG(dms_ckpt_save(pv, 5, ck, 2, &err) == 0, "%s", err.msg);
    dms_ckpt_free(ck);
    snprintf(pv + strlen(pv), sizeof pv - strlen(pv), "/ckpt-00000005.h5");
    hid_t f = H5Fopen(pv, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t vt = H5Tcopy(H5T_C_S1);
    H5Tset_size(vt, H5T_VARIABLE);
    const hsize_t n3 = 3;
    hid_t vs = H5Screate_simple(1, &n3, NULL), one = H5Screate(H5S_SCALAR);
    const char *strs[3] = {"a", "bb", "ccc"};
    hid_t d = H5Dcreate2(f, "extra", vt, vs, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(d, vt, H5S_ALL, H5S_ALL, H5P_DEFAULT, strs);
    const uint32_t crc = 0;
    hid_t a = H5Acreate2(d, DMS_CKPT_CRC_ATTR, H5T_STD_U32LE, one, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_UINT32, &crc);
    H5Aclose(a);
    H5Dclose(d);
    H5Sclose(vs);
    H5Sclose(one);
    H5Tclose(vt);
    H5Fclose(f);
    ck = dms_ckpt_load(pv, &err);
    CHECK_MSG(ck == NULL && strstr(err.msg, pv) && strstr(err.msg, "dataset 'extra' holds variable-length data") &&
                  one_line(err.msg), "vlen: %s", err.msg);
    dms_ckpt_free(ck);

    hostile_file(p, 1, 1, (hsize_t)1 << 40);
    ck = dms_ckpt_load(p, &err);
    CHECK_MSG(ck != NULL, "%s", err.msg);
    int nd = 0;
    int64_t shape[DMS_CKPT_MAX_DIMS];
    CHECK_MSG(ck && dms_ckpt_tensor_shape(ck, "t", &nd, shape, &err) == -1 && strstr(err.msg, p) &&
                  strstr(err.msg, "tensor 't' declares more data than the whole file holds"),
              "2^40 floats: %s", err.msg);
    dms_ckpt_free(ck);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/dms-ckpt-XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    BIG = malloc(sizeof(float) * NBIG);
    for (int i = 0; i < NBIG; i++) BIG[i] = (float)i * 1e-3f - 7.0f;
    dms_err err = {0};
    char p10[128], p20[128], p30[128], p40[128], tmp[160], latest[256];
    ckpt_path(p10, sizeof p10, 10);
    ckpt_path(p20, sizeof p20, 20);
    ckpt_path(p30, sizeof p30, 30);
    ckpt_path(p40, sizeof p40, 40);

    /* nothing yet; a missing folder is "none", not an error */
    CHECK(dms_ckpt_latest(dir, latest, sizeof latest, &err) == 0);
    CHECK(dms_ckpt_latest("/tmp/dms-no-such-dir-xyz", latest, sizeof latest, &err) == 0);

    /* round trip */
    dms_ckpt *ck = make_state(10, 1);
    CHECK_MSG(dms_ckpt_save(dir, 10, ck, 2, &err) == 0, "%s", err.msg);
    dms_ckpt_free(ck);
    snprintf(tmp, sizeof tmp, "%s.tmp", p10);
    CHECK(file_exists(p10) && !file_exists(tmp));
    check_file(p10, 10, 1);

    /* keep_last = 2: after 20 and 30, 10 is gone */
    ck = make_state(20, 1);
    CHECK(dms_ckpt_save(dir, 20, ck, 2, &err) == 0);
    dms_ckpt_free(ck);
    ck = make_state(30, 1);
    CHECK(dms_ckpt_save(dir, 30, ck, 2, &err) == 0);
    dms_ckpt_free(ck);
    CHECK(!file_exists(p10) && file_exists(p20) && file_exists(p30));
    check_file(p20, 20, 1);

    /* latest ignores (and removes) a .tmp with a higher step */
    snprintf(tmp, sizeof tmp, "%s/ckpt-00000099.h5.tmp", dir);
    FILE *f = fopen(tmp, "w");
    fputs("half a checkpoint", f);
    fclose(f);
    CHECK(dms_ckpt_latest(dir, latest, sizeof latest, &err) == 1);
    CHECK_STR(latest, p30);
    CHECK(!file_exists(tmp));

    /* problems met while adding are reported by save */
    ck = dms_ckpt_new();
    dms_ckpt_add_i64(ck, "a/b", 1);
    CHECK(dms_ckpt_add_i64(ck, "a/b", 2) == -1);
    CHECK(dms_ckpt_save(dir, 31, ck, 0, &err) == -1 && strstr(err.msg, "'a/b' added twice") && one_line(err.msg));
    dms_ckpt_free(ck);
    ck = dms_ckpt_new();
    dms_ckpt_add_i64(ck, "a/b", 1);
    CHECK(dms_ckpt_add_str(ck, "a", "x") == -1);
    CHECK(dms_ckpt_save(dir, 31, ck, 0, &err) == -1 && strstr(err.msg, "clashes with a group"));
    dms_ckpt_free(ck);
    ck = dms_ckpt_new();
    CHECK(dms_ckpt_add_i64(ck, "/abs", 1) == -1 && dms_ckpt_add_i64(ck, "x/../y", 1) == -1);
    dms_ckpt_free(ck);
    ckpt_path(tmp, sizeof tmp, 31);
    CHECK(!file_exists(tmp));

    /* a full disk: the child's file size limit makes the write fail */
    int pipefd[2];
    CHECK(pipe(pipefd) == 0);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        close(pipefd[0]);
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {64 * 1024, 64 * 1024};
        setrlimit(RLIMIT_FSIZE, &rl);
        dms_ckpt *c2 = make_state(40, 1);
        dms_err e2 = {0};
        int rc = dms_ckpt_save(dir, 40, c2, 1, &e2);
        if (write(pipefd[1], e2.msg, strlen(e2.msg)) < 0) rc = 0;
        _exit(rc == -1 ? 0 : 1);
    }
    close(pipefd[1]);
    char msg[1100] = {0};
    size_t got = 0;
    ssize_t r;
    while ((r = read(pipefd[0], msg + got, sizeof msg - 1 - got)) > 0) got += (size_t)r;
    close(pipefd[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
    printf("full disk: %s\n", msg);
    CHECK_MSG(strstr(msg, "ckpt-00000040.h5.tmp") && strstr(msg, "File too large") && one_line(msg), "%s", msg);
    snprintf(tmp, sizeof tmp, "%s.tmp", p40);
    CHECK(!file_exists(p40) && !file_exists(tmp));
    CHECK(file_exists(p20) && file_exists(p30)); /* keep_last 1 must not have pruned */
    CHECK(count_files() == 2);
    CHECK(dms_ckpt_latest(dir, latest, sizeof latest, &err) == 1);
    CHECK_STR(latest, p30);
    check_file(p30, 30, 1);

    /* keep_last 1 after a success removes the others, never the new one */
    ck = make_state(40, 0);
    CHECK(dms_ckpt_save(dir, 40, ck, 1, &err) == 0);
    dms_ckpt_free(ck);
    CHECK(file_exists(p40) && !file_exists(p30) && !file_exists(p20) && count_files() == 1);
    check_file(p40, 40, 0);

    /* checksums; the fallback a resume takes */
    test_checksums(p40, 40);
    int64_t at = -1;
    CHECK(dms_ckpt_latest_before(dir, INT64_MAX, latest, sizeof latest, &at, &err) == 1 && at == 40);
    CHECK_STR(latest, p40);
    CHECK(dms_ckpt_latest_before(dir, 40, latest, sizeof latest, &at, &err) == 0);
    ck = make_state(50, 0);
    CHECK(dms_ckpt_save(dir, 50, ck, 0, &err) == 0);
    dms_ckpt_free(ck);
    CHECK(dms_ckpt_latest_before(dir, 50, latest, sizeof latest, &at, &err) == 1 && at == 40);
    CHECK_STR(latest, p40);

    /* truncated and foreign checkpoints */
    char pt[140];
    snprintf(pt, sizeof pt, "%s/trunc.h5", dir);
    FILE *a = fopen(p40, "rb"), *b = fopen(pt, "wb");
    for (int i = 0; i < 2000; i++) fputc(fgetc(a), b);
    fclose(a);
    fclose(b);
    ck = dms_ckpt_load(pt, &err);
    CHECK_MSG(ck == NULL && strstr(err.msg, pt) && one_line(err.msg), "%s", err.msg);
    printf("truncated: %s\n", err.msg);
    f = fopen(pt, "w");
    fputs("not a checkpoint\n", f);
    fclose(f);
    ck = dms_ckpt_load(pt, &err);
    CHECK_MSG(ck == NULL && strstr(err.msg, pt) && strstr(err.msg, "not an HDF5 checkpoint"), "%s", err.msg);
    ck = dms_ckpt_load("/tmp/dms-no-such-ckpt.h5", &err);
    CHECK_MSG(ck == NULL && strstr(err.msg, "No such file"), "%s", err.msg);
    test_hostile();

    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    free(BIG);
    return dms_check_finish();
}
