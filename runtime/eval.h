/* eval.h - the evaluation harness behind `dms eval` (docs/eval.md): what a
 * KV policy costs in quality at the memory it really holds. Four tasks run
 * through the paged runtime (runtime/kv_paged.h):
 *   kl   - teacher-forced KL(vanilla || policy) and perplexity on text;
 *   niah - synthetic needle-in-a-haystack retrieval, greedy;
 *   aime - sampled maths answers (\boxed{...}), pass@1;
 *   gpqa - sampled multiple choice with shuffled choices, accuracy.
 * The pieces are small and separately testable: answer extraction
 * (eval_answer.c), statistics and the budget-matching rule (eval_stats.c),
 * multiple-choice shuffling (eval_mc.c), prompts through the chat template
 * (eval_prompt.c), the haystack (eval_niah.c), batched sampling
 * (eval_gen.c), teacher-forced KL (eval_kl.c), JSONL in/out with resume
 * (eval_io.c), progress (eval_progress.c), the per-task items, records and
 * aggregates (eval_tasks.c) and one whole run (eval_run.c). Errors come
 * back as one-line messages (core/err.h); nothing here exits. */
#ifndef DMS_EVAL_H
#define DMS_EVAL_H

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>

#include "model/model.h"
#include "runtime/kv_paged.h"

/* ---------------- answers (eval_answer.c) ---------------- */

/* The content of the LAST complete \boxed{...} in text, nested braces
 * balanced (\boxed{\frac{a}{b}} gives "\frac{a}{b}"); malloc'd, or NULL when
 * there is none. \fbox{...} counts as a box too. */
char *dms_eval_last_boxed(const char *text);
/* Normalises an answer to an integer: surrounding spaces and $...$, \text{}
 * style wrappers, LaTeX spacing, a leading '+', thousands separators
 * ("1,000"), leading zeros ("042") and a zero fraction ("5.0", "5.00") are
 * accepted. 0 and *out set, or -1 when it is not an integer
 * ("\frac{1}{2}", "5.5", "", "x"). */
int dms_eval_parse_int(const char *s, long long *out);
/* The chosen letter of an n-choice question: the last of \boxed{X} and
 * "Answer: X" (any case of "answer", optional markdown bold, X optionally in
 * parentheses) in text; 'A'.. or 0 when there is none. */
int dms_eval_choice_letter(const char *text, int n_choices);

/* ---------------- statistics (eval_stats.c) ---------------- */

/* Mean and its standard error (sample standard deviation / sqrt(n); 0 for
 * n < 2). */
void dms_eval_mean_se(const double *x, int n, double *mean, double *se);
/* Time-averaged live tokens per (layer, head) of a fixed budget B over a
 * window of T tokens: mean over t = 1..T of min(t, B). Real B allowed (the
 * closed form B(2T - B + 1) / 2T for B <= T, (T + 1) / 2 above). */
double dms_eval_budget_held(double budget, int T);
/* The budget whose time-averaged live tokens over T tokens equal `held`:
 * the real root of B(2T - B + 1) / 2T = held (*b_real), rounded to the
 * integer in [1, T] whose dms_eval_budget_held is closest. held >= (T+1)/2
 * (nothing saved) gives T. Returns the integer budget, -1 for held <= 0 or
 * T < 1. */
int dms_eval_match_budget(double held, int T, double *b_real);

/* ---------------- multiple choice (eval_mc.c) ---------------- */

/* A fixed shuffle of n <= 26 choices for one question: order[k] is the
 * original index shown as letter 'A' + k (original 0 = the correct answer),
 * a pure function of (seed, question). Returns the correct letter. */
int dms_eval_shuffle_choices(uint64_t seed, int64_t question, int n, int *order);
/* The user message of a multiple-choice question (simple-evals' wording:
 * "... the last line ... 'Answer: $LETTER' ..."), choices in the given
 * order as "A) ...". malloc'd. */
char *dms_eval_mc_prompt(const char *question, const char *const *choices, int n);

/* ---------------- prompts (eval_prompt.c) ---------------- */

/* The ids of one user message as the model's chat template renders it with
 * the generation prompt (thinking stays on: the template's default), or the
 * plain text when the model has no template; BOS prepended when the
 * tokenizer asks for it. *ids malloc'd. */
