#include "out/finalize.h"

#include "format/lora.h"
#include "format/side_file.h"

#include "common/util.h"
#include "integrity/journal.h"

#include <dirent.h>
#include <fcntl.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* 1 when name is "model<anything><suffix>". */
static int model_named(const char *name, const char *suffix)
{
    size_t len = strlen(name), n = strlen(suffix);
    return strncmp(name, "model", 5) == 0 && len > 5 + n - 1 && strcmp(name + len - n, suffix) == 0;
}

/* Files of a model directory that smelt writes or replaces: safetensors shards and their index,
 * or a GGUF merge's model.gguf or gguf-split set (model-00001-of-0000N.gguf ...). */
static int is_model_file(const char *name)
{
    if (strcmp(name, "model.safetensors.index.json") == 0)
        return 1;
    return model_named(name, ".safetensors") || model_named(name, ".gguf");
}

/* What an interrupted merge leaves: its journal (and the journal's own temporary file), the
 * temporary shard files, and a partitioned merge's part journals and fragments
 * (SMELT_PART_PREFIX...). */
static int is_leftover_state(const char *name)
{
    if (strncmp(name, SMELT_JOURNAL_NAME, strlen(SMELT_JOURNAL_NAME)) == 0 ||
        strncmp(name, SMELT_PART_PREFIX, strlen(SMELT_PART_PREFIX)) == 0)
        return 1;
    return model_named(name, ".safetensors.smelt-tmp") || model_named(name, ".gguf.smelt-tmp");
}

/* The tokenizer files a model directory may hold, copied as they are (streamed: a
 * tokenizer.json can be larger than the whole memory budget). */
static const char *const tokenizer_names[] = {
    "tokenizer.json",       "tokenizer_config.json", "special_tokens_map.json",
    "tokenizer.model",      "added_tokens.json",     "vocab.json",
    "merges.txt",           "vocab.txt",             "generation_config.json",
    "chat_template.jinja",  "chat_template.json",    "preprocessor_config.json",
};
#define NTOKENIZER_NAMES (sizeof tokenizer_names / sizeof tokenizer_names[0])

/* One file the merge reads: its identity (device, inode) and how it was named. */
typedef struct input_file {
    dev_t dev;
    ino_t ino;
    char *path;
} input_file;

typedef struct input_set {
    input_file *v;
    size_t n, cap;
} input_set;

/* Adds path (takes ownership) when it exists; what stat cannot find cannot be destroyed. */
static int input_add(smelt_ctx *ctx, input_set *set, char *path)
{
    struct stat st;
    if (!path)
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    if (stat(path, &st) != 0) {
        free(path);
        return SMELT_OK;
    }
    if (set->n == set->cap) {
        size_t cap = set->cap ? 2 * set->cap : 64;
        input_file *v = realloc(set->v, cap * sizeof *v);
        if (!v) {
            free(path);
            return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        }
        set->v = v;
        set->cap = cap;
    }
    set->v[set->n++] = (input_file){st.st_dev, st.st_ino, path};
    return SMELT_OK;
}

static void input_set_free(input_set *set)
{
    for (size_t i = 0; i < set->n; i++)
        free(set->v[i].path);
    free(set->v);
}

/* Every file the merge reads or copies: the config, and per model (base included) its
 * safetensors files, index, config.json and tokenizer files. */
static int collect_inputs(smelt_ctx *ctx, const smelt_plan *plan, input_set *set)
{
    int rc = plan->spec->path ? input_add(ctx, set, strdup(plan->spec->path)) : SMELT_OK;
    for (size_t m = 0; m < plan->nmodels && rc == SMELT_OK; m++) {
        const smelt_model *model = plan->models[m];
        for (uint32_t f = 0; f < model->nfiles && rc == SMELT_OK; f++)
            rc = input_add(ctx, set, strdup(model->files[f].path));
        if (model->lora && rc == SMELT_OK) /* its weights are among the files above */
            rc = input_add(ctx, set, strdup(model->lora->config_path));
        if (!model->dir)
            continue;
        static const char *const side[] = {"model.safetensors.index.json", "config.json"};
        for (size_t i = 0; i < 2 && rc == SMELT_OK; i++)
            rc = input_add(ctx, set, smelt_path_join(model->dir, side[i]));
        for (size_t i = 0; i < NTOKENIZER_NAMES && rc == SMELT_OK; i++)
            rc = input_add(ctx, set, smelt_path_join(model->dir, tokenizer_names[i]));
    }
    return rc;
}

