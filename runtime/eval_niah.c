/* eval_niah.c - the needle-in-a-haystack prompts of `dms eval --task niah`
 * (eval.h), made here so that no benchmark data is needed: filler
 * sentences assembled from fixed word lists (no digits in them, so the
 * needle's number is the only one), the needle "The secret code of the
 * {color} {animal} is {6-digit number}." after depth% of the sentences,
 * and a question asking for it, rendered through the chat template. Every
 * choice is drawn from a counter RNG keyed by (seed, length, depth,
 * sample), so a prompt is the same in every run and under every policy.
 * The code's token positions are kept, so that the runtime can say which
 * lanes still hold the needle when the question has been read. */
#include "runtime/eval.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/dms_rng.h"

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

static const char *const subjects[] = {
    "The old farmer",  "A young painter",  "The village baker", "Every traveller",     "The quiet librarian",
    "A tired sailor",  "The careful engineer", "Our neighbour", "The school teacher",  "A curious child",
    "The night guard", "The market seller", "A wandering poet", "The ship captain",    "The head gardener",
};
static const char *const verbs[] = {
    "walked past", "talked about", "looked at",  "wrote a letter about", "thought about", "cleaned",
    "painted",     "carried",      "repaired",   "counted",              "measured",      "described",
    "forgot about", "dreamed of",  "sang about",
};
static const char *const objects[] = {
    "the wooden bridge", "a basket of apples", "the morning train", "the red barn",      "a pile of old books",
    "the garden wall",   "the river boats",    "a broken clock",    "the stone tower",   "the wheat fields",
    "a box of candles",  "the harbour lights", "the empty chapel",  "a jar of honey",    "the narrow stairs",
};
static const char *const tails[] = {
    "before sunrise",       "in the afternoon", "after the rain", "during the festival", "near the square",
    "on a cold evening",    "without a word",   "for a long time", "with great care",    "at the end of the week",
    "while the bells rang", "under a grey sky", "in the spring",  "after supper",        "by the old mill",
};
static const char *const colors[] = {"red",    "blue",  "green", "yellow", "purple", "orange",
                                     "silver", "golden", "black", "white",  "pink",   "brown"};
static const char *const animals[] = {"fox",  "owl",  "tiger", "rabbit",  "dolphin", "eagle",
                                      "wolf", "turtle", "horse", "penguin", "lion",    "otter"};

static uint64_t draw(uint64_t *st) {
    *st += 0x9e3779b97f4a7c15ull;
    return dms_mix64(*st);
}
static const char *pick(uint64_t *st, const char *const *list, size_t n) { return list[draw(st) % n]; }

typedef struct {
    char *s;
    size_t n, cap;
} sbuf;

static int put(sbuf *b, const char *s) {
    const size_t l = strlen(s);
    if (b->n + l + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap < b->n + l + 1) cap *= 2;
        char *p = realloc(b->s, cap);
        if (!p) return -1;
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->n, s, l + 1);
    b->n += l;
    return 0;
}

/* Where the code's tokens sit in the prompt: the last run of ids equal to
 * the code encoded alone (digits tokenize alike in context for the
 * tokenizers we load); n_code 0 when it is not there as its own tokens. */
static int find_code(const dms_tokenizer *tok, dms_eval_niah *it, dms_err *err) {
    int32_t *c = NULL;
    int n = 0;
    it->n_code = 0;
    if (dms_eval_encode_plain(tok, it->code, strlen(it->code), &c, &n, err) != 0) return -1;
    if (n >= 1 && n <= (int)(sizeof it->code_pos / sizeof it->code_pos[0]))
        for (int p = it->n_ids - n; p >= 0; p--)
            if (memcmp(it->ids + p, c, sizeof(int32_t) * (size_t)n) == 0) {
                for (int i = 0; i < n; i++) it->code_pos[i] = p + i;
                it->n_code = n;
                break;
            }
    free(c);
    return 0;
}

