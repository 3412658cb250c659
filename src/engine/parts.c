/* Partitioned merges: the partition, fragments, finalizing (see parts.h). */
#include "engine/parts.h"

#include "common/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FRAGMENT_FORMAT "smelt-part"
#define FRAGMENT_VERSION 1
#define FRAGMENT_MAX_BYTES ((size_t)1 << 30)
#define TMP_SUFFIX ".smelt-tmp" /* io/writer.h's and smelt_write_file_atomic's */

__extension__ typedef unsigned __int128 u128; /* N * bytes overflows 64 bits for big models */

void smelt_parts_assign(const smelt_plan *plan, unsigned n, unsigned *part_of)
{
    uint64_t *weight = calloc(plan->nshards + 1, sizeof *weight), total = 0;
    for (size_t t = 0; weight && t < plan->ntensors; t++)
        weight[plan->tensors[t].shard] += smelt_engine_tensor_bytes_to_read(plan, NULL, t);
    for (size_t s = 0; weight && s < plan->nshards; s++)
        total += weight[s];
    /* Each shard goes where its midpoint falls on the cumulative byte line cut into n equal
     * pieces: contiguous runs (each part reads its inputs' files in order, as one merge
     * would), none more than half a shard off the ideal. Without weights (out of memory, or
     * nothing to read), by shard count the same way. */
    uint64_t before = 0;
    for (size_t s = 0; s < plan->nshards; s++) {
        u128 num, den;
        if (weight && total) {
            num = (u128)n * (2 * (u128)before + weight[s]);
            den = 2 * (u128)total;
            before += weight[s];
        } else {
            num = (u128)n * (2 * (u128)s + 1);
            den = 2 * (u128)plan->nshards;
        }
        u128 p = num / den;
        part_of[s] = p >= n ? n - 1 : (unsigned)p;
    }
    free(weight);
}

int smelt_part_init(smelt_ctx *ctx, const smelt_plan *plan, unsigned k, unsigned n,
                    smelt_part *part)
{
    memset(part, 0, sizeof *part);
    if (n < 1 || n > SMELT_MAX_PARTS || k < 1 || k > n)
        return smelt_fail(ctx, SMELT_E_ARG, "part %u of %u: a part is K/N with 1 <= K <= N <= "
                          "%u", k, n, SMELT_MAX_PARTS);
    unsigned *part_of = calloc(plan->nshards + 1, sizeof *part_of);
    part->shards = calloc(plan->nshards + 1, 1);
    if (!part_of || !part->shards) {
        free(part_of);
        free(part->shards);
        part->shards = NULL;
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    }
    smelt_parts_assign(plan, n, part_of);
    for (size_t s = 0; s < plan->nshards; s++)
        part->nshards += part->shards[s] = part_of[s] == k - 1;
    free(part_of);
    part->plan = plan;
    part->k = k;
    part->n = n;
    snprintf(part->journal_name, sizeof part->journal_name, "%s.part-%u-of-%u",
             SMELT_JOURNAL_NAME, k, n);
    snprintf(part->fragment_name, sizeof part->fragment_name, "%s%u-of-%u.json",
             SMELT_PART_PREFIX, k, n);
    return SMELT_OK;
}

void smelt_part_free(smelt_part *part)
{
    free(part->shards);
    part->shards = NULL;
}

/* name is `base` or `base` TMP_SUFFIX. */
static int is_or_tmp(const char *name, const char *base)
{
    size_t n = strlen(base);
    return strncmp(name, base, n) == 0 && (!name[n] || strcmp(name + n, TMP_SUFFIX) == 0);
}

int smelt_part_owns(void *user, const char *name)
{
    const smelt_part *part = user;
    if (is_or_tmp(name, part->journal_name) || is_or_tmp(name, part->fragment_name))
        return 1;
    size_t n = strlen(name), tl = strlen(TMP_SUFFIX);
    if (n <= tl || strcmp(name + n - tl, TMP_SUFFIX) != 0)
        return 0;
    for (size_t s = 0; s < part->plan->nshards; s++)
        if (part->shards[s] && strlen(part->plan->shards[s].name) == n - tl &&
            strncmp(name, part->plan->shards[s].name, n - tl) == 0)
            return 1;
    return 0;
}