/* Whether the directory `out` (by device and inode) is one of the directories above `path`.
 * The walk follows ".." from the file's real location, so symbolic links on the way, bind
 * mounts and paths longer than PATH_MAX are all seen as the kernel sees them. */
static int is_below(const char *path, const struct stat *out)
{
    char *real = realpath(path, NULL);
    const char *p = real ? real : path;
    const char *slash = strrchr(p, '/');
    char *dir = slash ? strndup(p, slash == p ? 1 : (size_t)(slash - p)) : strdup(".");
    free(real);
    if (!dir)
        return 0;
    int fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    free(dir);
    int below = 0;
    for (int depth = 0; fd >= 0 && depth < 4096; depth++) {
        struct stat st, up;
        if (fstat(fd, &st) != 0)
            break;
        if (st.st_dev == out->st_dev && st.st_ino == out->st_ino) {
            below = 1;
            break;
        }
        int parent = openat(fd, "..", O_PATH | O_DIRECTORY | O_CLOEXEC);
        close(fd);
        fd = parent;
        if (fd >= 0 && fstat(fd, &up) == 0 && up.st_dev == st.st_dev && up.st_ino == st.st_ino)
            break; /* the root is its own parent */
    }
    if (fd >= 0)
        close(fd);
    return below;
}

/* No option may destroy an input: the output path must not be an input file, nor hold one at
 * any depth, nor hold another name (hard or symbolic link) for one where smelt writes. Checked
 * before anything is written or removed. Inputs are compared by device and inode. */
static int refuse_inputs_in_output(smelt_ctx *ctx, const smelt_plan *plan, const char *out_dir)
{
    struct stat out;
    if (stat(out_dir, &out) != 0)
        return SMELT_OK; /* nothing there yet: it holds nothing (mkdir reports the rest) */
    input_set set = {0};
    int rc = collect_inputs(ctx, plan, &set);
    for (size_t i = 0; i < set.n && rc == SMELT_OK; i++) {
        if (set.v[i].dev == out.st_dev && set.v[i].ino == out.st_ino)
            rc = smelt_fail(ctx, SMELT_E_ARG, "%s: the output path is the input file '%s'; "
                            "choose another output directory", out_dir, set.v[i].path);
        else if (S_ISDIR(out.st_mode) && is_below(set.v[i].path, &out))
            rc = smelt_fail(ctx, SMELT_E_ARG, "%s: the output directory contains the input "
                            "file '%s', which the merge could replace or delete; choose "
                            "another output directory", out_dir, set.v[i].path);
    }
    DIR *d = rc == SMELT_OK && S_ISDIR(out.st_mode) ? opendir(out_dir) : NULL;
    for (struct dirent *ent; d && rc == SMELT_OK && (ent = readdir(d));) {
        struct stat st;
        if (strcmp(ent->d_name, ".") == 0 || strcmp(ent->d_name, "..") == 0 ||
            fstatat(dirfd(d), ent->d_name, &st, 0) != 0)
            continue;
        for (size_t i = 0; i < set.n && rc == SMELT_OK; i++)
            if (set.v[i].dev == st.st_dev && set.v[i].ino == st.st_ino)
                rc = smelt_fail(ctx, SMELT_E_ARG, "%s: the output directory's '%s' is another "
                                "name (a link) for the input file '%s', which the merge could "
                                "replace or delete; choose another output directory", out_dir,
                                ent->d_name, set.v[i].path);
    }
    if (d)
        closedir(d);
    input_set_free(&set);
    return rc;
}

/* The side files finalizing will read or copy, checked now (regular files, JSON within
 * SMELT_JSON_MAX_BYTES) so that a bad one fails the merge before any data is read or written,
 * not after the whole merge has run. */
