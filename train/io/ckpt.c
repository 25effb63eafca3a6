/*
 * ckpt.c: HDF5 checkpoints; the layout and the guarantees are in ckpt.h.
 * Every HDF5 call's result is checked; the library's own error printing is
 * switched off so that a failure is one line of ours naming the file.
 */
#include "ckpt.h"

#include "../../dist/dist.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "iofile.h"

#define CKPT_FORMAT "llamac-checkpoint"

// ----------------------------------------------------------------------------
// config fields, by name, for /config attributes and for diffs

typedef struct {
    const char *name;
    size_t off;
    int is_float;
    int def; /* the value of a field that older files lack (CFG_REQUIRED: none) */
} CfgField;

#define CFG_REQUIRED (-2)
#define CF(f, fl) {#f, offsetof(LlamaConfig, f), fl, CFG_REQUIRED}
static const CfgField cfg_fields[] = {
    CF(dim, 0), CF(n_layers, 0), CF(n_heads, 0), CF(n_kv_heads, 0), CF(hidden, 0), CF(vocab, 0),
    CF(max_seq, 0), CF(norm_eps, 1), CF(rope_theta, 1), CF(rope_scaling, 0), CF(rope_factor, 1),
    CF(rope_low_freq, 1), CF(rope_high_freq, 1), CF(rope_orig_ctx, 0), CF(tied, 0),
    /* classifiers (reward models), 2026-12 */
    {"num_labels", offsetof(LlamaConfig, num_labels), 0, 0}, {"pad_id", offsetof(LlamaConfig, pad_id), 0, -1},
    /* a head size other than dim / n_heads (pruned models), 2026-12; 0: dim / n_heads */
    {"head_dim", offsetof(LlamaConfig, head_dim), 0, 0},
};
#undef CF
#define N_CFG (int)(sizeof cfg_fields / sizeof cfg_fields[0])

int ckpt_config_diff(const LlamaConfig *a, const LlamaConfig *b, char *buf, size_t n) {
    for (int i = 0; i < N_CFG; i++) {
        const char *pa = (const char *)a + cfg_fields[i].off, *pb = (const char *)b + cfg_fields[i].off;
        if (cfg_fields[i].off == offsetof(LlamaConfig, pad_id) && !a->num_labels && !b->num_labels)
            continue; /* only a classifier reads its pad id */
        if (cfg_fields[i].off == offsetof(LlamaConfig, head_dim)) {
            if (config_head_size(a) != config_head_size(b)) { /* 0 and an explicit D/H are one shape */
                snprintf(buf, n, "head_dim %d vs %d", config_head_size(a), config_head_size(b));
                return 1;
            }
            continue;
        }
        if (cfg_fields[i].is_float) {
            float x, y;
            memcpy(&x, pa, sizeof x);
            memcpy(&y, pb, sizeof y);
            if (x != y) {
                snprintf(buf, n, "%s %g vs %g", cfg_fields[i].name, x, y);
                return 1;
            }
        } else {
            int x, y;
            memcpy(&x, pa, sizeof x);
            memcpy(&y, pb, sizeof y);
            if (x != y) {
                snprintf(buf, n, "%s %d vs %d", cfg_fields[i].name, x, y);
                return 1;
            }
        }
    }
    if (n) buf[0] = '\0';
    return 0;
}

// ----------------------------------------------------------------------------
// checksum

static uint64_t rotl64(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

#define HASH_P1 0x9E3779B185EBCA87ull
#define HASH_P2 0xC2B2AE3D27D4EB4Full
#define HASH_BLOCK (1u << 20)

static uint64_t hash_block(const unsigned char *p, size_t n, uint64_t seed) {
    uint64_t h[4] = {seed ^ HASH_P1, seed ^ HASH_P2, seed + HASH_P1, seed - HASH_P2};
    size_t i = 0;
    for (; i + 32 <= n; i += 32)
        for (int l = 0; l < 4; l++) {
            uint64_t w;
            memcpy(&w, p + i + 8 * l, 8);
            h[l] = rotl64((h[l] ^ w) * HASH_P1, 31) * HASH_P2;
        }
    uint64_t r = h[0] ^ rotl64(h[1], 17) ^ rotl64(h[2], 29) ^ rotl64(h[3], 43);
    for (; i < n; i++) r = (r ^ p[i]) * HASH_P1;
    r ^= n;
    r ^= r >> 33; r *= HASH_P2; r ^= r >> 29;
    return r;
}

/* Blocks of 1 MiB hashed in parallel, then the block hashes hashed in order:
 * the same value whatever the thread count. */
uint64_t ckpt_hash(const void *data, size_t n) {
    size_t nb = (n + HASH_BLOCK - 1) / HASH_BLOCK;
    if (nb <= 1) return hash_block(data, n, 0);
    uint64_t *bh = xmalloc(nb * sizeof *bh);
    const unsigned char *p = data;
#pragma omp parallel for schedule(static)
    for (size_t b = 0; b < nb; b++) {
        size_t len = b + 1 < nb ? HASH_BLOCK : n - b * HASH_BLOCK;
        bh[b] = hash_block(p + b * HASH_BLOCK, len, b);
    }
    uint64_t r = hash_block((const unsigned char *)bh, nb * sizeof *bh, n);
    free(bh);
    return r;
}

/* An HDF5 file starts with its signature at 0 or, after a user block, at
 * 512, 1024, 2048, ... (a llamac checkpoint: at CKPT_UB). */
int ckpt_is_hdf5(const char *path) {
    static const unsigned char sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
    unsigned char b[8];
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    int found = 0;
    for (long at = 0; !found && at <= CKPT_UB; at = at ? 2 * at : 512)
        found = fseek(f, at, SEEK_SET) == 0 && fread(b, 1, 8, f) == 8 && memcmp(b, sig, 8) == 0;
    fclose(f);
    return found;
}

// ----------------------------------------------------------------------------
// the content table: the HDF5 user block of a checkpoint (CKPT_UB bytes
// before HDF5's superblock) holds the file's size, the byte ranges of every
// dataset's raw data and a hash of every other byte (HDF5's own structure:
// superblock, object headers, B-trees, heaps, attributes). It is written
// last, after the file is closed, and checked before HDF5 reads a byte, so
// damaged structure is refused here: libhdf5 1.10 itself crashes on some
// damaged object headers (found by `make fuzz`, tests/fuzz/ckpt/). Damage to
// raw data is left to the per-dataset checksums, which name the tensor.

#define UB_MAGIC "llamac-ckpt-ub2"
typedef struct {
    char magic[16];
    uint64_t size, nranges, meta_hash;
} UbHeader;
#define UB_MAX_RANGES ((CKPT_UB - sizeof(UbHeader)) / 16)

typedef struct {
    uint64_t off, len;
} UbRange;

static int range_cmp(const void *a, const void *b) {
    const UbRange *x = a, *y = b;
    return x->off < y->off ? -1 : x->off > y->off;
}

typedef struct {
    UbRange *r;
    size_t n, cap;
} RangeList;

static herr_t collect_dataset(hid_t obj, const char *name, const H5O_info_t *info, void *ud) {
    RangeList *l = ud;
    if (info->type != H5O_TYPE_DATASET) return 0;
    hid_t d = H5Dopen2(obj, name, H5P_DEFAULT);
    if (d < 0) return -1;
    haddr_t off = H5Dget_offset(d);
    hsize_t len = H5Dget_storage_size(d);
    H5Dclose(d);
    if (off == HADDR_UNDEF || len == 0) return 0; /* no raw data of its own (compact, empty) */
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 64;
        UbRange *r = realloc(l->r, l->cap * sizeof *r);
        if (!r) return -1;
        l->r = r;
    }
    l->r[l->n++] = (UbRange){(uint64_t)off, (uint64_t)len}; /* a file offset (the user block included) */
    return 0;
}

/* Hash of the bytes of [CKPT_UB, size) outside the sorted ranges r, read
 * from fd. -1 on a read error. */
