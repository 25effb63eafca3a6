/*
 * fuzz_main.c: the libFuzzer driver. Built once per target by `make fuzz`
 * with -DFUZZ_NAME='"<name>"' (clang -fsanitize=fuzzer,address,undefined),
 * so each parser gets its own binary, corpus and crash files.
 */
#include <stdio.h>
#include <stdlib.h>

#include "../model/base.h"
#include "fuzz_targets.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static const FuzzTarget *target;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    target = fuzz_target(FUZZ_NAME);
    if (!target) {
        fprintf(stderr, "fuzz: no target %s\n", FUZZ_NAME);
        abort();
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
    target->run(d, n);
    return 0;
}