static json_t *hash_json(const smelt_hash128 *h)
{
    char hex[SMELT_HASH_HEX_LEN + 1];
    smelt_hash_hex(h, hex);
    return json_string(hex);
}

int smelt_part_write_fragment(smelt_ctx *ctx, const smelt_plan *plan, const char *out_dir,
                              const smelt_part *part, const smelt_journal_header *id,
                              const smelt_hash128 *hashes)
{
    smelt_out_checksums sums;
    smelt_manifest m = {0};
    char *text = NULL, *dump = NULL, *path = NULL;
    size_t len;
    json_t *root = NULL, *manifest = NULL, *content = json_array();
    int rc = smelt_merge_checksums(ctx, id, hashes, &sums);
    if (rc != SMELT_OK)
        goto out;
    if ((rc = smelt_manifest_of_plan(ctx, plan, &sums, part->shards, &m)) != SMELT_OK ||
        (rc = smelt_manifest_to_json(ctx, &m, &text, &len)) != SMELT_OK)
        goto out;
    manifest = json_loadb(text, len, 0, NULL);
    root = json_object();
    int ok = manifest && root && content;
    for (size_t i = 0; ok && i < id->ninputs; i++) {
        json_t *in = json_object();
        ok = in && !json_object_set_new(in, "size", json_integer((json_int_t)id->inputs[i].size)) &&
             !json_object_set_new(in, "sample", hash_json(&id->inputs[i].sample)) &&
             !json_array_append_new(content, in);
    }
    ok = ok && !json_object_set_new(root, "format", json_string(FRAGMENT_FORMAT)) &&
         !json_object_set_new(root, "format_version", json_integer(FRAGMENT_VERSION)) &&
         !json_object_set_new(root, "part", json_integer(part->k)) &&
         !json_object_set_new(root, "parts", json_integer(part->n)) &&
         !json_object_set_new(root, "plan", hash_json(&id->plan)) &&
         !json_object_set(root, "input_content", content) &&
         !json_object_set(root, "manifest", manifest) &&
         (dump = json_dumps(root, JSON_INDENT(1) | JSON_SORT_KEYS)) &&
         (path = smelt_path_join(out_dir, part->fragment_name));
    if (!ok) {
        rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        goto out;
    }
    len = strlen(dump);
    dump[len] = '\0';
    rc = smelt_write_file_atomic(ctx, path, dump, len);
out:
    smelt_manifest_of_plan_free(&m);
    free((void *)sums.inputs);
    free(text);
    free(dump);
    free(path);
    json_decref(root);
    json_decref(manifest);
    json_decref(content);
    return rc;
}

/* What finalizing checks and gathers, across all the parts. */
typedef struct finalizer {
    smelt_ctx *ctx;
    const smelt_plan *plan;
    const char *out_dir;
    const char *config;          /* for the commands in messages */
    unsigned n;
    unsigned *part_of;           /* per shard */
    uint8_t *covered;            /* per shard */
    smelt_hash128 *hashes;       /* per tensor */
    uint8_t *have;               /* per tensor */
    size_t *order;               /* tensors by name */
    smelt_journal_header id;
} finalizer;

/* A part's fragment or journal name, "K-of-N" parsed out of it: 1, or 0 when name is neither. */
static int part_file(const char *name, unsigned *k, unsigned *n, int *journal)
{
    char tail;
    size_t jl = strlen(SMELT_JOURNAL_NAME ".part-");
    if (strncmp(name, SMELT_JOURNAL_NAME ".part-", jl) == 0 &&
        sscanf(name + jl, "%u-of-%u%c", k, n, &tail) == 2) {
        *journal = 1;
        return 1;
    }
    size_t fl = strlen(SMELT_PART_PREFIX);
    char json[6];
    if (strncmp(name, SMELT_PART_PREFIX, fl) == 0 &&
        sscanf(name + fl, "%u-of-%u%5s%c", k, n, json, &tail) == 3 && strcmp(json, ".json") == 0) {
        *journal = 0;
        return 1;
    }
    return 0;
}