static int meta_hash(int fd, uint64_t size, const UbRange *r, size_t n, uint64_t *out) {
    uint64_t h = 0x6c6c616d6163ULL, at = CKPT_UB;
    size_t cap = 1 << 16;
    unsigned char *buf = xmalloc(cap);
    int rc = 0;
    for (size_t i = 0; i <= n && rc == 0; i++) {
        uint64_t end = i < n ? r[i].off : size;
        while (at < end && rc == 0) { /* a gap of structure: hashed in pieces, each with its offset */
            size_t k = end - at < cap ? (size_t)(end - at) : cap;
            if (pread(fd, buf, k, (off_t)at) != (ssize_t)k) rc = -1;
            else h = h * 0x100000001b3ULL ^ ckpt_hash(buf, k) ^ at;
            at += k;
        }
        if (i < n) at = r[i].off + r[i].len;
    }
    free(buf);
    *out = h;
    return rc;
}

/* Write the content table of the closed checkpoint file path. */
static int ub_stamp(const char *path) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return -1;
    RangeList l = {NULL, 0, 0};
    herr_t hr = H5Ovisit2(f, H5_INDEX_NAME, H5_ITER_NATIVE, collect_dataset, &l, H5O_INFO_BASIC);
    H5Fclose(f);
    int fd = open(path, O_RDWR);
    struct stat sb;
    int rc = -1;
    if (hr >= 0 && fd >= 0 && fstat(fd, &sb) == 0 && l.n <= UB_MAX_RANGES) {
        qsort(l.r, l.n, sizeof *l.r, range_cmp);
        size_t nb = sizeof(UbHeader) + l.n * sizeof(UbRange);
        unsigned char *ub = xcalloc(1, CKPT_UB);
        UbHeader h = {UB_MAGIC, (uint64_t)sb.st_size, l.n, 0};
        if (meta_hash(fd, h.size, l.r, l.n, &h.meta_hash) == 0) {
            memcpy(ub, &h, sizeof h);
            if (l.n) memcpy(ub + sizeof h, l.r, l.n * sizeof(UbRange));
            rc = pwrite(fd, ub, nb, 0) == (ssize_t)nb ? 0 : -1;
        }
        free(ub);
    }
    if (fd >= 0) close(fd);
    free(l.r);
    return rc;
}

void ckpt_restamp(const char *path) { (void)ub_stamp(path); }

/* Check the content table before HDF5 opens path: -1 with e for a file
 * that is not a finished llamac checkpoint or whose structure changed. */
static int ub_check(const char *path, Err *e) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return err_set(e, "%s: cannot open (%s)", path, strerror(errno));
    struct stat sb;
    UbHeader h;
    int rc = -1;
    UbRange *r = NULL;
    static const unsigned char sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
    unsigned char at0[8] = {0}, atub[8] = {0};
    if (fstat(fd, &sb) || pread(fd, at0, 8, 0) != 8) {
        err_set(e, "%s: damaged or truncated checkpoint (%lld bytes)", path, (long long)sb.st_size);
    } else if (memcmp(at0, sig, 8) == 0 ||
               (pread(fd, atub, 8, CKPT_UB) == 8 && memcmp(atub, sig, 8) != 0)) {
        err_set(e, "%s: an HDF5 file but not a llamac checkpoint (of this version: no content table)", path);
    } else if (pread(fd, &h, sizeof h, 0) != (ssize_t)sizeof h || memcmp(h.magic, UB_MAGIC, 16) != 0) {
        err_set(e, "%s: incomplete checkpoint (the save was interrupted: no content table)", path);
    } else if (h.size != (uint64_t)sb.st_size) {
        err_set(e, "%s: damaged or truncated checkpoint (%lld bytes, written as %llu)", path, (long long)sb.st_size,
                (unsigned long long)h.size);
    } else if (h.nranges > UB_MAX_RANGES) {
        err_set(e, "%s: damaged checkpoint (content table)", path);
    } else {
        r = xmalloc((h.nranges + 1) * sizeof *r);
        uint64_t end = CKPT_UB, mh;
        int ok = pread(fd, r, h.nranges * sizeof *r, sizeof h) == (ssize_t)(h.nranges * sizeof *r);
        for (uint64_t i = 0; ok && i < h.nranges; i++) {
            ok = r[i].off >= end && r[i].len <= h.size && r[i].off <= h.size - r[i].len;
            end = r[i].off + r[i].len;
        }
        if (!ok) err_set(e, "%s: damaged checkpoint (content table)", path);
        else if (meta_hash(fd, h.size, r, h.nranges, &mh) || mh != h.meta_hash)
            err_set(e, "%s: damaged checkpoint (its HDF5 structure does not match the hash written with it)", path);
        else rc = 0;
    }
    free(r);
    close(fd);
    return rc;
}

// ----------------------------------------------------------------------------
// small HDF5 helpers: each returns 0 or -1

static void h5_quiet(void) {
    static int done;
    if (!done) {
        H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
        done = 1;
    }
}

static int attr_write(hid_t obj, const char *name, hid_t file_type, hid_t mem_type, const void *v) {
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(obj, name, file_type, sp, H5P_DEFAULT, H5P_DEFAULT);
    int rc = a < 0 || H5Awrite(a, mem_type, v) < 0 ? -1 : 0;
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    return rc;
}

static int attr_i64(hid_t obj, const char *name, int64_t v) {
    return attr_write(obj, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &v);
}
static int attr_u64(hid_t obj, const char *name, uint64_t v) {
    return attr_write(obj, name, H5T_STD_U64LE, H5T_NATIVE_UINT64, &v);
}
static int attr_f32(hid_t obj, const char *name, float v) {
    return attr_write(obj, name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, &v);
}
static int attr_f64(hid_t obj, const char *name, double v) {
    return attr_write(obj, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &v);
}
static int attr_str(hid_t obj, const char *name, const char *s) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, strlen(s) + 1);
    H5Tset_strpad(t, H5T_STR_NULLTERM);
    int rc = attr_write(obj, name, t, t, s);
    H5Tclose(t);
    return rc;
}

static int attr_read(hid_t obj, const char *name, hid_t mem_type, void *v) {
    if (H5Aexists(obj, name) <= 0) return -1;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) return -1;
    int rc = H5Aread(a, mem_type, v) < 0 ? -1 : 0;
    H5Aclose(a);
    return rc;
}

/* Size of the file obj is in: what any size read from it is checked against
 * before llamac allocates by it (issue 16). */
static size_t file_bytes(hid_t obj) {
    hid_t f = H5Iget_file_id(obj);
    hsize_t n = 0;
    if (f < 0 || H5Fget_filesize(f, &n) < 0) n = 0;
    if (f >= 0) H5Fclose(f);
    return (size_t)n;
}

/* A fixed-length string attribute into buf[0..n). */
static int attr_read_str(hid_t obj, const char *name, char *buf, size_t n) {
    if (H5Aexists(obj, name) <= 0) return -1;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) return -1;
    hid_t ft = H5Aget_type(a);
    int rc = -1;
    if (H5Tget_class(ft) == H5T_STRING && !H5Tis_variable_str(ft) && H5Tget_size(ft) <= file_bytes(obj)) {
        size_t len = H5Tget_size(ft); /* bounded: a damaged type must not size the malloc (issue 16) */
        char *tmp = xmalloc(len + 1);
        hid_t mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, len);
        if (H5Aread(a, mt, tmp) >= 0) {
            tmp[len] = '\0';
            snprintf(buf, n, "%s", tmp);
            rc = 0;
        }
        H5Tclose(mt);
        free(tmp);
    }
    H5Tclose(ft);
    H5Aclose(a);
    return rc;
}

/* A data-parallel save (ckpt_save_dist), for its duration: every rank
 * creates every dataset and attribute (HDF5's collective metadata), the
 * data of each is written by one rank. NULL: a one-process save. */
typedef struct SavePar {
    int rank, world;
    const ParamTable *ot;  /* the optimizer's table */
    const size_t *own;     /* rank r holds ot's tensors in [own[2r], own[2r+1]) (a pipeline stage's, a ZeRO
                            * shard), its moments from own[2r] on; NULL: all of them everywhere */
} SavePar;
static const SavePar *par;

