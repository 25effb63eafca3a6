/*
 * chunkcache.c: the per-thread state of chunkcache.h, behind a POSIX thread
 * key (not _Thread_local) so that the key's destructor frees it with its
 * thread.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "chunkcache.h"

#include "../model/base.h"

#include <pcre2.h>
#include <pthread.h>
#include <stdlib.h>

static pthread_key_t local_key;
static pthread_once_t local_once = PTHREAD_ONCE_INIT;

static void local_free(void *p) {
    ChunkLocal *l = p;
    pcre2_match_data_free(l->md);
    pcre2_match_context_free(l->mc);
    pcre2_jit_stack_free(l->js);
    free(l->scratch);
    free(l);
}

static void local_key_init(void) {
    if (pthread_key_create(&local_key, local_free) != 0) LC_FATAL("pthread_key_create failed");
}

ChunkLocal *chunkcache_local(void) {
    pthread_once(&local_once, local_key_init);
    ChunkLocal *l = pthread_getspecific(local_key);
    if (!l) {
        l = xcalloc(1, sizeof *l);
        l->md = pcre2_match_data_create(1, NULL);
        l->mc = pcre2_match_context_create(NULL);
        /* long whitespace runs backtrack through (?!\S): room beyond the 32 KiB default */
        l->js = pcre2_jit_stack_create(32 << 10, 8 << 20, NULL);
        if (!l->md || !l->mc || !l->js) LC_FATAL("PCRE2: out of memory");
        pcre2_jit_stack_assign(l->mc, NULL, l->js);
        if (pthread_setspecific(local_key, l) != 0) LC_FATAL("pthread_setspecific failed");
    }
    return l;
}

ChunkLocal *chunkcache_claim(uint64_t owner) {
    ChunkLocal *l = chunkcache_local();
    if (l->owner != owner) {
        memset(l->slot, 0, sizeof l->slot);
        l->owner = owner;
    }
    return l;
}