/* The part count of the partitioned merge in out_dir, from its fragments and part journals. */
static int discover(finalizer *f)
{
    DIR *d = opendir(f->out_dir);
    if (!d)
        return smelt_fail_errno(f->ctx, errno, "%s: cannot open output directory", f->out_dir);
    unsigned n = 0, other = 0, k, m;
    int journal;
    for (struct dirent *ent; (ent = readdir(d));) {
        if (!part_file(ent->d_name, &k, &m, &journal) || m < 1 || k < 1 || k > m)
            continue;
        if (!n || m == n)
            n = m;
        else
            other = m;
    }
    closedir(d);
    if (other)
        return smelt_fail(f->ctx, SMELT_E_ARG, "%s: holds parts of a merge in %u parts and of "
                          "one in %u parts; remove the other run's .smelt-part-* and "
                          ".smelt-journal.part-* files, or redo the parts with one N",
                          f->out_dir, n, other);
    if (!n)
        return smelt_fail(f->ctx, SMELT_E_ARG, "%s: no parts to finalize (no %sK-of-N.json); "
                          "run `smelt merge %s %s --part K/N` for every K first", f->out_dir,
                          SMELT_PART_PREFIX, f->config, f->out_dir);
    f->n = n;
    return SMELT_OK;
}

/* Fails naming part k and the command that redoes it. */
#define PART_FAIL(f, k, fmt, ...)                                                              \
    smelt_fail((f)->ctx, SMELT_E_ARG, "part %u of %u: " fmt "; run `smelt merge %s %s "      \
               "--overwrite --part %u/%u` to redo it", (k), (f)->n, __VA_ARGS__, (f)->config, \
               (f)->out_dir, (k), (f)->n)

/* The fragment's shards and tensors against the plan's partition and the files on disk. */
static int check_files(finalizer *f, unsigned k, const char *path, const smelt_manifest *m)
{
    const smelt_plan *plan = f->plan;
    size_t expected = 0;
    for (size_t s = 0; s < plan->nshards; s++)
        expected += f->part_of[s] == k - 1;
    if (m->nfiles != expected)
        return PART_FAIL(f, k, "%s lists %zu shards, the partition gives it %zu", path,
                         m->nfiles, expected);
    for (size_t i = 0; i < m->nfiles; i++) {
        const smelt_manifest_file *mf = &m->files[i];
        size_t s = 0;
        while (s < plan->nshards && strcmp(plan->shards[s].name, mf->name) != 0)
            s++;
        if (s == plan->nshards || f->part_of[s] != k - 1)
            return PART_FAIL(f, k, "%s lists shard '%s', which the partition does not give it",
                             path, mf->name);
        if (f->covered[s]++)
            return PART_FAIL(f, k, "%s lists shard '%s' twice", path, mf->name);
        const smelt_plan_shard *sh = &plan->shards[s];
        smelt_hash128 header = smelt_hash_bytes(sh->header, sh->header_len);
        if (mf->size != sh->size || !smelt_hash_eq(&mf->header, &header) ||
            mf->ntensors != sh->ntensors)
            return PART_FAIL(f, k, "%s: shard '%s' differs from the plan's (size, header or "
                             "tensors)", path, mf->name);
        for (size_t j = 0; j < mf->ntensors; j++) {
            size_t t = smelt_plan_find_name(plan, f->order, mf->tensors[j].name);
            if (t == (size_t)-1 || plan->tensors[t].shard != s || f->have[t])
                return PART_FAIL(f, k, "%s: tensor '%s' is not one of shard '%s''s", path,
                                 mf->tensors[j].name, mf->name);
            f->have[t] = 1;
            f->hashes[t] = mf->tensors[j].hash;
        }
        /* The temporary shard: there, with the recorded size and the plan's header. */
        size_t tl = strlen(f->out_dir) + strlen(sh->name) + sizeof "/" TMP_SUFFIX;
        char *tmp = malloc(tl);
        if (!tmp)
            return smelt_fail(f->ctx, SMELT_E_NOMEM, "out of memory");
        snprintf(tmp, tl, "%s/%s%s", f->out_dir, sh->name, TMP_SUFFIX);
        struct stat st;
        int fd = open(tmp, O_RDONLY | O_CLOEXEC), rc = SMELT_OK;
        smelt_hash128 got;
        if (fd < 0 || fstat(fd, &st) != 0)
            rc = PART_FAIL(f, k, "%s is missing (%s)", tmp, strerror(errno));
        else if ((uint64_t)st.st_size != sh->size)
            rc = PART_FAIL(f, k, "%s is %llu bytes, its fragment says %llu (truncated or "
                           "damaged)", tmp, (unsigned long long)st.st_size,
                           (unsigned long long)sh->size);
        else if ((rc = smelt_hash_file_prefix(f->ctx, fd, tmp, sh->header_len, &got)) ==
                     SMELT_OK && !smelt_hash_eq(&got, &header))
            rc = PART_FAIL(f, k, "%s: its header is not the one the plan lays out (damaged)",
                           tmp);
        if (fd >= 0)
            close(fd);
        free(tmp);
        if (rc != SMELT_OK)
            return rc;
    }
    return SMELT_OK;
}