static int check_side_files(smelt_ctx *ctx, const smelt_plan *plan)
{
    int rc = smelt_side_check(ctx, plan->models[plan->ref_model], "config.json",
                              SMELT_JSON_MAX_BYTES);
    const smelt_model *tok = plan->tokenizer_model >= 0 ? plan->models[plan->tokenizer_model]
                                                        : NULL;
    for (size_t i = 0; tok && i < NTOKENIZER_NAMES && rc == SMELT_OK; i++) {
        /* tokenizer_config.json is parsed when a chat template is set; the rest is copied */
        int parsed = plan->spec->chat_template && strcmp(tokenizer_names[i],
                                                         "tokenizer_config.json") == 0;
        rc = smelt_side_check(ctx, tok, tokenizer_names[i], parsed ? SMELT_JSON_MAX_BYTES : 0);
    }
    int vote = plan->spec->chat_template && strcmp(plan->spec->chat_template, "auto") == 0;
    for (size_t m = 0; vote && m < plan->nmodels && rc == SMELT_OK; m++)
        rc = smelt_side_check(ctx, plan->models[m], "tokenizer_config.json",
                              SMELT_JSON_MAX_BYTES);
    return rc;
}

int smelt_out_dir_prepare(smelt_ctx *ctx, const smelt_plan *plan, const char *out_dir,
                          int overwrite, int resume, smelt_out_owned_fn owned, void *owned_user)
{
    int rc0 = refuse_inputs_in_output(ctx, plan, out_dir);
    if (rc0 == SMELT_OK)
        rc0 = check_side_files(ctx, plan);
    if (rc0 != SMELT_OK)
        return rc0;
    struct stat out_st;
    if (stat(out_dir, &out_st) == 0) {
        DIR *d = opendir(out_dir);
        if (!d)
            return smelt_fail_errno(ctx, errno, "%s: cannot open output directory", out_dir);
        struct dirent *ent;
        int found = 0, leftover = 0, journal = 0, rc = SMELT_OK;
        char example[256] = "", left_example[256] = "";
        while ((ent = readdir(d)) && rc == SMELT_OK) {
            if (is_model_file(ent->d_name)) {
                found = 1;
                snprintf(example, sizeof example, "%s", ent->d_name);
            }
            journal |= strcmp(ent->d_name, SMELT_JOURNAL_NAME) == 0 ||
                       strncmp(ent->d_name, SMELT_PART_PREFIX, strlen(SMELT_PART_PREFIX)) == 0;
            if (!is_leftover_state(ent->d_name) || resume ||
                (owned && !owned(owned_user, ent->d_name)))
                continue; /* kept, or another part's (which may be running right now) */
            leftover = 1;
            snprintf(left_example, sizeof left_example, "%s", ent->d_name);
            if (overwrite) { /* start over: the old state would only confuse a later resume */
                char *path = smelt_path_join(out_dir, ent->d_name);
                if (!path || unlink(path) != 0)
                    rc = smelt_fail_errno(ctx, path ? errno : ENOMEM, "%s: cannot remove",
                                          path ? path : out_dir);
                free(path);
            }
        }
        closedir(d);
        if (rc != SMELT_OK)
            return rc;
        if (leftover && !overwrite)
            return smelt_fail(ctx, SMELT_E_ARG,
                              "%s: holds an interrupted merge (%s); run the same command with "
                              "--resume to continue it, or with --overwrite to start over",
                              out_dir, left_example);
        /* Resuming a merge stopped while it was renaming its shards (or finalizing a
         * partitioned one stopped so, its fragments still there): those are its own. */
        if (found && !overwrite && !(resume && journal))
            return smelt_fail(ctx, SMELT_E_ARG,
                              "%s: already holds a model (%s); pass --overwrite to replace it",
                              out_dir, example);
    }
    return smelt_mkdir_p(ctx, out_dir);
}

/* Removes model files of an earlier merge that the new one does not replace (a different
 * shard count leaves stale shards otherwise). */
