/* test_eval.c - the evaluation harness (runtime/eval.h) piece by piece:
 * answer extraction and integer normalisation, GPQA shuffles, standard
 * errors, the budget-matching solver, JSONL errors and the resumable item
 * log, configuration checks, aggregates; then on real models: KL of full
 * against full is 0 and a small window is not, the time-averaged live
 * tokens of a window / TOVA / H2O budget equal the closed form the
 * matching inverts, DMS runs on NVIDIA's fixtures hold what token-by-token
 * prefill holds, batched generation reproduces dms_generate, and the
 * haystacks are deterministic with the needle where asked. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/eval.h"
#include "runtime/generate.h"
#include "tests/check.h"

#define TINY "tests/fixtures/models/tiny_qwen3"

static uint64_t rng = 0xe7a1;
static uint32_t next_u32(void) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng >> 33);
}

/* ---------------- answers ---------------- */

static void check_boxed(const char *text, const char *want) {
    char *got = dms_eval_last_boxed(text);
    if (!want) CHECK_MSG(got == NULL, "'%s' gave '%s', expected none", text, got ? got : "");
    else CHECK_MSG(got && !strcmp(got, want), "'%s' gave '%s', expected '%s'", text, got ? got : "(none)", want);
    free(got);
}

static void check_int(const char *s, int ok, long long want) {
    long long v = -999;
    const int rc = dms_eval_parse_int(s, &v);
    if (ok) CHECK_MSG(rc == 0 && v == want, "'%s' gave rc %d value %lld, expected %lld", s, rc, v, want);
    else CHECK_MSG(rc != 0, "'%s' parsed as %lld, expected not an integer", s, v);
}

static void answers(void) {
    check_boxed("so \\boxed{42}.", "42");
    check_boxed("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}");                      /* nested braces */
    check_boxed("first \\boxed{1}, then \\boxed{\\sqrt{\\frac{a}{b}}} done", "\\sqrt{\\frac{a}{b}}");
    check_boxed("try \\boxed{7} ... final \\boxed{8}", "8");                   /* the last one wins */
    check_boxed("\\boxed{3} and an unclosed \\boxed{4", "3");                  /* cut short: the last complete */
    check_boxed("no box here", NULL);
    check_boxed("\\boxed {12}", "12");
    check_boxed("\\fbox{5}", "5");
    check_boxed("\\boxed{\\{1,2\\}}", "\\{1,2\\}");                            /* escaped braces are text */
    /* kvpress's first-'}' cut would have given "\frac{1" here: */
    char *b = dms_eval_last_boxed("\\boxed{\\frac{1}{2}}");
    long long v;
    CHECK(b && dms_eval_parse_int(b, &v) != 0);
    free(b);

    check_int("042", 1, 42);
    check_int("1,000", 1, 1000);
    check_int("12,345,678", 1, 12345678);
    check_int("$5$", 1, 5);
    check_int("5.0", 1, 5);
    check_int("5.00", 1, 5);
    check_int(" 7 ", 1, 7);
    check_int("\\text{12}", 1, 12);
    check_int("$\\textbf{033}$", 1, 33);
    check_int("-3", 1, -3);
    check_int("+9", 1, 9);
    check_int("1\\,000", 1, 1000);
    check_int("\\boxed{17}", 1, 17);
    check_int("5.5", 0, 0);
    check_int("1,00", 0, 0);
    check_int("1,0000", 0, 0);
    check_int("\\frac{1}{2}", 0, 0);
    check_int("", 0, 0);
    check_int("abc", 0, 0);
    check_int("12a", 0, 0);
    check_int("3, 4", 0, 0);

    CHECK(dms_eval_choice_letter("Thinking... Answer: C", 4) == 'C');
    CHECK(dms_eval_choice_letter("so \\boxed{B}", 4) == 'B');
    CHECK(dms_eval_choice_letter("\\boxed{\\text{(D)}}", 4) == 'D');
    CHECK(dms_eval_choice_letter("**Answer:** (A)", 4) == 'A');
    CHECK(dms_eval_choice_letter("ANSWER: B\n", 4) == 'B');
    CHECK(dms_eval_choice_letter("Answer: B ... wait, \\boxed{D}", 4) == 'D'); /* the last wins */
    CHECK(dms_eval_choice_letter("\\boxed{D} ... no. Answer: A", 4) == 'A');
    CHECK(dms_eval_choice_letter("Answer: E", 4) == 0);                       /* out of range */
    CHECK(dms_eval_choice_letter("Answer: Because", 4) == 0);                 /* a word, not a letter */
    CHECK(dms_eval_choice_letter("\\boxed{42}", 4) == 0);
    CHECK(dms_eval_choice_letter("nothing", 4) == 0);
}

/* ---------------- statistics, shuffles, budgets ---------------- */

static void statistics(void) {
    double m, se;
    const double x[] = {1, 0, 1, 0};
    dms_eval_mean_se(x, 4, &m, &se);
    CHECK_CLOSE(m, 0.5, 0, 1e-15);
    CHECK_CLOSE(se, sqrt(1.0 / 3.0 / 4.0), 1e-12, 0); /* sample sd sqrt(1/3), over sqrt(4) */
    dms_eval_mean_se(x, 1, &m, &se);
    CHECK(m == 1 && se == 0);
    const double y[] = {2, 2, 2};
    dms_eval_mean_se(y, 3, &m, &se);
    CHECK(m == 2 && se == 0);
}

