/*
 * test_cmd_sample.c: `llamac sample` end to end on the pipeline test's tiny
 * model (llamac BPE, no chat template of its own: --template llama3).
 *
 *   - the output: K lines per prompt in prompt and sample order, the
 *     prompt line's fields passed through, ids, log-probabilities and
 *     counts that agree, --stats;
 *   - stop strings: the text is the decoded tokens cut before the first
 *     stop string, which the last token completed;
 *   - determinism: the same file for --max-seqs 1, 7 and 64, small
 *     --max-rows and one thread; log-probabilities at temperature 1 equal
 *     the temperature-1 ones;
 *   - resume: a file cut inside a prompt's lines is completed to the bytes
 *     of a straight run; other settings, another prompts file, an --out
 *     without settings are refused;
 *   - bad input: one stderr line each;
 *   - under mpirun (2 and 3 ranks, and a resume) the file one process
 *     writes.
 * Also stop_find and the stop-string parser in-process.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../data/prompts.h"
#include "../data/tok.h"
#include "../model/lora.h"
#include "../train/io/peft.h"
#include "../train/io/source.h"
#include "test.h"
#include "tests.h"

#define SD "build/tsample"
#define M "--model build/tp/model.h5 --tokenizer build/tp/tok.bin --template llama3"

static void need_model(void) {
    if (access("build/tp/model.h5", R_OK) != 0) pipeline_pretrain();
    mkdir("build", 0755);
    mkdir(SD, 0755);
}

/* A file's bytes, NUL-terminated (caller frees); NULL if it cannot be read. */
static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = xmalloc((size_t)n + 1);
    size_t got = fread(b, 1, (size_t)n, f);
    fclose(f);
    b[got] = 0;
    if (len) *len = got;
    return b;
}

static int same_file(const char *a, const char *b) {
    size_t na, nb;
    char *x = slurp(a, &na), *y = slurp(b, &nb);
    int same = x && y && na == nb && memcmp(x, y, na) == 0;
    free(x);
    free(y);
    return same;
}

/* The lines of a JSONL file, parsed (json_decref each, free the array). */
static int read_lines(const char *path, json_t ***out) {
    char *b = slurp(path, NULL);
    int n = 0, cap = 0;
    *out = NULL;
    for (char *p = b, *nl; p && *p; p = nl + 1) {
        nl = strchr(p, '\n');
        if (!nl) break;
        if (n == cap) *out = xrealloc(*out, (size_t)(cap = 2 * cap + 16) * sizeof **out);
        (*out)[n++] = json_loadb(p, (size_t)(nl - p), 0, NULL);
    }
    free(b);
    return n;
}

static void free_lines(json_t **l, int n) {
    for (int i = 0; i < n; i++) json_decref(l[i]);
    free(l);
}

#define PROMPTS                                                                                            \
    "{\"prompt\": \"the cat\", \"id\": \"a\"}\n"                                                           \
    "{\"prompt\": \"and the dog\", \"stop\": [\"the\", \"zz\"]}\n"                                         \
    "\n"                                                                                                   \
    "{\"prompt_ids\": [5, 6, 7], \"meta\": {\"x\": 1.5}}\n"                                                \
    "{\"messages\": [{\"role\": \"user\", \"content\": \"hello\"}], \"text\": \"mine\"}\n"                 \
    "{\"prompt\": [{\"role\": \"user\", \"content\": \"a bird\"}], \"stop\": \"e\"}\n"
#define NPROMPTS 5

/* The bytes of ids[0..n) back to back. */
static size_t token_text(const Tokenizer *t, const json_t *ids, size_t n, char *out, size_t cap) {
    size_t len = 0;
    for (size_t k = 0; k < n; k++) {
        size_t l;
        const char *b = tok_token_bytes(t, (int)json_integer_value(json_array_get(ids, k)), &l);
        if (len + l < cap) memcpy(out + len, b, l);
        len += l;
    }
    return len < cap ? len : cap - 1;
}

/* Check every line of path: order, fields, counts; and the stop strings
 * (global: stops[0..ns) plus each line's own; with ignore_eos the end of
 * text is a token like any other). Returns how many samples a stop string
 * ended. */