int dms_eval_encode_user(const dms_tokenizer *tok, const char *user, int32_t **ids, int *n, dms_err *err);
/* Plain text to ids (special tokens stay text, no BOS). */
int dms_eval_encode_plain(const dms_tokenizer *tok, const char *text, size_t len, int32_t **ids, int *n,
                          dms_err *err);

/* ---------------- needle in a haystack (eval_niah.c) ---------------- */

typedef struct dms_eval_niah {
    int length, depth, sample; /* asked-for prompt tokens, depth in %, sample */
    char code[8];              /* the 6-digit number to retrieve */
    char color[16], animal[16];
    int needle_sentence;       /* haystack sentences before the needle */
    int code_pos[8], n_code;   /* prompt positions of the code's tokens (n_code 0: not found as its own tokens) */
    int32_t *ids;              /* the rendered prompt (malloc'd) */
    int n_ids;                 /* its real length (about `length`) */
} dms_eval_niah;

/* Builds one prompt of about `length` tokens: filler sentences assembled
 * from fixed word lists, the needle "The secret code of the {color}
 * {animal} is {code}." after depth% of them, then the question, rendered
 * through the chat template. Deterministic in (seed, length, depth,
 * sample). */
int dms_eval_niah_build(const dms_tokenizer *tok, uint64_t seed, int length, int depth, int sample,
                        dms_eval_niah *out, dms_err *err);
void dms_eval_niah_free(dms_eval_niah *it);

/* ---------------- progress (eval_progress.c) ---------------- */

typedef struct dms_eval_progress {
    char label[256];
    int total, done, skipped; /* items: all, finished in this process, finished before */
    double tokens;            /* tokens processed by this process */
    double t0, last_draw;
    int tty, quiet;
} dms_eval_progress;

/* A bar on stderr: items done (of total, resumed ones included), tokens/s
 * and ETA; redrawn in place on a terminal (at most every 0.5 s), one line
 * per finished item otherwise. quiet: nothing. */
void dms_eval_progress_init(dms_eval_progress *p, const char *label, int total, int skipped, int quiet);
void dms_eval_progress_tokens(dms_eval_progress *p, double n);
void dms_eval_progress_item(dms_eval_progress *p);
void dms_eval_progress_end(dms_eval_progress *p);
/* "1h02m" / "3m07s" */
void dms_eval_fmt_duration(char *buf, size_t n, double seconds);

/* ---------------- batched sampling (eval_gen.c) ---------------- */

typedef struct dms_eval_sampling {
    float temperature; /* <= 0: greedy */
    float top_p;       /* >= 1: off */
    float min_p;       /* <= 0: off; tokens below min_p * p(top) are dropped before top-k/top-p */
    int top_k;         /* <= 0: off */
} dms_eval_sampling;

typedef struct dms_eval_request {
    const int32_t *prompt;
    int n_prompt;
    int max_new;       /* capped at the model's context */
    uint64_t seed;     /* the sampler's seed for this request */
    const int *watch;  /* prompt positions whose keeping is measured once the prompt is read (NULL: none) */
    int n_watch;
} dms_eval_request;

typedef struct dms_eval_output {
    const int32_t *ids; /* the generated tokens (a stop token included) */
    int n, max_new;
    int stopped;        /* ended by a stop token */
    int hit_limit;      /* ran out of tokens (max_new reached without a stop) */
    int prompt_tokens;
    dms_kv_stats kv;    /* dms_kv_seq_stats at the end */
    int decode_steps;   /* forward calls that fed a generated token */
    double reads;       /* KV entries read over those steps, summed over layers and KV heads */
    double reads_vanilla; /* the same for a cache that keeps everything */
    double seconds;     /* admission to finish */
    /* the request's watched positions when its whole prompt had been read (-1 without any): the fraction of
       (layer, KV head) lanes holding every one of them, and of (lane, position) pairs held */
    double watch_lanes, watch_held;
} dms_eval_output;

/* Live tokens of sequence seq summed over its (layer, KV head) lanes. */
double dms_eval_lanes_held(const dms_kv_paged *kv, const dms_model *m, int seq);

/* Called once per finished request (in finishing order); non-zero stops. */
typedef int (*dms_eval_gen_cb)(int index, const dms_eval_output *out, void *ctx, dms_err *err);

