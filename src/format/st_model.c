/* Opening a model reference: a Hugging Face model directory (single file or sharded with
 * model.safetensors.index.json), a lone .safetensors file, or a hub id resolved offline in the
 * Hugging Face cache (layout of huggingface_hub's file_download: models--ORG--NAME/refs/REV and
 * snapshots/COMMIT/, whose files link into ../../blobs). */
#include "format/gguf.h"
#include "format/delta.h"
#include "format/lora.h"
#include "format/safetensors.h"

#include "common/util.h"
#include "format/st_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

typedef unsigned long long ull;

#define INDEX_NAME "model.safetensors.index.json"
#define SINGLE_NAME "model.safetensors"
#define GGUF_NAME "model.gguf" /* a GGUF merge's output */

static const char *info_name_at(const void *array, size_t i)
{
    return ((const smelt_tensor_info *)array)[i].name;
}

static int exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

static int read_full(int fd, uint8_t *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = pread(fd, buf + got, len - got, (off_t)got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? errno : EIO;
        got += (size_t)n;
    }
    return 0;
}

/* Parses one file's header through a mapping of the header bytes only: tensor data is never
 * mapped, so opening a 100 GB model touches a few MB. */
static int parse_file(smelt_ctx *ctx, smelt_st_file *file, smelt_tensor_info **tensors,
                      size_t *n, char **meta)
{
    struct stat st;
    if (fstat(file->fd, &st) != 0)
        return smelt_fail_errno(ctx, errno, "%s: cannot stat", file->path);
    file->size = (uint64_t)st.st_size;
    file->dev = (uint64_t)st.st_dev;
    file->ino = (uint64_t)st.st_ino;
    uint8_t head[8];
    size_t head_len = file->size < 8 ? (size_t)file->size : 8;
    int err = read_full(file->fd, head, head_len);
    if (err)
        return smelt_fail_errno(ctx, err, "%s: cannot read", file->path);
    uint64_t hlen = 0;
    for (size_t i = head_len; i-- > 0;)
        hlen = hlen << 8 | head[i];
    if (head_len < 8 || hlen > SMELT_ST_MAX_HEADER || hlen > file->size - 8) {
        /* An absurd length is what a checkpoint of another format looks like. */
        if (head_len == 8 && hlen > SMELT_ST_MAX_HEADER) {
            if (!memcmp(head, "PK\3\4", 4) || head[0] == 0x80)
                return smelt_fail(ctx, SMELT_E_UNSUPPORTED,
                                  "%s: this is a PyTorch pickle checkpoint; smelt reads "
                                  "safetensors and GGUF only (convert it first)", file->path);
        }
        return smelt_st_parse(ctx, file->path, head, head_len, file->size, tensors, n,
                              &file->data_start, meta);
    }
    size_t map_len = (size_t)(8 + hlen);
    void *map = mmap(NULL, map_len, PROT_READ, MAP_PRIVATE, file->fd, 0);
    if (map == MAP_FAILED)
        return smelt_fail_errno(ctx, errno, "%s: cannot map the header", file->path);
    int rc = smelt_st_parse(ctx, file->path, map, map_len, file->size, tensors, n,
                            &file->data_start, meta);
    munmap(map, map_len);
    return rc;
}

/* Opens `path` as the model's next file and appends its tensors (already in offset order, so
 * the model's array stays in (file, offset) order). */
static int add_file(smelt_ctx *ctx, smelt_model *m, const char *path)
{
    smelt_st_file *files = realloc(m->files, (m->nfiles + 1) * sizeof *files);
    if (!files)
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    m->files = files;
    smelt_st_file *file = &files[m->nfiles];
    *file = (smelt_st_file){.path = strdup(path), .fd = -1};
    if (!file->path)
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    uint32_t index = m->nfiles++;
    int rc = smelt_open_regular(ctx, path, 0, &file->fd, NULL);
    if (rc != SMELT_OK)
        return rc;
    smelt_tensor_info *t;
    size_t n;
    rc = parse_file(ctx, file, &t, &n, index == 0 ? &m->metadata_json : NULL);
    if (rc != SMELT_OK)
        return rc;
    smelt_tensor_info *all = realloc(m->tensors, (m->ntensors + n + 1) * sizeof *all);
    if (!all) {
        smelt_tensors_free(t, n);
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++)
        t[i].file = index;
    memcpy(all + m->ntensors, t, n * sizeof *t);
    free(t); /* the names now belong to the model */
    m->tensors = all;
    m->ntensors += n;
    return SMELT_OK;
}