static int check_output(const char *path, int K, int max_tokens, const char *const *stops, int ns, int ignore_eos) {
    Tokenizer t;
    Err e = {{0}};
    LC_ASSERT(tok_load(&t, "build/tp/tok.bin", &e) == 0);
    json_t **l;
    int n = read_lines(path, &l), by_string = 0;
    EXPECT(n == NPROMPTS * K, "%s: %d lines, expected %d", path, n, NPROMPTS * K);
    static const int prompt_len[NPROMPTS] = {-1, -1, 3, -1, -1};
    for (int i = 0; i < n; i++) {
        json_t *o = l[i];
        EXPECT(json_is_object(o), "line %d is not JSON", i);
        if (!o) continue;
        int ix = (int)json_integer_value(json_object_get(o, "index"));
        int sm = (int)json_integer_value(json_object_get(o, "sample"));
        EXPECT(ix == i / K && sm == i % K, "line %d: index %d sample %d", i, ix, sm);
        json_t *ids = json_object_get(o, "token_ids"), *lp = json_object_get(o, "logprobs");
        const char *fin = json_string_value(json_object_get(o, "finish_reason"));
        const char *text = json_string_value(json_object_get(o, "text"));
        int ct = (int)json_integer_value(json_object_get(o, "completion_tokens"));
        int pt = (int)json_integer_value(json_object_get(o, "prompt_tokens"));
        EXPECT(fin && text && ids && lp && (size_t)ct == json_array_size(ids) && (size_t)ct == json_array_size(lp) &&
                   ct >= 1 && ct <= max_tokens && pt > 0,
               "line %d: fields %s", i, json_dumps(o, 0));
        if (!fin || !text || !ids) continue;
        EXPECT(strcmp(fin, "stop") == 0 || strcmp(fin, "length") == 0, "line %d: finish_reason %s", i, fin);
        EXPECT(strcmp(fin, "length") != 0 || ct == max_tokens, "line %d: length after %d tokens", i, ct);
        if (prompt_len[ix] > 0) EXPECT(pt == prompt_len[ix], "line %d: prompt_tokens %d", i, pt);
        for (size_t k = 0; k < json_array_size(lp); k++)
            EXPECT(json_number_value(json_array_get(lp, k)) <= 0, "line %d: logprob > 0", i);
        /* passed-through fields, ours winning */
        const char *id = json_string_value(json_object_get(o, "id"));
        if (ix == 0) EXPECT(id && strcmp(id, "a") == 0, "line %d: no id", i);
        if (ix == 2) EXPECT(json_object_get(o, "meta") && json_object_get(o, "prompt_ids"), "line %d: no meta", i);
        if (ix == 3) EXPECT(strcmp(text, "mine") != 0 && json_object_get(o, "messages"), "line %d: text", i);
        /* the text against the tokens' bytes */
        char *own[8];
        int no = 0;
        for (int k = 0; k < ns; k++) own[no++] = (char *)stops[k];
        json_t *st = json_object_get(o, "stop");
        if (json_is_string(st)) own[no++] = (char *)json_string_value(st);
        for (size_t k = 0; json_is_array(st) && k < json_array_size(st); k++)
            own[no++] = (char *)json_string_value(json_array_get(st, k));
        static char all[8192], before[8192];
        int last = (int)json_integer_value(json_array_get(ids, (size_t)ct - 1));
        int eos = !ignore_eos && strcmp(fin, "stop") == 0 && (last == t.eos || last == t.eot);
        size_t la = token_text(&t, ids, (size_t)ct - (size_t)eos, all, sizeof all);
        size_t lb = token_text(&t, ids, (size_t)ct - 1, before, sizeof before);
        long hit = stop_find(own, (size_t)no, all, la, 0);
        /* the text is the bytes up to the stop string, invalid UTF-8 replaced */
        size_t want_len = hit >= 0 ? (size_t)hit : la, wcap = 0;
        char *want = NULL;
        want_len = tok_utf8_lossy(all, want_len, &want, &wcap);
        int same = strlen(text) == want_len && memcmp(text, want ? want : "", want_len) == 0;
        if (strcmp(fin, "stop") == 0 && !eos) { /* a stop string, completed by the last token */
            by_string++;
            EXPECT(hit >= 0 && same && stop_find(own, (size_t)no, before, lb, 0) < 0,
                   "line %d: text '%s' from '%.*s' (stop at %ld)", i, text, (int)la, all, hit);
        } else {
            EXPECT(hit < 0 && same, "line %d: text '%s' vs '%.*s'", i, text, (int)la, all);
        }
        free(want);
    }
    free_lines(l, n);
    tok_free(&t);
    return by_string;
}