static void shuffles(void) {
    int a[4], b[4], counts[4] = {0}, differ = 0;
    for (int q = 0; q < 400; q++) {
        const int la = dms_eval_shuffle_choices(7, q, 4, a), lb = dms_eval_shuffle_choices(7, q, 4, b);
        CHECK(la == lb && !memcmp(a, b, sizeof a)); /* deterministic */
        int seen = 0;
        for (int k = 0; k < 4; k++) seen |= 1 << a[k];
        CHECK(seen == 15);                          /* a permutation */
        CHECK(la >= 'A' && la <= 'D' && a[la - 'A'] == 0); /* the correct answer's letter */
        counts[la - 'A']++;
        int c[4];
        dms_eval_shuffle_choices(8, q, 4, c);
        differ += memcmp(a, c, sizeof a) != 0;
    }
    for (int k = 0; k < 4; k++) CHECK_MSG(counts[k] > 60 && counts[k] < 140, "letter %c correct %d/400", 'A' + k, counts[k]);
    CHECK(differ > 200); /* another seed, other orders */
    const char *ch[] = {"alpha", "beta", "gamma", "delta"};
    char *p = dms_eval_mc_prompt("Which?", ch, 4);
    CHECK(p && strstr(p, "Which?\n\nA) alpha\nB) beta\nC) gamma\nD) delta") && strstr(p, "one of ABCD"));
    free(p);
}

static void budgets(void) {
    const int T = 512;
    CHECK_CLOSE(dms_eval_budget_held(128, T), 112.125, 0, 1e-12); /* 128 * 897 / 1024 */
    CHECK_CLOSE(dms_eval_budget_held(T, T), 256.5, 0, 1e-12);
    CHECK_CLOSE(dms_eval_budget_held(1000, T), 256.5, 0, 1e-12);
    for (int B = 1; B <= T; B++) { /* the closed form is mean_t min(t, B); the solver inverts it */
        double direct = 0;
        for (int t = 1; t <= T; t++) direct += t < B ? t : B;
        direct /= T;
        CHECK_CLOSE(dms_eval_budget_held(B, T), direct, 1e-12, 0);
        double br;
        CHECK_MSG(dms_eval_match_budget(direct, T, &br) == B, "B %d", B);
        CHECK_CLOSE(br, B, 1e-9, 1e-9);
    }
    double br;
    CHECK(dms_eval_match_budget(300, T, &br) == T); /* more than vanilla holds: no saving */
    CHECK(dms_eval_match_budget(0.2, T, &br) == 1);
    CHECK(dms_eval_match_budget(0, T, &br) == -1);
    /* between two budgets: the nearer one */
    const double mid = 0.25 * dms_eval_budget_held(100, T) + 0.75 * dms_eval_budget_held(101, T);
    CHECK(dms_eval_match_budget(mid, T, &br) == 101 && br > 100 && br < 101);
}

/* ---------------- files ---------------- */

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

static void files(void) {
    char dir[] = "/tmp/test_eval_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[300], log[300];
    snprintf(path, sizeof path, "%s/in.jsonl", dir);
    dms_err err = {0};
    dms_eval_rows r;
    write_file(path, "{\"problem\": \"1+1?\", \"answer\": 2}\n\n{\"problem\": \"x\"}\n");
    CHECK(dms_eval_read_jsonl(path, &r, &err) == 0 && r.n == 2 && r.line[1] == 3);
    const char *a = dms_eval_row_str(&r, 0, path, "answer", &err);
    CHECK(a && !strcmp(a, "2")); /* a number, as text */
    CHECK(dms_eval_row_str(&r, 1, path, "answer", &err) == NULL);
    char want[400];
    snprintf(want, sizeof want, "%s:3: missing field 'answer'", path);
    CHECK_STR(err.msg, want);
    dms_eval_rows_free(&r);
    write_file(path, "{\"a\": 1}\n{not json\n");
    CHECK(dms_eval_read_jsonl(path, &r, &err) != 0);
    snprintf(want, sizeof want, "%s:2: not valid JSON", path);
    CHECK_STR(err.msg, want);
    write_file(path, "[1, 2]\n");
    CHECK(dms_eval_read_jsonl(path, &r, &err) != 0 && strstr(err.msg, ":1: expected a JSON object"));

    /* the item log: append, a kill mid-line, resume, another configuration */
    snprintf(log, sizeof log, "%s/run.jsonl", dir);
    dms_eval_log lg;
    CHECK(dms_eval_log_open(&lg, log, "fp1", &err) == 0);
    for (int i = 0; i < 2; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "key", i ? "b" : "a");
        cJSON_AddStringToObject(o, "fingerprint", "fp1");
        CHECK(dms_eval_log_append(&lg, o, &err) == 0);
    }
    CHECK(dms_eval_log_has(&lg, "a") && dms_eval_log_has(&lg, "b") && !dms_eval_log_has(&lg, "c"));
    dms_eval_log_close(&lg);
    FILE *f = fopen(log, "a");
    fputs("{\"key\": \"c\", \"finger", f); /* what a kill leaves */
    fclose(f);
    CHECK(dms_eval_log_open(&lg, log, "fp1", &err) == 0 && lg.rows.n == 2 && !dms_eval_log_has(&lg, "c"));
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "key", "c");
    cJSON_AddStringToObject(o, "fingerprint", "fp1");
    CHECK(dms_eval_log_append(&lg, o, &err) == 0);
    dms_eval_log_close(&lg);
    CHECK(dms_eval_read_jsonl(log, &r, &err) == 0 && r.n == 3); /* the cut line is gone, the new one whole */
    dms_eval_rows_free(&r);
    CHECK(dms_eval_log_open(&lg, log, "fp2", &err) != 0 && strstr(err.msg, "another configuration"));

    /* results in a folder: only eval documents */
    snprintf(path, sizeof path, "%s/x.json", dir);
    write_file(path, "{\"task\": \"kl\", \"policy\": \"full\", \"metric\": {\"value\": 0}, \"kv\": {\"kv_cr\": 1}}");
    snprintf(path, sizeof path, "%s/y.json", dir);
    write_file(path, "{\"task\": \"kl\", \"policy\": \"dms\", \"metric\": {\"value\": 1}, \"kv\": {\"kv_cr\": 2}}");
    snprintf(path, sizeof path, "%s/config.json", dir);
    write_file(path, "{\"hidden_size\": 64}");
    cJSON **docs;
    int n;
    CHECK(dms_eval_list_results(dir, &docs, &n, &err) == 0 && n == 2);
    if (n == 2) CHECK(!strcmp(cJSON_GetObjectItem(docs[0], "policy")->valuestring, "dms")); /* sorted */
    dms_eval_free_results(docs, n);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
}

