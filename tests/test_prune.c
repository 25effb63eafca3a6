/*
 * test_prune.c: llamac prune (model/prune.h, train/cmd/cmd_prune.c) on a
 * 3-layer GQA model small enough to reason about: pruning to the same shape
 * copies every bit; a head group, an MLP channel, a layer or an embedding
 * channel made exactly zero (or an identity) is the one removed, and the
 * loss does not move where it cannot; every kind of removal writes a model
 * that loads and runs from a checkpoint, a HF directory and a GGUF; the
 * importances equal a direct recomputation (the skip loss from a model built
 * without the layer); bad targets are one error line from the real binary.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../data/shard.h"
#include "../data/tok.h"
#include "../model/prune.h"
#include "../train/io/ckpt.h"
#include "../train/io/source.h"
#include "test.h"
#include "tests.h"

#define DIR "build/tprune"
#define CB 2 /* calibration rows a batch */
#define CT 8 /* calibration sequence length */
#define NB 2 /* calibration batches */

/* D 32, 3 layers, 4 query heads of 8 over 2 KV heads, F 40, V 50, untied */
static LlamaConfig base_config(void) {
    LlamaConfig c;
    LC_ASSERT(config_preset("tiny", &c, NULL) == 0);
    c.dim = 32; c.n_layers = 3; c.n_heads = 4; c.n_kv_heads = 2; c.hidden = 40; c.vocab = 50;
    c.max_seq = 32; c.tied = 0;
    snprintf(c.name, sizeof c.name, "tp");
    return c;
}

/* Random weights, larger than the init's so that every part matters. */
static float *random_model(const LlamaConfig *c, ParamTable *t, uint64_t seed) {
    Err e;
    LC_ASSERT(params_build(c, t, &e) == 0);
    float *p = xalloc_aligned(t->size * sizeof(float));
    memset(p, 0, t->size * sizeof(float));
    params_init(t, p, c->n_layers, seed);
    for (int i = 0; i < t->n; i++)
        if (t->p[i].ndim == 2)
            for (size_t k = 0; k < t->p[i].numel; k++) p[t->p[i].offset + k] *= 4;
    return p;
}

/* NB * CB * CT + 1 calibration tokens, consecutive windows as cmd_prune makes them */
static int tokens[NB * CB * CT + 1];

static void make_tokens(int V) {
    Rng r;
    rng_seed(&r, 99);
    for (size_t i = 0; i < sizeof tokens / sizeof tokens[0]; i++) tokens[i] = (int)(rng_u64(&r) % (uint64_t)V);
}

static long set_batch(Llama *m, int b) {
    int tok[CB * CT], tgt[CB * CT];
    for (int r = 0; r < CB; r++)
        for (int t = 0; t < CT; t++) {
            tok[r * CT + t] = tokens[(b * CB + r) * CT + t];
            tgt[r * CT + t] = tokens[(b * CB + r) * CT + t + 1];
        }
    Err e;
    LC_ASSERT(llama_set_batch(m, tok, tgt, NULL, &e) == 0);
    return llama_count_targets(tgt, CB * CT);
}

static void model_init(Llama *m, const LlamaConfig *c, const ParamTable *t, const float *p) {
    Err e;
    LC_ASSERT(llama_init(m, c, &ops_cpu, NULL, CB, CT, 0, &e) == 0);
    LC_ASSERT(m->t.size == t->size);
    memcpy(m->params, p, t->size * sizeof(float));
}

static double mean_loss(const LlamaConfig *c, const ParamTable *t, const float *p) {
    Llama m;
    model_init(&m, c, t, p);
    double sum = 0;
    long n = 0;
    for (int b = 0; b < NB; b++) {
        n += set_batch(&m, b);
        sum += llama_forward(&m, 0, c->n_layers, 0);
    }
    llama_free(&m);
    return sum / n;
}

static void stats(const LlamaConfig *c, const ParamTable *t, const float *p, PruneStats *s) {
    Llama m;
    model_init(&m, c, t, p);
    prune_stats_init(s, c);
    for (int b = 0; b < NB; b++) prune_collect(s, &m, set_batch(&m, b), 1);
    prune_finish(s);
    llama_free(&m);
}

