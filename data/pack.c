/* pack.c - the packer of pack.h: streams documents into token shards in
 * the chosen packing (reference rows are assembled in memory, one row at
 * a time, and written whole) and counts what both packings keep. */
#include "data/pack.h"

#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct dms_packer {
    dms_packer_opts o;
    char *dir, *source;
    dms_shard_writer *w; /* the open shard (NULL until a token is written) */
    dms_pack_stats st;
    /* reference: the row being filled, and the lengths of its documents */
    uint32_t *row_ids;
    uint8_t *row_mask;
    size_t *row_docs;
    size_t fill, n_row_docs;
    /* counting both packings over the same documents */
    int64_t count_shard; /* documents: tokens in the current shard */
    int64_t count_fill;  /* reference: tokens in the current row */
};

void dms_pack_shard_name(char *out, size_t cap, const char *dir, int64_t index) {
    snprintf(out, cap, "%s/shard-%05" PRId64 ".h5", dir, index);
}

void dms_packer_abort(dms_packer *p) {
    if (!p) return;
    dms_shard_writer_abort(p->w);
    free(p->dir);
    free(p->source);
    free(p->row_ids);
    free(p->row_mask);
    free(p->row_docs);
    free(p);
}

dms_packer *dms_packer_create(const dms_packer_opts *o, dms_err *err) {
    if (o->max_len <= 0 || o->shard_tokens <= 0 || !o->dir) {
        dms_errf(err, "packer: needs max_len > 0, shard_tokens > 0 and a folder");
        return NULL;
    }
    dms_packer *p = calloc(1, sizeof *p);
    const size_t T = (size_t)o->max_len;
    int ok = p && (p->dir = strdup(o->dir)) && (p->source = strdup(o->source ? o->source : ""));
    if (ok && o->packing == DMS_PACK_REFERENCE)
        ok = (p->row_ids = malloc(sizeof(uint32_t) * T)) && (p->row_mask = malloc(T)) &&
             (p->row_docs = malloc(sizeof(size_t) * T));
    if (!ok) {
        dms_packer_abort(p);
        dms_errf(err, "packer: out of memory for rows of %d tokens", o->max_len);
        return NULL;
    }
    p->o = *o;
    p->o.dir = p->dir;
    p->o.source = p->source;
    return p;
}

/* Closes the open shard (if any) and counts its rows. */
static int flush_shard(dms_packer *p, dms_err *err) {
    if (!p->w) return 0;
    const int64_t n = dms_shard_writer_n_tokens(p->w);
    dms_shard_writer *w = p->w;
    p->w = NULL;
    if (dms_shard_writer_close(w, err) != 0) return -1;
    p->st.rows += n / p->o.max_len;
    p->st.shards++;
    return 0;
}

static int write_doc(dms_packer *p, const uint32_t *ids, const uint8_t *mask, size_t n, dms_err *err) {
    if (!p->w) {
        char path[PATH_MAX];
        dms_pack_shard_name(path, sizeof path, p->dir, p->st.shards);
        p->w = dms_shard_writer_create(path, p->o.tokenizer_hash, p->o.max_len, p->o.vocab_size, p->source,
                                       p->o.with_loss_mask, err);
        if (!p->w) return -1;
        dms_shard_writer_set_packing(p->w, p->o.packing);
    }
    return dms_shard_writer_add(p->w, ids, mask, n, err);
}

/* Counts what each packing keeps when an n-token document arrives. */
static void count_doc(dms_packer *p, size_t n) {
    const int64_t T = p->o.max_len;
    p->count_shard += (int64_t)n; /* documents: a shard's partial last row is dropped */
    if (p->count_shard >= p->o.shard_tokens) {
        p->st.kept_rows[DMS_PACK_DOCUMENTS] += p->count_shard / T;
        p->count_shard = 0;
    }
    const int64_t room = T - p->count_fill; /* reference: the overflow is dropped */
    p->count_fill += (int64_t)n < room ? (int64_t)n : room;
    if (p->count_fill == T) {
        p->st.kept_rows[DMS_PACK_REFERENCE]++;
        p->count_fill = 0;
    }
}

int dms_packer_add(dms_packer *p, const uint32_t *ids, const uint8_t *mask, size_t n, dms_err *err) {
    if (n == 0) return dms_errf(err, "packer: empty document");
    count_doc(p, n);
    p->st.documents++;
    p->st.tokens += (int64_t)n;
    if (p->o.packing == DMS_PACK_DOCUMENTS) {
        if (write_doc(p, ids, mask, n, err) != 0) return -1;
        return dms_shard_writer_n_tokens(p->w) >= p->o.shard_tokens ? flush_shard(p, err) : 0;
    }
    /* reference: the part that fits into the row; the rest is dropped */
    const size_t T = (size_t)p->o.max_len, take = n < T - p->fill ? n : T - p->fill;
    memcpy(p->row_ids + p->fill, ids, sizeof(uint32_t) * take);
    if (mask)
        memcpy(p->row_mask + p->fill, mask, take);
    else
        memset(p->row_mask + p->fill, 1, take);
    p->row_docs[p->n_row_docs++] = take;
    p->fill += take;
    if (p->fill < T) return 0;
    for (size_t i = 0, at = 0; i < p->n_row_docs; at += p->row_docs[i], i++)
        if (write_doc(p, p->row_ids + at, p->row_mask + at, p->row_docs[i], err) != 0) return -1;
    p->fill = p->n_row_docs = 0;
    return dms_shard_writer_n_tokens(p->w) >= p->o.shard_tokens ? flush_shard(p, err) : 0;
}

void dms_packer_stats(const dms_packer *p, dms_pack_stats *st) {
    *st = p->st;
    if (p->w) st->shards++;
    const int64_t T = p->o.max_len;
    st->kept_rows[DMS_PACK_DOCUMENTS] += p->count_shard / T; /* the shard as it would be closed now */
    for (int k = 0; k < 2; k++) st->kept[k] = st->kept_rows[k] * T;
}

int dms_packer_finish(dms_packer *p, dms_pack_stats *st, dms_err *err) {
    /* reference: an unfinished last row is dropped (p->fill tokens) */
    const int rc = flush_shard(p, err);
    if (rc == 0) dms_packer_stats(p, st);
    dms_packer_abort(p);
    return rc;
}