/* Runs n requests through one runtime (kv: policy, budget, ...), at most
 * `batch` at once: each decode step is one dms_kv_decode over every active
 * sequence. Dense policies prefill a prompt in chunks when it is admitted;
 * scored ones (tova, h2o) feed prompt tokens through the same batched
 * decode steps, one per step. progress may be NULL. */
int dms_eval_generate(const dms_model *m, const dms_kv_opts *kv, const dms_eval_sampling *s, int batch,
                      const dms_eval_request *req, int n, dms_eval_gen_cb cb, void *ctx,
                      dms_eval_progress *progress, dms_err *err);

/* ---------------- teacher-forced KL (eval_kl.c) ---------------- */

typedef struct dms_eval_kl_window {
    int index, tokens;        /* caller's window index, T */
    double kl_sum, kl_max;    /* KL(vanilla || policy) in nats over the T positions */
    double nll_sum, ref_nll_sum; /* next-token NLL of policy / vanilla over T - 1 positions */
    int nll_count;
    double held_sum;          /* sum over positions of live tokens per (layer, head) after the token */
    double reads_sum;         /* KV entries read, summed over positions, layers and KV heads */
    double reads_vanilla_sum; /* the same for the vanilla cache */
    dms_kv_stats kv;          /* dms_kv_seq_stats of the policy run at the end */
    const int *lane_end;      /* [layers * KV heads] live tokens of each lane at the end (valid in the callback) */
    const double *lane_held;  /* [layers * KV heads] each lane's live tokens averaged over the T positions (the
                                 same trapezoid rule as held_sum; valid in the callback) */
    double seconds;
} dms_eval_kl_window;

typedef int (*dms_eval_kl_cb)(const dms_eval_kl_window *w, void *ctx, dms_err *err);

/* KL of one position from two logit rows, log-softmax in double; the NLL of
 * `target` under each (target < 0: none). */
double dms_eval_kl_row(const float *p_logits, const float *q_logits, int V, int target, double *nll_p,
                       double *nll_q);
/* Teacher-forced windows: windows[k] holds T ids. The vanilla run (ref, or
 * m when ref is NULL, under policy full) and the policy run (m under kv)
 * see each window as a fresh sequence, in chunks of `chunk` tokens
 * (prefill, exact for dms/full/window/sinks); scored policies go token by
 * token through batched decode steps over up to `batch` windows at once.
 * Live tokens are read after every forward call and summed by the
 * trapezoid rule between calls (exact per token for scored policies and
 * --chunk 1). progress may be NULL. */
int dms_eval_kl(const dms_model *m, const dms_model *ref, const dms_kv_opts *kv, const int32_t *const *windows,
                const int *index, int n, int T, int chunk, int batch, dms_eval_kl_cb cb, void *ctx,
                dms_eval_progress *progress, dms_err *err);

/* ---------------- JSONL and results (eval_io.c) ---------------- */

typedef struct dms_eval_rows {
    cJSON **rows;   /* JSON objects */
    int *line;      /* their line numbers */
    int n, cap;
} dms_eval_rows;

/* Reads a JSONL file: one object per non-blank line; "PATH:LINE: not valid
 * JSON" / "... expected a JSON object" on bad lines. */
int dms_eval_read_jsonl(const char *path, dms_eval_rows *out, dms_err *err);
void dms_eval_rows_free(dms_eval_rows *r);
/* A string field of row `i` (a number is written as text, e.g. an integer
 * answer); NULL + "PATH:LINE: missing field 'NAME'" when absent. The
 * returned text lives as long as the rows (numbers: in a per-row cache). */
const char *dms_eval_row_str(dms_eval_rows *r, int i, const char *path, const char *name, dms_err *err);

/* The per-item log of a run (<task>-<policy>-<tag>.jsonl): existing rows
 * are read back (a last line cut short by a kill is dropped), each must
 * carry this run's fingerprint, and new rows are appended and flushed one
 * line at a time. */
typedef struct dms_eval_log {
    char *path;
    FILE *f;
    dms_eval_rows rows;
} dms_eval_log;