void cmd_sample_cli(void) {
    need_model();
    test_put(SD "/p.jsonl", PROMPTS);
    remove(SD "/a.jsonl");
    remove(SD "/a.jsonl.settings.json");
    int rc = test_llamac("sample " M " --prompts " SD "/p.jsonl --out " SD "/a.jsonl --n 3 --max-tokens 12 "
                         "--stop '\"ing\"' --stats " SD "/a.stats");
    EXPECT(rc == 0 && test_out[0] == 0, "sample: %d %s", rc, test_err);
    EXPECT(strstr(test_err, "KV cache") && strstr(test_err, "per token") && strstr(test_err, "done: 5 prompts"),
           "stderr: %s", test_err);
    static const char *const ing[] = {"ing"};
    check_output(SD "/a.jsonl", 3, 12, ing, 1, 0);
    /* --stats: the names a benchmark reads */
    json_t *s = json_load_file(SD "/a.stats", 0, NULL);
    static const char *const keys[] = {"gen_tokens", "gen_s", "tok_per_s", "prefill_tokens", "prefill_s", "ttft_s",
                                       "wall_s", "kv_bytes_per_token", "samples", "prompts"};
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++)
        EXPECT(json_is_number(json_object_get(s, keys[k])), "--stats: no %s", keys[k]);
    EXPECT(json_integer_value(json_object_get(s, "samples")) == 15 &&
               json_integer_value(json_object_get(s, "prompts")) == 5 &&
               json_integer_value(json_object_get(s, "kv_bytes_per_token")) > 0,
           "--stats: %s", json_dumps(s, 0));
    json_t **l;
    int n = read_lines(SD "/a.jsonl", &l);
    long sum = 0;
    for (int i = 0; i < n; i++) sum += (long)json_integer_value(json_object_get(l[i], "completion_tokens"));
    EXPECT(json_integer_value(json_object_get(s, "gen_tokens")) == sum, "gen_tokens vs the lines' %ld", sum);
    free_lines(l, n);
    json_decref(s);
    /* stop strings that come up: most samples end on one */
    remove(SD "/b.jsonl");
    remove(SD "/b.jsonl.settings.json");
    rc = test_llamac("sample " M " --prompts " SD "/p.jsonl --out " SD "/b.jsonl --n 4 --max-tokens 40 --ignore-eos "
                     "--stop '[\" the\", \"s \"]' --stop '\"ca\"'");
    EXPECT(rc == 0, "sample with stop strings: %s", test_err);
    static const char *const st2[] = {" the", "s ", "ca"};
    int by = check_output(SD "/b.jsonl", 4, 40, st2, 3, 1);
    EXPECT(by >= NPROMPTS * 4 / 2, "only %d of %d samples ended on a stop string", by, NPROMPTS * 4);
    /* a GGUF carries its tokenizer: no --tokenizer, the same samples */
    rc = test_llamac("convert build/tp/model.h5 " SD "/m.gguf --tokenizer build/tp/tok.bin --force");
    EXPECT(rc == 0, "convert to GGUF: %s", test_err);
    system("rm -f " SD "/g.jsonl* " SD "/h.jsonl*");
    rc = test_llamac("sample --model " SD "/m.gguf --template llama3 --prompts " SD "/p.jsonl --out " SD "/g.jsonl "
                     "--n 2 --max-tokens 8");
    EXPECT(rc == 0, "sample from the GGUF: %s", test_err);
    rc = test_llamac("sample " M " --prompts " SD "/p.jsonl --out " SD "/h.jsonl --n 2 --max-tokens 8");
    EXPECT(rc == 0 && same_file(SD "/g.jsonl", SD "/h.jsonl"), "GGUF and checkpoint sample differently: %s", test_err);
    /* --help answers */
    rc = test_llamac("sample --help");
    EXPECT(rc == 0 && strstr(test_out, "--max-seqs") && strstr(test_out, "--stop") && strstr(test_out, "resume"),
           "help: %s", test_out);
}