/* The fragment's identity against this merge's. */
static int check_identity(finalizer *f, unsigned k, const char *path, json_t *root,
                          const smelt_manifest *m)
{
    const smelt_journal_header *id = &f->id;
    smelt_hash128 plan;
    json_t *content = json_object_get(root, "input_content");
    if (strcmp(m->smelt_version, smelt_version()) != 0)
        return PART_FAIL(f, k, "%s was made by smelt %s, and this is smelt %s", path,
                         m->smelt_version, smelt_version());
    if (smelt_hash_parse(json_string_value(json_object_get(root, "plan")) ?
                             json_string_value(json_object_get(root, "plan")) : "", &plan) != 0 ||
        !json_is_array(content))
        return PART_FAIL(f, k, "%s is damaged (no plan hash or input_content)", path);
    if (!smelt_hash_eq(&m->config, &id->config))
        return PART_FAIL(f, k, "%s was made from another config than %s", path, f->config);
    if (!smelt_hash_eq(&plan, &id->plan))
        return PART_FAIL(f, k, "%s has another output layout (a different --out-shard-size, "
                         "--format, --outtype, --random-seed, or inputs of other shapes)", path);
    if (m->ninputs != id->ninputs || json_array_size(content) != id->ninputs)
        return PART_FAIL(f, k, "%s read %zu input files, this merge reads %zu", path,
                         m->ninputs, id->ninputs);
    for (size_t i = 0; i < id->ninputs; i++) {
        json_t *c = json_array_get(content, i);
        const char *sample = json_string_value(json_object_get(c, "sample"));
        smelt_hash128 h;
        if (!sample || smelt_hash_parse(sample, &h) != 0 ||
            !json_is_integer(json_object_get(c, "size")))
            return PART_FAIL(f, k, "%s is damaged (input_content %zu)", path, i);
        if (!smelt_hash_eq(&m->inputs[i].header, &id->inputs[i].header) ||
            !smelt_hash_eq(&h, &id->inputs[i].sample) ||
            (uint64_t)json_integer_value(json_object_get(c, "size")) != id->inputs[i].size)
            return PART_FAIL(f, k, "input '%s' is not what it was when the part read it "
                             "(as '%s')", id->inputs[i].path, m->inputs[i].path);
    }
    return SMELT_OK;
}