/* prune p (config c) to spec: the new config, table and weights */
static float *pruned(const LlamaConfig *c, const ParamTable *t, const float *p, const char *spec, int metric,
                     LlamaConfig *to, ParamTable *dt, PrunePlan *plan) {
    Err e;
    EXPECT(prune_target(c, spec, to, &e) == 0, "%s: %s", spec, e.msg);
    PruneStats s;
    stats(c, t, p, &s);
    prune_plan(&s, to, metric, plan);
    prune_stats_free(&s);
    LC_ASSERT(params_build(to, dt, &e) == 0);
    float *q = xalloc_aligned(dt->size * sizeof(float));
    memset(q, 0, dt->size * sizeof(float));
    prune_apply(plan, t, p, dt, q);
    return q;
}

static int same_tensors(const ParamTable *t, const float *a, const float *b) {
    for (int i = 0; i < t->n; i++)
        if (memcmp(a + t->p[i].offset, b + t->p[i].offset, t->p[i].numel * sizeof(float))) return 0;
    return 1;
}

static int contains(const int *v, int n, int x) {
    for (int i = 0; i < n; i++)
        if (v[i] == x) return 1;
    return 0;
}

void prune_same_shape(void) {
    LlamaConfig c = base_config(), to;
    make_tokens(c.vocab);
    ParamTable t, dt;
    float *p = random_model(&c, &t, 1);
    PrunePlan plan;
    float *q = pruned(&c, &t, p, "layers=3,heads=4,kv_heads=2,ffn=40,dim=32", PRUNE_LAYER_BI, &to, &dt, &plan);
    char diff[128];
    EXPECT(ckpt_config_diff(&c, &to, diff, sizeof diff) == 0 && to.head_dim == 0, "config changed: %s", diff);
    EXPECT(dt.size == t.size && same_tensors(&t, p, q), "the same shape changed the weights");
    prune_plan_free(&plan);
    free(q);
    params_free(&dt);
    free(p);
    params_free(&t);
}