/* Dataset of dims[0..ndim) of type ft from mem (memory type mt), written by
 * rank writer (under par; mem is only read there), with checksum sum, which
 * every rank knows. */
static int dset_write_by(hid_t loc, const char *name, int ndim, const hsize_t *dims, hid_t ft, hid_t mt,
                         const void *mem, int writer, uint64_t sum) {
    hid_t sp = H5Screate_simple(ndim, dims, NULL);
    hid_t d = H5Dcreate2(loc, name, ft, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    int rc = -1;
    if (d >= 0 && ((par && par->rank != writer) || H5Dwrite(d, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, mem) >= 0) &&
        attr_u64(d, "checksum", sum) == 0)
        rc = 0;
    if (d >= 0) H5Dclose(d);
    H5Sclose(sp);
    return rc;
}

/* The same for data every rank holds (state, small): rank 0 writes it. */
static int dset_write(hid_t loc, const char *name, int ndim, const hsize_t *dims, hid_t ft, hid_t mt,
                      const void *mem, size_t nbytes) {
    return dset_write_by(loc, name, ndim, dims, ft, mt, mem, 0, ckpt_hash(mem, nbytes));
}

/* Read dataset name of exactly dims[0..ndim) into mem (memory type mt) and
 * verify its checksum. Returns 0, or -1 with why[] set. */
static int dset_read(hid_t loc, const char *name, int ndim, const hsize_t *dims, hid_t mt, void *mem,
                     size_t nbytes, char *why, size_t nwhy) {
    if (H5Lexists(loc, name, H5P_DEFAULT) <= 0) {
        snprintf(why, nwhy, "missing tensor %s", name);
        return -1;
    }
    hid_t d = H5Dopen2(loc, name, H5P_DEFAULT);
    if (d < 0) {
        snprintf(why, nwhy, "cannot open dataset %s", name);
        return -1;
    }
    int rc = -1;
    hid_t sp = H5Dget_space(d);
    int nd = H5Sget_simple_extent_ndims(sp);
    hsize_t got[8] = {0};
    if (nd != ndim || nd > 8 || H5Sget_simple_extent_dims(sp, got, NULL) < 0 ||
        memcmp(got, dims, (size_t)ndim * sizeof *dims) != 0) {
        char gs[64] = "", ws[64] = "";
        for (int i = 0; i < nd && i < 8; i++)
            snprintf(gs + strlen(gs), sizeof gs - strlen(gs), "%s%llu", i ? "x" : "", (unsigned long long)got[i]);
        for (int i = 0; i < ndim; i++)
            snprintf(ws + strlen(ws), sizeof ws - strlen(ws), "%s%llu", i ? "x" : "", (unsigned long long)dims[i]);
        snprintf(why, nwhy, "tensor %s has shape %s, the model needs %s", name, gs, ws);
        goto out;
    }
    if (H5Dread(d, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, mem) < 0) {
        snprintf(why, nwhy, "cannot read tensor %s (file truncated or damaged)", name);
        goto out;
    }
    uint64_t want;
    if (attr_read(d, "checksum", H5T_NATIVE_UINT64, &want) == 0 && want != ckpt_hash(mem, nbytes)) {
        snprintf(why, nwhy, "tensor %s is corrupted (checksum mismatch)", name);
        goto out;
    }
    rc = 0;
out:
    H5Sclose(sp);
    H5Dclose(d);
    return rc;
}

static void tensor_dims(const ParamInfo *p, hsize_t *dims) {
    for (int k = 0; k < p->ndim; k++) dims[k] = (hsize_t)p->shape[k];
}

// ----------------------------------------------------------------------------
// save

/* Test hook: SIGKILL ourselves after this many datasets (0: never). */
static long kill_after(void) {
    const char *s = getenv("LLAMAC_CKPT_KILL_AFTER");
    return s ? atol(s) : 0;
}
static long datasets_written; /* by this process, for the hook */

static int fsync_path(const char *path, int dir) {
    int fd = open(path, dir ? O_RDONLY | O_DIRECTORY : O_RDONLY);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

static void dir_of(const char *path, char *dir, size_t n) {
    const char *s = strrchr(path, '/');
    if (!s) snprintf(dir, n, ".");
    else if (s == path) snprintf(dir, n, "/");
    else snprintf(dir, n, "%.*s", (int)(s - path), path);
}

/* Under par: the rank that writes tensor i of t (for the optimizer's
 * table one of the ranks that hold it, in turn; else any, in turn), and
 * where its data is (moments: this rank's part only). */
static int tensor_writer(const ParamTable *t, int i) {
    if (!par) return 0;
    if (par->own && t == par->ot) {
        size_t o = t->p[i].offset;
        int holders = 0, r;
        for (r = 0; r < par->world; r++) holders += o >= par->own[2 * r] && o < par->own[2 * r + 1];
        LC_ASSERT(holders > 0);
        int pick = i % holders;
        for (r = 0; r < par->world; r++)
            if (o >= par->own[2 * r] && o < par->own[2 * r + 1] && pick-- == 0) return r;
    }
    return i % par->world;
}

static const float *tensor_data(const ParamTable *t, const float *buf, int i, int moments) {
    if (par && moments && par->own) return buf + (t->p[i].offset - par->own[2 * par->rank]);
    return buf + t->p[i].offset;
}

/* moments: buf is AdamW's m or v (local to the shard under ZeRO) */
static int write_tensors(hid_t grp, const ParamTable *t, const float *buf, int moments, long *ndone, long kill) {
    uint64_t *sum = xcalloc((size_t)t->n + 1, sizeof *sum);
    for (int i = 0; i < t->n; i++)
        if (!par || tensor_writer(t, i) == par->rank)
            sum[i] = ckpt_hash(tensor_data(t, buf, i, moments), t->p[i].numel * sizeof(float));
    if (par) dist_allreduce_or_u64(sum, t->n); /* each known to its writer, 0 elsewhere */
    int rc = 0;
    for (int i = 0; i < t->n && rc == 0; i++) {
        const ParamInfo *p = &t->p[i];
        hsize_t dims[2];
        tensor_dims(p, dims);
        rc = dset_write_by(grp, p->name, p->ndim, dims, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT,
                           tensor_data(t, buf, i, moments), tensor_writer(t, i), sum[i]);
        if (kill && ++*ndone >= kill) raise(SIGKILL);
    }
    free(sum);
    return rc;
}

/* "q_proj,v_proj" and "all" / "0,2" of lc into buf. */
static void lora_strings(const LoraConfig *lc, char *targets, char *layers, size_t n) {
    targets[0] = layers[0] = 0;
    for (int m = 0; m < LORA_NMOD; m++)
        if (lc->targets >> m & 1u)
            snprintf(targets + strlen(targets), n - strlen(targets), "%s%s", targets[0] ? "," : "",
                     lora_module_name(m));
    if (lc->all_layers) snprintf(layers, n, "all");
    for (int l = 0; !lc->all_layers && l < LC_MAX_LAYERS; l++)
        if (lc->layers[l]) snprintf(layers + strlen(layers), n - strlen(layers), "%s%d", layers[0] ? "," : "", l);
}

/* Content hash of the parameters laid out by t (tensors in table order,
 * padding excluded): what a checkpoint that references its base records. */
static uint64_t params_hash(const ParamTable *t, const float *params) {
    uint64_t *h = xmalloc((size_t)(t->n + 1) * sizeof *h);
    h[0] = (uint64_t)t->n;
    for (int i = 0; i < t->n; i++)
        h[i + 1] = t->p[i].qtype ? 0 : ckpt_hash(params + t->p[i].offset, t->p[i].numel * sizeof(float));
    uint64_t r = ckpt_hash(h, (size_t)(t->n + 1) * sizeof *h);
    free(h);
    return r;
}

static int write_lora(hid_t f, const LlamaConfig *c, const ParamTable *t, const float *params, const CkptLora *lora,
                      long kill) {
    (void)c;
    hid_t g = H5Gcreate2(f, "lora", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) return -1;
    const LoraConfig *lc = &lora->lc;
    char targets[128], layers[4 * LC_MAX_LAYERS + 8];
    lora_strings(lc, targets, layers, sizeof layers);
    int rc = attr_i64(g, "r", lc->r) | attr_f32(g, "alpha", lc->alpha) | attr_f32(g, "dropout", lc->dropout) |
             attr_i64(g, "rslora", lc->rslora) | attr_str(g, "targets", targets) | attr_str(g, "layers", layers) |
             attr_str(g, "init", lc->init == LORA_INIT_GAUSSIAN ? "gaussian" : "kaiming");
    if (rc == 0 && lc->head) rc = attr_i64(g, "head", 1); /* modules_to_save ["score"] */
    if (rc == 0 && lora->base_ref)
        rc = attr_str(g, "base_path", lora->base_ref) |
             attr_u64(g, "base_hash", lora->base_quant ? lora->base_hash : params_hash(t, params));
    if (rc == 0 && lora->base_quant) rc = attr_str(g, "base_quant", lora->base_quant);
    if (rc == 0) rc = write_tensors(g, lora->t, lora->params, 0, &datasets_written, kill);
    H5Gclose(g);
    return rc;
}

static int write_all(hid_t f, const LlamaConfig *c, const ParamTable *t, const float *params,
                     uint64_t tokenizer_id, const CkptLora *lora, const AdamW *opt, const CkptState *st) {
    long kill = kill_after();
    if (attr_str(f, "format", CKPT_FORMAT) || attr_i64(f, "version", CKPT_VERSION)) return -1;
    hid_t g = H5Gcreate2(f, "config", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) return -1;
    int rc = attr_str(g, "name", c->name) | attr_u64(g, "tokenizer_id", tokenizer_id);
    for (int i = 0; i < N_CFG && rc == 0; i++) {
        const char *p = (const char *)c + cfg_fields[i].off;
        if (cfg_fields[i].is_float) {
            float v;
            memcpy(&v, p, sizeof v);
            rc = attr_f32(g, cfg_fields[i].name, v);
        } else {
            int v;
            memcpy(&v, p, sizeof v);
            rc = attr_i64(g, cfg_fields[i].name, v);
        }
    }
    H5Gclose(g);
    if (rc) return -1;

    if (!lora || !lora->base_ref) {
        if ((g = H5Gcreate2(f, "model", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)) < 0) return -1;
        rc = write_tensors(g, t, params, 0, &datasets_written, kill);
        H5Gclose(g);
        if (rc) return -1;
    }
    if (lora && write_lora(f, c, t, params, lora, kill)) return -1;
    const ParamTable *ot = lora ? lora->t : t; /* what the optimizer steps */

    if (opt) {
        if ((g = H5Gcreate2(f, "optim", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)) < 0) return -1;
        rc = attr_i64(g, "t", opt->t) | attr_f32(g, "beta1", opt->cfg.beta1) | attr_f32(g, "beta2", opt->cfg.beta2) |
             attr_f32(g, "eps", opt->cfg.eps) | attr_f32(g, "weight_decay", opt->cfg.weight_decay) |
             attr_f32(g, "clip", opt->cfg.clip) | attr_i64(g, "decay_all", opt->cfg.decay_all);
        for (int k = 0; k < 2 && rc == 0; k++) {
            hid_t gm = H5Gcreate2(g, k ? "v" : "m", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
            if (gm < 0) { rc = -1; break; }
            rc = write_tensors(gm, ot, k ? opt->v : opt->m, 1, &datasets_written, kill);
            H5Gclose(gm);
        }
        H5Gclose(g);
        if (rc) return -1;
    }

    if (st) {
        if ((g = H5Gcreate2(f, "state", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)) < 0) return -1;
        int nc = st->ncursor ? st->ncursor : 2;
        hsize_t cd[2] = {(hsize_t)st->world, (hsize_t)nc}, rd[1] = {4};
        const char *rcfg = st->run_config ? st->run_config : "";
        hsize_t sd[1] = {strlen(rcfg) + 1};
        rc = attr_i64(g, "step", st->step) | attr_i64(g, "tokens", st->tokens) | attr_u64(g, "seed", st->seed) |
             attr_f64(g, "lr", st->lr) | attr_i64(g, "world", st->world);
        if (rc == 0 && st->data_id) rc = attr_u64(g, "data_id", st->data_id);
        if (rc == 0 && st->model_id) rc = attr_u64(g, "model_id", st->model_id);
        if (rc == 0 && st->world > 0)
            rc = dset_write(g, "cursor", 2, cd, H5T_STD_U64LE, H5T_NATIVE_UINT64, st->cursor,
                            (size_t)st->world * nc * sizeof(uint64_t));
        if (rc == 0)
            rc = dset_write(g, "rng", 1, rd, H5T_STD_U64LE, H5T_NATIVE_UINT64, st->rng, sizeof st->rng);
        if (rc == 0)
            rc = dset_write(g, "run_config", 1, sd, H5T_STD_U8LE, H5T_NATIVE_UCHAR, rcfg, sd[0]);
        hsize_t ad[1] = {(hsize_t)st->naux};
        if (rc == 0 && st->naux)
            rc = dset_write(g, "aux", 1, ad, H5T_STD_U8LE, H5T_NATIVE_UCHAR, st->aux, st->naux);
        H5Gclose(g);
        if (rc) return -1;
    }
    /* last: the completion mark */
    return attr_i64(f, "complete", 1);
}

static int rename_into_place(const char *tmp, const char *path, Err *e);

/* Bytes the file takes at most: every tensor's data, and for each dataset
 * more than HDF5 spends on its header, checksum attribute and link (a few
 * hundred bytes), plus the content table and the groups. */
static uint64_t save_bytes(const ParamTable *t, const CkptLora *lora, const AdamW *opt, const CkptState *st) {
    const ParamTable *ot = lora ? lora->t : t;
    uint64_t b = (uint64_t)CKPT_UB + (1u << 20), n = 0;
    if (!lora || !lora->base_ref) b += t->size * sizeof(float), n += (uint64_t)t->n;
    if (lora) b += ot->size * sizeof(float), n += (uint64_t)ot->n;
    if (opt) b += 2 * ot->size * sizeof(float), n += 2 * (uint64_t)ot->n;
    if (st) b += (uint64_t)st->world * 8 * (uint64_t)(st->ncursor ? st->ncursor : 2) + 32 + (st->run_config ? strlen(st->run_config) : 0) + 1 + st->naux, n += 4;
    return b + n * 4096;
}

/* Reserve bytes of disk for path (created if need be): 0, or the errno of
 * the failure (ENOSPC on a full disk, EFBIG beyond RLIMIT_FSIZE with SIGXFSZ
 * ignored). libhdf5 cannot survive a write that fails: its close fails, the
 * file stays open inside it, and the library crashes at exit (H5F_term_package)
 * trying again; so a save claims its space before HDF5 writes anything, and
 * fails cleanly when it cannot. */
static int reserve(const char *path, uint64_t bytes, int *created) {
    int fd = open(path, O_WRONLY | O_CREAT, 0644);
    *created = fd >= 0;
    if (fd < 0) return errno ? errno : EIO;
    /* fallocate(2), not posix_fallocate: where the filesystem cannot
     * allocate (EOPNOTSUPP), glibc's fallback would write every byte twice
     * per save; there the save goes on unguarded, as before */
    int er = fallocate(fd, 0, 0, (off_t)bytes) == 0 ? 0 : errno;
    if (er == EOPNOTSUPP || er == ENOSYS) er = 0;
    if (close(fd) && !er) er = errno ? errno : EIO;
    return er;
}

/* HDF5's end of allocation of the closed file path (its size without the
 * space reserve claimed), or 0. */
static haddr_t final_eoa(const char *path) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    haddr_t eoa = 0;
    if (f >= 0 && H5Fget_eoa(f, &eoa) < 0) eoa = 0;
    if (f >= 0) H5Fclose(f);
    return eoa;
}

/* The file as one process (par NULL) or, under par, every rank through
 * MPI-IO; rank 0 then flushes and renames it (the others wait: every rank
 * returns the same result). */
static int save_file(const char *path, const LlamaConfig *c, const ParamTable *t, const float *params,
                     uint64_t tokenizer_id, const CkptLora *lora, const AdamW *opt, const CkptState *st, Err *e) {
    h5_quiet();
    char tmp[4096], dir[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) return err_set(e, "%s: path too long", path);
    hid_t fapl = H5P_DEFAULT;
    if (par) {
#if defined(H5_HAVE_PARALLEL) && defined(LC_HAVE_MPI)
        if (par->rank == 0) unlink(tmp);
        dist_barrier();
        fapl = H5Pcreate(H5P_FILE_ACCESS);
        H5Pset_fapl_mpio(fapl, MPI_COMM_WORLD, MPI_INFO_NULL);
#else
        LC_FATAL("ckpt_save_dist: several ranks without parallel HDF5");
#endif
    } else {
        unlink(tmp);
    }
    /* the space first (see reserve), before HDF5 holds the file open */
    uint64_t need = save_bytes(t, lora, opt, st);
    int made = 1, er = !par || par->rank == 0 ? reserve(tmp, need, &made) : 0;
    if (!par || par->rank == 0) unlink(tmp);
    if (par) er = dist_allreduce_max_int(er), made = !dist_allreduce_max_int(!made);
    if (er) {
        if (fapl != H5P_DEFAULT) H5Pclose(fapl);
        if (!made) return err_set(e, "%s: cannot create (%s)", tmp, strerror(er));
        return err_set(e, "%s: cannot write the checkpoint: %s (it needs about %.0f MB)", path, strerror(er),
                       (double)need / 1e6);
    }
    hid_t fcpl = H5Pcreate(H5P_FILE_CREATE);
    H5Pset_userblock(fcpl, CKPT_UB); /* the content table, written after the close */
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, fcpl, fapl);
    H5Pclose(fcpl);
    if (fapl != H5P_DEFAULT) H5Pclose(fapl);
    er = errno ? errno : EIO;
    if (par && dist_allreduce_max_int(f < 0)) {
        if (f >= 0) H5Fclose(f);
        return err_set(e, "%s: cannot create on every rank (%s)", tmp, strerror(er));
    }
    if (f < 0) return err_set(e, "%s: cannot create (%s)", tmp, strerror(er));
    /* HDF5 truncated the file: one process claims the space again under its
     * open file (HDF5's own size bookkeeping is untouched: it writes inside
     * the claimed blocks) and cuts the file back to HDF5's end of allocation
     * after the close, as read back from the closed file. Under MPI-IO
     * (whose driver cannot report that end) the check before the create is
     * the guard. */
    int made2;
    er = par ? 0 : (H5Fflush(f, H5F_SCOPE_LOCAL), reserve(tmp, need, &made2));
    int rc = er ? -1 : write_all(f, c, t, params, tokenizer_id, lora, opt, st);
    if (H5Fclose(f) < 0) rc = -1;
    haddr_t eoa = rc == 0 && !par ? final_eoa(tmp) : 0;
    if (rc == 0 && !par && (eoa == 0 || truncate(tmp, (off_t)eoa) != 0)) rc = -1;
    if (par) rc = -dist_allreduce_max_int(-rc);
    if (par && par->rank != 0) { /* rank 0 flushes and renames; its result is everyone's */
        int r0 = dist_allreduce_max_int(0);
        if (rc) return err_set(e, "%s: cannot write the checkpoint (disk full?)", path);
        return r0 ? err_set(e, "%s: rank 0 could not flush or rename the checkpoint", path) : 0;
    }
    if (rc == 0 && ub_stamp(tmp)) rc = -1;
    if (par && rc) dist_allreduce_max_int(1);
    if (rc) {
        unlink(tmp);
        return err_set(e, "%s: cannot write the checkpoint (disk full?)", path);
    }
    rc = rename_into_place(tmp, path, e);
    if (par) dist_allreduce_max_int(rc != 0);
    if (rc) return -1;
    dir_of(path, dir, sizeof dir);
    fsync_path(dir, 1); /* best effort: some filesystems refuse directory fsync */
    return 0;
}

/* The end of the protocol: fsync the temporary file, rename it. */
static int rename_into_place(const char *tmp, const char *path, Err *e) {
    if (fsync_path(tmp, 0)) {
        unlink(tmp);
        return err_set(e, "%s: cannot flush to disk (%s)", tmp, strerror(errno));
    }
    if (rename(tmp, path)) {
        int er = errno;
        unlink(tmp);
        return err_set(e, "%s: cannot rename %s into place (%s)", path, tmp, strerror(er));
    }
    return 0;
}

int ckpt_save_dist(const char *path, const LlamaConfig *c, const ParamTable *t, const float *params,
                   uint64_t tokenizer_id, const CkptLora *lora, const AdamW *opt, const size_t *own,
                   const CkptState *st, Err *e) {
    if (dist_world() == 1)
        return lora ? ckpt_save_lora(path, c, t, params, tokenizer_id, lora, opt, st, e)
                    : ckpt_save(path, c, t, params, tokenizer_id, opt, st, e);
    SavePar sp = {dist_rank(), dist_world(), lora ? lora->t : t, own};
    par = &sp;
    int rc = save_file(path, c, t, params, tokenizer_id, lora, opt, st, e);
    par = NULL;
    return rc;
}

int ckpt_save(const char *path, const LlamaConfig *c, const ParamTable *t, const float *params,
              uint64_t tokenizer_id, const AdamW *opt, const CkptState *st, Err *e) {
    return save_file(path, c, t, params, tokenizer_id, NULL, opt, st, e);
}

int ckpt_save_lora(const char *path, const LlamaConfig *c, const ParamTable *bt, const float *base_params,
                   uint64_t tokenizer_id, const CkptLora *lora, const AdamW *opt, const CkptState *st, Err *e) {
    LC_ASSERT(lora && lora->t && lora->params);
    return save_file(path, c, bt, base_params, tokenizer_id, lora, opt, st, e);
}

// ----------------------------------------------------------------------------
// load

/* Open a complete llamac checkpoint read-only, or -1 with e. */
static hid_t open_ckpt(const char *path, Err *e) {
    h5_quiet();
    struct stat sb;
    if (stat(path, &sb)) {
        err_set(e, "%s: cannot open (%s)", path, strerror(errno));
        return -1;
    }
    if (!ckpt_is_hdf5(path)) {
        err_set(e, "%s: not an HDF5 file (not a llamac checkpoint)", path);
        return -1;
    }
    if (ub_check(path, e)) return -1;
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) {
        err_set(e, "%s: damaged or truncated HDF5 file (cannot open)", path);
        return -1;
    }
    char fmt[64];
    int64_t ver = 0, complete = 0;
    if (attr_read_str(f, "format", fmt, sizeof fmt) || strcmp(fmt, CKPT_FORMAT) != 0) {
        err_set(e, "%s: an HDF5 file but not a llamac checkpoint", path);
    } else if (attr_read(f, "version", H5T_NATIVE_INT64, &ver) || ver != CKPT_VERSION) {
        err_set(e, "%s: checkpoint version %lld not supported (this llamac reads %d)", path, (long long)ver,
                CKPT_VERSION);
    } else if (attr_read(f, "complete", H5T_NATIVE_INT64, &complete) || complete != 1) {
        err_set(e, "%s: incomplete checkpoint (the save was interrupted)", path);
    } else {
        return f;
    }
    H5Fclose(f);
    return -1;
}