static void configs(void) {
    dms_eval_config c;
    dms_err err = {0};
#define CFG_ERR(setup, pattern)                                                                             \
    do {                                                                                                    \
        dms_eval_config_default(&c);                                                                        \
        c.model = "m";                                                                                      \
        c.data = "d";                                                                                       \
        setup;                                                                                              \
        CHECK_MSG(dms_eval_config_finish(&c, &err) != 0 && strstr(err.msg, pattern), "%s", err.msg);        \
    } while (0)
    CFG_ERR((c.kv.policy = DMS_POLICY_WINDOW, c.cr = 0.5f), "--cr must be at least 1");
    CFG_ERR((c.kv.policy = DMS_POLICY_DMS, c.kv.budget = 64), "--budget does not apply to policy dms");
    CFG_ERR((c.kv.policy = DMS_POLICY_FULL, c.cr = 2), "--cr does not apply to policy full");
    CFG_ERR((c.kv.policy = DMS_POLICY_FULL, c.kv.dms_offset = 4), "--dms-offset applies to policy dms only");
    CFG_ERR((c.kv.policy = DMS_POLICY_DMS, c.kv.dms_offset = INFINITY), "must be a finite number");
    CFG_ERR((c.kv.policy = DMS_POLICY_TOVA), "needs exactly one of --budget");
    CFG_ERR((c.kv.policy = DMS_POLICY_TOVA, c.kv.budget = 8, c.cr = 2), "needs exactly one of --budget");
    CFG_ERR((c.task = DMS_EVAL_NIAH, c.data = NULL, c.kv.policy = DMS_POLICY_WINDOW, c.match = "r.json"),
            "--match applies to --task kl only");
    CFG_ERR((c.task = DMS_EVAL_AIME, c.data = NULL), "--task aime needs --data FILE");
    CFG_ERR((c.task = DMS_EVAL_NIAH), "makes its own haystacks");
    CFG_ERR((c.window_tokens = 128), "--window-tokens must be at least 512");
    CFG_ERR((c.task = DMS_EVAL_NIAH, c.data = NULL, c.depths[0] = 120), "outside 0..100");
    dms_eval_config_default(&c);
    c.model = "m";
    c.task = DMS_EVAL_AIME;
    c.data = "d";
    CHECK(dms_eval_config_finish(&c, &err) == 0);
    CHECK(c.max_tokens == 32000 && c.samples == 4 && fabsf(c.sampling.temperature - 0.6f) < 1e-6f &&
          fabsf(c.sampling.top_p - 0.95f) < 1e-6f && c.sampling.top_k == 20 && c.sampling.min_p == 0);
    dms_eval_config_default(&c);
    c.model = "m";
    c.task = DMS_EVAL_NIAH;
    CHECK(dms_eval_config_finish(&c, &err) == 0 && c.sampling.temperature == 0 && c.max_tokens == 24);
}