/* Each part made exactly unimportant is the one removed. */
void prune_zero_removed(void) {
    LlamaConfig c = base_config(), to;
    make_tokens(c.vocab);
    int HS = config_head_size(&c), D = c.dim, F = c.hidden;
    ParamTable t, dt;
    PrunePlan plan;
    LlamaWeights w;
    double before, after;
    float *p, *q;

    /* KV group 1 (query heads 2, 3): zero values, so its heads' outputs are 0 */
    p = random_model(&c, &t, 2);
    params_point(&c, &t, p, sizeof(float), &w);
    for (int l = 0; l < c.n_layers; l++) memset(w.layer[l].wv + (size_t)HS * D, 0, (size_t)HS * D * sizeof(float));
    before = mean_loss(&c, &t, p);
    q = pruned(&c, &t, p, "kv_heads=1", PRUNE_LAYER_BI, &to, &dt, &plan);
    EXPECT(to.n_heads == 2 && to.n_kv_heads == 1, "kv_heads=1 gave %d/%d heads", to.n_heads, to.n_kv_heads);
    for (int l = 0; l < 3; l++)
        EXPECT(plan.groups[l] == 0 && plan.heads[2 * l] == 0 && plan.heads[2 * l + 1] == 1,
               "layer %d kept group %d, heads %d %d", l, plan.groups[l], plan.heads[2 * l], plan.heads[2 * l + 1]);
    after = mean_loss(&to, &dt, q);
    EXPECT(fabs(after - before) <= 1e-5 * before, "removing a zero KV group moved the loss %.9g -> %.9g", before, after);
    prune_plan_free(&plan), free(q), params_free(&dt), free(p), params_free(&t);

    /* MLP channel 7: gate row zero in every layer, so silu(gate) * up is 0 there */
    p = random_model(&c, &t, 3);
    params_point(&c, &t, p, sizeof(float), &w);
    for (int l = 0; l < c.n_layers; l++) memset(w.layer[l].wg + (size_t)7 * D, 0, (size_t)D * sizeof(float));
    before = mean_loss(&c, &t, p);
    q = pruned(&c, &t, p, "ffn=39", PRUNE_LAYER_BI, &to, &dt, &plan);
    for (int l = 0; l < 3; l++)
        EXPECT(!contains(plan.ffn + (size_t)l * 39, 39, 7), "layer %d kept the zero MLP channel", l);
    after = mean_loss(&to, &dt, q);
    EXPECT(fabs(after - before) <= 1e-5 * before, "removing a zero MLP channel moved the loss %.9g -> %.9g", before,
           after);
    prune_plan_free(&plan), free(q), params_free(&dt), free(p), params_free(&t);

    /* layer 1 an identity (o_proj, down_proj zero): no influence, no loss when skipped */
    for (int metric = 0; metric < 2; metric++) {
        p = random_model(&c, &t, 4);
        params_point(&c, &t, p, sizeof(float), &w);
        memset(w.layer[1].wo, 0, (size_t)D * c.n_heads * HS * sizeof(float));
        memset(w.layer[1].wd, 0, (size_t)D * F * sizeof(float));
        PruneStats s;
        stats(&c, &t, p, &s);
        EXPECT(s.layer_bi[1] < 1e-12 && fabs(s.layer_dloss[1]) < 1e-12,
               "identity layer: block influence %g, skip loss %g", s.layer_bi[1], s.layer_dloss[1]);
        /* by skip loss a random layer may help when skipped (a negative increase): the removed layer is
         * the lowest increase, which here is the identity's 0 unless another's is below it */
        int drop = 1;
        for (int l = 0; l < 3; l++)
            if (metric == PRUNE_LAYER_LOSS && s.layer_dloss[l] < s.layer_dloss[drop]) drop = l;
        prune_stats_free(&s);
        before = mean_loss(&c, &t, p);
        q = pruned(&c, &t, p, "layers=2", metric, &to, &dt, &plan);
        EXPECT(!contains(plan.layers, 2, drop) && plan.layers[0] < plan.layers[1], "metric %d kept layers %d %d",
               metric, plan.layers[0], plan.layers[1]);
        after = mean_loss(&to, &dt, q);
        EXPECT(drop != 1 || fabs(after - before) <= 1e-6 * before,
               "removing an identity layer moved the loss %.9g -> %.9g", before, after);
        prune_plan_free(&plan), free(q), params_free(&dt), free(p), params_free(&t);
    }

    /* embedding channel 5: zero in the embedding, every norm gain and every write to the residual */
    p = random_model(&c, &t, 5);
    params_point(&c, &t, p, sizeof(float), &w);
    for (int v = 0; v < c.vocab; v++) w.embed[(size_t)v * D + 5] = 0;
    for (int l = 0; l < c.n_layers; l++) {
        w.layer[l].ln1[5] = w.layer[l].ln2[5] = 0;
        memset(w.layer[l].wo + (size_t)5 * c.n_heads * HS, 0, (size_t)c.n_heads * HS * sizeof(float));
        memset(w.layer[l].wd + (size_t)5 * F, 0, (size_t)F * sizeof(float));
    }
    w.norm_f[5] = 0;
    q = pruned(&c, &t, p, "dim=31", PRUNE_LAYER_BI, &to, &dt, &plan);
    EXPECT(!contains(plan.dim, 31, 5), "kept the zero embedding channel");
    EXPECT(to.head_dim == 8 && config_head_size(&to) == 8, "dim=31 head size %d", config_head_size(&to));
    after = mean_loss(&to, &dt, q);
    EXPECT(isfinite(after) && after > 0, "pruned loss %g", after);
    prune_plan_free(&plan), free(q), params_free(&dt), free(p), params_free(&t);
}