/* Part k's fragment: there, intact, of this merge, covering its shards. */
static int check_part(finalizer *f, unsigned k)
{
    char name[64], jname[64];
    snprintf(name, sizeof name, "%s%u-of-%u.json", SMELT_PART_PREFIX, k, f->n);
    snprintf(jname, sizeof jname, "%s.part-%u-of-%u", SMELT_JOURNAL_NAME, k, f->n);
    char *path = smelt_path_join(f->out_dir, name), *jpath = smelt_path_join(f->out_dir, jname);
    char *text = NULL, *mtext = NULL;
    size_t len;
    json_t *root = NULL;
    smelt_manifest *m = NULL;
    int rc = path && jpath ? SMELT_OK : smelt_fail(f->ctx, SMELT_E_NOMEM, "out of memory");
    if (rc == SMELT_OK && access(path, F_OK) != 0) {
        rc = access(jpath, F_OK) == 0
                 ? smelt_fail(f->ctx, SMELT_E_ARG, "part %u of %u has not finished: %s is there "
                              "but not %s (still running, or it stopped); run `smelt merge %s "
                              "%s --resume --part %u/%u`", k, f->n, jpath, path, f->config,
                              f->out_dir, k, f->n)
                 : smelt_fail(f->ctx, SMELT_E_ARG, "part %u of %u is missing: no %s; run "
                              "`smelt merge %s %s --part %u/%u`", k, f->n, path, f->config,
                              f->out_dir, k, f->n);
    }
    if (rc == SMELT_OK)
        rc = smelt_read_file(f->ctx, path, FRAGMENT_MAX_BYTES, &text, &len);
    json_error_t jerr;
    if (rc == SMELT_OK && !(root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr)))
        rc = PART_FAIL(f, k, "%s is damaged (%s)", path, jerr.text);
    json_t *jm = root ? json_object_get(root, "manifest") : NULL;
    const char *format = root ? json_string_value(json_object_get(root, "format")) : NULL;
    if (rc == SMELT_OK &&
        (!format || strcmp(format, FRAGMENT_FORMAT) != 0 ||
         json_integer_value(json_object_get(root, "format_version")) != FRAGMENT_VERSION ||
         json_integer_value(json_object_get(root, "part")) != k ||
         json_integer_value(json_object_get(root, "parts")) != f->n || !json_is_object(jm)))
        rc = PART_FAIL(f, k, "%s is not a format %d smelt part fragment of part %u of %u", path,
                       FRAGMENT_VERSION, k, f->n);
    if (rc == SMELT_OK && !(mtext = json_dumps(jm, 0)))
        rc = smelt_fail(f->ctx, SMELT_E_NOMEM, "out of memory");
    if (rc == SMELT_OK && smelt_manifest_parse(f->ctx, path, mtext, strlen(mtext), &m) != SMELT_OK)
        rc = PART_FAIL(f, k, "%s is damaged (%s)", path, smelt_errmsg(f->ctx));
    if (rc == SMELT_OK)
        rc = check_identity(f, k, path, root, m);
    if (rc == SMELT_OK)
        rc = check_files(f, k, path, m);
    smelt_manifest_free(m);
    json_decref(root);
    free(mtext);
    free(text);
    free(path);
    free(jpath);
    return rc;
}

/* Removes every part's fragment (finalizing succeeded) and any part journal left over. */
static int remove_parts(finalizer *f)
{
    DIR *d = opendir(f->out_dir);
    if (!d)
        return smelt_fail_errno(f->ctx, errno, "%s: cannot open output directory", f->out_dir);
    int rc = SMELT_OK, journal;
    unsigned k, n;
    for (struct dirent *ent; rc == SMELT_OK && (ent = readdir(d));) {
        if (!part_file(ent->d_name, &k, &n, &journal))
            continue;
        char *path = smelt_path_join(f->out_dir, ent->d_name);
        if (!path || unlink(path) != 0)
            rc = smelt_fail_errno(f->ctx, path ? errno : ENOMEM, "%s: cannot remove",
                                  path ? path : f->out_dir);
        free(path);
    }
    closedir(d);
    return rc == SMELT_OK ? smelt_fsync_dir(f->ctx, f->out_dir) : rc;
}

