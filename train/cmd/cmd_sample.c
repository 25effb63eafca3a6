/*
 * cmd_sample.c: `llamac sample`: K samples of every prompt of a JSONL file
 * through the sampling engine (model/engine.h), one JSONL line per sample.
 *
 * Determinism: prompt i's request is seeded sample_seed(--seed, i) and its
 * sample j draws from sample_seed(that, j), and the engine computes each
 * row the same way whatever it shares a step with, so a sample's tokens
 * depend on the model, its prompt, --seed, i and j only: never on
 * --max-seqs, --max-rows, --threads, the number of ranks or a resume.
 *
 * Output: lines in prompt order, a prompt's K samples in sample order; a
 * prompt's lines are appended (one write, then fdatasync) once all its
 * samples and those of every earlier prompt are done, so a killed run
 * loses only the prompts not yet written. A rerun with the same --out keeps
 * the whole prompts at its start (cutting a torn last line or the lines of
 * a prompt left incomplete) and samples the rest; OUT.settings.json holds
 * what the lines depend on and a rerun with other settings is refused.
 *
 * Stop strings are looked for in each sample's text as its tokens arrive
 * (the new tokens' bytes only, a string may straddle tokens); the text is
 * cut before the stop string, the token ids keep the token that completed
 * it.
 *
 * Under mpirun prompt i goes to rank i % ranks; after every engine step the
 * ranks send their finished prompts' lines to rank 0, which writes the one
 * file, the same bytes one process writes.
 */
#include <dirent.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../data/chat.h"
#include "../../data/prompts.h"
#include "../../dist/dist.h"
#include "../../model/engine.h"
#include "../io/iofile.h"
#include "../io/source.h"
#include "../loop/rollout.h"
#include "../loop/run.h"
#include "../proc/cli.h"
#include "../proc/device.h"
#include "cmds.h"

/* The batch and length the model is built for: the engine decodes with its
 * own buffers and reads only the weights, so the smallest shape will do. */
#define MODEL_B 1
#define MODEL_T 1
/* Tags of the lines sent to rank 0 (above the pipeline's, pipeline.c). */
#define TAG_LINES ((1 << 20) + 16)

// ----------------------------------------------------------------------------
// a growable byte buffer

typedef struct {
    char *p;
    size_t n, cap;
} Buf;