/* Every kind of removal (and a head_dim != dim/heads model) through every format and back. */
void prune_formats(void) {
    mkdir("build", 0755);
    mkdir(DIR, 0755);
    LlamaConfig c = base_config(), to;
    make_tokens(c.vocab);
    ParamTable t;
    float *p = random_model(&c, &t, 6);
    static const char *const specs[] = {"layers=3", "layers=2", "kv_heads=1", "heads=2", "ffn=24", "dim=24",
                                        "layers=2,heads=2,kv_heads=1,ffn=24,dim=24"};
    static const char *const ext[] = {".h5", "_hf", ".gguf"}; /* SourceSaveFormat order */
    for (int k = 0; k < (int)(sizeof specs / sizeof specs[0]); k++) {
        ParamTable dt;
        PrunePlan plan;
        float *q = pruned(&c, &t, p, specs[k], PRUNE_LAYER_BI, &to, &dt, &plan);
        double want = mean_loss(&to, &dt, q);
        for (int f = 0; f < 3; f++) {
            char out[128];
            snprintf(out, sizeof out, DIR "/p%d%s", k, ext[f]);
            Err e;
            SourceSave so = {f, NULL, NULL, NULL, 0x77, "tp", 0, 1};
            EXPECT(source_save(out, &to, &dt, q, &so, &e) == 0, "%s: %s", out, e.msg);
            ModelSource ms;
            EXPECT(source_open(&ms, out, &e) == 0, "%s: %s", out, e.msg);
            char diff[128];
            EXPECT(ckpt_config_diff(&ms.c, &to, diff, sizeof diff) == 0, "%s: config differs: %s", out, diff);
            ParamTable lt;
            LC_ASSERT(params_build(&ms.c, &lt, &e) == 0);
            float *r = xalloc_aligned(lt.size * sizeof(float));
            memset(r, 0, lt.size * sizeof(float));
            EXPECT(source_load(&ms, &lt, r, &e) == 0, "%s: %s", out, e.msg);
            EXPECT(lt.size == dt.size && same_tensors(&dt, q, r), "%s: weights differ after the round trip", out);
            double got = mean_loss(&ms.c, &lt, r);
            EXPECT(got == want, "%s: loss %.9g, in memory %.9g", out, got, want);
            free(r);
            params_free(&lt);
        }
        prune_plan_free(&plan), free(q), params_free(&dt);
    }
    free(p);
    params_free(&t);
}

/* The statistics against a recomputation written out by hand; the skip loss
 * against a model built without the layer. */