static int read_config(hid_t f, const char *path, LlamaConfig *c, uint64_t *tok, Err *e) {
    memset(c, 0, sizeof *c);
    hid_t g = H5Gopen2(f, "config", H5P_DEFAULT);
    if (g < 0) return err_set(e, "%s: missing /config", path);
    int rc = 0;
    attr_read_str(g, "name", c->name, sizeof c->name);
    if (attr_read(g, "tokenizer_id", H5T_NATIVE_UINT64, tok)) rc = err_set(e, "%s: /config lacks tokenizer_id", path);
    for (int i = 0; i < N_CFG && rc == 0; i++) {
        char *p = (char *)c + cfg_fields[i].off;
        if (cfg_fields[i].is_float) {
            float v;
            if (attr_read(g, cfg_fields[i].name, H5T_NATIVE_FLOAT, &v))
                rc = err_set(e, "%s: /config lacks %s", path, cfg_fields[i].name);
            memcpy(p, &v, sizeof v);
        } else {
            int64_t v;
            if (attr_read(g, cfg_fields[i].name, H5T_NATIVE_INT64, &v)) {
                if (cfg_fields[i].def == CFG_REQUIRED) rc = err_set(e, "%s: /config lacks %s", path, cfg_fields[i].name);
                v = cfg_fields[i].def;
            }
            int iv = (int)v;
            memcpy(p, &iv, sizeof iv);
        }
    }
    H5Gclose(g);
    if (rc == 0 && config_validate(c, e)) {
        char why[256];
        snprintf(why, sizeof why, "%s", e->msg);
        rc = err_set(e, "%s: bad /config (%s)", path, why);
    }
    return rc;
}

