/* Writes GGUF files for the tests: a valid one, or one that breaks one rule of the format.
 * usage: make_gguf CASE PATH      (make_gguf list prints the cases)
 *        make_gguf split PREFIX N [no|count|tensors|dup]   a split set, valid or with a fault
 *        make_gguf many N PATH   N tensors "t.K" of 8 F32 zeros each, general.architecture
 *                                "llama" and nothing else (past the limits of a split set)
 * Every file is built byte by byte here, independent of smelt's reader. The valid file holds a
 * key of every scalar type, arrays of strings and numbers, and tensors of several ggml types
 * whose data is random but finite (their fp16 scales are never Inf or NaN). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct buf {
    uint8_t *p;
    size_t n, cap;
} buf;

static void put(buf *b, const void *d, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 256;
        b->p = realloc(b->p, b->cap);
        if (!b->p)
            abort();
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}

static void le(buf *b, uint64_t v, int n)
{
    uint8_t t[8];
    for (int i = 0; i < n; i++)
        t[i] = (uint8_t)(v >> (8 * i));
    put(b, t, (size_t)n);
}

static void str(buf *b, const char *s)
{
    le(b, strlen(s), 8);
    put(b, s, strlen(s));
}

static void key(buf *b, const char *k, uint32_t type)
{
    str(b, k);
    le(b, type, 4);
}

typedef struct tensor {
    const char *name;
    uint32_t ndim;
    uint64_t ne[5];
    uint32_t type, block, bytes;
} tensor;

/* The valid file's tensors: a torch [8, 64] embedding is ne = {64, 8}. */
static const tensor tensors[] = {
    {"token_embd.weight", 2, {64, 8}, 8, 32, 34},
    {"blk.0.attn_q.weight", 2, {256, 4}, 12, 256, 144},
    {"blk.0.ffn_down.weight", 2, {256, 2}, 14, 256, 210},
    {"blk.0.attn_k.weight", 2, {32, 4}, 1, 1, 2},
    {"blk.0.attn_v.weight", 3, {32, 2, 2}, 2, 32, 18},
    {"output_norm.weight", 1, {64}, 0, 1, 4},
};
#define NT (sizeof tensors / sizeof tensors[0])

static uint64_t rng = 88172645463325252ull;
static uint8_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint8_t)(rng >> 32);
}

/* Random bytes for a tensor, then finite scales: every fp16 / f32 with an all-ones exponent
 * gets its top exponent bit cleared. For the block types the scale offsets are known. */
static void tensor_data(uint8_t *d, const tensor *t, uint64_t nbytes)
{
    for (uint64_t i = 0; i < nbytes; i++)
        d[i] = rnd();
    if (t->type == 0)
        for (uint64_t i = 0; i < nbytes; i += 4)
            d[i + 3] &= 0xBF;
    else if (t->type == 1)
        for (uint64_t i = 0; i < nbytes; i += 2)
            d[i + 1] &= 0xBF;
    else
        for (uint64_t i = 0; i < nbytes; i += t->bytes) {
            int offs[2] = {0, t->type == 12 ? 2 : -1};
            if (t->type == 14)
                offs[0] = 208;
            for (int k = 0; k < 2; k++)
                if (offs[k] >= 0)
                    d[i + (uint64_t)offs[k] + 1] &= 0xBF;
        }
}

/* Split sets (make_gguf split PREFIX N [FAULT]): split k of n holds the tensors i with
 * i % n == k; the first split has the model's keys, every split the split.* keys. */
static unsigned split_k, split_n;
static const char *split_fault = "";

static int in_split(size_t i)
{
    if (!split_n)
        return 1;
    if (!strcmp(split_fault, "dup") && split_k == 1 && i == 0)
        return 1; /* tensor 0 is also in split 1 */
    return i % split_n == split_k;
}

static int split_keys(buf *b)
{
    if (!split_n)
        return 0;
    key(b, "split.no", 2);
    le(b, !strcmp(split_fault, "no") && split_k == 1 ? 0 : split_k, 2);
    key(b, "split.count", 2);
    le(b, !strcmp(split_fault, "count") && split_k + 1 == split_n ? split_n + 1 : split_n, 2);
    key(b, "split.tensors.count", 5);
    le(b, !strcmp(split_fault, "tensors") ? NT + 1 : NT, 4);
    return 3;
}