static void aggregates(void) {
    /* aime: problem 0 right in 1 of 2 samples, problem 1 in 2 of 2 */
    const int prob[] = {0, 0, 1, 1}, ok[] = {1, 0, 1, 1};
    cJSON *rows[4];
    for (int i = 0; i < 4; i++) {
        rows[i] = cJSON_CreateObject();
        cJSON_AddNumberToObject(rows[i], "problem", prob[i]);
        cJSON_AddBoolToObject(rows[i], "correct", ok[i]);
        cJSON_AddBoolToObject(rows[i], "hit_limit", i == 1);
        cJSON_AddNumberToObject(rows[i], "pred", 1);
        cJSON_AddNumberToObject(rows[i], "decode_steps", 10);
        cJSON_AddNumberToObject(rows[i], "kv_reads", 100);
        cJSON_AddNumberToObject(rows[i], "kv_reads_vanilla", 400);
        dms_kv_stats kv = {.seen = 20, .held_mean = 5, .held_time_mean = 4, .held_peak = 6, .kv_cr = 4, .decision_cr = 1};
        dms_eval_add_kv(rows[i], &kv);
    }
    cJSON *res = cJSON_CreateObject();
    dms_err err = {0};
    CHECK(dms_eval_aggregate(DMS_EVAL_AIME, rows, 4, res, &err) == 0);
    const cJSON *m = cJSON_GetObjectItem(res, "metric"), *kv = cJSON_GetObjectItem(res, "kv");
    CHECK_CLOSE(dms_eval_num(m, "value"), 0.75, 0, 1e-12);
    CHECK_CLOSE(dms_eval_num(m, "se"), 0.25, 1e-12, 0); /* per-problem means 0.5, 1: sd 0.3536 / sqrt 2 */
    CHECK(dms_eval_num(m, "n") == 2 && !strcmp(cJSON_GetObjectItem(m, "name")->valuestring, "pass@1"));
    CHECK(dms_eval_num(cJSON_GetObjectItem(res, "metrics"), "out_of_tokens") == 1);
    CHECK_CLOSE(dms_eval_num(kv, "kv_cr"), 4, 0, 1e-12);
    CHECK_CLOSE(dms_eval_num(kv, "reads_per_token"), 10, 0, 1e-12);
    CHECK_CLOSE(dms_eval_num(kv, "kv_cr_end"), 4, 0, 1e-12);
    cJSON_Delete(res);
    for (int i = 0; i < 4; i++) cJSON_Delete(rows[i]);

    /* niah: the needle's lanes, over all and apart for found / missed, per length; rows without them count
       for accuracy only */
    const int len[] = {512, 512, 1024, 1024}, found[] = {1, 0, 1, 1};
    const double lanes[] = {0.5, 0.1, 0.2, NAN};
    for (int i = 0; i < 4; i++) {
        rows[i] = cJSON_CreateObject();
        cJSON_AddNumberToObject(rows[i], "length", len[i]);
        cJSON_AddNumberToObject(rows[i], "depth", 50);
        cJSON_AddBoolToObject(rows[i], "correct", found[i]);
        if (!isnan(lanes[i])) {
            cJSON_AddNumberToObject(rows[i], "needle_lanes", lanes[i]);
            cJSON_AddNumberToObject(rows[i], "needle_held", 2 * lanes[i]);
        }
        dms_kv_stats kv = {.seen = 20, .held_mean = 5, .held_time_mean = 4, .held_peak = 6, .kv_cr = 4, .decision_cr = 1};
        dms_eval_add_kv(rows[i], &kv);
    }
    res = cJSON_CreateObject();
    CHECK(dms_eval_aggregate(DMS_EVAL_NIAH, rows, 4, res, &err) == 0);
    const cJSON *nm = cJSON_GetObjectItem(res, "metrics");
    CHECK_CLOSE(dms_eval_num(nm, "accuracy"), 0.75, 0, 1e-12);
    CHECK_CLOSE(dms_eval_num(nm, "needle_lanes"), 0.8 / 3, 0, 1e-12);
    CHECK_CLOSE(dms_eval_num(nm, "needle_lanes_found"), 0.35, 0, 1e-12);
    CHECK_CLOSE(dms_eval_num(nm, "needle_lanes_missed"), 0.1, 0, 1e-12);
    CHECK_CLOSE(dms_eval_num(nm, "needle_held_found"), 0.7, 0, 1e-12);
    const cJSON *bl = cJSON_GetObjectItem(nm, "by_length");
    CHECK(cJSON_GetArraySize(bl) == 2);
    CHECK_CLOSE(dms_eval_num(cJSON_GetArrayItem(bl, 0), "needle_lanes"), 0.3, 0, 1e-12);
    CHECK_CLOSE(dms_eval_num(cJSON_GetArrayItem(bl, 1), "needle_lanes"), 0.2, 0, 1e-12);
    CHECK(cJSON_IsNull(cJSON_GetObjectItem(cJSON_GetArrayItem(bl, 1), "needle_lanes_missed")));
    const cJSON *cells = cJSON_GetObjectItem(nm, "cells"); /* (512, 50) and (1024, 50) */
    CHECK(cJSON_GetArraySize(cells) == 2);
    CHECK_CLOSE(dms_eval_num(cJSON_GetArrayItem(cells, 0), "needle_held_missed"), 0.2, 0, 1e-12);
    CHECK_CLOSE(dms_eval_num(cJSON_GetArrayItem(cells, 1), "needle_lanes"), 0.2, 0, 1e-12);
    cJSON_Delete(res);
    for (int i = 0; i < 4; i++) cJSON_Delete(rows[i]);
}

/* ---------------- KL on models ---------------- */

typedef struct {
    dms_eval_kl_window w[8];
    int n;
    int lanes; /* > 0: check each window's per-lane live tokens against its mean */
    const int *lane_budget; /* non-NULL: each lane's time average must be what its budget holds */
    int T;
} kl_sink;

static int kl_collect(const dms_eval_kl_window *w, void *ctx, dms_err *err) {
    (void)err;
    kl_sink *s = ctx;
    if (s->lanes > 0) {
        CHECK(w->lane_end != NULL);
        double sum = 0;
        for (int i = 0; w->lane_end && i < s->lanes; i++) sum += w->lane_end[i];
        CHECK_CLOSE(sum / s->lanes, w->kv.held_mean, 1e-12, 1e-12);
        CHECK(w->lane_held != NULL);
        double avg = 0;
        for (int i = 0; w->lane_held && i < s->lanes; i++) {
            avg += w->lane_held[i] / s->lanes;
            if (s->lane_budget)
                CHECK_CLOSE(w->lane_held[i], dms_eval_budget_held(s->lane_budget[i], s->T), 1e-12, 0);
        }
        CHECK_CLOSE(avg, w->held_sum / w->tokens, 1e-12, 1e-12); /* the lanes' time averages make up the mean */
    }
    if (s->n < 8) s->w[s->n++] = *w;
    return 0;
}