/* /lora's attributes into lc (checked against c), base_path into base[0..n)
 * ("" when the base is in the file) and base_hash into *hash. */
static int read_lora_config(hid_t f, const char *path, const LlamaConfig *c, LoraConfig *lc, char *base, size_t n,
                            uint64_t *hash, Err *e) {
    hid_t g = H5Gopen2(f, "lora", H5P_DEFAULT);
    if (g < 0) return err_set(e, "%s: cannot open /lora", path);
    int64_t r = 0, rs = 0;
    char targets[128], layers[4 * LC_MAX_LAYERS + 8], init[32];
    lora_config_default(lc, 0);
    int rc = 0;
    Err le;
    if (attr_read(g, "r", H5T_NATIVE_INT64, &r) || attr_read(g, "alpha", H5T_NATIVE_FLOAT, &lc->alpha) ||
        attr_read(g, "dropout", H5T_NATIVE_FLOAT, &lc->dropout) || attr_read(g, "rslora", H5T_NATIVE_INT64, &rs) ||
        attr_read_str(g, "targets", targets, sizeof targets) || attr_read_str(g, "layers", layers, sizeof layers) ||
        attr_read_str(g, "init", init, sizeof init) || r < 1 || r > (1 << 20)) {
        rc = err_set(e, "%s: /lora lacks its attributes (r, alpha, dropout, rslora, targets, layers, init)", path);
    } else {
        lc->r = (int)r;
        lc->rslora = rs != 0;
        lc->init = strcmp(init, "gaussian") == 0 ? LORA_INIT_GAUSSIAN : LORA_INIT_KAIMING;
        int64_t head = 0;
        if (H5Aexists(g, "head") > 0 && attr_read(g, "head", H5T_NATIVE_INT64, &head) == 0) lc->head = head != 0;
        if (lora_parse_targets(targets, &lc->targets, &le) ||
            (strcmp(layers, "all") != 0 && lora_parse_layers(layers, lc, c->n_layers, &le)) ||
            lora_validate(lc, c, &le))
            rc = err_set(e, "%s: bad /lora attributes (%s)", path, le.msg);
    }
    base[0] = 0;
    if (rc == 0 && H5Aexists(g, "base_path") > 0 &&
        (attr_read_str(g, "base_path", base, n) || (hash && attr_read(g, "base_hash", H5T_NATIVE_UINT64, hash))))
        rc = err_set(e, "%s: /lora has a base_path without a base_hash", path);
    H5Gclose(g);
    return rc;
}

