/* libFuzzer target: the sharded-model index (model.safetensors.index.json). The format layer
 * reads the index only inside smelt_model_open, so each input is written as the index of a
 * scratch directory that also holds two small valid shards, and the directory is opened: the
 * index's JSON, its weight map, its shard names and the cross-checks against the shards are all
 * exercised, with real files behind them. */
#include "format/safetensors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[64];
static char index_path[128];

static void quiet(void *user, int level, const char *message)
{
    (void)user, (void)level, (void)message;
}

/* A safetensors file with the given header (padded to 8 bytes) and `data_len` zero data bytes. */
static int write_shard(const char *name, const char *header, size_t data_len)
{
    char path[160];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t hlen = strlen(header), padded = (hlen + 7) / 8 * 8;
    uint8_t len[8];
    for (int i = 0; i < 8; i++)
        len[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    fwrite(len, 1, 8, f);
    fwrite(header, 1, hlen, f);
    for (size_t i = hlen; i < padded; i++)
        fputc(' ', f);
    for (size_t i = 0; i < data_len; i++)
        fputc(0, f);
    return fclose(f);
}

static void remove_dir(void)
{
    static const char *names[] = {"model.safetensors.index.json",
                                  "model-00001-of-00002.safetensors",
                                  "model-00002-of-00002.safetensors"};
    char path[160];
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        unlink(path);
    }
    rmdir(dir);
}

static int setup(void)
{
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(dir, sizeof dir, "%s/smelt-fuzz-index.XXXXXX", base);
    if (!mkdtemp(dir))
        return -1;
    atexit(remove_dir);
    snprintf(index_path, sizeof index_path, "%s/model.safetensors.index.json", dir);
    /* The seed corpus's valid index describes exactly these tensors. */
    if (write_shard("model-00001-of-00002.safetensors",
                    "{\"__metadata__\":{\"format\":\"pt\"},"
                    "\"model.embed_tokens.weight\":{\"dtype\":\"BF16\",\"shape\":[2,2],"
                    "\"data_offsets\":[0,8]},"
                    "\"model.layers.0.mlp.up_proj.weight\":{\"dtype\":\"F32\",\"shape\":[2],"
                    "\"data_offsets\":[8,16]}}",
                    16) != 0 ||
        write_shard("model-00002-of-00002.safetensors",
                    "{\"lm_head.weight\":{\"dtype\":\"F16\",\"shape\":[1,2],"
                    "\"data_offsets\":[0,4]}}",
                    4) != 0)
        return -1;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready = -2;
    if (ready == -2)
        ready = setup();
    if (ready != 0)
        abort(); /* no scratch directory: nothing could be tested */
    FILE *f = fopen(index_path, "wb");
    if (!f)
        abort();
    if (size && fwrite(data, 1, size, f) != size)
        abort();
    if (fclose(f) != 0)
        abort();
    smelt_ctx *ctx = smelt_ctx_new();
    if (!ctx)
        return 0;
    smelt_ctx_set_log(ctx, quiet, NULL);
    smelt_model *model;
    if (smelt_model_open(ctx, dir, &model) == SMELT_OK)
        smelt_model_close(model);
    smelt_ctx_free(ctx);
    return 0;
}
