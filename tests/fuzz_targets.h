/*
 * fuzz_targets.h: the table of fuzz entry points (fuzz_targets.c), one per
 * file parser; used by the libFuzzer driver (fuzz_main.c) and by the
 * regression replay in `make test` (test_fuzz.c).
 */
#ifndef LLAMAC_TESTS_FUZZ_TARGETS_H
#define LLAMAC_TESTS_FUZZ_TARGETS_H

#include <stddef.h>
#include <stdint.h>

typedef struct FuzzTarget {
    const char *name;                         /* also the corpus folder tests/fuzz/<name>/ */
    void (*run)(const uint8_t *d, size_t n);  /* any bytes; must not crash, leak or hang */
} FuzzTarget;

extern const FuzzTarget fuzz_targets[];
extern const int fuzz_ntargets;

/* The entry called name, or NULL. */
const FuzzTarget *fuzz_target(const char *name);

#endif