/* Builds the name lookup; a name in two files makes the model ambiguous. */
static int index_model(smelt_ctx *ctx, smelt_model *m)
{
    if (m->name_index) {
        smelt_name_index_free(m->name_index);
        free(m->name_index);
        m->name_index = NULL;
    }
    for (size_t i = 0; i < m->ntensors; i++)
        m->tensors[i].order = (uint32_t)i;
    smelt_name_index *index = calloc(1, sizeof *index);
    if (!index)
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    size_t a, b;
    int built = smelt_name_index_build(index, m->tensors, m->ntensors, info_name_at, &a, &b);
    if (built != 0) {
        free(index);
        if (built < 0)
            return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s: tensor '%s' is in two files: %s and %s",
                          m->ref, m->tensors[a].name, m->files[m->tensors[a].file].path,
                          m->files[m->tensors[b].file].path);
    }
    m->name_index = index;
    return SMELT_OK;
}

int smelt_model_reindex(smelt_ctx *ctx, smelt_model *model)
{
    return index_model(ctx, model);
}

const smelt_tensor_info *smelt_model_find(const smelt_model *model, const char *name)
{
    if (!model || !model->name_index || !name)
        return NULL;
    size_t i = smelt_name_index_find(model->name_index, model->tensors, info_name_at, name);
    return i == (size_t)-1 ? NULL : &model->tensors[i];
}

void smelt_model_close(smelt_model *model)
{
    if (!model)
        return;
    for (uint32_t i = 0; i < model->nfiles; i++) {
        if (model->files[i].fd >= 0)
            close(model->files[i].fd);
        free(model->files[i].path);
    }
    free(model->files);
    smelt_tensors_free(model->tensors, model->ntensors);
    if (model->name_index) {
        smelt_name_index_free(model->name_index);
        free(model->name_index);
    }
    free(model->metadata_json);
    smelt_gguf_set_close(model->gguf);
    smelt_lora_close(model->lora);
    smelt_delta_close(model->delta);
    free(model->ref);
    free(model->dir);
    free(model);
}

/* ---- sharded directories ---- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A shard name is a file of the model directory; anything else could read outside it. */
static int plain_file_name(const char *name)
{
    return *name && !strchr(name, '/') && !strstr(name, "..");
}

/* Checks metadata.total_size, when the index has one, against the tensors' bytes. */
static int check_total_size(smelt_ctx *ctx, const char *index_path, json_t *root,
                            const smelt_model *m)
{
    json_t *meta = json_object_get(root, "metadata");
    if (!meta)
        return SMELT_OK;
    if (!json_is_object(meta))
        return smelt_fail(ctx, SMELT_E_FORMAT, "%s: 'metadata' must be an object", index_path);
    json_t *total = json_object_get(meta, "total_size");
    if (!total)
        return SMELT_OK;
    uint64_t want;
    /* Some writers store the sum as a float ("1.6e10"); an integral value is still exact. */
    if (json_is_integer(total) && json_integer_value(total) >= 0)
        want = (uint64_t)json_integer_value(total);
    else if (json_is_real(total) && json_real_value(total) >= 0 &&
             json_real_value(total) < 1.8e19 &&
             json_real_value(total) == (double)(uint64_t)json_real_value(total))
        want = (uint64_t)json_real_value(total);
    else
        return smelt_fail(ctx, SMELT_E_FORMAT,
                          "%s: metadata.total_size must be a non-negative integer", index_path);
    uint64_t have = 0;
    for (size_t i = 0; i < m->ntensors; i++)
        have += m->tensors[i].nbytes;
    /* transformers never reads total_size and some published indexes carry a stale one; every
     * shard and tensor is cross-checked above, so a wrong sum is worth a notice, not a refusal. */
    if (have != want)
        smelt_notice(ctx, 1, "%s: metadata.total_size is %llu, but the shards' tensors hold %llu "
                     "bytes (ignored)", index_path, (ull)want, (ull)have);
    return SMELT_OK;
}