/* What a case changes in the valid file. */
typedef struct variant {
    const char *name, *rule;
    uint32_t magic_version;  /* 0: "GGUF" v3 */
    int version;
    int64_t kv_count_add, tensor_count_set;
    int extra_kv;            /* which extra key to add (see add_extra) */
    int bad_tensor;          /* which tensor-info change (see write_tensor_info) */
    uint32_t alignment;      /* general.alignment to write, 0: none */
    int truncate;            /* cut the file this many bytes short */
} variant;

static const variant cases[] = {
    {"valid", "", 0, 3, 0, -1, 0, 0, 0, 0},
    {"valid-v2", "", 0, 2, 0, -1, 0, 0, 0, 0},
    {"valid-align64", "", 0, 3, 0, -1, 0, 0, 64, 0},
    {"valid-nested", "", 0, 3, 0, -1, 10, 0, 0, 0},
    {"empty", "magic at byte 0 runs past the end of the file", 0, 3, 0, -1, 0, 0, 0, -1},
    {"magic", "bad magic", 1, 3, 0, -1, 0, 0, 0, 0},
    {"version", "unsupported GGUF version 1", 0, 1, 0, -1, 0, 0, 0, 0},
    {"kv-count", "key count", 0, 3, 1000000000, -1, 0, 0, 0, 0},
    {"tensor-count", "tensor count", 0, 3, 0, 1000000000, 0, 0, 0, 0},
    {"kv-count-short", "key #18: string length", 0, 3, 2, -1, 0, 0, 0, 0},
    {"key-length", "string length", 0, 3, 0, -1, 1, 0, 0, 0},
    {"array-length", "array length", 0, 3, 0, -1, 2, 0, 0, 0},
    {"value-type", "unknown value type 13", 0, 3, 0, -1, 3, 0, 0, 0},
    {"array-type", "unknown array element type 99", 0, 3, 0, -1, 4, 0, 0, 0},
    {"nested-depth", "nested deeper than 4", 0, 3, 0, -1, 5, 0, 0, 0},
    {"dup-key", "key 'general.architecture' appears more than once", 0, 3, 0, -1, 6, 0, 0, 0},
    {"string-value", "key 'bad.string': string length", 0, 3, 0, -1, 7, 0, 0, 0},
    {"alignment-pow2", "is not a power of two", 0, 3, 0, -1, 0, 0, 48, 0},
    {"alignment-zero", "is not a power of two", 0, 3, 0, -1, 0, 0, 0xFFFFFFFFu, 0},
    {"alignment-type", "'general.alignment' is a u64, not a u32", 0, 3, 0, -1, 8, 0, 0, 0},
    {"dup-tensor", "tensor 'token_embd.weight' appears more than once", 0, 3, 0, -1, 0, 1, 0, 0},
    {"dims", "5 dimensions, more than 4", 0, 3, 0, -1, 0, 2, 0, 0},
    {"zero-dim", "dimension 1 is 0", 0, 3, 0, -1, 0, 3, 0, 0},
    {"overflow", "element count overflows", 0, 3, 0, -1, 0, 4, 0, 0},
    {"tensor-type", "unknown ggml type 4", 0, 3, 0, -1, 0, 5, 0, 0},
    {"block", "ne[0] = 48 is not a multiple of q8_0's block size 32", 0, 3, 0, -1, 0, 6, 0, 0},
    {"misaligned", "is not a multiple of the alignment 32", 0, 3, 0, -1, 0, 7, 0, 0},
    {"overlap", "overlaps tensor", 0, 3, 0, -1, 0, 8, 0, 0},
    {"past-end", "lies past the end of the file", 0, 3, 0, -1, 0, 9, 0, 0},
    {"name-long", "longer than ggml's 63", 0, 3, 0, -1, 0, 10, 0, 0},
    {"truncated", "lies past the end of the file", 0, 3, 0, -1, 0, 0, 0, 100},
};

static uint64_t tensor_nbytes(const tensor *t)
{
    uint64_t n = 1;
    for (uint32_t d = 0; d < t->ndim; d++)
        n *= t->ne[d];
    return n / t->block * t->bytes;
}