static int remove_stale(smelt_ctx *ctx, const smelt_plan *plan, const char *out_dir)
{
    DIR *d = opendir(out_dir);
    if (!d)
        return smelt_fail_errno(ctx, errno, "%s: cannot open output directory", out_dir);
    struct dirent *ent;
    int rc = SMELT_OK;
    while ((ent = readdir(d)) && rc == SMELT_OK) {
        if (!is_model_file(ent->d_name))
            continue;
        int ours = 0;
        for (size_t s = 0; s < plan->nshards; s++)
            ours |= strcmp(plan->shards[s].name, ent->d_name) == 0;
        if (ours)
            continue;
        char *path = smelt_path_join(out_dir, ent->d_name);
        if (!path || unlink(path) != 0)
            rc = smelt_fail_errno(ctx, path ? errno : ENOMEM, "%s: cannot remove", out_dir);
        free(path);
    }
    closedir(d);
    return rc;
}

int smelt_write_index(smelt_ctx *ctx, const char *dir, const char *const *names,
                      const char *const *files, size_t n, uint64_t total_size)
{
    json_t *root = json_object(), *meta = json_object(), *map = json_object();
    int rc = SMELT_OK;
    if (!root || !meta || !map) {
        rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        goto out;
    }
    json_object_set_new(meta, "total_size", json_integer((json_int_t)total_size));
    for (size_t i = 0; i < n; i++)
        json_object_set_new(map, names[i], json_string(files[i]));
    json_object_set(root, "metadata", meta);
    json_object_set(root, "weight_map", map);
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS);
    if (!text) {
        rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        goto out;
    }
    size_t len = strlen(text);
    char *with_newline = realloc(text, len + 2);
    if (with_newline) {
        text = with_newline;
        text[len++] = '\n';
        text[len] = '\0';
    }
    char *path = smelt_path_join(dir, "model.safetensors.index.json");
    rc = path ? smelt_write_file_atomic(ctx, path, text, len)
              : smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    free(path);
    free(text);
out:
    json_decref(root);
    json_decref(meta);
    json_decref(map);
    return rc;
}

/* config.json of the reference model (a BASE+DELTA model's is the fine-tune's, from its delta),
 * with torch_dtype set to what was written. */
static int write_config_json(smelt_ctx *ctx, const smelt_plan *plan, const char *out_dir)
{
    const smelt_model *ref = plan->models[plan->ref_model];
    if (!ref->dir && !ref->delta)
        return SMELT_OK;
    json_t *config;
    int rc = smelt_side_load_json(ctx, ref, "config.json", JSON_REJECT_DUPLICATES, &config);
    if (rc == SMELT_OK && !config) {
        smelt_notice(ctx, SMELT_LOG_NOTICE, "%s has no config.json; the output has none either",
                     ref->ref);
        return SMELT_OK;
    }
    if (rc == SMELT_OK && !json_is_object(config)) {
        json_decref(config);
        rc = smelt_fail(ctx, SMELT_E_FORMAT, "%s: config.json is not a JSON object at the top "
                        "level", ref->ref);
    }
    if (rc != SMELT_OK)
        return rc;
    /* The dtype of the largest merged tensor class decides; with a forced dtype all agree. */
    smelt_dtype out = SMELT_DT_INVALID;
    uint64_t best = 0, by_dtype[SMELT_DT_COUNT] = {0};
    for (size_t i = 0; i < plan->ntensors; i++)
        if (plan->tensors[i].kind == SMELT_TASK_MERGE)
            by_dtype[plan->tensors[i].out_dtype] += plan->tensors[i].out_nbytes + 1;
    for (int dt = 0; dt < SMELT_DT_COUNT; dt++)
        if (by_dtype[dt] > best) {
            best = by_dtype[dt];
            out = (smelt_dtype)dt;
        }
    if (out != SMELT_DT_INVALID)
        json_object_set_new(config, "torch_dtype", json_string(smelt_dtype_torch_name(out)));
    /* A frankenmerge has another number of layers than its reference model. */
    if (plan->num_layers && plan->num_layers != plan->ref_num_layers) {
        static const char *const keys[] = {"num_hidden_layers", "n_layer", "num_layers",
                                           "n_layers"};
        for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++)
            if (json_is_integer(json_object_get(config, keys[k])))
                json_object_set_new(config, keys[k], json_integer((json_int_t)plan->num_layers));
    }
    char *text = json_dumps(config, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(config);
    char *dst = smelt_path_join(out_dir, "config.json");
    rc = text && dst ? smelt_write_file_atomic(ctx, dst, text, strlen(text))
                         : smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    free(text);
    free(dst);
    return rc;
}