/* Every tensor of every shard is where the index says, and every tensor the index lists is in
 * its shard. */
static int check_weight_map(smelt_ctx *ctx, const char *index_path, json_t *weight_map,
                            const smelt_model *m)
{
    for (size_t i = 0; i < m->ntensors; i++) {
        const smelt_tensor_info *t = &m->tensors[i];
        const char *shard = base_name(m->files[t->file].path);
        json_t *v = json_object_get(weight_map, t->name);
        if (!v)
            return smelt_fail(ctx, SMELT_E_FORMAT,
                              "%s: shard '%s' holds tensor '%s', which the index does not list",
                              index_path, shard, t->name);
        if (strcmp(json_string_value(v), shard) != 0)
            return smelt_fail(ctx, SMELT_E_FORMAT,
                              "%s: shard '%s' holds tensor '%s', but the index assigns it to '%s'",
                              index_path, shard, t->name, json_string_value(v));
    }
    const char *name;
    json_t *v;
    json_object_foreach(weight_map, name, v)
        if (!smelt_model_find(m, name))
            return smelt_fail(ctx, SMELT_E_FORMAT,
                              "%s: the index assigns tensor '%s' to shard '%s', which does not "
                              "hold it", index_path, name, json_string_value(v));
    return SMELT_OK;
}

/* Validates the weight map's values and returns its distinct shard names, sorted (the order of
 * the HF names model-00001-of-N...). The names point into weight_map. */
static int list_shards(smelt_ctx *ctx, const char *dir, const char *index_path,
                       json_t *weight_map, const char ***shards, size_t *nshards)
{
    json_t *seen = json_object();
    const char **names = calloc(json_object_size(weight_map) + 1, sizeof *names);
    size_t n = 0;
    int rc = SMELT_OK;
    if (!seen || !names) {
        rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        goto out;
    }
    const char *tensor;
    json_t *v;
    json_object_foreach(weight_map, tensor, v) {
        if (!json_is_string(v)) {
            rc = smelt_fail(ctx, SMELT_E_FORMAT,
                            "%s: weight_map: tensor '%s' maps to a non-string; values must be "
                            "shard file names", index_path, tensor);
            goto out;
        }
        const char *shard = json_string_value(v);
        if (!plain_file_name(shard)) {
            rc = smelt_fail(ctx, SMELT_E_FORMAT,
                            "%s: weight_map: tensor '%s' maps to '%s': a shard must be a plain "
                            "file name in the model directory (no '/' or '..')", index_path,
                            tensor, shard);
            goto out;
        }
        if (json_object_get(seen, shard))
            continue;
        if (json_object_set_new(seen, shard, json_string(tensor)) != 0) {
            rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
            goto out;
        }
        names[n++] = shard;
    }
    qsort(names, n, sizeof *names, cmp_str);
    /* Name a tensor with a missing shard: it is what the user will look for. */
    for (size_t i = 0; i < n; i++) {
        char *path = smelt_path_join(dir, names[i]);
        if (!path) {
            rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
            goto out;
        }
        int missing = !exists(path);
        free(path);
        if (missing) {
            rc = smelt_fail(ctx, SMELT_E_IO,
                            "%s: shard '%s' does not exist (the index assigns tensor '%s' to it)",
                            index_path, names[i],
                            json_string_value(json_object_get(seen, names[i])));
            goto out;
        }
    }
out:
    json_decref(seen);
    if (rc != SMELT_OK) {
        free(names);
        return rc;
    }
    *shards = names;
    *nshards = n;
    return SMELT_OK;
}