/* Extra keys; the broken ones come last so that everything before them parses. */
static int add_extra(buf *b, int which)
{
    switch (which) {
    case 1: /* a key whose length runs past the end */
        le(b, 1ull << 40, 8);
        return 1;
    case 2: key(b, "bad.array", 9); le(b, 4, 4); le(b, 1ull << 40, 8); return 1;
    case 3: key(b, "bad.type", 13); le(b, 0, 4); return 1;
    case 4: key(b, "bad.elem", 9); le(b, 99, 4); le(b, 1, 8); le(b, 0, 4); return 1;
    case 5: /* arrays nested 5 deep */
        key(b, "bad.nested", 9);
        for (int i = 0; i < 4; i++) {
            le(b, 9, 4);
            le(b, 1, 8);
        }
        le(b, 4, 4);
        le(b, 1, 8);
        le(b, 7, 4);
        return 1;
    case 6: key(b, "general.architecture", 8); str(b, "llama"); return 1;
    case 7: key(b, "bad.string", 8); le(b, 1ull << 40, 8); return 1;
    case 8: key(b, "general.alignment", 10); le(b, 32, 8); return 1;
    case 10: /* a valid array of 2 arrays (u8 [1, 2], string ["x"]) */
        key(b, "test.nested", 9);
        le(b, 9, 4);
        le(b, 2, 8);
        le(b, 0, 4); le(b, 2, 8); le(b, 1, 1); le(b, 2, 1);
        le(b, 8, 4); le(b, 1, 8); str(b, "x");
        return 1;
    }
    return 0;
}

static int write_kvs(buf *b, const variant *v)
{
    int n = split_keys(b);
    if (split_n && split_k > 0)
        return n; /* gguf-split writes the model's keys to the first split only */
    key(b, "general.architecture", 8); str(b, "llama"); n++;
    key(b, "general.name", 8); str(b, "smelt test"); n++;
    key(b, "general.quantization_version", 4); le(b, 2, 4); n++;
    if (v->alignment) {
        key(b, "general.alignment", 4);
        le(b, v->alignment == 0xFFFFFFFFu ? 0 : v->alignment, 4);
        n++;
    }
    key(b, "test.u8", 0); le(b, 200, 1); n++;
    key(b, "test.i8", 1); le(b, (uint8_t)-5, 1); n++;
    key(b, "test.u16", 2); le(b, 65000, 2); n++;
    key(b, "test.i16", 3); le(b, (uint16_t)-300, 2); n++;
    key(b, "llama.block_count", 4); le(b, 1, 4); n++;
    key(b, "test.i32", 5); le(b, (uint32_t)-70000, 4); n++;
    key(b, "llama.attention.layer_norm_rms_epsilon", 6); le(b, 0x3727c5ac, 4); n++; /* 1e-5f */
    key(b, "test.bool", 7); le(b, 1, 1); n++;
    key(b, "test.u64", 10); le(b, 1ull << 40, 8); n++;
    key(b, "test.i64", 11); le(b, (uint64_t)-(1ll << 40), 8); n++;
    key(b, "test.f64", 12); le(b, 0x400921fb54442d18ull, 8); n++; /* pi */
    key(b, "tokenizer.ggml.tokens", 9); le(b, 8, 4); le(b, 5, 8);
    const char *tok[5] = {"<s>", "</s>", "a", "b", "hello"};
    for (int i = 0; i < 5; i++)
        str(b, tok[i]);
    n++;
    key(b, "tokenizer.ggml.scores", 9); le(b, 6, 4); le(b, 3, 8);
    le(b, 0, 4); le(b, 0x3f800000, 4); le(b, 0xbf800000, 4); n++;
    key(b, "tokenizer.ggml.token_type", 9); le(b, 5, 4); le(b, 2, 8); le(b, 1, 4); le(b, 3, 4); n++;
    n += add_extra(b, v->extra_kv);
    return n;
}

static void write_tensor_info(buf *b, const tensor *t, uint64_t offset, int bad, size_t i)
{
    const char *name = t->name;
    if (bad == 1 && i == 1)
        name = tensors[0].name;
    if (bad == 10 && i == NT - 1)
        name = "a.name.that.is.much.longer.than.sixty.three.bytes.which.ggml.refuses.x";
    str(b, name);
    uint32_t ndim = t->ndim;
    uint64_t ne[5] = {t->ne[0], t->ne[1], t->ne[2], t->ne[3], 1};
    uint32_t type = t->type;
    if (i == 0) {
        if (bad == 2) {
            ndim = 5;
            ne[2] = ne[3] = ne[4] = 1;
        }
        if (bad == 3)
            ne[1] = 0;
        if (bad == 4)
            ne[1] = 1ull << 62;
        if (bad == 5)
            type = 4;
        if (bad == 6)
            ne[0] = 48;
        if (bad == 7)
            offset += 4;
    }
    if (i == 1 && bad == 8)
        offset = 32;
    if (i == NT - 1 && bad == 9)
        offset += 1ull << 30;
    le(b, ndim, 4);
    for (uint32_t d = 0; d < ndim; d++)
        le(b, ne[d], 8);
    le(b, type, 4);
    le(b, offset, 8);
}