static kl_sink run_kl(const dms_model *m, dms_policy pol, int budget, const int32_t *ids, int nw, int T, int chunk,
                      int batch) {
    kl_sink s = {.n = 0, .lanes = m->cfg.n_layers * m->cfg.n_kv_heads};
    dms_kv_opts o;
    dms_kv_opts_default(&o);
    o.policy = pol;
    o.budget = budget;
    const int32_t *win[8];
    for (int i = 0; i < nw; i++) win[i] = ids + (size_t)i * T;
    dms_err err = {0};
    CHECK_MSG(dms_eval_kl(m, NULL, &o, win, NULL, nw, T, chunk, batch, kl_collect, &s, NULL, &err) == 0, "%s", err.msg);
    CHECK(s.n == nw);
    return s;
}

static void kl_rows(void) {
    const int V = 6;
    const float p[] = {1, 2, 3, 0, -1, 0.5f}, q[] = {1, 2, 3, 0, -1, 0.5f}, r[] = {3, 2, 1, 0, -1, 0.5f};
    double a, b;
    CHECK(dms_eval_kl_row(p, q, V, 2, &a, &b) == 0 && a == b);
    CHECK(dms_eval_kl_row(p, r, V, -1, NULL, NULL) > 0.1);
    /* two tokens: KL of (0.5, 0.5) from (e/(1+e), 1/(1+e)) */
    const float u[] = {0, 0}, w[] = {1, 0};
    const double pw = exp(1.0) / (1 + exp(1.0));
    CHECK_CLOSE(dms_eval_kl_row(u, w, 2, -1, NULL, NULL), 0.5 * log(0.5 / pw) + 0.5 * log(0.5 / (1 - pw)), 1e-12, 0);
}

static void kl_tiny(void) {
    dms_err err = {0};
    dms_model m;
    if (dms_model_load(&m, TINY, &dms_cpu_ops, DMS_LOAD_WEIGHTS, &err) != 0) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    enum { T = 64, NW = 3, B = 8 };
    int32_t ids[NW * T];
    for (int i = 0; i < NW * T; i++) ids[i] = (int32_t)(next_u32() % (uint32_t)m.cfg.vocab);

    kl_sink full = run_kl(&m, DMS_POLICY_FULL, 0, ids, NW, T, 16, 1);
    for (int i = 0; i < full.n; i++) {
        CHECK_MSG(fabs(full.w[i].kl_sum) < 1e-9, "full vs full: KL %g", full.w[i].kl_sum);
        CHECK_CLOSE(full.w[i].nll_sum, full.w[i].ref_nll_sum, 1e-6, 0); /* other call sizes, other roundings */
        CHECK(full.w[i].nll_count == T - 1 && full.w[i].index == i);
        CHECK_CLOSE(full.w[i].held_sum / T, (T + 1) / 2.0, 1e-12, 0); /* vanilla holds t after token t */
        CHECK_CLOSE(full.w[i].reads_sum, full.w[i].reads_vanilla_sum, 1e-12, 0);
    }
    /* a small window: KL > 0, and its live tokens are the closed form the matching inverts */
    const int chunks[] = {1, 8};
    for (int k = 0; k < 2; k++) {
        kl_sink win = run_kl(&m, DMS_POLICY_WINDOW, B, ids, NW, T, chunks[k], 1);
        for (int i = 0; i < win.n; i++) {
            CHECK_MSG(win.w[i].kl_sum / T > 1e-4, "window %d: KL %g", B, win.w[i].kl_sum / T);
            CHECK_CLOSE(win.w[i].held_sum / T, dms_eval_budget_held(B, T), 1e-12, 0);
            CHECK_CLOSE(win.w[i].nll_count, T - 1, 0, 0);
            CHECK(win.w[i].kv.held_mean == B && win.w[i].kv.seen == T);
        }
    }
    /* scored policies go token by token through batched decode: batch 1 and 3 agree */
    const dms_policy scored[] = {DMS_POLICY_TOVA, DMS_POLICY_H2O};
    for (int k = 0; k < 2; k++) {
        kl_sink one = run_kl(&m, scored[k], B, ids, NW, T, 16, 1), three = run_kl(&m, scored[k], B, ids, NW, T, 16, 3);
        for (int i = 0; i < NW; i++) {
            CHECK(one.w[i].kl_sum > 1e-4 * T);
            CHECK_CLOSE(one.w[i].held_sum / T, dms_eval_budget_held(B, T), 1e-12, 0);
            CHECK_CLOSE(three.w[i].kl_sum, one.w[i].kl_sum, 1e-4, 1e-9);
            CHECK(three.w[i].index == i);
            /* each query read what was held before it plus itself */
            CHECK(one.w[i].reads_sum > one.w[i].held_sum * m.cfg.n_layers * m.cfg.n_kv_heads);
        }
    }
    /* a budget per lane (--by-lane): each lane ends at its own budget, the
     * time average is the lanes' mean, and equal lane budgets give what the
     * uniform budget gives (h2o exactly; window and sinks, which then go
     * token by token instead of by the rule over chunks, to rounding) */
    const int lanes = m.cfg.n_layers * m.cfg.n_kv_heads;
    int *lb = malloc(sizeof(int) * (size_t)lanes);
    const dms_policy per_lane[] = {DMS_POLICY_H2O, DMS_POLICY_WINDOW, DMS_POLICY_SINKS};
    for (int pass = 0; lb && pass < 6; pass++) {
        const dms_policy pol = per_lane[pass / 2];
        double want = 0;
        for (int i = 0; i < lanes; i++) {
            lb[i] = pass % 2 == 0 ? B : 5 + 9 * (i % 3);
            want += dms_eval_budget_held(lb[i], T) / lanes;
        }
        kl_sink s = {.n = 0, .lanes = lanes, .lane_budget = lb, .T = T};
        dms_kv_opts o;
        dms_kv_opts_default(&o);
        o.policy = pol;
        o.lane_budget = lb;
        const int32_t *win[NW];
        for (int i = 0; i < NW; i++) win[i] = ids + (size_t)i * T;
        CHECK_MSG(dms_eval_kl(&m, NULL, &o, win, NULL, NW, T, 16, 2, kl_collect, &s, NULL, &err) == 0, "%s", err.msg);
        kl_sink uni = run_kl(&m, pol, B, ids, NW, T, 16, 2);
        for (int i = 0; i < s.n; i++) {
            CHECK_CLOSE(s.w[i].held_sum / T, want, 1e-12, 0);
            if (pass % 2 == 0) CHECK_MSG(fabs(s.w[i].kl_sum - uni.w[i].kl_sum) <= 1e-4 * uni.w[i].kl_sum,
                                         "policy %s per lane %g uniform %g", dms_policy_name(pol), s.w[i].kl_sum,
                                         uni.w[i].kl_sum);
            else CHECK(fabs(s.w[i].kl_sum - uni.w[i].kl_sum) > 1e-3 * uni.w[i].kl_sum);
        }
    }
    /* per-lane budgets: budgeted policies only, every lane at least 1 (sinks: more than the sinks) */
    dms_kv_opts o;
    dms_kv_opts_default(&o);
    o.policy = DMS_POLICY_FULL;
    o.lane_budget = lb;
    CHECK(lb && !dms_kv_create(&m, &o, &err) &&
          strstr(err.msg, "budgets per lane apply to window, sinks, tova and h2o"));
    o.policy = DMS_POLICY_SINKS;
    if (lb) lb[0] = o.sinks;
    CHECK(lb && !dms_kv_create(&m, &o, &err) &&
          strstr(err.msg, "lane 0 (layer 0, KV head 0) has a budget of 4 tokens; at least 5"));
    if (lb) lb[0] = B;
    o.policy = DMS_POLICY_TOVA;
    if (lb) lb[lanes - 1] = 0;
    char msg[64];
    snprintf(msg, sizeof msg, "lane %d (layer %d, KV head %d)", lanes - 1, m.cfg.n_layers - 1, m.cfg.n_kv_heads - 1);
    CHECK_MSG(lb && !dms_kv_create(&m, &o, &err) && strstr(err.msg, msg), "%s", err.msg);
    free(lb);
    o.lane_budget = NULL;
    o.policy = DMS_POLICY_FULL;
    const int32_t *w0[1] = {ids};
    CHECK(dms_eval_kl(&m, NULL, &o, w0, NULL, 1, m.cfg.max_pos + 1, 8, 1, kl_collect, &(kl_sink){0}, NULL, &err) != 0 &&
          strstr(err.msg, "exceed the context"));
    dms_model_free(&m);
}