/* The same samples whatever the batch: --max-seqs, --max-rows, threads. */
void cmd_sample_batch_invariance(void) {
    need_model();
    test_put(SD "/p.jsonl", PROMPTS);
    static const char *const runs[] = {"--max-seqs 1", "--max-seqs 7 --max-rows 16", "--max-seqs 64 --threads 1",
                                       "--max-seqs 64"};
    char first[256] = "";
    for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
        char out[256];
        snprintf(out, sizeof out, SD "/bi%zu.jsonl", i);
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -f %s %s.settings.json", out, out);
        LC_ASSERT(system(cmd) == 0);
        int rc = test_llamac("sample " M " --prompts " SD "/p.jsonl --out %s --n 3 --max-tokens 16 --temperature 1 "
                             "--logprobs-t1 %s", out, runs[i]);
        EXPECT(rc == 0, "%s: %s", runs[i], test_err);
        if (i == 0) snprintf(first, sizeof first, "%s", out);
        else EXPECT(same_file(first, out), "%s: other samples than --max-seqs 1", runs[i]);
    }
    /* at temperature 1 the two log-probabilities are one */
    json_t **l;
    int n = read_lines(first, &l);
    for (int i = 0; i < n; i++)
        EXPECT(json_equal(json_object_get(l[i], "logprobs"), json_object_get(l[i], "logprobs_t1")),
               "line %d: logprobs differ from logprobs_t1 at temperature 1", i);
    free_lines(l, n);
    /* and at another temperature they differ */
    remove(SD "/t5.jsonl");
    int rc = test_llamac("sample " M " --prompts " SD "/p.jsonl --out " SD "/t5.jsonl --n 2 --max-tokens 8 "
                         "--temperature 0.5 --logprobs-t1");
    n = read_lines(SD "/t5.jsonl", &l);
    int differ = 0;
    for (int i = 0; i < n; i++)
        differ += !json_equal(json_object_get(l[i], "logprobs"), json_object_get(l[i], "logprobs_t1"));
    EXPECT(rc == 0 && n == 10 && differ == n, "temperature 0.5: %d of %d lines differ (%s)", differ, n, test_err);
    free_lines(l, n);
}

/* Cut inside a prompt's lines, a rerun completes the file to the bytes of a
 * straight run; other settings are refused. */