static void buf_put(Buf *b, const void *s, size_t n) {
    if (b->n + n + 1 > b->cap) b->p = xrealloc(b->p, b->cap = 2 * (b->n + n) + 256);
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
static void buf_str(Buf *b, const char *s) { buf_put(b, s, strlen(s)); }

/* v as compact JSON (strings escaped, reals with 17 digits: exact) */
static void buf_json(Buf *b, const json_t *v) {
    char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    buf_str(b, s);
    free(s);
}

/* The shortest decimal that reads back as f (9 digits at most): JSON has
 * no infinities, so a non-finite value is null. */
static void buf_float(Buf *b, float f) {
    char s[32];
    if (!isfinite(f)) {
        buf_str(b, "null");
        return;
    }
    for (int p = 1; p <= 9; p++) {
        snprintf(s, sizeof s, "%.*g", p, (double)f);
        if (strtof(s, NULL) == f) break;
    }
    buf_str(b, s);
}

// ----------------------------------------------------------------------------
// the run

/* One prompt: its samples' lines until they are written. */
typedef struct {
    int done;          /* samples finished */
    char **line;       /* (K) each sample's line, '\n' ended */
    double *t_first;   /* (K) */
    RolloutText *txt;  /* (K) while its samples run */
    long gen;          /* completion tokens of its samples */
} Slot;

typedef struct {
    const Rollout *ro; /* the prompts, tokenizer and stop ids */
    int K, logprobs_t1;
    char **stops;      /* --stop */
    size_t nstops;
    Slot *slot;        /* (ps->n) */
    long outstanding;  /* samples queued or running on this rank */
    size_t *ready;     /* finished prompts not yet sent to rank 0 */
    size_t nready, cap_ready;
    long gen_tokens;   /* completion tokens finished on this rank */
} Run;

/* EngineCallbacks.on_token: the token's bytes onto the text, then the stop
 * strings over the bytes that could end in them. */
static int on_token(void *ud, EngineSeq *s) {
    Run *R = ud;
    Slot *sl = s->user;
    size_t i = (size_t)(sl - R->slot);
    const PromptSet *ps = &R->ro->ps;
    size_t k0 = ps->stop_off[i], k1 = ps->stop_off[i + 1];
    return rollout_text_token(&sl->txt[s->sample], R->ro, s->tokens[s->n - 1], R->stops, R->nstops, ps->stop + k0,
                              k1 - k0);
}

static int our_key(const char *k) {
    static const char *const ours[] = {"index", "sample", "text", "token_ids", "logprobs", "logprobs_t1",
                                       "finish_reason", "prompt_tokens", "completion_tokens"};
    for (size_t i = 0; i < sizeof ours / sizeof ours[0]; i++)
        if (strcmp(k, ours[i]) == 0) return 1;
    return 0;
}

/* The output line of a finished sample. */
static char *sample_line(const Run *R, size_t i, const EngineSeq *s, const RolloutText *st) {
    Buf b = {0};
    char num[160];
    snprintf(num, sizeof num, "{\"index\":%zu", i);
    buf_str(&b, num);
    const char *key;
    json_t *val;
    json_object_foreach(R->ro->ps.obj[i], key, val) {
        if (our_key(key)) continue; /* ours win */
        json_t *k = json_string(key);
        buf_str(&b, ",");
        buf_json(&b, k);
        buf_str(&b, ":");
        buf_json(&b, val);
        json_decref(k);
    }
    snprintf(num, sizeof num, ",\"sample\":%d,\"text\":", s->sample);
    buf_str(&b, num);
    char *txt = NULL;
    size_t tcap = 0, tl = tok_utf8_lossy(st->text ? st->text : "", st->len, &txt, &tcap);
    json_t *js = json_stringn(txt ? txt : "", tl);
    LC_ASSERT(js); /* tok_utf8_lossy made it valid UTF-8 */
    buf_json(&b, js);
    json_decref(js);
    free(txt);
    buf_str(&b, ",\"token_ids\":[");
    for (int k = 0; k < s->n; k++) {
        snprintf(num, sizeof num, k ? ",%d" : "%d", s->tokens[k]);
        buf_str(&b, num);
    }
    for (int t1 = 0; t1 <= R->logprobs_t1; t1++) {
        const float *lp = t1 ? s->logprob_t1 : s->logprob;
        buf_str(&b, t1 ? "],\"logprobs_t1\":[" : "],\"logprobs\":[");
        for (int k = 0; k < s->n; k++) {
            if (k) buf_str(&b, ",");
            buf_float(&b, lp ? lp[k] : NAN);
        }
    }
    snprintf(num, sizeof num, "],\"finish_reason\":\"%s\",\"prompt_tokens\":%d,\"completion_tokens\":%d}\n",
             /* a stop string on the last allowed token still ends on it */
             st->stopped ? "stop" : finish_names[s->finish], s->n_prompt, s->n);
    buf_str(&b, num);
    return b.p;
}

static void on_done(void *ud, EngineSeq *s) {
    Run *R = ud;
    Slot *sl = s->user;
    size_t i = (size_t)(sl - R->slot);
    RolloutText *st = &sl->txt[s->sample];
    sl->line[s->sample] = sample_line(R, i, s, st);
    sl->t_first[s->sample] = s->t_first;
    rollout_text_free(st);
    sl->gen += s->n;
    R->gen_tokens += s->n;
    R->outstanding--;
    if (++sl->done < R->K) return;
    free(sl->txt);
    sl->txt = NULL;
    if (R->nready == R->cap_ready) R->ready = xrealloc(R->ready, (R->cap_ready = 2 * R->cap_ready + 16) * sizeof *R->ready);
    R->ready[R->nready++] = i;
}

static void slot_free(Slot *sl, int K) {
    for (int j = 0; sl->line && j < K; j++) free(sl->line[j]);
    if (sl->txt)
        for (int j = 0; j < K; j++) rollout_text_free(&sl->txt[j]);
    free(sl->line);
    free(sl->t_first);
    free(sl->txt);
    sl->line = NULL;
    sl->t_first = NULL;
    sl->txt = NULL;
}

// ----------------------------------------------------------------------------
// the ranks' finished prompts to rank 0

static void pack_u64(Buf *b, uint64_t v) { buf_put(b, &v, sizeof v); }

static uint64_t unpack_u64(const char **p) {
    uint64_t v;
    memcpy(&v, *p, sizeof v);
    *p += sizeof v;
    return v;
}

/* Every rank sends rank 0 the prompts it finished since the last call
 * (collective: every rank calls it once per step). */
static void exchange(Run *R) {
    const DistGrid *g = dist_grid();
    int K = R->K;
    if (g->rank > 0) {
        Buf b = {0};
        for (size_t r = 0; r < R->nready; r++) {
            Slot *sl = &R->slot[R->ready[r]];
            pack_u64(&b, R->ready[r]);
            pack_u64(&b, (uint64_t)sl->gen);
            buf_put(&b, sl->t_first, (size_t)K * sizeof(double));
            for (int j = 0; j < K; j++) {
                size_t n = strlen(sl->line[j]);
                pack_u64(&b, n);
                buf_put(&b, sl->line[j], n);
            }
            slot_free(sl, K);
        }
        R->nready = 0;
        uint64_t n = b.n;
        dist_send(&n, sizeof n, 0, TAG_LINES);
        if (n) dist_send(b.p, n, 0, TAG_LINES + 1);
        free(b.p);
        return;
    }
    for (int src = 1; src < g->world; src++) {
        uint64_t n;
        dist_recv(&n, sizeof n, src, TAG_LINES);
        if (!n) continue;
        char *data = xmalloc(n);
        dist_recv(data, n, src, TAG_LINES + 1);
        for (const char *p = data; p < data + n;) {
            size_t i = (size_t)unpack_u64(&p);
            LC_ASSERT(i < R->ro->ps.n);
            Slot *sl = &R->slot[i];
            sl->gen = (long)unpack_u64(&p);
            sl->t_first = xmalloc((size_t)K * sizeof(double));
            memcpy(sl->t_first, p, (size_t)K * sizeof(double));
            p += (size_t)K * sizeof(double);
            sl->line = xmalloc((size_t)K * sizeof *sl->line);
            for (int j = 0; j < K; j++) {
                size_t len = (size_t)unpack_u64(&p);
                sl->line[j] = xmalloc(len + 1);
                memcpy(sl->line[j], p, len);
                sl->line[j][len] = 0;
                p += len;
            }
            sl->done = K;
        }
        free(data);
    }
}

// ----------------------------------------------------------------------------
// settings and resume

/* Bytes of a file, or of the regular files of a directory. */
static long long path_bytes(const char *path) {
    struct stat st;
    if (stat(path, &st)) return -1;
    if (!S_ISDIR(st.st_mode)) return (long long)st.st_size;
    DIR *d = opendir(path);
    long long sum = 0;
    struct dirent *de;
    while (d && (de = readdir(d))) {
        char p[PATH_MAX + 256];
        snprintf(p, sizeof p, "%s/%s", path, de->d_name);
        if (stat(p, &st) == 0 && S_ISREG(st.st_mode)) sum += st.st_size;
    }
    if (d) closedir(d);
    return sum;
}

static json_t *abs_path(const char *p) {
    char buf[PATH_MAX];
    return json_string(realpath(p, buf) ? buf : p);
}

static int file_hash(const char *path, uint64_t *h, Err *e) {
    FILE *f = fopen(path, "rb");
    if (!f) return err_set(e, "%s: cannot open", path);
    char buf[1 << 16];
    size_t n;
    *h = HASH_FNV_OFFSET;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) *h = hash_fnv1a(*h, buf, n);
    fclose(f);
    return 0;
}