static int copy_tokenizer(smelt_ctx *ctx, const smelt_plan *plan, const char *out_dir)
{
    const char *const *names = tokenizer_names;
    if (plan->tokenizer_model < 0)
        return SMELT_OK;
    const smelt_model *ref = plan->models[plan->tokenizer_model];
    for (size_t i = 0; i < NTOKENIZER_NAMES; i++) {
        char *dst = smelt_path_join(out_dir, names[i]);
        int rc = dst ? smelt_side_copy(ctx, ref, names[i], dst)
                     : smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        free(dst);
        if (rc != SMELT_OK)
            return rc;
    }
    return SMELT_OK;
}

/* The chat template a model's tokenizer_config.json carries (a string) into *out, or NULL
 * when it has none (no file, or no string chat_template). A file that exists but cannot be
 * read or parsed is an error: a vote that silently skipped it could pick another template. */
static int model_chat_template(smelt_ctx *ctx, const smelt_model *m, json_t **out)
{
    *out = NULL;
    json_t *root;
    int rc = smelt_side_load_json(ctx, m, "tokenizer_config.json", 0, &root);
    json_t *t = root ? json_object_get(root, "chat_template") : NULL;
    if (json_is_string(t) && !(*out = json_string(json_string_value(t))))
        rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    json_decref(root);
    return rc;
}

/* chat_template: a built-in name, a literal Jinja template, or auto — the template most of the
 * input models carry (the first of equals), as mergekit picks it. */
