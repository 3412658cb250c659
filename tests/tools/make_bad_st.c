/* Writes a safetensors file that breaks one rule of the format, for the CLI tests.
 * usage: make_bad_st RULE PATH     (make_bad_st list prints the rules)
 * Every file is built byte by byte here, independent of smelt's own writer. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
        perror(path);
        return 1;
    }
    return 0;
}

/* A file with this header (length prefix added) and `data_len` zero bytes after it. */
static int write_st(const char *path, const char *header, size_t header_len, uint64_t prefix,
                    size_t data_len)
{
    size_t total = 8 + header_len + data_len;
    unsigned char *buf = calloc(1, total);
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)(prefix >> (8 * i));
    memcpy(buf + 8, header, header_len);
    int rc = write_file(path, buf, total);
    free(buf);
    return rc;
}

static int st(const char *path, const char *header, size_t data_len)
{
    return write_st(path, header, strlen(header), strlen(header), data_len);
}

static const char *const rules[] = {
    "short", "header-too-large", "header-past-eof", "not-utf8", "not-json", "not-object",
    "duplicate-key", "metadata-not-string", "metadata-tensor", "unknown-dtype", "bad-shape",
    "bad-offsets", "unknown-field", "end-before-begin", "numel-overflow", "size-mismatch",
    "hole", "overlap", "data-past-eof", "trailing-bytes",
};

int main(int argc, char **argv)
{
    if (argc == 2 && !strcmp(argv[1], "list")) {
        for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++)
            puts(rules[i]);
        return 0;
    }
    if (argc != 3) {
        fprintf(stderr, "usage: make_bad_st RULE PATH | make_bad_st list\n");
        return 2;
    }
    const char *r = argv[1], *p = argv[2];
    const char *w = "\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}";
    char h[512];
    if (!strcmp(r, "short"))
        return write_file(p, "\x05\0\0\0\0", 5);
    if (!strcmp(r, "header-too-large"))
        return write_st(p, "{}", 2, 100000001ull, 0);
    if (!strcmp(r, "header-past-eof"))
        return write_st(p, "{}", 2, 1000, 0);
    if (!strcmp(r, "not-utf8"))
        return st(p, "{\"w\xff\xfe\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8);
    if (!strcmp(r, "not-json"))
        return st(p, "{\"w\": {\"dtype\": ", 8);
    if (!strcmp(r, "not-object"))
        return st(p, "[1, 2, 3]", 0);
    if (!strcmp(r, "duplicate-key"))
        return snprintf(h, sizeof h, "{%s,%s}", w, w), st(p, h, 8);
    if (!strcmp(r, "metadata-not-string"))
        return snprintf(h, sizeof h, "{\"__metadata__\":{\"format\":1},%s}", w), st(p, h, 8);
    if (!strcmp(r, "metadata-tensor"))
        return st(p, "{\"__metadata__\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8);
    if (!strcmp(r, "unknown-dtype"))
        return st(p, "{\"w\":{\"dtype\":\"F12\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8);
    if (!strcmp(r, "bad-shape"))
        return st(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8);
    if (!strcmp(r, "bad-offsets"))
        return st(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8]}}", 8);
    if (!strcmp(r, "unknown-field"))
        return st(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"foo\":1}}", 8);
    if (!strcmp(r, "end-before-begin"))
        return st(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}", 8);
    if (!strcmp(r, "numel-overflow"))
        return st(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],"
                     "\"data_offsets\":[0,8]}}", 8);
    if (!strcmp(r, "size-mismatch"))
        return st(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8);
    if (!strcmp(r, "hole"))
        return st(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12);
    if (!strcmp(r, "overlap"))
        return st(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                     "\"v\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12);
    if (!strcmp(r, "data-past-eof"))
        return snprintf(h, sizeof h, "{%s}", w), st(p, h, 4);
    if (!strcmp(r, "trailing-bytes"))
        return snprintf(h, sizeof h, "{%s}", w), st(p, h, 12);
    fprintf(stderr, "make_bad_st: unknown rule '%s' (make_bad_st list)\n", r);
    return 2;
}