int ckpt_info(const char *path, CkptInfo *info, Err *e) {
    memset(info, 0, sizeof *info);
    info->step = -1;
    hid_t f = open_ckpt(path, e);
    if (f < 0) return -1;
    int rc = read_config(f, path, &info->c, &info->tokenizer_id, e);
    info->has_optim = H5Lexists(f, "optim", H5P_DEFAULT) > 0;
    info->has_state = H5Lexists(f, "state", H5P_DEFAULT) > 0;
    info->has_lora = H5Lexists(f, "lora", H5P_DEFAULT) > 0;
    if (rc == 0 && info->has_lora) rc = read_lora_config(f, path, &info->c, &info->lora, info->lora_base,
                                                         sizeof info->lora_base, &info->lora_base_hash, e);
    if (rc == 0 && info->has_lora && H5Aexists_by_name(f, "lora", "base_quant", H5P_DEFAULT) > 0) {
        hid_t g = H5Gopen2(f, "lora", H5P_DEFAULT);
        if (g < 0 || attr_read_str(g, "base_quant", info->lora_base_quant, sizeof info->lora_base_quant))
            rc = err_set(e, "%s: /lora has an unreadable base_quant", path);
        if (g >= 0) H5Gclose(g);
    }
    if (rc == 0 && info->has_state) {
        hid_t g = H5Gopen2(f, "state", H5P_DEFAULT);
        int64_t v;
        if (g >= 0 && attr_read(g, "step", H5T_NATIVE_INT64, &v) == 0) info->step = v;
        if (g >= 0 && attr_read(g, "tokens", H5T_NATIVE_INT64, &v) == 0) info->tokens = v;
        if (g >= 0) H5Gclose(g);
    }
    H5Fclose(f);
    return rc;
}

static int read_tensors(hid_t grp, const ParamTable *t, float *buf, const char *path, Err *e) {
    char why[512], gname[64], full[160];
    if (H5Iget_name(grp, gname, sizeof gname) <= 0) snprintf(gname, sizeof gname, "?");
    for (int i = 0; i < t->n; i++) {
        const ParamInfo *p = &t->p[i];
        hsize_t dims[2];
        tensor_dims(p, dims);
        if (dset_read(grp, p->name, p->ndim, dims, H5T_NATIVE_FLOAT, buf + p->offset, p->numel * sizeof(float),
                      why, sizeof why))
            return err_set(e, "%s: %s", path, why);
        snprintf(full, sizeof full, "%s/%s", gname, p->name); /* /model/..., /optim/m/..., /lora/... */
        if (iofile_check_finite(path, full, buf + p->offset, p->numel, e)) return -1;
    }
    return 0;
}

static int load_optim(hid_t f, const char *path, const ParamTable *t, AdamW *opt, Err *e) {
    if (H5Lexists(f, "optim", H5P_DEFAULT) <= 0)
        return err_set(e, "%s: no optimizer state (a model-only file cannot resume training)", path);
    hid_t g = H5Gopen2(f, "optim", H5P_DEFAULT);
    if (g < 0) return err_set(e, "%s: cannot open /optim", path);
    int64_t tt;
    int rc = 0;
    if (attr_read(g, "t", H5T_NATIVE_INT64, &tt)) rc = err_set(e, "%s: /optim lacks t", path);
    opt->t = (long)tt;
    for (int k = 0; k < 2 && rc == 0; k++) {
        hid_t gm = H5Gopen2(g, k ? "v" : "m", H5P_DEFAULT);
        if (gm < 0) {
            rc = err_set(e, "%s: missing /optim/%s", path, k ? "v" : "m");
            break;
        }
        rc = read_tensors(gm, t, k ? opt->v : opt->m, path, e);
        H5Gclose(gm);
    }
    H5Gclose(g);
    return rc;
}