static int write_chat_template(smelt_ctx *ctx, const smelt_plan *plan, const char *out_dir)
{
    const char *want = plan->spec->chat_template;
    if (!want)
        return SMELT_OK;
    json_t *text = NULL;
    if (strcmp(want, "auto") == 0) {
        size_t best = 0;
        for (size_t i = 0; i < plan->nmodels; i++) {
            json_t *t;
            int rc = model_chat_template(ctx, plan->models[i], &t);
            size_t votes = 0;
            for (size_t j = 0; t && rc == SMELT_OK && j < plan->nmodels; j++) {
                json_t *u;
                rc = model_chat_template(ctx, plan->models[j], &u);
                votes += u && json_equal(t, u);
                json_decref(u);
            }
            if (rc != SMELT_OK) {
                json_decref(t);
                json_decref(text);
                return rc;
            }
            if (votes > best) {
                best = votes;
                json_decref(text);
                text = t;
            } else {
                json_decref(t);
            }
        }
        if (!text)
            return SMELT_OK; /* no input has one: nothing to choose */
    } else {
        const char *builtin = smelt_chat_template_builtin(want);
        text = json_string(builtin ? builtin : want);
    }
    char *path = smelt_path_join(out_dir, "tokenizer_config.json");
    json_t *config = NULL;
    int rc = !path ? smelt_fail(ctx, SMELT_E_NOMEM, "out of memory")
                   : smelt_json_load_if_exists(ctx, path, 0, &config);
    if (rc == SMELT_OK && !config) /* no tokenizer files copied: a config of its own */
        config = json_object();
    if (rc == SMELT_OK && (!text || !json_is_object(config))) {
        rc = smelt_fail(ctx, SMELT_E_FORMAT, "%s: cannot set its chat_template (not a JSON object)",
                        path);
    } else if (rc == SMELT_OK) {
        json_object_set(config, "chat_template", text);
        char *dump = json_dumps(config, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        rc = dump ? smelt_write_file_atomic(ctx, path, dump, strlen(dump))
                  : smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
        free(dump);
    }
    json_decref(text);
    json_decref(config);
    free(path);
    return rc;
}

/* Every model the merge reads, once, base first: for the model card. */
static void list_models(FILE *f, const smelt_plan *plan, const char *prefix, int skip_base)
{
    const char *base = plan->spec->base_model;
    for (size_t i = 0; i < plan->nmodels; i++) {
        const char *ref = plan->models[i]->ref;
        int is_base = base && strcmp(ref, base) == 0;
        int is_input = 0;
        for (size_t s = 0; s < plan->nslices; s++)
            for (size_t j = 0; j < plan->slices[s].ninputs; j++)
                is_input |= strcmp(plan->slices[s].input_names[j], ref) == 0;
        if (is_input && !(skip_base && is_base))
            fprintf(f, "%s%s\n", prefix, ref);
    }
}

static int write_model_card(smelt_ctx *ctx, const smelt_plan *plan, const char *out_dir)
{
    const smelt_merge_spec *spec = plan->spec;
    char *card = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&card, &len);
    if (!f)
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    fprintf(f, "---\nbase_model:\n");
    if (spec->base_model)
        fprintf(f, "- %s\n", spec->base_model);
    list_models(f, plan, "- ", 1);
    fprintf(f, "library_name: transformers\ntags:\n- mergekit\n- merge\n- smelt\n---\n");
    fprintf(f, "# Merged model\n\nThis is a merge of pre-trained language models made with "
               "smelt %s.\n\n## Merge Details\n### Merge Method\n\n"
               "This model was merged using the `%s` merge method",
            smelt_version(), plan->method->name);
    if (spec->base_model)
        fprintf(f, ", with %s as the base", spec->base_model);
    fprintf(f, ".\n\n### Models Merged\n\nThe following models were included in the merge:\n");
    list_models(f, plan, "* ", 0);
    fprintf(f, "\n### Configuration\n\nThe following YAML configuration was used to produce "
               "this model:\n\n```yaml\n%s%s```\n",
            spec->text, spec->text[0] && spec->text[strlen(spec->text) - 1] == '\n' ? "" : "\n");
    if (fclose(f) != 0) {
        free(card);
        return smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    }
    char *path = smelt_path_join(out_dir, "README.md");
    int rc = path ? smelt_write_file_atomic(ctx, path, card, len)
                  : smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    free(path);
    free(card);
    return rc;
}

/* mergekit saves the config under this name, card or not; tools that read it keep working. */
static int save_config(smelt_ctx *ctx, const smelt_plan *plan, const char *out_dir)
{
    char *path = smelt_path_join(out_dir, "mergekit_config.yml");
    int rc = path ? smelt_write_file_atomic(ctx, path, plan->spec->text, strlen(plan->spec->text))
                  : smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    free(path);
    return rc;
}

int smelt_manifest_of_plan(smelt_ctx *ctx, const smelt_plan *plan,
                           const smelt_out_checksums *sums, const uint8_t *shards,
                           smelt_manifest *m)
{
    *m = (smelt_manifest){.smelt_version = (char *)smelt_version(), .config = sums->config,
                          .inputs = (smelt_manifest_input *)sums->inputs,
                          .ninputs = sums->ninputs};
    /* file index in m->files per plan shard; (size_t)-1 for a shard left out */
    size_t *slot = calloc(plan->nshards + 1, sizeof *slot);
    m->files = calloc(plan->nshards + 1, sizeof *m->files);
    int rc = slot && m->files ? SMELT_OK : smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    for (size_t s = 0; s < plan->nshards && rc == SMELT_OK; s++) {
        slot[s] = (size_t)-1;
        if (shards && !shards[s])
            continue;
        smelt_manifest_file *f = &m->files[slot[s] = m->nfiles++];
        f->name = plan->shards[s].name;
        f->size = plan->shards[s].size;
        /* The header as written binds every name, dtype, shape, offset and the metadata. */
        f->header = smelt_hash_bytes(plan->shards[s].header, plan->shards[s].header_len);
        if (!(f->tensors = calloc(plan->shards[s].ntensors + 1, sizeof *f->tensors)))
            rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    }
    for (size_t t = 0; t < plan->ntensors && rc == SMELT_OK; t++) {
        const smelt_plan_tensor *pt = &plan->tensors[t];
        if (slot[pt->shard] == (size_t)-1)
            continue;
        smelt_manifest_file *f = &m->files[slot[pt->shard]];
        if (f->ntensors >= plan->shards[pt->shard].ntensors) {
            rc = smelt_fail(ctx, SMELT_E_INTERNAL, "shard tensor count disagrees with the plan");
            break;
        }
        smelt_manifest_tensor *mt = &f->tensors[f->ntensors++];
        *mt = (smelt_manifest_tensor){.name = pt->name, .hash = sums->tensors[t],
                                      .dtype = pt->out_dtype, .ndim = pt->ref->ndim};
        memcpy(mt->shape, pt->ref->shape, sizeof mt->shape); /* as the shard header has it */
    }
    free(slot);
    if (rc != SMELT_OK)
        smelt_manifest_of_plan_free(m);
    return rc;
}