/* DMS on NVIDIA's fixtures: live tokens by the trapezoid rule between calls
 * are exact per token with chunk 1 and close with chunk 8. */
static void kl_nvidia(const char *variant) {
    char dir[128];
    snprintf(dir, sizeof dir, "tests/fixtures/nvidia/%s", variant);
    dms_err err = {0};
    dms_model m;
    if (dms_model_load(&m, dir, &dms_cpu_ops, DMS_LOAD_WEIGHTS, &err) != 0) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    enum { T = 96 };
    int32_t ids[2 * T];
    for (int i = 0; i < 2 * T; i++) ids[i] = (int32_t)(next_u32() % (uint32_t)m.cfg.vocab);
    /* the live tokens after every token, by token-by-token prefill */
    dms_kv_opts o;
    dms_kv_opts_default(&o);
    dms_kv_paged *kv = dms_kv_create(&m, &o, &err);
    CHECK_MSG(kv != NULL, "%s", err.msg);
    float *logits = malloc(sizeof(float) * (size_t)m.cfg.vocab);
    double exact[2] = {0, 0};
    for (int w = 0; kv && w < 2; w++) {
        const int s = dms_kv_admit(kv, &err);
        for (int t = 0; t < T; t++) {
            CHECK(dms_kv_prefill(kv, s, ids + w * T + t, 1, logits, 0, &err) == 0);
            for (int l = 0; l < m.cfg.n_layers; l++)
                for (int h = 0; h < m.cfg.n_kv_heads; h++) exact[w] += dms_kv_lane_len(kv, s, l, h);
        }
        exact[w] /= m.cfg.n_layers * m.cfg.n_kv_heads;
        dms_kv_finish(kv, s);
    }
    free(logits);
    dms_kv_free(kv);
    kl_sink one = run_kl(&m, DMS_POLICY_DMS, 0, ids, 2, T, 1, 1), eight = run_kl(&m, DMS_POLICY_DMS, 0, ids, 2, T, 8, 1);
    for (int w = 0; w < 2; w++) {
        CHECK_CLOSE(one.w[w].held_sum, exact[w], 1e-12, 0);
        CHECK_CLOSE(eight.w[w].held_sum, exact[w], 0.05, 0);
        CHECK_MSG(exact[w] / T < (T + 1) / 2.0, "%s: DMS held %g per token, vanilla %g", variant, exact[w] / T,
                  (T + 1) / 2.0);
        CHECK(isfinite(one.w[w].kl_sum) && one.w[w].kl_sum >= 0);
        CHECK_CLOSE(eight.w[w].kl_sum, one.w[w].kl_sum, 1e-3, 1e-6); /* chunking is exact for dms */
        CHECK(one.w[w].kv.decision_cr >= 1);
    }
    printf("%s: DMS held %.2f of %.1f tokens per head on average, KL %.4g nats/token\n", variant, exact[0] / T,
           (T + 1) / 2.0, one.w[0].kl_sum / T);
    dms_model_free(&m);
}

