/* eval_mc.c - multiple-choice questions (GPQA) for eval.h: a shuffle of
 * the choices fixed per (seed, question), so that every run and every
 * policy sees the same letters and the correct one is known, and the
 * question's prompt in the common simple-evals wording. */
#include "runtime/eval.h"

#include <stdlib.h>
#include <string.h>

#include "kernels/dms_rng.h"

int dms_eval_shuffle_choices(uint64_t seed, int64_t question, int n, int *order) {
    for (int i = 0; i < n; i++) order[i] = i;
    for (int i = n - 1; i > 0; i--) { /* Fisher-Yates on the counter RNG */
        const uint64_t h = dms_rng_key(seed, (uint64_t)question, 0x67707161ull, 0, (uint64_t)i);
        const int j = (int)(h % (uint64_t)(i + 1));
        const int t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    for (int k = 0; k < n; k++)
        if (order[k] == 0) return 'A' + k;
    return 0;
}

char *dms_eval_mc_prompt(const char *question, const char *const *choices, int n) {
    static const char head[] =
        "Answer the following multiple choice question. The last line of your response should be of the "
        "following format: 'Answer: $LETTER' (without quotes) where LETTER is one of ";
    static const char tail[] = ". Think step by step before answering.\n\n";
    size_t len = sizeof head + sizeof tail + strlen(question) + 2 + (size_t)n;
    for (int k = 0; k < n; k++) len += strlen(choices[k]) + 5;
    char *s = malloc(len + 1);
    if (!s) return NULL;
    /* (appended piece by piece: len above counts every byte) */
    size_t at = 0;
    memcpy(s, head, sizeof head - 1);
    at += sizeof head - 1;
    for (int k = 0; k < n; k++) s[at++] = (char)('A' + k);
    at += (size_t)snprintf(s + at, len + 1 - at, "%s%s\n", tail, question);
    for (int k = 0; k < n; k++) at += (size_t)snprintf(s + at, len + 1 - at, "\n%c) %s", 'A' + k, choices[k]);
    s[at] = '\0';
    return s;
}