void dms_eval_niah_free(dms_eval_niah *it) {
    free(it->ids);
    it->ids = NULL;
}

int dms_eval_niah_build(const dms_tokenizer *tok, uint64_t seed, int length, int depth, int sample,
                        dms_eval_niah *out, dms_err *err) {
    memset(out, 0, sizeof *out);
    out->length = length;
    out->depth = depth;
    out->sample = sample;
    if (depth < 0 || depth > 100) return dms_errf(err, "niah: depth %d%% is outside 0..100", depth);
    uint64_t st = dms_rng_key(seed, (uint64_t)length, (uint64_t)depth, (uint64_t)sample, 0x6e696168ull);
    snprintf(out->color, sizeof out->color, "%s", pick(&st, colors, N_OF(colors)));
    snprintf(out->animal, sizeof out->animal, "%s", pick(&st, animals, N_OF(animals)));
    snprintf(out->code, sizeof out->code, "%06d", 100000 + (int)(draw(&st) % 900000));
    char needle[160], question[200];
    snprintf(needle, sizeof needle, "The secret code of the %s %s is %s.", out->color, out->animal, out->code);
    snprintf(question, sizeof question, "What is the secret code of the %s %s? Answer with the number only.",
             out->color, out->animal);

    /* what the template, the needle and the question take */
    char bare[400];
    snprintf(bare, sizeof bare, "%s\n\n%s", needle, question);
    int32_t *ids = NULL;
    int n_ids = 0;
    if (dms_eval_encode_user(tok, bare, &ids, &n_ids, err) != 0) return -1;
    free(ids);
    const int room = length - n_ids;
    if (room <= 0)
        return dms_errf(err, "niah: a length of %d tokens leaves no room for the haystack (the needle and question "
                             "take %d)", length, n_ids);

    /* filler sentences while they fit (token counts of " sentence" add up) */
    char **sent = NULL;
    int n_sent = 0, cap = 0, used = 0, rc = 0;
    for (;;) {
        char s[256];
        snprintf(s, sizeof s, " %s %s %s %s.", pick(&st, subjects, N_OF(subjects)), pick(&st, verbs, N_OF(verbs)),
                 pick(&st, objects, N_OF(objects)), pick(&st, tails, N_OF(tails)));
        int32_t *sid = NULL;
        int sn = 0;
        if (dms_eval_encode_plain(tok, s, strlen(s), &sid, &sn, err) != 0) {
            rc = -1;
            break;
        }
        free(sid);
        if (used + sn > room) break;
        if (n_sent == cap) {
            cap = cap ? cap * 2 : 64;
            char **ns = realloc(sent, sizeof(char *) * (size_t)cap);
            if (!ns) {
                rc = dms_errf(err, "out of memory");
                break;
            }
            sent = ns;
        }
        sent[n_sent] = strdup(s + 1); /* without the leading space */
        if (!sent[n_sent]) {
            rc = dms_errf(err, "out of memory");
            break;
        }
        n_sent++;
        used += sn;
    }
    out->needle_sentence = (int)((double)depth / 100.0 * n_sent + 0.5);
    sbuf b = {0};
    int oom = 0;
    for (int i = 0; rc == 0 && i <= n_sent; i++) {
        if (i == out->needle_sentence) oom |= put(&b, i ? " " : "") | put(&b, needle);
        if (i < n_sent) oom |= put(&b, (i || out->needle_sentence == 0) ? " " : "") | put(&b, sent[i]);
    }
    if (rc == 0) oom |= put(&b, "\n\n") | put(&b, question);
    if (rc == 0 && oom) rc = dms_errf(err, "out of memory");
    for (int i = 0; i < n_sent; i++) free(sent[i]);
    free(sent);
    if (rc == 0) rc = dms_eval_encode_user(tok, b.s, &out->ids, &out->n_ids, err);
    free(b.s);
    if (rc == 0) rc = find_code(tok, out, err);
    return rc;
}
