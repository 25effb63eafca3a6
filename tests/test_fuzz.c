/*
 * test_fuzz.c: replays every file of the fuzz corpus (tests/fuzz/<target>/:
 * the seeds and every crasher a fuzz run found, committed as regression
 * inputs) through the same entry points libFuzzer calls (fuzz_targets.c),
 * under the normal build; `make SAN=1 test` replays them under ASan+UBSan.
 * A target whose folder is missing or empty is a failure: every parser
 * keeps a corpus.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../model/base.h"
#include "fuzz_targets.h"
#include "test.h"
#include "tests.h"

static uint8_t *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, len = 0, k;
    uint8_t *b = xmalloc(cap);
    while ((k = fread(b + len, 1, cap - len, f)) > 0)
        if ((len += k) == cap) b = xrealloc(b, cap *= 2);
    fclose(f);
    *n = len;
    return b;
}

void fuzz_replay(void) {
    for (int i = 0; i < fuzz_ntargets; i++) {
        char dir[256];
        snprintf(dir, sizeof dir, "tests/fuzz/%s", fuzz_targets[i].name);
        DIR *d = opendir(dir);
        EXPECT(d != NULL, "%s: no corpus folder", dir);
        if (!d) continue;
        int files = 0;
        struct dirent *de;
        while ((de = readdir(d))) {
            if (de->d_name[0] == '.') continue;
            char path[512];
            snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
            size_t n;
            uint8_t *b = slurp(path, &n);
            EXPECT(b != NULL, "%s: cannot read", path);
            if (!b) continue;
            fuzz_targets[i].run(b, n);
            free(b);
            files++;
        }
        closedir(d);
        EXPECT(files > 0, "%s: empty corpus", dir);
        if (getenv("LLAMAC_TEST_VERBOSE")) printf("    %-16s %d inputs\n", fuzz_targets[i].name, files);
    }
}