static json_t *hex64(uint64_t v) {
    char s[24];
    snprintf(s, sizeof s, "%016llx", (unsigned long long)v);
    return json_string(s);
}

/* What a key of the settings file is, in a message. */
static const char *setting_name(const char *key, char *buf, size_t cap) {
    static const struct {
        const char *key, *name;
    } own[] = {{"model-bytes", "--model (its size)"},
               {"adapter-bytes", "--adapter (its size)"},
               {"tokenizer-id", "--tokenizer (its identity)"},
               {"prompts-hash", "--prompts (its content)"}};
    for (size_t i = 0; i < sizeof own / sizeof own[0]; i++)
        if (strcmp(key, own[i].key) == 0) return own[i].name;
    snprintf(buf, cap, "--%s", key);
    return buf;
}

static const char *short_json(const json_t *v, char *buf, size_t cap) {
    char *s = v ? json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT | JSON_REAL_PRECISION(9)) : NULL;
    err_quote(buf, cap, s ? s : "(none)", s ? strlen(s) : 6);
    free(s);
    return buf;
}

/* Refuse an --out sampled with other settings: the first key that differs. */
static int settings_check(const char *out, const char *spath, const json_t *now, Err *e) {
    json_error_t je;
    json_t *was = json_load_file(spath, 0, &je);
    if (!json_is_object(was)) {
        json_decref(was);
        return err_set(e, "--out %s: %s is not a settings file llamac sample wrote; use another --out or delete both",
                       out, spath);
    }
    const char *key;
    json_t *v;
    int rc = 0;
    json_object_foreach((json_t *)now, key, v) {
        json_t *w = json_object_get(was, key);
        if (w && json_equal(v, w)) continue;
        char nb[64], q1[48], q2[48];
        rc = err_set(e, "--out %s: sampled with other settings: %s was %s, now %s (%s); use another --out or delete it",
                     out, setting_name(key, nb, sizeof nb), short_json(w, q1, sizeof q1), short_json(v, q2, sizeof q2),
                     spath);
        break;
    }
    json_decref(was);
    return rc;
}