void prune_importances_direct(void) {
    LlamaConfig c = base_config();
    make_tokens(c.vocab);
    ParamTable t;
    float *p = random_model(&c, &t, 7);
    PruneStats s;
    stats(&c, &t, p, &s);
    int L = c.n_layers, H = c.n_heads, HS = config_head_size(&c), Q = H * HS, F = c.hidden, D = c.dim;
    double *head = xcalloc((size_t)L * H, sizeof(double)), *ffn = xcalloc((size_t)L * F, sizeof(double));
    double *emb = xcalloc((size_t)D, sizeof(double)), *bi = xcalloc((size_t)L, sizeof(double));
    double *embl = xcalloc((size_t)L * 2 * D, sizeof(double));
    double loss = 0;
    long ntok = 0;
    Llama m;
    model_init(&m, &c, &t, p);
    for (int b = 0; b < NB; b++) {
        ntok += set_batch(&m, b);
        loss += llama_forward(&m, 0, L, 0);
        for (int l = 0; l < L; l++) {
            const LayerActs *a = &m.acts[l];
            const float *out = l + 1 < L ? m.acts[l + 1].x : m.x_out;
            for (int n = 0; n < CB * CT; n++) {
                double ab = 0, aa = 0, bb = 0;
                for (int d = 0; d < D; d++) {
                    double x = a->x[n * D + d], y = out[n * D + d];
                    ab += x * y, aa += x * x, bb += y * y;
                }
                bi[l] += 1 - ab / (sqrt(aa) * sqrt(bb));
            }
            for (int r = 0; r < CB; r++) {
                for (int h = 0; h < H; h++) /* head: sum over its channels of (mean_t |x|)^2 */
                    for (int j = h * HS; j < (h + 1) * HS; j++) {
                        double mean = 0;
                        for (int tt = 0; tt < CT; tt++) mean += fabs(a->att[(r * CT + tt) * Q + j]) / CT;
                        head[l * H + h] += mean * mean;
                    }
                for (int f = 0; f < F; f++) {
                    double mean = 0;
                    for (int tt = 0; tt < CT; tt++) mean += fabs(a->act[(r * CT + tt) * F + f]) / CT;
                    ffn[l * F + f] += mean * mean;
                }
                for (int d = 0; d < D; d++) {
                    double m1 = 0, m2 = 0;
                    for (int tt = 0; tt < CT; tt++) {
                        m1 += fabs(a->xn1[(r * CT + tt) * D + d]) / CT;
                        m2 += fabs(a->xn2[(r * CT + tt) * D + d]) / CT;
                    }
                    embl[(l * 2) * D + d] += m1 * m1;
                    embl[(l * 2 + 1) * D + d] += m2 * m2;
                }
            }
        }
    }
    llama_free(&m);
    double worst = 0;
#define CMP(got, want) worst = fmax(worst, fabs((got) - (want)) / fmax(1e-12, fabs(want)))
    CMP(s.loss, loss / ntok);
    for (int l = 0; l < L; l++) {
        CMP(s.layer_bi[l], bi[l] / (NB * CB * CT));
        for (int h = 0; h < H; h++) CMP(s.head[l * H + h], sqrt(head[l * H + h]));
        for (int g = 0; g < c.n_kv_heads; g++)
            CMP(s.group[l * c.n_kv_heads + g], sqrt(head[l * H + 2 * g] + head[l * H + 2 * g + 1]));
        for (int f = 0; f < F; f++) CMP(s.ffn[l * F + f], sqrt(ffn[l * F + f]));
    }
    for (int d = 0; d < D; d++) {
        for (int k = 0; k < 2 * L; k++) emb[d] += sqrt(embl[k * D + d]);
        CMP(s.emb[d], emb[d]);
    }
    EXPECT(worst < 1e-9, "statistics differ from the direct recomputation by %g (relative)", worst);
    /* skip loss: the loss of the model pruned to the other two layers */
    for (int l = 0; l < L; l++) {
        PrunePlan plan;
        LlamaConfig to = c;
        to.n_layers = L - 1;
        prune_plan(&s, &to, PRUNE_LAYER_BI, &plan);
        for (int i = 0, k = 0; i < L; i++)
            if (i != l) plan.layers[k++] = i;
        ParamTable dt;
        Err e;
        LC_ASSERT(params_build(&to, &dt, &e) == 0);
        float *q = xalloc_aligned(dt.size * sizeof(float));
        memset(q, 0, dt.size * sizeof(float));
        prune_apply(&plan, &t, p, &dt, q);
        double want = mean_loss(&to, &dt, q) - s.loss;
        EXPECT(fabs(s.layer_dloss[l] - want) <= 1e-6 * fabs(s.loss), "layer %d: skip loss %.9g, without it %.9g", l,
               s.layer_dloss[l], want);
        prune_plan_free(&plan), free(q), params_free(&dt);
    }
    free(head), free(ffn), free(emb), free(bi), free(embl);
    prune_stats_free(&s);
    free(p);
    params_free(&t);
}

// ----------------------------------------------------------------------------
// the real binary

static void expect_error(const char *what, int rc, const char *want) {
    int lines = 0;
    for (const char *s = test_err; *s; s++) lines += *s == '\n';
    EXPECT(rc == 1 && lines == 1 && strncmp(test_err, "llamac: error: ", 15) == 0,
           "%s: exit %d, not one error line: %s", what, rc, test_err);
    EXPECT(strstr(test_err, want) != NULL, "%s: '%s' lacks '%s'", what, test_err, want);
}