int smelt_parts_finalize(smelt_ctx *ctx, const smelt_plan *plan, const char *out_dir,
                         const smelt_merge_options *opts)
{
    finalizer f = {.ctx = ctx, .plan = plan, .out_dir = out_dir,
                   .config = plan->spec->path ? plan->spec->path : "CONFIG"};
    smelt_out_file *files = calloc(plan->nshards + 1, sizeof *files);
    smelt_out_checksums sums = {0};
    f.part_of = calloc(plan->nshards + 1, sizeof *f.part_of);
    f.covered = calloc(plan->nshards + 1, 1);
    f.hashes = calloc(plan->ntensors + 1, sizeof *f.hashes);
    f.have = calloc(plan->ntensors + 1, 1);
    f.order = smelt_plan_name_order(plan);
    int rc = files && f.part_of && f.covered && f.hashes && f.have && f.order
                 ? SMELT_OK : smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    for (size_t s = 0; files && s < plan->nshards; s++)
        files[s].fd = -1;
    /* resume = 1: the parts' state is what finalizing works on */
    if (rc == SMELT_OK)
        rc = smelt_out_dir_prepare(ctx, plan, out_dir, opts->overwrite, 1, NULL, NULL);
    if (rc == SMELT_OK)
        rc = discover(&f);
    if (rc == SMELT_OK)
        rc = smelt_merge_identity(ctx, plan, &f.id);
    if (rc == SMELT_OK)
        smelt_parts_assign(plan, f.n, f.part_of);
    for (unsigned k = 1; rc == SMELT_OK && k <= f.n; k++)
        rc = check_part(&f, k);
    for (size_t s = 0; rc == SMELT_OK && s < plan->nshards; s++)
        if (!f.covered[s]) /* unreachable when every fragment agrees with the partition */
            rc = smelt_fail(ctx, SMELT_E_INTERNAL, "shard '%s' is in no part",
                            plan->shards[s].name);
    for (size_t s = 0; rc == SMELT_OK && s < plan->nshards; s++) {
        char *path = smelt_path_join(out_dir, plan->shards[s].name);
        rc = path ? smelt_out_reopen(ctx, &files[s], path, plan->shards[s].size)
                  : smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        free(path);
    }
    if (rc == SMELT_OK)
        rc = smelt_merge_checksums(ctx, &f.id, f.hashes, &sums);
    if (rc == SMELT_OK)
        rc = smelt_finalize(ctx, plan, out_dir, files, !opts->no_model_card, &sums);
    if (rc == SMELT_OK)
        rc = remove_parts(&f);
    for (size_t s = 0; files && s < plan->nshards; s++) {
        if (rc == SMELT_OK)
            smelt_out_release(&files[s]);
        else
            smelt_out_abandon(&files[s]); /* the parts' work stays for another try */
    }
    free((void *)sums.inputs);
    free(files);
    free(f.part_of);
    free(f.covered);
    free(f.hashes);
    free(f.have);
    free(f.order);
    smelt_journal_header_free(&f.id);
    return rc;
}

int smelt_parts_describe(smelt_ctx *ctx, const smelt_plan *plan,
                         const smelt_engine_layout *layout, unsigned k, unsigned n, FILE *out)
{
    if (n < 1 || n > SMELT_MAX_PARTS || k < 1 || k > n)
        return smelt_fail(ctx, SMELT_E_ARG, "part %u of %u: a part is K/N with 1 <= K <= N <= "
                          "%u", k, n, SMELT_MAX_PARTS);
    unsigned *part_of = calloc(plan->nshards + 1, sizeof *part_of);
    uint64_t *rd = calloc(n, sizeof *rd), *wr = calloc(n, sizeof *wr);
    size_t *shards = calloc(n, sizeof *shards);
    int rc = part_of && rd && wr && shards ? SMELT_OK
                                           : smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    if (rc == SMELT_OK) {
        smelt_parts_assign(plan, n, part_of);
        for (size_t t = 0; t < plan->ntensors; t++)
            rd[part_of[plan->tensors[t].shard]] +=
                smelt_engine_tensor_bytes_to_read(plan, layout, t);
        for (size_t s = 0; s < plan->nshards; s++) {
            wr[part_of[s]] += plan->shards[s].size;
            shards[part_of[s]]++;
        }
        fprintf(out, "parts:    %u (whole shards in output order, balanced by the input bytes "
                "they read)\n", n);
        for (unsigned p = 0; p < n; p++)
            fprintf(out, "%s part %u of %u: %zu shard%s, read %llu bytes, write %llu bytes\n",
                    p == k - 1 ? "*" : " ", p + 1, n, shards[p], shards[p] == 1 ? "" : "s",
                    (unsigned long long)rd[p], (unsigned long long)wr[p]);
        fprintf(out, "part %u of %u writes:%s\n", k, n, shards[k - 1] ? "" : " no shards (the "
                "plan has fewer shards than parts); it only records that it is done");
        for (size_t s = 0; s < plan->nshards; s++)
            if (part_of[s] == k - 1)
                fprintf(out, "  %s, %llu tensors, %llu bytes\n", plan->shards[s].name,
                        (unsigned long long)plan->shards[s].ntensors,
                        (unsigned long long)plan->shards[s].size);
    }
    free(part_of);
    free(rd);
    free(wr);
    free(shards);
    return rc;
}