static int open_sharded(smelt_ctx *ctx, smelt_model *m, const char *dir, const char *index_path)
{
    /* Indexes of the largest models are a few MB: the JSON bound is far above any. */
    json_t *root;
    int rc = smelt_json_load(ctx, index_path, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &root);
    if (rc != SMELT_OK)
        return rc;
    const char **shards = NULL;
    size_t nshards = 0;
    json_t *weight_map = json_object_get(root, "weight_map");
    if (!json_is_object(root))
        rc = smelt_fail(ctx, SMELT_E_FORMAT, "%s: the top level must be a JSON object",
                        index_path);
    else if (!json_is_object(weight_map))
        rc = smelt_fail(ctx, SMELT_E_FORMAT,
                        "%s: %s; it must be an object mapping tensor names to shard files",
                        index_path, weight_map ? "'weight_map' is not an object"
                                               : "there is no 'weight_map'");
    else if (json_object_size(weight_map) == 0)
        rc = smelt_fail(ctx, SMELT_E_FORMAT, "%s: 'weight_map' lists no tensors", index_path);
    else
        rc = list_shards(ctx, dir, index_path, weight_map, &shards, &nshards);
    for (size_t i = 0; rc == SMELT_OK && i < nshards; i++) {
        char *path = smelt_path_join(dir, shards[i]);
        rc = path ? add_file(ctx, m, path) : smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        free(path);
    }
    if (rc == SMELT_OK)
        rc = index_model(ctx, m);
    if (rc == SMELT_OK)
        rc = check_weight_map(ctx, index_path, weight_map, m);
    if (rc == SMELT_OK)
        rc = check_total_size(ctx, index_path, root, m);
    free(shards);
    json_decref(root);
    return rc;
}

/* ---- directories, files, hub ids ---- */

static int has_suffix(const char *s, const char *suffix)
{
    size_t ls = strlen(s), lx = strlen(suffix);
    return ls >= lx && strcmp(s + ls - lx, suffix) == 0;
}

/* The error for a directory without a model in it, saying what it does hold. */
static int no_model_in_dir(smelt_ctx *ctx, const char *dir)
{
    char torch[256] = "", other[256] = "";
    DIR *d = opendir(dir);
    if (!d)
        return smelt_fail_errno(ctx, errno, "%s: cannot open directory", dir);
    for (struct dirent *e; (e = readdir(d));) {
        const char *name = e->d_name;
        if (!torch[0] && (has_suffix(name, ".bin") || has_suffix(name, ".pt") ||
                          has_suffix(name, ".pth") || has_suffix(name, ".ckpt")))
            snprintf(torch, sizeof torch, "%s", name);
        if (!other[0] && has_suffix(name, ".safetensors"))
            snprintf(other, sizeof other, "%s", name);
    }
    closedir(d);
    if (other[0])
        return smelt_fail(ctx, SMELT_E_IO,
                          "%s: neither %s nor %s is here, though %s is: name a file to open "
                          "it alone", dir, INDEX_NAME, SINGLE_NAME, other);
    if (torch[0])
        return smelt_fail(ctx, SMELT_E_UNSUPPORTED,
                          "%s: neither %s nor %s is here, only PyTorch checkpoints such as %s; "
                          "smelt reads safetensors and GGUF only (convert them first)", dir,
                          INDEX_NAME, SINGLE_NAME, torch);
    return smelt_fail(ctx, SMELT_E_IO, "%s: neither %s nor %s is in this directory", dir,
                      INDEX_NAME, SINGLE_NAME);
}

/* The first split of the gguf-split set a GGUF merge writes (model-00001-of-0000N.gguf) when
 * dir holds one: *path is then the malloc'd path to it, else NULL. */
static int gguf_set_in_dir(smelt_ctx *ctx, const char *dir, char **path)
{
    *path = NULL;
    DIR *d = opendir(dir);
    if (!d)
        return smelt_fail_errno(ctx, errno, "%s: cannot open directory", dir);
    int rc = SMELT_OK;
    for (struct dirent *e; !*path && rc == SMELT_OK && (e = readdir(d));) {
        size_t plen;
        unsigned no, count;
        if (smelt_gguf_split_name(e->d_name, &plen, &no, &count) && no == 1 && plen == 5 &&
            strncmp(e->d_name, "model", 5) == 0 && !(*path = smelt_path_join(dir, e->d_name)))
            rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    }
    closedir(d);
    return rc;
}

