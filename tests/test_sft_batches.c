/*
 * test_sft_batches.c: `llamac sft --dump-batches`, the micro-batches the
 * reference test (scripts/test_sft_ref.py) replays in PEFT + torch.
 *
 * The file must hold exactly the batches that trained: one line per
 * micro-batch (steps x accumulation), B*T tokens, targets and positions
 * each, targets the next token inside an example (LC_IGNORE or the next
 * id), positions restarting at each example, and per step as many trained
 * targets as the metrics' trained_tokens. A path that cannot be created is
 * one error line before training, and a failed run leaves no file.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../data/tok.h"
#include "../model/base.h"
#include "../model/ops.h"
#include "test.h"
#include "tests.h"

#define DIR "build/tsftb"
#define B 2
#define T 64
#define ACCUM 2
#define STEPS 3

/* a tiny pretrained base on the chat tokenizer, and a chat file */
static const char *inputs(int *bos) {
    static char tokp[512];
    Tokenizer t;
    snprintf(tokp, sizeof tokp, "%s", test_chat_tokenizer(&t));
    *bos = tok_special_id(&t, "<|begin_of_text|>");
    tok_free(&t);
    mkdir("build", 0755);
    mkdir(DIR, 0755);
    FILE *f = fopen(DIR "/chat.jsonl", "wb"), *g = fopen(DIR "/text.jsonl", "wb");
    LC_ASSERT(f && g);
    static const char *w[] = {"Hi", "there", "you", "are", "helpful", "Fine", "How", "Hello"};
    Rng r;
    rng_seed(&r, 5);
    for (int i = 0; i < 40; i++) {
        char q[128] = "", a[128] = "";
        for (int j = 0, k = 1 + (int)(rng_u64(&r) % 5); j < k; j++)
            strcat(q, w[rng_u64(&r) % 8]), strcat(q, " "), strcat(a, w[rng_u64(&r) % 8]), strcat(a, " ");
        fprintf(f, "{\"messages\": [{\"role\": \"user\", \"content\": \"%s\"}, {\"role\": \"assistant\", "
                   "\"content\": \"%s\"}]}\n", q, a);
        fprintf(g, "{\"text\": \"%s %s\"}\n", q, a);
    }
    fclose(f);
    fclose(g);
    int rc = test_llamac("tokenize encode --tokenizer %s --input " DIR "/text.jsonl --field text --out " DIR "/s.bin",
                         tokp);
    EXPECT(rc == 0, "encode: %s", test_err);
    rc = test_llamac("pretrain --train " DIR "/s.bin --preset tiny --set dim=64 --set hidden=128 --set n_layers=2 "
                     "--batch 2 --seq 32 --steps 1 --ckpt-dir " DIR "/pck --out " DIR "/base.h5 --peak-gflops 1");
    EXPECT(rc == 0, "base model: %s", test_err);
    return tokp;
}

static long ints(json_t *o, const char *key, int32_t *x, long cap) {
    json_t *a = json_object_get(o, key);
    long n = json_is_array(a) ? (long)json_array_size(a) : -1;
    for (long i = 0; i < n && i < cap; i++) x[i] = (int32_t)json_integer_value(json_array_get(a, (size_t)i));
    return n;
}

void sft_dump_batches(void) {
    int bos;
    const char *tokp = inputs(&bos);
    remove(DIR "/b.jsonl");
    remove(DIR "/m.jsonl");
    int rc = test_llamac("sft --model " DIR "/base.h5 --tokenizer %s --data " DIR "/chat.jsonl --template llama3 "
                         "--batch %d --seq %d --batch-tokens %d --steps %d --peak-gflops 1 --lora-r 2 --ckpt-dir " DIR
                         "/ck --adapter-out " DIR "/ad --metrics " DIR "/m.jsonl --dump-batches " DIR "/b.jsonl",
                         tokp, B, T, B * T * ACCUM, STEPS);
    EXPECT(rc == 0, "sft --dump-batches: %s", test_err);
    FILE *f = fopen(DIR "/b.jsonl", "rb"), *mf = fopen(DIR "/m.jsonl", "rb");
    EXPECT(f && mf, "no --dump-batches or --metrics file");
    EXPECT(access(DIR "/b.jsonl.tmp", F_OK) != 0, "the temporary file is left");
    if (!f || !mf) {
        if (f) fclose(f);
        if (mf) fclose(mf);
        return;
    }
    static int32_t tok[B * T], tgt[B * T], pos[B * T];
    char line[1 << 16];
    int lines = 0, bad = 0, packed = 0;
    long trained = 0;
    while (fgets(line, sizeof line, f)) {
        json_error_t je;
        json_t *o = json_loads(line, 0, &je);
        EXPECT(o, "line %d: not JSON (%s)", lines + 1, je.text);
        if (!o) break;
        long nb = (long)json_integer_value(json_object_get(o, "B")), nt = (long)json_integer_value(json_object_get(o, "T"));
        EXPECT(nb == B && nt == T, "line %d: B %ld T %ld", lines + 1, nb, nt);
        EXPECT(ints(o, "tokens", tok, B * T) == B * T && ints(o, "targets", tgt, B * T) == B * T &&
               ints(o, "pos", pos, B * T) == B * T, "line %d: not B*T values each", lines + 1);
        json_decref(o);
        for (int k = 0; k < B * T; k++) {
            if (k % T == 0) bad += pos[k] != 0;
            else if (pos[k] == 0) packed += tok[k] == bos; /* an example (not padding) inside a row */
            else bad += pos[k] != pos[k - 1] + 1;
            /* inside an example the target is the next input token */
            if (k % T + 1 < T && pos[k + 1] == pos[k] + 1) bad += tgt[k] != LC_IGNORE && tgt[k] != tok[k + 1];
            trained += tgt[k] != LC_IGNORE;
        }
        if (++lines % ACCUM == 0) { /* a step: its trained targets as the metrics say */
            char ml[4096];
            long want = -1;
            if (fgets(ml, sizeof ml, mf)) {
                const char *p = strstr(ml, "\"trained_tokens\":");
                if (p) want = strtol(p + strlen("\"trained_tokens\":"), NULL, 10);
            }
            EXPECT(want == trained, "step %d: %ld trained targets dumped, metrics say %ld", lines / ACCUM, trained, want);
            trained = 0;
        }
    }
    fclose(f);
    fclose(mf);
    EXPECT(lines == STEPS * ACCUM, "%d micro-batches dumped, want %d", lines, STEPS * ACCUM);
    EXPECT(bad == 0, "%d positions or targets inconsistent", bad);
    EXPECT(packed > 0, "no row holds two examples: the data is not packed");

    /* a path that cannot be created: one line, no training, nothing left */
    rc = test_llamac("sft --model " DIR "/base.h5 --tokenizer %s --data " DIR "/chat.jsonl --template llama3 "
                     "--batch %d --seq %d --steps 1 --peak-gflops 1 --ckpt-dir " DIR "/ck2 --out " DIR "/E.h5 "
                     "--dump-batches " DIR "/no/such/dir/b.jsonl", tokp, B, T);
    EXPECT(rc == 1 && strstr(test_err, "--dump-batches: cannot create " DIR "/no/such/dir/b.jsonl.tmp") &&
           strchr(test_err, '\n') == strrchr(test_err, '\n'), "rc %d: %s", rc, test_err);
    EXPECT(access(DIR "/E.h5", F_OK) != 0, "a failed run wrote its --out");
}