void smelt_manifest_of_plan_free(smelt_manifest *m)
{
    for (size_t f = 0; m->files && f < m->nfiles; f++)
        free(m->files[f].tensors);
    free(m->files); /* the strings are borrowed from the plan */
    m->files = NULL;
    m->nfiles = 0;
}

/* smelt-manifest.json: every shard's size and every tensor's hash, grouped by shard. */
static int write_manifest(smelt_ctx *ctx, const smelt_plan *plan, const char *out_dir,
                          const smelt_out_checksums *sums)
{
    smelt_manifest m;
    int rc = smelt_manifest_of_plan(ctx, plan, sums, NULL, &m);
    if (rc == SMELT_OK)
        rc = smelt_manifest_write(ctx, out_dir, &m);
    smelt_manifest_of_plan_free(&m);
    return rc;
}

/* model.safetensors.index.json of a sharded safetensors output (a gguf-split set has none:
 * its first split names the count). */
static int write_st_index(smelt_ctx *ctx, const smelt_plan *plan, const char *out_dir)
{
    const char **names = calloc(plan->ntensors + 1, sizeof *names);
    const char **shard_of = calloc(plan->ntensors + 1, sizeof *shard_of);
    int rc = names && shard_of ? SMELT_OK : smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    for (size_t i = 0; rc == SMELT_OK && i < plan->ntensors; i++) {
        names[i] = plan->tensors[i].name;
        shard_of[i] = plan->shards[plan->tensors[i].shard].name;
    }
    if (rc == SMELT_OK)
        rc = smelt_write_index(ctx, out_dir, names, shard_of, plan->ntensors,
                               plan->bytes_to_write);
    free(names);
    free(shard_of);
    return rc;
}

int smelt_finalize(smelt_ctx *ctx, const smelt_plan *plan, const char *out_dir,
                   smelt_out_file *files, int write_card, const smelt_out_checksums *sums)
{
    int rc;
    for (size_t s = 0; s < plan->nshards; s++)
        if ((rc = smelt_out_finish(ctx, &files[s])) != SMELT_OK)
            return rc;
    if ((rc = write_config_json(ctx, plan, out_dir)) != SMELT_OK ||
        (rc = copy_tokenizer(ctx, plan, out_dir)) != SMELT_OK ||
        (rc = write_chat_template(ctx, plan, out_dir)) != SMELT_OK ||
        (write_card && (rc = write_model_card(ctx, plan, out_dir)) != SMELT_OK) ||
        (rc = save_config(ctx, plan, out_dir)) != SMELT_OK ||
        (sums && (rc = write_manifest(ctx, plan, out_dir, sums)) != SMELT_OK) ||
        (rc = remove_stale(ctx, plan, out_dir)) != SMELT_OK)
        return rc;
    for (size_t s = 0; s < plan->nshards; s++)
        if ((rc = smelt_out_commit(ctx, &files[s])) != SMELT_OK)
            return rc;
    if (plan->nshards > 1 && !plan->out_gguf && (rc = write_st_index(ctx, plan, out_dir)))
        return rc;
    return smelt_fsync_dir(ctx, out_dir);
}