/* The prompts an --out already holds whole: *done prompts from its start,
 * each K lines of samples 0..K-1, ending at byte *keep; what follows (a
 * torn last line, the first lines of a prompt) is *size - *keep bytes to
 * cut off before appending. */
static int resume_scan(const char *out, int K, size_t N, size_t *done, long long *keep, long long *size, Err *e) {
    *done = 0;
    *keep = *size = 0;
    FILE *f = fopen(out, "rb");
    if (!f) return err_set(e, "--out %s: cannot open", out);
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long long at = 0;
    int j = 0;
    while ((len = getline(&line, &cap, f)) > 0) {
        at += len;
        if (line[len - 1] != '\n') break; /* torn */
        json_t *o = json_loadb(line, (size_t)len, 0, NULL);
        json_t *ix = json_object_get(o, "index"), *sm = json_object_get(o, "sample");
        int ok = json_is_integer(ix) && json_is_integer(sm) && json_integer_value(ix) == (json_int_t)*done &&
                 json_integer_value(sm) == j && *done < N;
        json_decref(o);
        if (!ok) break;
        if (++j == K) {
            j = 0;
            ++*done;
            *keep = at;
        }
    }
    free(line);
    fseek(f, 0, SEEK_END);
    *size = ftell(f);
    fclose(f);
    return 0;
}

// ----------------------------------------------------------------------------
// the command

/* The flags. */
typedef struct {
    const char *model, *tokpath, *adapter, *quant, *prompts, *out, *tname, *device, *stats;
    long K, seed;
    RolloutFlags r;   /* the sampler's and the engine's */
    double rep;
    int ignore_eos, lp_t1, special;
    CliList stop;
} Opts;

/* A run: its inputs, --out, the model and engine, the loop's counters. */
typedef struct {
    Opts o;
    int rank, W;
    SampleParams sp;
    char **stops; /* --stop */
    size_t nstops, cap_stops;
    Rollout ro;             /* the model's config, tokenizer, template, prompts, stop ids */
    json_t *settings;       /* what the lines depend on */
    char spath[PATH_MAX];   /* OUT.settings.json */
    int have_out, fd;
    size_t done0;           /* prompts --out held whole */
    long long keep, size;   /* its bytes to keep, and all of them */
    Device dev;
    Llama m;
    int loaded, opened;
    Engine *g;
    Slot *slot;             /* (ps.n) */
    Run R;
    double t_start, gen_s, prefill_s;
    long steps;
    double *ttft;           /* rank 0: every sample's time to its first token */
    size_t nttft;
} Sampling;