void cmd_sample_resume(void) {
    need_model();
    test_put(SD "/p.jsonl", PROMPTS);
    const char *args = "sample " M " --prompts " SD "/p.jsonl --n 2 --max-tokens 10 --stop '\"og\"' ";
    system("rm -f " SD "/full.jsonl* " SD "/r.jsonl*");
    int rc = test_llamac("%s --out " SD "/full.jsonl", args);
    EXPECT(rc == 0, "straight run: %s", test_err);
    size_t len;
    char *full = slurp(SD "/full.jsonl", &len);
    /* a torn line in prompt 2's lines: prompts 0 and 1 (4 lines) are kept */
    const char *p = full;
    for (int k = 0; k < 5; k++) p = strchr(p, '\n') + 1;
    size_t cut = (size_t)(p - full) + 7;
    FILE *f = fopen(SD "/r.jsonl", "wb");
    fwrite(full, 1, cut, f);
    fclose(f);
    system("cp " SD "/full.jsonl.settings.json " SD "/r.jsonl.settings.json");
    rc = test_llamac("%s --out " SD "/r.jsonl --stats " SD "/r.stats", args);
    EXPECT(rc == 0 && same_file(SD "/full.jsonl", SD "/r.jsonl"), "resumed file differs: %s", test_err);
    EXPECT(strstr(test_err, "2 already in") && strstr(test_err, "cut "), "resume said: %s", test_err);
    json_t *s = json_load_file(SD "/r.stats", 0, NULL);
    EXPECT(json_integer_value(json_object_get(s, "prompts")) == 3, "resumed run sampled %lld prompts",
           (long long)json_integer_value(json_object_get(s, "prompts")));
    json_decref(s);
    /* a whole file: nothing to do, nothing changed */
    rc = test_llamac("%s --out " SD "/r.jsonl --max-seqs 3", args);
    EXPECT(rc == 0 && same_file(SD "/full.jsonl", SD "/r.jsonl") && strstr(test_err, "(0 this run)"),
           "rerun of a whole file: %s", test_err);
    free(full);
    /* refusals, one line each, naming the setting */
    test_put(SD "/p2.jsonl", "{\"prompt\": \"the cat\"}\n");
    test_put(SD "/alien.jsonl", "{\"x\": 1}\n");
    static const TestCliCase cases[] = {
        {"%s --out " SD "/r.jsonl --temperature 0.5", "--out " SD "/r.jsonl: sampled with other settings: "
                                                      "--temperature was 0.8, now 0.5"},
        {"%s --out " SD "/r.jsonl --n 3", "--n was 2, now 3"},
        {"%s --out " SD "/r.jsonl --stop '\"x\"'", "--stop was [\"og\"], now [\"og\",\"x\"]"},
        {"%s --out " SD "/r.jsonl --ignore-eos", "--ignore-eos was false, now true"},
        {"%s --out " SD "/r.jsonl --prompts " SD "/p2.jsonl", "--prompts (its content) was"},
        {"%s --out " SD "/alien.jsonl", "--out " SD "/alien.jsonl: exists, but " SD "/alien.jsonl.settings.json does "
                                        "not"},
    };
    test_cli_refusals(cases, sizeof cases / sizeof cases[0], args, "");
    EXPECT(same_file(SD "/full.jsonl", SD "/r.jsonl"), "a refused run changed the file");
}

/* Killed with SIGKILL while it writes, a rerun ends with the bytes of a
 * straight run. */
void cmd_sample_killed(void) {
    need_model();
    FILE *f = fopen(SD "/many.jsonl", "w");
    for (int i = 0; i < 300; i++) fprintf(f, "{\"prompt\": \"the cat %d\"}\n", i);
    fclose(f);
    const char *args = "sample " M " --prompts " SD "/many.jsonl --n 2 --max-tokens 24 --ignore-eos --max-seqs 8";
    system("rm -f " SD "/ks.jsonl* " SD "/kk.jsonl*");
    int rc = test_llamac("%s --out " SD "/ks.jsonl", args);
    EXPECT(rc == 0, "straight run: %s", test_err);
    char a[1024];
    snprintf(a, sizeof a, "%s --out " SD "/kk.jsonl", args);
    pid_t pid = ckpt_test_spawn(a, SD "/kk.log");
    struct stat st;
    for (int i = 0; i < 3000 && !(stat(SD "/kk.jsonl", &st) == 0 && st.st_size > 0); i++) usleep(10000);
    Rng r;
    rng_seed(&r, (uint64_t)(time_now() * 1e6));
    usleep((useconds_t)(rng_u64(&r) % 100000)); /* somewhere in the run, maybe inside a write */
    kill(pid, SIGKILL);
    int ws;
    waitpid(pid, &ws, 0);
    size_t nk = 0, ns = 0;
    free(slurp(SD "/kk.jsonl", &nk));
    free(slurp(SD "/ks.jsonl", &ns));
    EXPECT(nk > 0 && nk < ns, "killed at %zu of %zu bytes: make the run longer", nk, ns);
    rc = test_llamac("%s --out " SD "/kk.jsonl", args);
    EXPECT(rc == 0 && same_file(SD "/ks.jsonl", SD "/kk.jsonl"), "resumed after a kill: %s", test_err);
}