/* A directory without safetensors weights: a GGUF merge's model.gguf or split set. */
static int open_gguf_dir(smelt_ctx *ctx, smelt_model *m, const char *dir, const char *gguf)
{
    if (exists(gguf))
        return smelt_gguf_model_open(ctx, m, gguf);
    char *first;
    int rc = gguf_set_in_dir(ctx, dir, &first);
    if (rc == SMELT_OK)
        rc = first ? smelt_gguf_model_open(ctx, m, first) : no_model_in_dir(ctx, dir);
    free(first);
    return rc;
}

static int open_dir(smelt_ctx *ctx, smelt_model *m, const char *dir)
{
    if (!(m->dir = strdup(dir)))
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    char *index = smelt_path_join(dir, INDEX_NAME), *single = smelt_path_join(dir, SINGLE_NAME);
    char *gguf = smelt_path_join(dir, GGUF_NAME);
    int rc;
    if (!index || !single || !gguf)
        rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    else if (exists(index)) /* the index wins: a stale model.safetensors may sit beside it */
        rc = open_sharded(ctx, m, dir, index);
    else if (exists(single))
        rc = add_file(ctx, m, single);
    else /* what a GGUF merge writes */
        rc = open_gguf_dir(ctx, m, dir, gguf);
    free(index);
    free(single);
    free(gguf);
    return rc;
}

/* A lone file; its directory counts as the model's only when config.json says it is one. */
static int open_lone_file(smelt_ctx *ctx, smelt_model *m, const char *path)
{
    int rc = add_file(ctx, m, path);
    if (rc != SMELT_OK)
        return rc;
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, (size_t)(slash - path) + 1) : strdup(".");
    char *config = dir ? smelt_path_join(dir, "config.json") : NULL;
    if (!config) {
        free(dir);
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    }
    if (exists(config))
        m->dir = dir;
    else
        free(dir);
    free(config);
    return SMELT_OK;
}

static int hub_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '_' || c == '.';
}

/* "org/name" or "org/name@revision", spelled as the hub allows (letters, digits, - _ .). */
int smelt_hub_id_form(const char *ref)
{
    const char *at = strchr(ref, '@');
    size_t id_len = at ? (size_t)(at - ref) : strlen(ref);
    const char *slash = memchr(ref, '/', id_len);
    if (!slash || slash == ref || slash == ref + id_len - 1)
        return 0;
    for (size_t i = 0; i < id_len; i++)
        if (ref + i != slash && !hub_char(ref[i]))
            return 0;
    if (ref[0] == '.' || slash[1] == '.' || memmem(ref, id_len, "..", 2))
        return 0;
    if (at) {
        const char *rev = at + 1;
        if (!*rev || strstr(rev, "..") || rev[0] == '/')
            return 0;
        for (const char *p = rev; *p; p++)
            if (!hub_char(*p) && *p != '/')
                return 0;
    }
    return 1;
}

/* The cache root, in huggingface_hub's order of precedence. */
static char *hub_cache_dir(void)
{
    const char *v;
    if ((v = getenv("HF_HUB_CACHE")) && *v)
        return strdup(v);
    if ((v = getenv("HF_HOME")) && *v)
        return smelt_path_join(v, "hub");
    if ((v = getenv("XDG_CACHE_HOME")) && *v)
        return smelt_path_join(v, "huggingface/hub");
    if ((v = getenv("HOME")) && *v)
        return smelt_path_join(v, ".cache/huggingface/hub");
    return strdup(".cache/huggingface/hub");
}

static int not_cached(smelt_ctx *ctx, const char *ref, const char *looked_for)
{
    return smelt_fail(ctx, SMELT_E_IO,
                      "%s: not in the Hugging Face cache (%s does not exist); smelt never "
                      "downloads: fetch it first, e.g. with `huggingface-cli download`", ref,
                      looked_for);
}