void prune_cli(void) {
    mkdir("build", 0755);
    mkdir(DIR, 0755);
    LlamaConfig c = base_config();
    make_tokens(c.vocab);
    ParamTable t;
    float *p = random_model(&c, &t, 8);
    Err e;
    LC_ASSERT(ckpt_save(DIR "/m.h5", &c, &t, p, 0x77, NULL, NULL, &e) == 0);
    LC_ASSERT(shard_write(DIR "/calib.bin", tokens, sizeof tokens / sizeof tokens[0], c.vocab, -1, 0x77, 1, &e) == 0);
#define PRUNE(target, out) \
    test_llamac("prune --model " DIR "/m.h5 --calib " DIR "/calib.bin --batch 2 --seq 8 --calib-batches 2 " \
                "--force --target %s --out " DIR "/%s", target, out)
    int rc = PRUNE("layers=3", "same.h5");
    EXPECT(rc == 0 && strstr(test_out, "calibration loss: before") && strstr(test_out, "block-infl"),
           "same shape: exit %d: %s%s", rc, test_out, test_err);
    ModelSource ms;
    EXPECT(source_open(&ms, DIR "/same.h5", &e) == 0, "%s", e.msg);
    float *q = xalloc_aligned(t.size * sizeof(float));
    memset(q, 0, t.size * sizeof(float));
    EXPECT(source_load(&ms, &t, q, &e) == 0 && same_tensors(&t, p, q) && ms.tokenizer_id == 0x77,
           "pruning to the same shape changed the model");
    free(q);
    rc = test_llamac("prune --model " DIR "/m.h5 --calib " DIR "/calib.bin --batch 2 --seq 8 --calib-batches 2 "
                     "--force --layer-metric loss --target layers=2,heads=2,kv_heads=1,ffn=24,dim=24 --out " DIR
                     "/small.gguf --importances " DIR "/imp.json");
    EXPECT(rc == 0 && strstr(test_out, "heads 4/2 -> 2/1 (head size 8)") && access(DIR "/imp.json", F_OK) == 0,
           "all kinds: exit %d: %s%s", rc, test_out, test_err);

    rc = test_llamac("prune --model " DIR "/m.h5 --calib " DIR "/calib.bin --batch 2 --seq 8 --calib-batches 2 "
                     "--force --no-skip-loss --target layers=2 --out " DIR "/nsl.h5 --importances " DIR "/nsl.json");
    char *js = test_slurp(DIR "/nsl.json");
    EXPECT(rc == 0 && strstr(test_out, "          -     ") && js && strstr(js, "\"layer_skip_loss_delta\": [\n    null,\n    null,\n    null\n  ]"),
           "--no-skip-loss: the skip loss shown as measured: %s %s", test_out, js ? js : "(no file)");
    free(js);
    /* a damaged second calibration shard: named, not the first one */
    int32_t bad[64];
    for (int i = 0; i < 64; i++) bad[i] = i % c.vocab;
    LC_ASSERT(shard_write(DIR "/bad.bin", bad, 64, c.vocab, -1, 0x77, 1, &e) == 0);
    FILE *bf = fopen(DIR "/bad.bin", "r+b"); /* token 40 patched past the vocabulary (2-byte tokens) */
    uint16_t big = (uint16_t)(c.vocab + 3);
    LC_ASSERT(bf && fseek(bf, SHARD_HEADER_BYTES + 40 * 2, SEEK_SET) == 0 && fwrite(&big, 2, 1, bf) == 1);
    fclose(bf);
    rc = test_llamac("prune --model " DIR "/m.h5 --calib " DIR "/calib.bin --calib " DIR "/bad.bin --batch 2 --seq 8 "
                     "--calib-batches 100 --force --target layers=2 --out " DIR "/x.h5");
    EXPECT(rc == 1 && strstr(test_err, DIR "/bad.bin: token 53 at index 40 is outside the vocabulary of 50"),
           "bad token: rc %d: %s", rc, test_err);
    expect_error("larger", PRUNE("layers=5", "x.h5"), "--target: layers=5 is larger than the model's 3");
    expect_error("kv_heads larger", PRUNE("kv_heads=3", "x.h5"), "--target: kv_heads=3 is larger than the model's 2");
    expect_error("not dividing", PRUNE("heads=3", "x.h5"), "--target: heads=3 is not a multiple of kv_heads=2");
    expect_error("groups broken", PRUNE("heads=4,kv_heads=1", "x.h5"),
                 "--target: heads=4 over kv_heads=1 is 4 query heads per KV group, the model has 2");
    expect_error("unknown preset", PRUNE("nosuch", "x.h5"), "--target: unknown preset 'nosuch'");
    expect_error("bad value", PRUNE("layers=two", "x.h5"), "--target: layers: expected a positive integer, got 'two'");
    expect_error("unknown key", PRUNE("depth=2", "x.h5"), "--target: unknown key 'depth'");
    expect_error("no value", PRUNE("layers=2,,ffn=3", "x.h5"), "--target: expected key=value, got ''");
    expect_error("preset of another model", PRUNE("smollm2-135m-half", "x.h5"),
                 "--target: preset smollm2-135m-half has a vocabulary of 49152, the model 50");
    EXPECT(access(DIR "/x.h5", F_OK) != 0, "a refused prune wrote its output");
    free(p);
    params_free(&t);
}