/* An adapter for a base of another shape. */
static void other_adapter(const char *dir) {
    ModelSource ms;
    Err e = {{0}};
    LC_ASSERT(source_open(&ms, "build/tp/model.h5", &e) == 0);
    LlamaConfig c = ms.c;
    c.dim *= 2;
    LoraConfig lc;
    lora_config_default(&lc, 1u << LORA_Q | 1u << LORA_V);
    lc.r = 2;
    ParamTable t;
    LC_ASSERT(lora_build(&lc, &c, &t, &e) == 0);
    float *p = xcalloc(t.size, sizeof(float));
    LC_ASSERT(peft_save(dir, &lc, &t, p, "other", 1, &e) == 0);
    free(p);
    params_free(&t);
}

void cmd_sample_errors(void) {
    need_model();
    test_put(SD "/p.jsonl", PROMPTS);
    test_put(SD "/long.jsonl", "{\"prompt\": \"the cat\"}\n\n{\"prompt\": \"the cat sees the castle and the dog\"}\n");
    test_put(SD "/noprompt.jsonl", "{\"prompt\": \"the cat\"}\n{\"text\": \"the cat\"}\n");
    test_put(SD "/ids.jsonl", "{\"prompt_ids\": [1, 99999]}\n");
    test_put(SD "/last.jsonl", "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, "
                               "{\"role\": \"assistant\", \"content\": \"yo\"}]}\n");
    test_put(SD "/badstop.jsonl", "{\"prompt\": \"x\", \"stop\": 3}\n");
    test_put(SD "/two.jsonl", "{\"prompt\": \"x\", \"prompt_ids\": [1]}\n");
    test_put(SD "/empty.jsonl", "\n");
    other_adapter(SD "/other_adapter");
    static const TestCliCase cases[] = {
        {"sample %s --prompts " SD "/long.jsonl --ctx 8", SD "/long.jsonl:3: prompt 1 has "},
        {"sample %s --prompts " SD "/long.jsonl --ctx 8", "tokens: too long for the context of 8 tokens (--ctx)"},
        {"sample %s --n 0", "--n: 0 is out of range"},
        {"sample %s --stop User:", "--stop: expected a JSON string or a list of strings (e.g."},
        {"sample %s --stop '[1]'", "--stop: expected a JSON string or a list of strings"},
        {"sample %s --stop '\"\"'", "--stop: an empty stop string"},
        {"sample %s --prompts " SD "/noprompt.jsonl", SD "/noprompt.jsonl:2: no \"prompt\", \"messages\" or "
                                                      "\"prompt_ids\""},
        {"sample %s --prompts " SD "/ids.jsonl", SD "/ids.jsonl:1: \"prompt_ids\"[1] = 99999 is outside the vocabulary"},
        {"sample %s --prompts " SD "/last.jsonl", SD "/last.jsonl:1: the last message is the assistant's"},
        {"sample %s --prompts " SD "/badstop.jsonl", SD "/badstop.jsonl:1: \"stop\": expected a JSON string"},
        {"sample %s --prompts " SD "/two.jsonl", SD "/two.jsonl:1: more than one of"},
        {"sample %s --prompts " SD "/empty.jsonl", SD "/empty.jsonl: no prompt in the file"},
        {"sample %s --prompts " SD "/p.jsonl --template none", SD "/p.jsonl:5: \"messages\" is a message list, which "
                                                                "needs a chat template: --template none"},
        {"sample --model build/tp/model.h5 --tokenizer build/tp/tok.bin --prompts " SD "/p.jsonl --out " SD "/e.jsonl",
         "\"messages\" is a message list, which needs a chat template: give --template"},
        {"sample %s --adapter " SD "/other_adapter", "the base model needs [2, 64]: an adapter for another model (its "
                                                   "base: other)"},
        {"sample %s --ctx 129", "--ctx: 129 exceeds the model's context length 128"},
        {"sample %s --top-p 0", "--top-p: must be in (0, 1]"},
        {"sample %s --prompts " SD "/missing.jsonl", SD "/missing.jsonl: cannot open"},
        {"sample --model build/tp/model.h5 --out x", "--prompts: required"},
        {"sample --model build/tp/model.h5 --prompts x", "--out: required"},
        {"sample --model build/tp/model.h5 --prompts x --out y", "--tokenizer: required: build/tp/model.h5 does not "
                                                                    "carry its tokenizer"},
    };
    const char *base = M " --prompts " SD "/p.jsonl --out " SD "/e.jsonl";
    system("rm -f " SD "/e.jsonl*");
    test_cli_refusals(cases, sizeof cases / sizeof cases[0], base, "");
    EXPECT(access(SD "/e.jsonl", F_OK) != 0, "a refused run wrote its --out");
}