int dms_eval_log_open(dms_eval_log *lg, const char *path, const char *fingerprint, dms_err *err);
int dms_eval_log_has(const dms_eval_log *lg, const char *key);
/* Appends rec (ownership taken) as one line. */
int dms_eval_log_append(dms_eval_log *lg, cJSON *rec, dms_err *err);
void dms_eval_log_close(dms_eval_log *lg);
/* Every result document (*.json with "task", "policy" and "metric") in dir,
 * sorted by task, policy, KV CR; *n may be 0. */
int dms_eval_list_results(const char *dir, cJSON ***docs, int *n, dms_err *err);
void dms_eval_free_results(cJSON **docs, int n);
/* Number of a JSON object's field, or NAN. */
double dms_eval_num(const cJSON *o, const char *key);

/* ---------------- runs (eval_tasks.c, eval_run.c) ---------------- */

typedef enum { DMS_EVAL_KL = 0, DMS_EVAL_NIAH, DMS_EVAL_AIME, DMS_EVAL_GPQA } dms_eval_task;

int dms_eval_task_from_name(const char *name); /* -1 when unknown */
const char *dms_eval_task_name(dms_eval_task t);

#define DMS_EVAL_MAX_LIST 32

typedef struct dms_eval_config {
    dms_eval_task task;
    const char *model, *reference, *data, *match, *out_dir, *tag;
    const char *backend_name;  /* recorded in the result */
    dms_kv_opts kv;            /* policy, budget, sinks, block_size, max_chunk (prefill chunk) */
    float cr;                  /* > 0: budget from a target KV CR */
    int by_lane;               /* kl with match: a budget per lane shaped like the DMS run's lanes */
    int window_tokens;         /* kl: T (default 512) */
    int windows;               /* kl: windows at most (0: every full window of the text) */
    int chunk;                 /* kl: tokens per forward call (default 32) */
    int lengths[DMS_EVAL_MAX_LIST], n_lengths; /* niah */
    int depths[DMS_EVAL_MAX_LIST], n_depths;
    int samples;               /* per problem / question / niah cell */
    int batch;                 /* sequences decoded together */
    int max_tokens;            /* new tokens at most */
    int limit;                 /* > 0: stop after this many new items */
    dms_eval_sampling sampling;
    uint64_t seed;
    int quiet;                 /* no progress bar */
} dms_eval_config;

/* Defaults of every task's flags (docs/eval.md); task-dependent defaults
 * (max_tokens, sampling, samples) are filled by dms_eval_config_finish. */
void dms_eval_config_default(dms_eval_config *c);
/* Fills task-dependent defaults left unset (negative) and checks the
 * combination (policy and budget, ranges); one-line errors. */
int dms_eval_config_finish(dms_eval_config *c, dms_err *err);

/* What a run left: the result document's and the item log's paths, and
 * whether every item is done. */
typedef struct dms_eval_outcome {
    char json_path[4096], jsonl_path[4096];
    int complete, items, items_new, items_skipped;
    cJSON *result; /* the result document (caller frees with cJSON_Delete) */
} dms_eval_outcome;

/* One whole run on backend be: reads the data, loads the model(s), resolves
 * the budget, resumes from the item log, runs the items not yet done (up
 * to cfg->limit), aggregates every item of the log and writes
 * <out>/<task>-<policy>-<tag>.json. */
int dms_eval_run(const dms_eval_config *cfg, const dms_backend *be, dms_eval_outcome *out, dms_err *err);

/* ---- per-task pieces (eval_tasks.c), used by eval_run.c ---- */

/* The task's items read from cfg->data before any model is loaded (aime,
 * gpqa: the JSONL rows checked field by field; kl: the text). */
typedef struct dms_eval_data {
    dms_eval_rows rows;   /* aime, gpqa */
    char *text;           /* kl */
    size_t text_len;
} dms_eval_data;

int dms_eval_data_read(const dms_eval_config *c, dms_eval_data *d, dms_err *err);
void dms_eval_data_free(dms_eval_data *d);
/* The aggregate of every item row of a task into `result` (metric, its
 * standard error, per-cell tables, KV statistics). */
int dms_eval_aggregate(dms_eval_task task, cJSON *const *rows, int n, cJSON *result, dms_err *err);
/* KV statistics of one sequence into a record. */
void dms_eval_add_kv(cJSON *rec, const dms_kv_stats *kv);

#endif