/* ---------------- batched generation ---------------- */

typedef struct {
    int32_t ids[4][32];
    int n[4], hit[4], steps[4];
    double reads[4], vreads[4], watch_lanes[4], watch_held[4];
} gen_sink;

static int gen_collect(int index, const dms_eval_output *o, void *ctx, dms_err *err) {
    (void)err;
    gen_sink *s = ctx;
    memcpy(s->ids[index], o->ids, sizeof(int32_t) * (size_t)o->n);
    s->n[index] = o->n;
    s->hit[index] = o->hit_limit;
    s->steps[index] = o->decode_steps;
    s->reads[index] = o->reads;
    s->vreads[index] = o->reads_vanilla;
    s->watch_lanes[index] = o->watch_lanes;
    s->watch_held[index] = o->watch_held;
    return 0;
}

static void generation(void) {
    dms_err err = {0};
    dms_model m;
    if (dms_model_load(&m, TINY, &dms_cpu_ops, DMS_LOAD_WEIGHTS, &err) != 0) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    enum { NP = 4, NEW = 12 };
    int32_t prompts[NP][20];
    const int lens[NP] = {5, 20, 9, 14};
    dms_eval_request req[NP];
    for (int i = 0; i < NP; i++) {
        for (int t = 0; t < lens[i]; t++) prompts[i][t] = (int32_t)(next_u32() % (uint32_t)m.cfg.vocab);
        req[i] = (dms_eval_request){prompts[i], lens[i], NEW, 100 + (uint64_t)i, NULL, 0};
    }
    /* watched: the first and the last prompt position (request 3 watches nothing) */
    int watch[NP][2];
    for (int i = 0; i < NP - 1; i++) {
        watch[i][0] = 0;
        watch[i][1] = lens[i] - 1;
        req[i].watch = watch[i];
        req[i].n_watch = 2;
    }
    const dms_policy pols[] = {DMS_POLICY_FULL, DMS_POLICY_WINDOW, DMS_POLICY_TOVA};
    for (int k = 0; k < 3; k++) {
        dms_kv_opts o;
        dms_kv_opts_default(&o);
        o.policy = pols[k];
        o.budget = 6;
        const dms_eval_sampling greedy = {0, 1, 0, 0};
        gen_sink s = {0};
        CHECK_MSG(dms_eval_generate(&m, &o, &greedy, 3, req, NP, gen_collect, &s, NULL, &err) == 0, "%s", err.msg);
        for (int i = 0; i < NP; i++) { /* the same tokens as dms_generate, one sequence at a time */
            dms_gen_params gp;
            dms_gen_params_default(&gp);
            gp.max_new_tokens = NEW;
            gp.kv = o;
            int32_t *ref = NULL;
            dms_gen_stats st;
            CHECK_MSG(dms_generate(&m, prompts[i], lens[i], &gp, NULL, NULL, &ref, &st, &err) == 0, "%s", err.msg);
            CHECK_MSG(s.n[i] == NEW && ref && !memcmp(ref, s.ids[i], sizeof(int32_t) * NEW), "%s prompt %d differs",
                      dms_policy_name(pols[k]), i);
            free(ref);
            CHECK(s.hit[i] == 1 && s.steps[i] == NEW - 1);
            /* when the prompt was read: full holds everything, window the last 6 positions, and every policy
               all of a prompt of at most 6 tokens */
            const int lanes = m.cfg.n_layers * m.cfg.n_kv_heads;
            if (i == NP - 1) CHECK(s.watch_lanes[i] == -1 && s.watch_held[i] == -1);
            else if (pols[k] == DMS_POLICY_FULL || lens[i] <= 6) CHECK(s.watch_lanes[i] == 1 && s.watch_held[i] == 1);
            else if (pols[k] == DMS_POLICY_WINDOW) CHECK(s.watch_lanes[i] == 0 && s.watch_held[i] == 0.5);
            else { /* tova (which may evict even the newest): counts of lanes and of (lane, position) pairs */
                CHECK(s.watch_lanes[i] >= 0 && s.watch_lanes[i] <= s.watch_held[i] && s.watch_held[i] <= 1);
                CHECK_CLOSE(s.watch_held[i] * 2 * lanes, round(s.watch_held[i] * 2 * lanes), 0, 1e-9);
                CHECK_CLOSE(s.watch_lanes[i] * lanes, round(s.watch_lanes[i] * lanes), 0, 1e-9);
            }
            double vr = 0, wr = 0, tr = 0;
            for (int t = 0; t < NEW - 1; t++) { /* the token at position p = len + t */
                const int p = lens[i] + t;
                vr += (double)(p + 1) * lanes;
                wr += (double)(p + 1 < 6 ? p + 1 : 6) * lanes;
                tr += (double)((p < 6 ? p : 6) + 1) * lanes; /* what was held before + the query's own */
            }
            CHECK_CLOSE(s.vreads[i], vr, 1e-12, 0);
            CHECK_CLOSE(s.reads[i], pols[k] == DMS_POLICY_FULL ? vr : pols[k] == DMS_POLICY_WINDOW ? wr : tr, 1e-12, 0);
        }
    }
    /* sampling: a request's tokens depend on its seed, not on the batch */
    dms_kv_opts o;
    dms_kv_opts_default(&o);
    o.policy = DMS_POLICY_FULL;
    const dms_eval_sampling samp = {0.8f, 0.95f, 0.05f, 20};
    gen_sink a = {0}, b = {0};
    CHECK(dms_eval_generate(&m, &o, &samp, 4, req, NP, gen_collect, &a, NULL, &err) == 0);
    CHECK(dms_eval_generate(&m, &o, &samp, 4, req, NP, gen_collect, &b, NULL, &err) == 0);
    CHECK(!memcmp(a.ids, b.ids, sizeof a.ids));
    req[0].n_prompt = m.cfg.max_pos;
    CHECK(dms_eval_generate(&m, &o, &samp, 2, req, NP, gen_collect, &a, NULL, &err) != 0 &&
          strstr(err.msg, "fills the model's context"));
    dms_model_free(&m);
}

