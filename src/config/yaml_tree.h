/* A small YAML document tree built from libyaml's event parser.
 *
 * libyaml's own document API has no bounds (nesting, alias expansion) and no duplicate-key
 * check, so configs are read through this tree instead: one document, scalars keep whether they
 * are typed implicitly, every node keeps its 1-based line for messages, aliases are expanded
 * into bounded copies that carry the alias's line, and hostile input (deep nesting, alias bombs,
 * huge files, duplicate keys, several documents) is refused with a "path:line: " message.
 *
 * Scalars are typed the way PyYAML's safe_load (YAML 1.1 resolver) types them, because that is
 * what mergekit sees: `1e-3` is a string there, `yes` is a boolean, `0x10` is 16. */
#ifndef SMELT_YAML_TREE_H
#define SMELT_YAML_TREE_H

#include "common/errors.h"

#include <stddef.h>

/* Input larger than this is refused: a config is a few KiB; anything near this is a mistake. */
#define SMELT_YAML_MAX_BYTES ((size_t)16 << 20)
/* Deeper nesting is refused (bounds recursion; mergekit configs nest about 6 levels). */
#define SMELT_YAML_MAX_DEPTH 64
/* Most nodes a document may hold, alias copies included (stops "billion laughs" documents). */
#define SMELT_YAML_MAX_NODES ((size_t)1 << 20)
/* Most anchors a document may define (alias lookup is a linear scan). */
#define SMELT_YAML_MAX_ANCHORS 10000

typedef enum smelt_ynode_kind {
    SMELT_YN_SCALAR,
    SMELT_YN_SEQ,
    SMELT_YN_MAP
} smelt_ynode_kind;

typedef struct smelt_ynode smelt_ynode;

/* One mapping entry. Keys are always scalars (complex keys are refused when parsing). */
typedef struct smelt_ypair {
    smelt_ynode *key;
    smelt_ynode *value;
} smelt_ypair;

struct smelt_ynode {
    smelt_ynode_kind kind;
    int line;            /* 1-based line where the node starts */
    /* SCALAR: NUL-terminated (scalars holding a NUL character are refused when parsing). */
    char *text;
    size_t len;
    int plain;           /* 1 = typed implicitly: plain and untagged, or tagged '!' (PyYAML) */
    /* SEQ */
    smelt_ynode **items;
    size_t nitems;
    /* MAP, in document order; keys are unique (duplicates are refused when parsing) */
    smelt_ypair *pairs;
    size_t npairs;
};

/* Parses exactly one YAML document from text[0..len) into a tree. `path` is used in messages
 * only. Errors (SMELT_E_CONFIG unless noted), each "path:line: ...":
 * syntax errors (libyaml's problem and context), an empty stream, more than one document,
 * a duplicate mapping key (naming it and the line of its first occurrence), a non-scalar key,
 * an undefined or self-referencing alias, nesting deeper than SMELT_YAML_MAX_DEPTH, more than
 * SMELT_YAML_MAX_NODES nodes or SMELT_YAML_MAX_ANCHORS anchors, input larger than
 * SMELT_YAML_MAX_BYTES, a NUL in a scalar;
 * SMELT_E_UNSUPPORTED for merge keys (`<<`) and tags other than !!str/!!seq/!!map/`!`;
 * SMELT_E_NOMEM. On success *root is the document's root node, freed with smelt_ynode_free().
 * Thread-safe (no shared state). */
int smelt_yaml_parse(smelt_ctx *ctx, const char *path, const char *text, size_t len,
                     smelt_ynode **root);

/* Records a failure as "path:line: message" in ctx (see smelt_fail) and returns status. Every
 * config message goes through here so that all of them name the file and line the same way. */
int smelt_yfail(smelt_ctx *ctx, int status, const char *path, int line, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Frees a node and everything under it; NULL is fine. */
void smelt_ynode_free(smelt_ynode *node);

/* The pair whose key's text is `key` in a mapping; NULL when absent or `map` is not a mapping. */
const smelt_ypair *smelt_ymap_find(const smelt_ynode *map, const char *key);

/* What a scalar means under PyYAML's safe_load. */
typedef enum smelt_yscalar_type {
    SMELT_YS_STRING,    /* quoted, block, !!str-tagged, or plain text matching no other type */
    SMELT_YS_NULL,      /* ~, null, Null, NULL, empty */
    SMELT_YS_BOOL,      /* yes/no/true/false/on/off in lower, Title or UPPER case */
    SMELT_YS_INT,       /* 12, -3, 1_000, 0x1F, 0b101, 017 (octal), 1:30 (base 60) */
    SMELT_YS_FLOAT,     /* 0.5, .5, 1.0e-3, 1.e+3, 1:30.5, .inf, -.Inf, .nan (never 1e-3) */
    SMELT_YS_TIMESTAMP, /* 2024-01-31, 2024-1-31 12:00:00Z: a date for PyYAML, not a string */
    SMELT_YS_INVALID    /* matches a type's pattern but PyYAML cannot construct it (0b_, =, <<) */
} smelt_yscalar_type;

/* Types a scalar node. For INT and FLOAT *number gets its value (ints beyond 2^53 rounded, as
 * Python's float(int) does for 64-bit values); for BOOL 0 or 1; otherwise it is left alone.
 * number may be NULL. */
smelt_yscalar_type smelt_yscalar_resolve(const smelt_ynode *scalar, double *number);

/* A short phrase for messages: "a string", "a number", "a boolean", "null", "a date", "a list",
 * "a mapping", "a value PyYAML cannot load". */
const char *smelt_ynode_describe(const smelt_ynode *node);

#endif