int smelt_hub_resolve(smelt_ctx *ctx, const char *ref, char **snapshot_dir)
{
    *snapshot_dir = NULL;
    const char *at = strchr(ref, '@');
    size_t id_len = at ? (size_t)(at - ref) : strlen(ref);
    const char *rev = at ? at + 1 : "main";
    char *cache = hub_cache_dir();
    char *repo = cache ? malloc(strlen(cache) + id_len + 16) : NULL;
    char *refs = NULL, *commit = NULL, *snapshot = NULL;
    int rc = SMELT_OK;
    if (!repo) {
        rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        goto out;
    }
    /* "org/name" is cached as "models--org--name". */
    size_t len = (size_t)sprintf(repo, "%s/models--", cache);
    for (size_t i = 0; i < id_len; i++) {
        if (ref[i] == '/') {
            memcpy(repo + len, "--", 2);
            len += 2;
        } else {
            repo[len++] = ref[i];
        }
    }
    repo[len] = '\0';
    if (!exists(repo)) {
        rc = not_cached(ctx, ref, repo);
        goto out;
    }
    size_t refs_len = strlen(repo) + strlen(rev) + 8;
    if (!(refs = malloc(refs_len))) {
        rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        goto out;
    }
    snprintf(refs, refs_len, "%s/refs/%s", repo, rev);
    if (exists(refs)) {
        if ((rc = smelt_read_file(ctx, refs, 4096, &commit, NULL)) != SMELT_OK)
            goto out;
        commit[strcspn(commit, " \t\r\n")] = '\0';
    } else if (at) {
        commit = strdup(rev); /* a commit hash names its snapshot directly */
    } else {
        rc = not_cached(ctx, ref, refs);
        goto out;
    }
    if (!commit || !(snapshot = malloc(strlen(repo) + strlen(commit) + 16))) {
        rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        goto out;
    }
    sprintf(snapshot, "%s/snapshots/%s", repo, commit);
    struct stat st;
    /* The commit names one directory under snapshots/, never a path out of it. */
    if (!*commit || strchr(commit, '/') || strstr(commit, "..") || stat(snapshot, &st) != 0 ||
        !S_ISDIR(st.st_mode)) {
        rc = not_cached(ctx, ref, snapshot);
        goto out;
    }
    *snapshot_dir = snapshot;
    snapshot = NULL;
out:
    free(cache);
    free(repo);
    free(refs);
    free(commit);
    free(snapshot);
    return rc;
}

static int open_hub(smelt_ctx *ctx, smelt_model *m, const char *ref)
{
    char *snapshot;
    int rc = smelt_hub_resolve(ctx, ref, &snapshot);
    if (rc == SMELT_OK)
        rc = open_dir(ctx, m, snapshot);
    free(snapshot);
    return rc;
}

/* A GGUF file under another name ("model.bin") is still one. */
static int has_gguf_magic(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return 0;
    char magic[4];
    int yes = read(fd, magic, 4) == 4 && memcmp(magic, "GGUF", 4) == 0;
    close(fd);
    return yes;
}

int smelt_model_open(smelt_ctx *ctx, const char *ref, smelt_model **out)
{
    *out = NULL;
    if (!ref || !*ref)
        return smelt_fail(ctx, SMELT_E_ARG, "an empty model reference");
    smelt_model *m = calloc(1, sizeof *m);
    if (!m || !(m->ref = strdup(ref))) {
        free(m);
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    }
    struct stat st;
    int rc;
    if (stat(ref, &st) == 0) {
        if (S_ISDIR(st.st_mode))
            rc = open_dir(ctx, m, ref);
        else if (S_ISREG(st.st_mode) && (smelt_gguf_is_path(ref) || has_gguf_magic(ref)))
            rc = smelt_gguf_model_open(ctx, m, ref);
        else if (S_ISREG(st.st_mode))
            rc = open_lone_file(ctx, m, ref);
        else
            rc = smelt_fail(ctx, SMELT_E_IO, "%s: neither a file nor a directory", ref);
    } else if (errno != ENOENT && errno != ENOTDIR) {
        rc = smelt_fail_errno(ctx, errno, "%s: cannot access", ref);
    } else if (smelt_hub_id_form(ref)) {
        rc = open_hub(ctx, m, ref);
    } else {
        rc = smelt_fail(ctx, SMELT_E_IO,
                        "%s: no such file or directory (and not a hub id of the form org/name)",
                        ref);
    }
    if (rc == SMELT_OK && !m->name_index)
        rc = index_model(ctx, m);
    if (rc != SMELT_OK) {
        smelt_model_close(m);
        return rc;
    }
    *out = m;
    return SMELT_OK;
}