static int write_case(const variant *v, const char *path)
{
    buf b = {0};
    uint32_t align = v->alignment && v->alignment != 48 && v->alignment != 0xFFFFFFFFu ? v->alignment : 32;
    put(&b, v->magic_version ? "GGUX" : "GGUF", 4);
    le(&b, (uint64_t)v->version, 4);
    uint64_t nt = 0;
    for (size_t i = 0; i < NT; i++)
        nt += (uint64_t)in_split(i);
    le(&b, v->tensor_count_set >= 0 ? (uint64_t)v->tensor_count_set : nt, 8);
    size_t kv_at = b.n;
    le(&b, 0, 8);
    int nkv = write_kvs(&b, v);
    uint64_t kvc = (uint64_t)nkv + (uint64_t)v->kv_count_add;
    for (int i = 0; i < 8; i++)
        b.p[kv_at + i] = (uint8_t)(kvc >> (8 * i));
    uint64_t off = 0;
    for (size_t i = 0; i < NT; i++) {
        if (!in_split(i))
            continue;
        write_tensor_info(&b, &tensors[i], off, v->bad_tensor, i);
        off += (tensor_nbytes(&tensors[i]) + align - 1) / align * align;
    }
    while (b.n % align)
        le(&b, 0, 1);
    for (size_t i = 0; i < NT; i++) {
        if (!in_split(i))
            continue;
        uint64_t nb = tensor_nbytes(&tensors[i]);
        uint8_t *d = calloc(1, nb);
        tensor_data(d, &tensors[i], nb);
        put(&b, d, nb);
        free(d);
        while (b.n % align)
            le(&b, 0, 1);
    }
    size_t len = v->truncate < 0 ? 0 : b.n - (size_t)v->truncate;
    FILE *f = fopen(path, "wb");
    int rc = !f || fwrite(b.p, 1, len, f) != len || fclose(f) != 0;
    if (rc)
        perror(path);
    free(b.p);
    return rc;
}

/* A file of n tiny F32 tensors (alignment 32: each one's 32 bytes need no padding). */
static int write_many(unsigned long n, const char *path)
{
    buf b = {0};
    put(&b, "GGUF", 4);
    le(&b, 3, 4);
    le(&b, n, 8);
    le(&b, 1, 8);
    key(&b, "general.architecture", 8);
    str(&b, "llama");
    for (unsigned long i = 0; i < n; i++) {
        char name[32];
        snprintf(name, sizeof name, "t.%lu", i);
        str(&b, name);
        le(&b, 1, 4);
        le(&b, 8, 8);
        le(&b, 0, 4); /* GGML_TYPE_F32 */
        le(&b, 32 * (uint64_t)i, 8);
    }
    while (b.n % 32)
        le(&b, 0, 1);
    size_t data = b.n;
    FILE *f = fopen(path, "wb");
    int bad = !f || fwrite(b.p, 1, data, f) != data;
    for (unsigned long i = 0; !bad && i < n; i++)
        bad = fwrite((uint8_t[32]){0}, 1, 32, f) != 32;
    bad |= f && fclose(f) != 0;
    free(b.p);
    return bad;
}

int main(int argc, char **argv)
{
    if (argc == 4 && !strcmp(argv[1], "many"))
        return write_many(strtoul(argv[2], NULL, 10), argv[3]);
    if (argc == 2 && !strcmp(argv[1], "list")) {
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
            printf("%s\t%s\n", cases[i].name, cases[i].rule);
        return 0;
    }
    if (argc >= 4 && !strcmp(argv[1], "split")) { /* split PREFIX N [no|count|tensors|dup] */
        split_n = (unsigned)atoi(argv[3]);
        split_fault = argc > 4 ? argv[4] : "";
        for (split_k = 0; split_k < split_n; split_k++) {
            char path[4096];
            snprintf(path, sizeof path, "%s-%05u-of-%05u.gguf", argv[2], split_k + 1, split_n);
            if (write_case(&cases[0], path))
                return 1;
        }
        return 0;
    }
    if (argc != 3) {
        fprintf(stderr, "usage: make_gguf CASE PATH | make_gguf split PREFIX N [FAULT] | "
                        "make_gguf list\n");
        return 2;
    }
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (!strcmp(cases[i].name, argv[1]))
            return write_case(&cases[i], argv[2]);
    fprintf(stderr, "make_gguf: unknown case '%s'\n", argv[1]);
    return 2;
}