/* Under mpirun: the file of one process, from 2 and 3 ranks, and a resume. */
void cmd_sample_mpi(void) {
    if (!test_have_mpi()) return;
    need_model();
    test_put(SD "/p.jsonl", PROMPTS);
    const char *args = "sample " M " --prompts " SD "/p.jsonl --n 2 --max-tokens 10 --stop '\"og\"' --threads 1 ";
    system("rm -f " SD "/m*.jsonl*");
    int rc = test_llamac("%s --out " SD "/m1.jsonl", args);
    EXPECT(rc == 0, "one process: %s", test_err);
    for (int np = 2; np <= 3; np++) {
        char out[64];
        snprintf(out, sizeof out, SD "/m%d.jsonl", np);
        rc = test_mpi_llamac(np, "%s --out %s --stats %s.stats", args, out, out);
        EXPECT(rc == 0 && same_file(SD "/m1.jsonl", out), "%d ranks: rc %d, other file (%s)", np, rc, test_err);
    }
    /* resume on 2 ranks from a cut file */
    size_t len;
    char *full = slurp(SD "/m1.jsonl", &len);
    FILE *f = fopen(SD "/mr.jsonl", "wb");
    fwrite(full, 1, len / 2, f);
    fclose(f);
    free(full);
    system("cp " SD "/m1.jsonl.settings.json " SD "/mr.jsonl.settings.json");
    rc = test_mpi_llamac(2, "%s --out " SD "/mr.jsonl", args);
    EXPECT(rc == 0 && same_file(SD "/m1.jsonl", SD "/mr.jsonl"), "resume on 2 ranks: %d %s", rc, test_err);
    /* bad input under mpirun: refused before anything is written */
    rc = test_mpi_llamac(2, "%s --out " SD "/mr.jsonl --temperature 0.3", args);
    EXPECT(rc != 0 && strstr(test_err, "--temperature was 0.8, now 0.3"), "refusal on 2 ranks: %d %s", rc, test_err);
}

/* stop_find and the --stop parser */
void cmd_sample_stops(void) {
    char *st[] = {"ab", "xyz", "b"};
    EXPECT(stop_find(st, 3, "..ab", 4, 0) == 2, "ab");
    EXPECT(stop_find(st, 2, "..a", 3, 0) == -1 && stop_find(st, 2, "..ab", 4, 3) == 2, "straddling ab");
    EXPECT(stop_find(st, 3, "..ab", 4, 3) == 2, "earliest of ab and b");
    EXPECT(stop_find(st + 1, 1, "xyzxyz", 6, 6) == -1, "matches in old bytes only");
    EXPECT(stop_find(st + 1, 1, "xyzxyz", 6, 4) == 3, "a match using new bytes");
    char **out = NULL;
    size_t n = 0, cap = 0;
    Err e = {{0}};
    EXPECT(prompts_stops_parse("[\"\\n\\n\", \"User:\"]", &out, &n, &cap, "--stop", &e) == 0 && n == 2 &&
               strcmp(out[0], "\n\n") == 0 && strcmp(out[1], "User:") == 0,
           "array: %s", e.msg);
    EXPECT(prompts_stops_parse("\"</s>\"", &out, &n, &cap, "--stop", &e) == 0 && n == 3 && strcmp(out[2], "</s>") == 0,
           "string: %s", e.msg);
    EXPECT(prompts_stops_parse("</s>", &out, &n, &cap, "--stop", &e) == -1 && n == 3 &&
               strstr(e.msg, "--stop: expected a JSON string or a list of strings") && strstr(e.msg, "got '</s>'"),
           "bare text: %s", e.msg);
    EXPECT(prompts_stops_parse("[\"a\", 2]", &out, &n, &cap, "--stop", &e) == -1 && n == 3, "mixed list: %s", e.msg);
    for (size_t k = 0; k < n; k++) free(out[k]);
    free(out);
}