static double median(double *x, size_t n) {
    if (!n) return 0;
    for (size_t i = 1; i < n; i++) /* insertion sort: a few thousand values */
        for (size_t k = i; k > 0 && x[k - 1] > x[k]; k--) {
            double t = x[k];
            x[k] = x[k - 1];
            x[k - 1] = t;
        }
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

static int write_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Everything a bad input can fail on, before the model loads: --stop, the
 * model's config and tokenizer, the template, the prompts, the context. */
static int open_inputs(Sampling *S, Err *e) {
    Opts *o = &S->o;
    for (int k = 0; k < o->stop.n; k++)
        if (prompts_stops_parse(o->stop.v[k], &S->stops, &S->nstops, &S->cap_stops, "--stop", e)) return -1;
    RolloutOpts ro = {o->model, o->tokpath, o->tname, o->prompts, o->special, o->r.ctx, o->r.max_tokens, o->ignore_eos};
    if (rollout_open(&S->ro, &ro, e)) return -1;
    S->opened = 1;
    o->r.ctx = S->ro.ctx;
    return 0;
}

/* What the lines depend on, for OUT.settings.json. Sampling parameters are
 * stored as the float32 the sampler uses, in their shortest decimal. */
static int settings_build(Sampling *S, Err *e) {
    const Opts *o = &S->o;
    uint64_t phash = 0;
    if (file_hash(o->prompts, &phash, e)) return -1;
    json_t *j = S->settings = json_object(), *stops = json_array();
    json_object_set_new(j, "model", abs_path(o->model));
    json_object_set_new(j, "model-bytes", json_integer(path_bytes(o->model)));
    json_object_set_new(j, "adapter", o->adapter ? abs_path(o->adapter) : json_null());
    json_object_set_new(j, "adapter-bytes", json_integer(o->adapter ? path_bytes(o->adapter) : 0));
    if (o->quant) json_object_set_new(j, "quant", json_string(o->quant)); /* other weights, other samples */
    json_object_set_new(j, "tokenizer-id", hex64(S->ro.tok.id));
    json_object_set_new(j, "prompts-hash", hex64(phash));
    json_object_set_new(j, "n", json_integer(o->K));
    json_object_set_new(j, "max-tokens", json_integer(o->r.max_tokens));
    json_object_set_new(j, "temperature", json_real(iofile_short_real(S->sp.temperature)));
    json_object_set_new(j, "top-p", json_real(iofile_short_real(S->sp.top_p)));
    json_object_set_new(j, "top-k", json_integer(o->r.top_k));
    json_object_set_new(j, "min-p", json_real(iofile_short_real(S->sp.min_p)));
    json_object_set_new(j, "repetition-penalty", json_real(iofile_short_real(S->sp.rep_penalty)));
    json_object_set_new(j, "seed", json_integer(o->seed));
    for (size_t k = 0; k < S->nstops; k++) json_array_append_new(stops, json_string(S->stops[k]));
    json_object_set_new(j, "stop", stops);
    json_object_set_new(j, "ignore-eos", json_boolean(o->ignore_eos));
    json_object_set_new(j, "template", S->ro.have_tpl ? json_string(chat_template_name(S->ro.tpl)) : json_null());
    json_object_set_new(j, "special", json_boolean(o->special));
    json_object_set_new(j, "logprobs-t1", json_boolean(o->lp_t1));
    json_object_set_new(j, "ctx", json_integer(o->r.ctx));
    json_object_set_new(j, "device", json_string(o->device));
    return 0;
}

/* What --out already holds (rank 0 reads, every rank learns how many
 * prompts): refused when its settings differ; nothing written yet. */
static int check_out(Sampling *S, Err *e) {
    const char *out = S->o.out;
    snprintf(S->spath, sizeof S->spath, "%s.settings.json", out);
    int bad = 0;
    if (S->rank == 0) {
        S->have_out = access(out, F_OK) == 0;
        if (S->have_out && access(S->spath, F_OK) != 0)
            bad = err_set(e, "--out %s: exists, but %s does not (not a file llamac sample wrote?); use another --out "
                             "or delete it", out, S->spath);
        else if (S->have_out)
            bad = settings_check(out, S->spath, S->settings, e) ||
                  resume_scan(out, (int)S->o.K, S->ro.ps.n, &S->done0, &S->keep, &S->size, e);
    }
    if (dist_allreduce_max_int(bad != 0)) return bad ? -1 : err_set(e, "--out %s: refused on rank 0", out);
    uint64_t d = S->done0;
    dist_bcast(&d, sizeof d, 0);
    S->done0 = (size_t)d;
    return 0;
}

/* The model, the engine, then --out: its settings beside it, its
 * unfinished end cut, opened for appending (rank 0); the banner. */
static int start(Sampling *S, Err *e) {
    const Opts *o = &S->o;
    if (device_load_model(&S->dev, o->device, o->model, o->adapter, o->quant, &S->ro.c, &S->m, MODEL_B, MODEL_T, e)) return -1;
    S->loaded = 1;
    /* the model is the engine's alone: its own copies of the weights go once packed */
    EngineOpts eo = {(int)o->r.max_seqs, (int)o->r.max_rows, (int)o->r.ctx, o->r.kv_tokens, 1};
    if (engine_init(&S->g, &S->m, &eo, e)) return -1;
    int bad = 0;
    if (S->rank == 0) {
        if (!S->have_out) bad = iofile_json_write(S->spath, S->settings, e);
        if (!bad && S->size > S->keep) {
            if (truncate(o->out, S->keep)) bad = err_set(e, "--out %s: cannot cut its unfinished end", o->out);
            else fprintf(stderr, "sample: %s: cut %lld bytes after the last whole prompt (a killed run's unfinished "
                                 "prompt)\n", o->out, S->size - S->keep);
        }
        if (!bad && (S->fd = open(o->out, O_WRONLY | O_CREAT | O_APPEND, 0644)) < 0)
            bad = err_set(e, "--out %s: cannot create", o->out);
    }
    if (dist_allreduce_max_int(bad != 0)) return bad ? -1 : err_set(e, "--out %s: cannot be written on rank 0", o->out);
    if (S->rank == 0) {
        EngineStats es = engine_stats(S->g);
        const LlamaConfig *c = &S->ro.c;
        fprintf(stderr, "sample: %s: %d layers, dim %d, vocab %d; %zu prompts in %s, %zu already in %s; %ld samples "
                        "each, up to %ld tokens\n", o->model, c->n_layers, c->dim, c->vocab, S->ro.ps.n, o->prompts,
                S->done0, o->out, o->K, o->r.max_tokens);
        fprintf(stderr, "sample: KV cache %.1f KiB per token, pool %ld tokens (%.1f MiB); weights %.1f MiB; max-seqs "
                        "%ld, max-rows %ld, ctx %ld, %d threads\n", engine_kv_bytes_per_token(c, S->m.ops) / 1024.0,
                es.kv_tokens_cap, es.kv_bytes / 1048576.0, es.weight_bytes / 1048576.0, o->r.max_seqs, o->r.max_rows,
                o->r.ctx, omp_get_max_threads());
        if (S->W > 1) fprintf(stderr, "sample: %d ranks: prompt i on rank i %% %d, rank 0 writes %s\n", S->W, S->W, o->out);
    }
    return 0;
}

/* Queue this rank's next prompts while fewer than two batches of samples
 * wait (continuous batching always finds the next prompt queued). */
static int feed(Sampling *S, size_t *next, Err *e) {
    const Opts *o = &S->o;
    const PromptSet *ps = &S->ro.ps;
    while (*next < ps->n && S->R.outstanding < 2 * o->r.max_seqs) {
        size_t i = *next;
        Slot *sl = &S->slot[i];
        sl->line = xcalloc((size_t)o->K, sizeof *sl->line);
        sl->t_first = xcalloc((size_t)o->K, sizeof(double));
        sl->txt = xcalloc((size_t)o->K, sizeof *sl->txt);
        if (rollout_add(S->g, &S->ro, o->prompts, i, (int)o->K, (int)o->r.max_tokens, &S->sp, (uint64_t)o->seed, sl, e))
            return -1;
        S->R.outstanding += o->K;
        *next += (size_t)S->W;
    }
    return 0;
}

/* Rank 0: append every prompt whose lines are all here, in prompt order
 * (one write, then fdatasync); the progress line at most once a second.
 * Returns -1 when the write failed. */
static int write_ready(Sampling *S, size_t *next_write, long *gen_written, double t_loop, double *t_print) {
    int K = (int)S->o.K;
    size_t N = S->ro.ps.n;
    Buf wb = {0};
    while (*next_write < N && S->slot[*next_write].done == K) {
        Slot *sl = &S->slot[*next_write];
        for (int j = 0; j < K; j++) buf_str(&wb, sl->line[j]);
        for (int j = 0; j < K; j++) S->ttft[S->nttft++] = sl->t_first[j];
        *gen_written += sl->gen;
        slot_free(sl, K);
        ++*next_write;
    }
    S->R.nready = 0; /* rank 0's own prompts are written from their slots */
    int bad = wb.n && (write_all(S->fd, wb.p, wb.n) || fdatasync(S->fd));
    double now = time_now();
    if (wb.n && now - *t_print >= 1.0 && *next_write < N) {
        char c1[32], c2[32];
        double el = now - t_loop;
        size_t w = *next_write;
        fprintf(stderr, "sample: prompts %zu/%zu | samples %zu | %.1f tok/s | %s elapsed | ETA %s\n", w, N,
                w * (size_t)K, *gen_written / el, run_clock(el, c1, sizeof c1),
                run_clock(el / (double)(w - S->done0) * (double)(N - w), c2, sizeof c2));
        *t_print = now;
    }
    free(wb.p);
    return bad ? -1 : 0;
}

/* The loop: feed the engine, step, send the finished prompts to rank 0,
 * which writes them in order; every rank goes round until every rank is
 * done (or rank 0 cannot write). */
static int sample_all(Sampling *S, Err *e) {
    size_t N = S->ro.ps.n, W = (size_t)S->W;
    S->slot = xcalloc(N, sizeof *S->slot);
    S->R = (Run){&S->ro, (int)S->o.K, S->o.lp_t1, S->stops, S->nstops, S->slot, 0, NULL, 0, 0, 0};
    if (S->rank == 0) S->ttft = xmalloc((N - S->done0) * (size_t)S->o.K * sizeof(double) + 1);
    EngineCallbacks cb = {on_token, on_done, &S->R};
    size_t next = S->done0 + ((size_t)S->rank + W - S->done0 % W) % W; /* the first i >= done0 with i % W == rank */
    size_t next_write = S->done0;
    long gen_written = 0;
    double t_loop = time_now(), t_print = t_loop;
    int werr = 0;
    for (;;) {
        if (feed(S, &next, e)) return -1;
        if (S->R.outstanding > 0) {
            EngineStats a = engine_stats(S->g);
            engine_step(S->g, &cb);
            EngineStats b = engine_stats(S->g);
            long pre = b.prefill_tokens - a.prefill_tokens, rows = b.rows - a.rows;
            /* a step's forward time, shared by its rows: the prompt rows' share is prefill */
            if (pre > 0) S->prefill_s += (b.t_forward - a.t_forward) * (rows > pre ? (double)pre / rows : 1.0);
            S->steps++;
        }
        int active = next < N || S->R.outstanding > 0;
        if (W > 1) exchange(&S->R);
        if (S->rank == 0 && !werr && write_ready(S, &next_write, &gen_written, t_loop, &t_print)) werr = 1;
        /* go on while any rank has work, unless rank 0 cannot write */
        int v = active + 2 * werr;
        if (W > 1) v = dist_allreduce_max_int(v);
        if (v != 1) {
            werr = v >= 2;
            break;
        }
    }
    S->gen_s = time_now() - t_loop;
    if (werr) return err_set(e, "--out %s: cannot write (disk full?)", S->o.out);
    return 0;
}

/* The summary line and --stats: counts summed over the ranks, times the
 * slowest rank's. */
static int report(Sampling *S, Err *e) {
    const Opts *o = &S->o;
    EngineStats es = engine_stats(S->g);
    double sums[2] = {(double)S->R.gen_tokens, (double)es.prefill_tokens};
    dist_allreduce_f64(sums, 2);
    double *pf = xcalloc((size_t)S->W, sizeof(double));
    pf[S->rank] = S->prefill_s;
    dist_allreduce_f64(pf, S->W);
    for (int r = 0; r < S->W; r++)
        if (pf[r] > S->prefill_s) S->prefill_s = pf[r];
    free(pf);
    if (S->rank != 0) return 0;
    size_t N = S->ro.ps.n, now = N - S->done0;
    double wall = time_now() - S->t_start, tps = S->gen_s > 0 ? sums[0] / S->gen_s : 0;
    double med = median(S->ttft, S->nttft);
    char c1[32];
    fprintf(stderr, "sample: done: %zu prompts (%zu this run), %zu samples, %.0f tokens in %s (%.1f tok/s; prefill "
                    "%.0f tokens in %.2f s; first token %.3f s median) -> %s\n", N, now, now * (size_t)o->K, sums[0],
            run_clock(S->gen_s, c1, sizeof c1), tps, sums[1], S->prefill_s, med, o->out);
    if (!o->stats) return 0;
    json_t *j = json_object();
    json_object_set_new(j, "gen_tokens", json_integer((json_int_t)sums[0]));
    json_object_set_new(j, "gen_s", json_real(S->gen_s));
    json_object_set_new(j, "tok_per_s", json_real(tps));
    json_object_set_new(j, "prefill_tokens", json_integer((json_int_t)sums[1]));
    json_object_set_new(j, "prefill_s", json_real(S->prefill_s));
    json_object_set_new(j, "ttft_s", json_real(med));
    json_object_set_new(j, "wall_s", json_real(wall));
    json_object_set_new(j, "kv_bytes_per_token", json_integer((json_int_t)engine_kv_bytes_per_token(&S->ro.c, S->m.ops)));
    json_object_set_new(j, "samples", json_integer((json_int_t)(now * (size_t)o->K)));
    json_object_set_new(j, "prompts", json_integer((json_int_t)now));
    json_object_set_new(j, "steps", json_integer(S->steps));
    json_object_set_new(j, "ranks", json_integer(S->W));
    int rc = iofile_json_write(o->stats, j, e);
    json_decref(j);
    return rc;
}

static void sampling_free(Sampling *S) {
    if (S->fd >= 0) close(S->fd);
    engine_free(S->g);
    if (S->slot)
        for (size_t i = 0; i < S->ro.ps.n; i++) slot_free(&S->slot[i], (int)S->o.K);
    free(S->slot);
    free(S->R.ready);
    free(S->ttft);
    if (S->loaded) {
        llama_free(&S->m);
        device_close(&S->dev);
    }
    json_decref(S->settings);
    if (S->opened) rollout_free(&S->ro);
    for (size_t k = 0; k < S->nstops; k++) free(S->stops[k]);
    free(S->stops);
}

int cmd_sample(int argc, char **argv, Err *e) {
    Sampling S;
    memset(&S, 0, sizeof S);
    S.fd = -1;
    Opts *o = &S.o;
    *o = (Opts){.device = "cpu", .K = 1, .seed = 42, .rep = 1};
    rollout_flags_default(&o->r, 0.8);
    CliFlag sf[ROLLOUT_NSAMPLER], ef[ROLLOUT_NENGINE];
    rollout_flags(&o->r, sf, ef);
    CliFlag flags[] = {
        {"model", CLI_STR, &o->model, 0, 0, "model: checkpoint, Hugging Face directory or GGUF file"},
        {"tokenizer", CLI_STR, &o->tokpath, 0, 0, "tokenizer (default: the one the model carries: GGUF, HF directory)"},
        {"adapter", CLI_STR, &o->adapter, 0, 0, "PEFT LoRA adapter directory to apply (from llamac sft or PEFT)"},
        {"quant", CLI_STR, &o->quant, 0, 0, "hold the weights quantised while decoding: keep (a GGUF file's own types), or quantise at load to nf4, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k"},
        {"prompts", CLI_STR, &o->prompts, 0, 0,
         "JSONL, one prompt a line: \"prompt\" (text or messages), \"messages\" or \"prompt_ids\"; optional \"stop\""},
        {"out", CLI_STR, &o->out, 0, 0, "JSONL of samples, one a line; rerun with the same --out to resume"},
        {"n", CLI_INT, &o->K, 1, 1 << 16, "samples per prompt"},
        sf[0], sf[1], sf[2], sf[3], sf[4],
        {"repetition-penalty", CLI_FLOAT, &o->rep, 0, 100, "CTRL's penalty on tokens of the prompt and sample (1: off)"},
        {"stop", CLI_LIST, &o->stop, 0, 0,
         "stop strings: a JSON string or list, e.g. '\"\\n\\n\"' or '[\"\\n\", \"User:\"]' (repeatable)"},
        {"seed", CLI_INT, &o->seed, 0, 1L << 62, "sampling seed: prompt i, sample j draws from its own stream of it"},
        {"ignore-eos", CLI_BOOL, &o->ignore_eos, 0, 0, "do not stop at the end-of-text and end-of-turn tokens"},
        {"logprobs-t1", CLI_BOOL, &o->lp_t1, 0, 0, "also write each token's log-probability at temperature 1"},
        {"template", CLI_STR, &o->tname, 0, 0,
         "chat template of message prompts: llama2, llama3, llama3.1, chatml or none (default: the tokenizer's)"},
        {"special", CLI_BOOL, &o->special, 0, 0, "special-token names in \"prompt\" text become their ids"},
        ef[0], ef[1], ef[2], ef[3], ef[4],
        {"stats", CLI_STR, &o->stats, 0, 0, "write the run's speed as JSON to this file"},
        {"device", CLI_STR, &o->device, 0, 0, "cpu, or cuda (a build with CUDA=1 and a GPU)"},
    };
    int nf = (int)(sizeof flags / sizeof flags[0]), help, npos;
    const char *pos[1];
    if (cli_parse_all(argc, argv, flags, nf, pos, 0, &npos, &help, e)) return -1;
    if (help) {
        cli_help("llamac sample --model M --prompts prompts.jsonl --out samples.jsonl [--n K] [--max-tokens N] [flags]",
                 "Sample K completions of every prompt with the batched engine. Each output line is\n"
                 "{\"index\", the prompt line's fields, \"sample\", \"text\", \"token_ids\", \"logprobs\",\n"
                 "[\"logprobs_t1\"], \"finish_reason\" (stop, length, context), \"prompt_tokens\", \"completion_tokens\"}\n"
                 "in prompt order. \"logprobs\" are log softmax(logits / temperature) of each sampled token\n"
                 "over the whole vocabulary (TRL's old log-probabilities). A sample's tokens depend on the\n"
                 "model, its prompt, --seed, the prompt's index and the sample's only. Rerunning with the same\n"
                 "--out resumes (OUT.settings.json must match). Under mpirun the prompts are split over the\n"
                 "ranks and rank 0 writes the file. See docs/generation.md.",
                 flags, nf);
        return 0;
    }
    if (!o->model) return err_set(e, "--model: required (a checkpoint, Hugging Face directory or GGUF file)");
    if (!o->prompts) return err_set(e, "--prompts: required (a JSONL file of prompts)");
    if (!o->out) return err_set(e, "--out: required (the JSONL file of samples)");
    if (rollout_params(&o->r, o->rep, &S.sp, e) || device_check(o->device, e)) return -1;
    if (o->r.threads > 0) omp_set_num_threads((int)o->r.threads);
    S.rank = dist_rank();
    S.W = dist_world();
    S.t_start = time_now();
    int rc = open_inputs(&S, e) || settings_build(&S, e) || check_out(&S, e) || start(&S, e) || sample_all(&S, e) ||
                     report(&S, e) ? -1 : 0;
    sampling_free(&S);
    return rc;
}