/* Text and JSONL calibration through the model's tokenizer, which the HF output carries. */
void prune_cli_text(void) {
    mkdir("build", 0755);
    mkdir(DIR, 0755);
    LlamaConfig c = base_config();
    c.vocab = 320; /* tests/fixtures/bpe_v1.tok's */
    Tokenizer tok;
    Err e;
    LC_ASSERT(tok_load(&tok, "tests/fixtures/bpe_v1.tok", &e) == 0);
    ParamTable t;
    float *p = random_model(&c, &t, 9);
    LC_ASSERT(ckpt_save(DIR "/mt.h5", &c, &t, p, tok.id, NULL, NULL, &e) == 0);
    test_put(DIR "/docs.jsonl", "{\"text\": \"It was the best of times, it was the worst of times.\"}\n"
                                "{\"text\": \"it was the age of wisdom, it was the age of foolishness\"}\n");
    test_put(DIR "/more.txt", "It was the epoch of belief, it was the epoch of incredulity, it was the season of "
                              "Light, it was the season of Darkness. Numbers 1234 and 56.\n");
    int rc = test_llamac("prune --model " DIR "/mt.h5 --tokenizer tests/fixtures/bpe_v1.tok --calib " DIR
                         "/docs.jsonl --calib " DIR "/more.txt --batch 2 --seq 8 --calib-batches 3 --target ffn=24 "
                         "--out " DIR "/text_hf --force");
    EXPECT(rc == 0 && strstr(test_out, "(3 batches, 48 tokens;"), "text calibration: exit %d: %s%s", rc, test_out,
           test_err);
    ModelSource ms;
    EXPECT(source_open(&ms, DIR "/text_hf", &e) == 0 && ms.tokenizer[0] && ms.c.hidden == 24,
           "the pruned HF directory: %s, tokenizer '%s'", e.msg, ms.tokenizer);
    rc = test_llamac("prune --model " DIR "/mt.h5 --calib " DIR "/more.txt --target ffn=24 --out " DIR "/y.h5");
    expect_error("text without tokenizer", rc, "more.txt: text calibration data needs the model's tokenizer");
    int32_t ids[64] = {0};
    LC_ASSERT(shard_write(DIR "/other.bin", ids, 64, c.vocab, -1, tok.id ^ 1, 1, &e) == 0);
    rc = test_llamac("prune --model " DIR "/mt.h5 --calib " DIR "/other.bin --target ffn=24 --out " DIR "/y.h5");
    expect_error("other tokenizer", rc, "other.bin: made by a different tokenizer than the model");
    rc = test_llamac("prune --model " DIR "/mt.h5 --tokenizer tests/fixtures/bpe_v1.tok --calib " DIR
                     "/docs.jsonl --seq 8 --batch 64 --target ffn=24 --out " DIR "/y.h5");
    expect_error("too little data", rc, "fewer than one batch of 64 x 8 + 1");
    EXPECT(access(DIR "/y.h5", F_OK) != 0, "a refused prune wrote its output");
    tok_free(&tok);
    free(p);
    params_free(&t);
}