static int load_state(hid_t f, const char *path, CkptState *st, Err *e) {
    memset(st, 0, sizeof *st);
    if (H5Lexists(f, "state", H5P_DEFAULT) <= 0) return err_set(e, "%s: no training state (/state)", path);
    hid_t g = H5Gopen2(f, "state", H5P_DEFAULT);
    if (g < 0) return err_set(e, "%s: cannot open /state", path);
    int64_t step, tokens, world;
    int rc = 0;
    char why[512];
    if (attr_read(g, "step", H5T_NATIVE_INT64, &step) || attr_read(g, "tokens", H5T_NATIVE_INT64, &tokens) ||
        attr_read(g, "world", H5T_NATIVE_INT64, &world) || attr_read(g, "seed", H5T_NATIVE_UINT64, &st->seed) ||
        attr_read(g, "lr", H5T_NATIVE_DOUBLE, &st->lr) || world < 1 || world > (1 << 20)) {
        rc = err_set(e, "%s: /state is incomplete", path);
        goto out;
    }
    if ((H5Aexists(g, "data_id") > 0 && attr_read(g, "data_id", H5T_NATIVE_UINT64, &st->data_id)) ||
        (H5Aexists(g, "model_id") > 0 && attr_read(g, "model_id", H5T_NATIVE_UINT64, &st->model_id))) {
        rc = err_set(e, "%s: /state: unreadable data_id or model_id", path);
        goto out;
    }
    st->step = (long)step;
    st->tokens = (long)tokens;
    st->world = (int)world;
    /* the cursor's width: 2 words for a loader (every file before mixtures), 1 + 2K for a mixture */
    hsize_t cd[2] = {(hsize_t)world, 2}, rd[1] = {4};
    hid_t cds = H5Lexists(g, "cursor", H5P_DEFAULT) > 0 ? H5Dopen2(g, "cursor", H5P_DEFAULT) : -1;
    if (cds >= 0) {
        hid_t sp = H5Dget_space(cds);
        hsize_t got[2] = {0, 0};
        /* at most 2^21 words in all, as when every cursor had 2 (a damaged file claims no more) */
        if (H5Sget_simple_extent_ndims(sp) == 2 && H5Sget_simple_extent_dims(sp, got, NULL) == 2 && got[1] >= 2 &&
            got[1] <= 4096 && (uint64_t)world * got[1] <= (2u << 20))
            cd[1] = got[1];
        H5Sclose(sp);
        H5Dclose(cds);
    }
    st->ncursor = (int)cd[1];
    st->cursor = xmalloc((size_t)world * cd[1] * sizeof *st->cursor);
    if (dset_read(g, "cursor", 2, cd, H5T_NATIVE_UINT64, st->cursor, (size_t)world * cd[1] * sizeof(uint64_t), why,
                  sizeof why) ||
        dset_read(g, "rng", 1, rd, H5T_NATIVE_UINT64, st->rng, sizeof st->rng, why, sizeof why)) {
        rc = err_set(e, "%s: /state: %s", path, why);
        goto out;
    }
    hid_t d = H5Dopen2(g, "run_config", H5P_DEFAULT);
    if (d < 0) {
        rc = err_set(e, "%s: /state lacks run_config", path);
        goto out;
    }
    hid_t sp = H5Dget_space(d);
    hsize_t n = 0;
    H5Sget_simple_extent_dims(sp, &n, NULL);
    H5Sclose(sp);
    H5Dclose(d);
    if (n > file_bytes(g)) {
        rc = err_set(e, "%s: /state: run_config claims %llu bytes, more than the file holds", path,
                     (unsigned long long)n);
        goto out;
    }
    st->run_config = xmalloc(n + 1);
    if (dset_read(g, "run_config", 1, &n, H5T_NATIVE_UCHAR, st->run_config, n, why, sizeof why)) {
        rc = err_set(e, "%s: /state: %s", path, why);
        goto out;
    }
    st->run_config[n] = '\0';
    if (H5Lexists(g, "aux", H5P_DEFAULT) > 0) { /* the state beyond the cursor (RL's rollout) */
        hid_t ds = H5Dopen2(g, "aux", H5P_DEFAULT);
        hsize_t na = 0;
        if (ds >= 0) {
            hid_t asp = H5Dget_space(ds);
            H5Sget_simple_extent_dims(asp, &na, NULL);
            H5Sclose(asp);
            H5Dclose(ds);
        }
        if (ds < 0 || na == 0 || na > file_bytes(g)) {
            rc = err_set(e, "%s: /state/aux is damaged", path);
            goto out;
        }
        st->aux = xmalloc(na);
        st->naux = na;
        if (dset_read(g, "aux", 1, &na, H5T_NATIVE_UCHAR, st->aux, na, why, sizeof why))
            rc = err_set(e, "%s: /state: %s", path, why);
    }
out:
    H5Gclose(g);
    if (rc) ckpt_state_free(st);
    return rc;
}

/* Group name of f (a tensor group: model, lora) into buf, laid out by t. */
static int read_group(hid_t f, const char *path, const char *name, const ParamTable *t, float *buf, Err *e) {
    hid_t g = H5Gopen2(f, name, H5P_DEFAULT);
    if (g < 0) return err_set(e, "%s: missing /%s", path, name);
    int rc = read_tensors(g, t, buf, path, e);
    H5Gclose(g);
    return rc;
}

/* f's config against the requested c. */
static int check_config(hid_t f, const char *path, const LlamaConfig *c, Err *e) {
    LlamaConfig fc;
    uint64_t tok;
    char diff[128];
    if (read_config(f, path, &fc, &tok, e)) return -1;
    if (ckpt_config_diff(&fc, c, diff, sizeof diff))
        return err_set(e, "%s: the checkpoint's config does not match the requested model (%s: checkpoint vs "
                          "model)", path, diff);
    return 0;
}

/* The base weights of a checkpoint: its /model into params, or, when it
 * names its base by reference, the check that params (loaded by the caller
 * from that base: source.h) hold the content it was trained on. */
static int load_base(hid_t f, const char *path, const ParamTable *t, float *params, const char *base, uint64_t hash,
                     Err *e) {
    if (!base[0]) return read_group(f, path, "model", t, params, e);
    if (params_hash(t, params) != hash)
        return err_set(e, "%s: base %s is not the one this checkpoint was trained on (content hash differs)", path,
                       base);
    return 0;
}

int ckpt_load(const char *path, const LlamaConfig *c, const ParamTable *t, float *params, AdamW *opt,
              CkptState *st, Err *e) {
    hid_t f = open_ckpt(path, e);
    if (f < 0) return -1;
    int rc = check_config(f, path, c, e);
    int lora = rc == 0 && H5Lexists(f, "lora", H5P_DEFAULT) > 0;
    if (lora && (opt || st))
        rc = err_set(e, "%s: a LoRA checkpoint (its optimizer state is the adapters'): resume it as a LoRA run", path);
    else if (lora)
        rc = err_set(e, "%s: a LoRA checkpoint: load it through source_load (base and adapters merged)", path);
    else if (rc == 0)
        rc = read_group(f, path, "model", t, params, e);
    if (rc == 0 && opt) rc = load_optim(f, path, t, opt, e);
    if (rc == 0 && st) rc = load_state(f, path, st, e);
    H5Fclose(f);
    return rc;
}

/* First field where two adapter configs differ, as "r 8 vs 4", into buf. */
static int lora_diff(const LoraConfig *a, const LoraConfig *b, char *buf, size_t n) {
    char ta[128], la[4 * LC_MAX_LAYERS + 8], tb[128], lb[4 * LC_MAX_LAYERS + 8];
    lora_strings(a, ta, la, sizeof la);
    lora_strings(b, tb, lb, sizeof lb);
    if (a->r != b->r) snprintf(buf, n, "r %d vs %d", a->r, b->r);
    else if (a->alpha != b->alpha) snprintf(buf, n, "alpha %g vs %g", (double)a->alpha, (double)b->alpha);
    else if (a->dropout != b->dropout) snprintf(buf, n, "dropout %g vs %g", (double)a->dropout, (double)b->dropout);
    else if (a->rslora != b->rslora) snprintf(buf, n, "rslora %d vs %d", a->rslora, b->rslora);
    else if (strcmp(ta, tb) != 0) snprintf(buf, n, "targets %.60s vs %.60s", ta, tb);
    else if (strcmp(la, lb) != 0) snprintf(buf, n, "layers %.60s vs %.60s", la, lb);
    else if (a->head != b->head) snprintf(buf, n, "trained score head %d vs %d", a->head, b->head);
    else return 0;
    return 1;
}