/* ---------------- haystacks (the embedded model's tokenizer) ---------------- */

static void haystacks(void) {
    const char *path = getenv("DMS_DEFAULT_GGUF");
    if (!path || !*path) path = "models/default.gguf";
    dms_err err = {0};
    dms_model m;
    if (dms_model_load(&m, path, &dms_cpu_ops, DMS_LOAD_TOKENIZER, &err) != 0) {
        CHECK_MSG(0, "%s (run the setup: it links the default model)", err.msg);
        return;
    }
    const int lengths[] = {128, 512};
    for (int a = 0; a < 2; a++)
        for (int depth = 0; depth <= 100; depth += 50) {
            dms_eval_niah x, y, z;
            CHECK_MSG(dms_eval_niah_build(m.tok, 9, lengths[a], depth, 0, &x, &err) == 0, "%s", err.msg);
            CHECK(dms_eval_niah_build(m.tok, 9, lengths[a], depth, 0, &y, &err) == 0);
            CHECK(dms_eval_niah_build(m.tok, 9, lengths[a], depth, 1, &z, &err) == 0);
            CHECK(x.n_ids == y.n_ids && !memcmp(x.ids, y.ids, sizeof(int32_t) * (size_t)x.n_ids)); /* deterministic */
            CHECK(x.n_ids != z.n_ids || memcmp(x.ids, z.ids, sizeof(int32_t) * (size_t)x.n_ids));
            CHECK_MSG(x.n_ids <= lengths[a] + 2 && x.n_ids >= lengths[a] - 30, "length %d: %d tokens", lengths[a],
                      x.n_ids);
            char *text = dms_tokenizer_decode(m.tok, x.ids, (size_t)x.n_ids, 0);
            char needle[128], question[128];
            snprintf(needle, sizeof needle, "The secret code of the %s %s is %s.", x.color, x.animal, x.code);
            snprintf(question, sizeof question, "What is the secret code of the %s %s?", x.color, x.animal);
            const char *at = text ? strstr(text, needle) : NULL, *q = text ? strstr(text, question) : NULL;
            CHECK(at && q && at < q && strlen(x.code) == 6);
            /* the code's tokens are found where they decode to the code */
            CHECK(x.n_code >= 1 && x.n_code <= 8);
            if (x.n_code >= 1) {
                for (int i = 1; i < x.n_code; i++) CHECK(x.code_pos[i] == x.code_pos[0] + i);
                char *code = dms_tokenizer_decode(m.tok, x.ids + x.code_pos[0], (size_t)x.n_code, 0);
                CHECK_MSG(code && !strcmp(code, x.code), "code %s at its positions decodes to '%s'", x.code,
                          code ? code : "");
                free(code);
            }
            /* the number appears once, and the needle sits at its depth */
            CHECK(at && !strstr(at + strlen(needle), x.code));
            const char *body = text ? strstr(text, "<|im_start|>user\n") : NULL;
            CHECK(body != NULL);
            if (at && body && q) {
                const char *hs = body + 17; /* the haystack starts after the user header */
                const double frac = (double)(at - hs) / (double)(q - hs - (long)strlen(needle) - 2);
                CHECK_MSG(fabs(frac - depth / 100.0) < 0.12, "depth %d: needle at %.2f of the haystack", depth, frac);
            }
            free(text);
            dms_eval_niah_free(&x);
            dms_eval_niah_free(&y);
            dms_eval_niah_free(&z);
        }
    dms_eval_niah x;
    CHECK(dms_eval_niah_build(m.tok, 9, 20, 50, 0, &x, &err) != 0 && strstr(err.msg, "no room for the haystack"));
    dms_model_free(&m);
}

int main(void) {
    answers();
    statistics();
    shuffles();
    budgets();
    files();
    configs();
    aggregates();
    kl_rows();
    kl_tiny();
    kl_nvidia("adapter");
    kl_nvidia("neuron");
    generation();
    haystacks();
    return dms_check_finish();
}