int ckpt_load_lora(const char *path, const LlamaConfig *c, const ParamTable *bt, float *base_params,
                   CkptLora *lora, AdamW *opt, CkptState *st, Err *e) {
    LC_ASSERT(lora && lora->t && lora->params);
    hid_t f = open_ckpt(path, e);
    if (f < 0) return -1;
    LoraConfig flc;
    char base[512], diff[160];
    uint64_t hash = 0;
    int rc = check_config(f, path, c, e);
    if (rc == 0 && H5Lexists(f, "lora", H5P_DEFAULT) <= 0)
        rc = err_set(e, "%s: not a LoRA checkpoint (no /lora)", path);
    if (rc == 0) rc = read_lora_config(f, path, c, &flc, base, sizeof base, &hash, e);
    if (rc == 0 && lora_diff(&flc, &lora->lc, diff, sizeof diff))
        rc = err_set(e, "%s: the checkpoint's adapters do not match the requested ones (%s: checkpoint vs run)",
                     path, diff);
    if (rc == 0 && base_params) rc = load_base(f, path, bt, base_params, base, hash, e);
    if (rc == 0) rc = read_group(f, path, "lora", lora->t, lora->params, e);
    if (rc == 0 && opt) rc = load_optim(f, path, lora->t, opt, e);
    if (rc == 0 && st) rc = load_state(f, path, st, e);
    H5Fclose(f);
    return rc;
}

void ckpt_state_free(CkptState *st) {
    free(st->cursor);
    free(st->run_config);
    free(st->aux);
    st->cursor = NULL;
    st->run_config = NULL;
    st->aux = NULL;
    st->naux = 0;
}

// ----------------------------------------------------------------------------
// run directories

void ckpt_step_path(const char *dir, long step, char *path, size_t n) {
    snprintf(path, n, "%s/step-%08ld.h5", dir, step);
}

/* Step of a name "step-%08ld.h5", or -1. */
static long step_of(const char *name) {
    size_t n = strlen(name);
    if (n < 9 || strncmp(name, "step-", 5) != 0 || strcmp(name + n - 3, ".h5") != 0) return -1;
    long s = 0;
    for (size_t i = 5; i < n - 3; i++) {
        if (name[i] < '0' || name[i] > '9' || s > (1L << 50)) return -1;
        s = s * 10 + (name[i] - '0');
    }
    return s;
}

/* Steps of the step-*.h5 files in dir, newest first; *n of them. */
static long *list_steps(const char *dir, int *n) {
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) return NULL;
    long *v = NULL;
    int cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        long s = step_of(de->d_name);
        if (s < 0) continue;
        if (*n == cap) v = xrealloc(v, (size_t)(cap = cap ? 2 * cap : 16) * sizeof *v);
        v[(*n)++] = s;
    }
    closedir(d);
    for (int i = 1; i < *n; i++) /* insertion sort, descending */
        for (int j = i; j > 0 && v[j] > v[j - 1]; j--) {
            long x = v[j]; v[j] = v[j - 1]; v[j - 1] = x;
        }
    return v;
}

int ckpt_latest(const char *dir, char *path, size_t n, Err *e) {
    (void)e;
    int ns;
    long *steps = list_steps(dir, &ns);
    int found = 0;
    for (int i = 0; i < ns && !found; i++) {
        ckpt_step_path(dir, steps[i], path, n);
        CkptInfo info;
        Err e2 = {{0}};
        if (ckpt_info(path, &info, &e2) == 0 && info.has_optim && info.has_state) found = 1;
        else fprintf(stderr, "warning: skipping %s: %s\n", path, e2.msg[0] ? e2.msg : "no optimizer state");
    }
    free(steps);
    return found;
}

int ckpt_prune(const char *dir, int keep, Err *e) {
    if (keep < 1) return err_set(e, "--keep: must be at least 1");
    int ns, del = 0;
    long *steps = list_steps(dir, &ns);
    char path[4096];
    for (int i = keep; i < ns; i++) {
        ckpt_step_path(dir, steps[i], path, sizeof path);
        if (unlink(path) == 0) del++;
    }
    free(steps);
    DIR *d = opendir(dir);
    struct dirent *de;
    while (d && (de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (l > 7 && strncmp(de->d_name, "step-", 5) == 0 && strcmp(de->d_name + l - 7, ".h5.tmp") == 0) {
            snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
            if (unlink(path) == 0) del++;
        }
    }
    if (d) closedir(d);
    return del;
}

// ----------------------------------------------------------------------------
// summary

int ckpt_print(const char *path, FILE *out, Err *e) {
    CkptInfo info;
    if (ckpt_info(path, &info, e)) return -1;
    const LlamaConfig *c = &info.c;
    ParamTable t;
    if (params_build(c, &t, e)) return -1;
    struct stat sb;
    stat(path, &sb);
    fprintf(out, "checkpoint %s (%.1f MB, HDF5, format version %d)\n", path, sb.st_size / 1e6, CKPT_VERSION);
    char head[64];
    if (c->num_labels) snprintf(head, sizeof head, "score (%d x %d) head, pad id %d", c->num_labels, c->dim, c->pad_id);
    else snprintf(head, sizeof head, "%s head", c->tied ? "tied" : "untied");
    fprintf(out, "  model: %s dim %d, %d layers, %d/%d heads of %d, hidden %d, vocab %d, max_seq %d, %s\n",
            c->name[0] ? c->name : "(unnamed)", c->dim, c->n_layers, c->n_heads, c->n_kv_heads, config_head_size(c),
            c->hidden, c->vocab, c->max_seq, head);
    fprintf(out, "  rope: theta %g%s; norm eps %g; tokenizer id %016llx\n", c->rope_theta,
            c->rope_scaling == ROPE_SCALING_LLAMA3 ? ", llama3 scaling" : "", c->norm_eps,
            (unsigned long long)info.tokenizer_id);
    fprintf(out, "  parameters: %zu in %d tensors (%s)\n", t.numel, t.n,
            info.lora_base[0] ? "the base's, by reference" : "/model");
    if (info.has_lora) {
        char targets[128], layers[4 * LC_MAX_LAYERS + 8];
        lora_strings(&info.lora, targets, layers, sizeof layers);
        fprintf(out, "  LoRA adapters (/lora): r %d, alpha %g%s, dropout %g, targets %s, layers %s%s; base %s\n",
                info.lora.r, (double)info.lora.alpha, info.lora.rslora ? " (rsLoRA)" : "", (double)info.lora.dropout,
                targets, layers, info.lora.head ? ", score head trained" : "",
                info.lora_base[0] ? info.lora_base : "in /model");
    }
    fprintf(out, "  optimizer state: %s\n", info.has_optim ? "AdamW moments (/optim/m, /optim/v)" : "none");
    if (info.has_state) {
        CkptState st;
        hid_t f = open_ckpt(path, e);
        int rc = f < 0 ? -1 : load_state(f, path, &st, e);
        if (f >= 0) H5Fclose(f);
        if (rc) { params_free(&t); return -1; }
        if (st.ncursor == 2)
            fprintf(out, "  training state: step %ld, %ld tokens, lr %.3g, seed %llu, %d data rank%s, cursor (epoch %llu, "
                         "window %llu)\n", st.step, st.tokens, st.lr, (unsigned long long)st.seed, st.world,
                    st.world == 1 ? "" : "s", (unsigned long long)st.cursor[0], (unsigned long long)st.cursor[1]);
        else
            fprintf(out, "  training state: step %ld, %ld tokens, lr %.3g, seed %llu, %d data rank%s, mixture cursor "
                         "(row %llu, %d sources)\n", st.step, st.tokens, st.lr, (unsigned long long)st.seed, st.world,
                    st.world == 1 ? "" : "s", (unsigned long long)st.cursor[0], (st.ncursor - 1) / 2);
        fprintf(out, "  run configuration:\n");
        for (const char *s = st.run_config; *s;) {
            const char *nl = strchr(s, '\n');
            int len = nl ? (int)(nl - s) : (int)strlen(s);
            fprintf(out, "    %.*s\n", len, s);
            s += len + (nl ? 1 : 0);
        }
        ckpt_state_free(&st);
    } else {
        fprintf(out, "  training state: none (model only)\n");
    }
    params_free(&t);
    return 0;
}
