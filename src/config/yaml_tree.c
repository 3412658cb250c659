#include "config/yaml_tree.h"

#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

typedef struct yanchor {
    char *name;
    smelt_ynode *node;
    int complete; /* 0 while the anchored node is still being built: an alias to it is a cycle */
} yanchor; /* node may dangle once parsing has failed; nothing looks anchors up after that */

typedef struct ybuild {
    smelt_ctx *ctx;
    const char *path;
    const char *text;
    size_t len;
    yaml_parser_t parser;
    yanchor *anchors;
    size_t nanchors, capanchors;
    size_t nodes; /* every node made so far, alias copies included */
} ybuild;

int smelt_yfail(smelt_ctx *ctx, int status, const char *path, int line, const char *fmt, ...)
{
    char msg[1536];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return smelt_fail(ctx, status, "%s:%d: %s", path, line, msg);
}

#define yfail(b, status, line, ...) smelt_yfail((b)->ctx, status, (b)->path, line, __VA_ARGS__)

static int nomem(ybuild *b, int line) { return yfail(b, SMELT_E_NOMEM, line, "out of memory"); }

/* libyaml reports reader errors (bad UTF-8, control characters) by byte offset, not line. */
static int line_of_offset(const ybuild *b, size_t offset)
{
    int line = 1;
    for (size_t i = 0; i < offset && i < b->len; i++)
        if (b->text[i] == '\n' && line < INT32_MAX)
            line++;
    return line;
}

static int parser_error(ybuild *b)
{
    const yaml_parser_t *p = &b->parser;
    if (p->error == YAML_MEMORY_ERROR)
        return nomem(b, 1);
    int line = p->error == YAML_READER_ERROR ? line_of_offset(b, p->problem_offset)
                                             : (int)p->problem_mark.line + 1;
    const char *problem = p->problem ? p->problem : "malformed YAML";
    if (p->context)
        return yfail(b, SMELT_E_CONFIG, line, "YAML syntax error: %s (%s that starts on line "
                     "%d)", problem, p->context, (int)p->context_mark.line + 1);
    return yfail(b, SMELT_E_CONFIG, line, "YAML syntax error: %s", problem);
}

static int next_event(ybuild *b, yaml_event_t *ev)
{
    if (!yaml_parser_parse(&b->parser, ev))
        return parser_error(b);
    return SMELT_OK;
}

static int event_line(const yaml_event_t *ev) { return (int)ev->start_mark.line + 1; }

static smelt_ynode *new_node(ybuild *b, smelt_ynode_kind kind, int line, int *rc)
{
    if (b->nodes >= SMELT_YAML_MAX_NODES) {
        *rc = yfail(b, SMELT_E_CONFIG, line, "document has more than %zu nodes (aliases "
                    "included)", SMELT_YAML_MAX_NODES);
        return NULL;
    }
    smelt_ynode *n = calloc(1, sizeof *n);
    if (!n) {
        *rc = nomem(b, line);
        return NULL;
    }
    b->nodes++;
    n->kind = kind;
    n->line = line;
    return n;
}

void smelt_ynode_free(smelt_ynode *n)
{
    if (!n)
        return;
    free(n->text);
    for (size_t i = 0; i < n->nitems; i++)
        smelt_ynode_free(n->items[i]);
    free(n->items);
    for (size_t i = 0; i < n->npairs; i++) {
        smelt_ynode_free(n->pairs[i].key);
        smelt_ynode_free(n->pairs[i].value);
    }
    free(n->pairs);
    free(n);
}

/* Grows *arr (of `size`-byte elements) so that one more fits. */
static int grow(void **arr, size_t *cap, size_t n, size_t size)
{
    if (n < *cap)
        return 0;
    size_t want = *cap ? *cap * 2 : 4;
    void *p = realloc(*arr, want * size);
    if (!p)
        return -1;
    *arr = p;
    *cap = want;
    return 0;
}

/* Only the tags that change nothing are accepted: typing by tag would need every YAML 1.1
 * constructor, and mergekit configs do not use tags. */
static int check_tag(ybuild *b, const yaml_char_t *tag, const char *plain_tag, int line)
{
    if (!tag)
        return SMELT_OK;
    const char *t = (const char *)tag;
    if (strcmp(t, "!") == 0 || strcmp(t, plain_tag) == 0)
        return SMELT_OK;
    return yfail(b, SMELT_E_UNSUPPORTED, line, "YAML tag '%s' is not supported (write the "
                 "value without a tag)", t);
}

/* Registers node's anchor (if any); *slot gets its index, or NO_ANCHOR. */
#define NO_ANCHOR SIZE_MAX
static int add_anchor(ybuild *b, const yaml_char_t *name, smelt_ynode *node, int line,
                      size_t *slot)
{
    *slot = NO_ANCHOR;
    if (!name)
        return SMELT_OK;
    /* Alias lookup is linear: bound the table so a hostile file cannot make it quadratic. */
    if (b->nanchors >= SMELT_YAML_MAX_ANCHORS)
        return yfail(b, SMELT_E_CONFIG, line, "more than %d anchors", SMELT_YAML_MAX_ANCHORS);
    if (grow((void **)&b->anchors, &b->capanchors, b->nanchors, sizeof *b->anchors) != 0)
        return nomem(b, line);
    char *copy = strdup((const char *)name);
    if (!copy)
        return nomem(b, line);
    b->anchors[b->nanchors] = (yanchor){copy, node, 0};
    *slot = b->nanchors++;
    return SMELT_OK;
}

static void complete_anchor(ybuild *b, size_t slot)
{
    if (slot != NO_ANCHOR)
        b->anchors[slot].complete = 1;
}

static smelt_ynode *copy_node(ybuild *b, const smelt_ynode *src, int depth, int line, int *rc)
{
    if (depth > SMELT_YAML_MAX_DEPTH) {
        *rc = yfail(b, SMELT_E_CONFIG, line, "nesting deeper than %d levels (through an alias)",
                    SMELT_YAML_MAX_DEPTH);
        return NULL;
    }
    smelt_ynode *n = new_node(b, src->kind, line, rc);
    if (!n)
        return NULL;
    n->plain = src->plain;
    n->len = src->len;
    if (src->text && !(n->text = strdup(src->text)))
        goto oom;
    if (src->nitems) {
        if (!(n->items = calloc(src->nitems, sizeof *n->items)))
            goto oom;
        for (size_t i = 0; i < src->nitems; i++, n->nitems++)
            if (!(n->items[i] = copy_node(b, src->items[i], depth + 1, line, rc)))
                goto fail;
    }
    if (src->npairs) {
        if (!(n->pairs = calloc(src->npairs, sizeof *n->pairs)))
            goto oom;
        for (size_t i = 0; i < src->npairs; i++) {
            n->npairs++;
            if (!(n->pairs[i].key = copy_node(b, src->pairs[i].key, depth + 1, line, rc)) ||
                !(n->pairs[i].value = copy_node(b, src->pairs[i].value, depth + 1, line, rc)))
                goto fail;
        }
    }
    return n;
oom:
    *rc = nomem(b, line);
fail:
    smelt_ynode_free(n);
    return NULL;
}

static smelt_ynode *alias_node(ybuild *b, const yaml_event_t *ev, int depth, int *rc)
{
    const char *name = (const char *)ev->data.alias.anchor;
    int line = event_line(ev);
    for (size_t i = b->nanchors; i-- > 0;) {
        if (strcmp(b->anchors[i].name, name) != 0)
            continue;
        if (!b->anchors[i].complete) {
            *rc = yfail(b, SMELT_E_CONFIG, line, "alias '*%s' refers to a node that contains it",
                        name);
            return NULL;
        }
        return copy_node(b, b->anchors[i].node, depth, line, rc);
    }
    *rc = yfail(b, SMELT_E_CONFIG, line, "alias '*%s' has no anchor '&%s' before it", name, name);
    return NULL;
}

static smelt_ynode *parse_node(ybuild *b, yaml_event_t *ev, int depth, int *rc);

static smelt_ynode *scalar_node(ybuild *b, const yaml_event_t *ev, int *rc)
{
    int line = event_line(ev);
    if ((*rc = check_tag(b, ev->data.scalar.tag, YAML_STR_TAG, line)) != SMELT_OK)
        return NULL;
    size_t len = ev->data.scalar.length;
    if (memchr(ev->data.scalar.value, '\0', len)) {
        *rc = yfail(b, SMELT_E_CONFIG, line, "a scalar contains a NUL character");
        return NULL;
    }
    smelt_ynode *n = new_node(b, SMELT_YN_SCALAR, line, rc);
    if (!n)
        return NULL;
    /* PyYAML types a scalar implicitly when it is plain and untagged, or tagged '!' whatever
     * its style (its parser sets implicit=(True, False) for '!': `! "0.5"` loads as 0.5). */
    const char *tag = (const char *)ev->data.scalar.tag;
    n->plain = (ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && !tag) ||
               (tag && strcmp(tag, "!") == 0);
    n->len = len;
    if (!(n->text = malloc(len + 1))) {
        *rc = nomem(b, line);
        smelt_ynode_free(n);
        return NULL;
    }
    memcpy(n->text, ev->data.scalar.value, len);
    n->text[len] = '\0';
    size_t slot;
    if ((*rc = add_anchor(b, ev->data.scalar.anchor, n, line, &slot)) != SMELT_OK) {
        smelt_ynode_free(n);
        return NULL;
    }
    complete_anchor(b, slot);
    return n;
}

static smelt_ynode *seq_node(ybuild *b, const yaml_event_t *start, int depth, int *rc)
{
    int line = event_line(start);
    if ((*rc = check_tag(b, start->data.sequence_start.tag, YAML_SEQ_TAG, line)) != SMELT_OK)
        return NULL;
    smelt_ynode *n = new_node(b, SMELT_YN_SEQ, line, rc);
    if (!n)
        return NULL;
    size_t slot;
    if ((*rc = add_anchor(b, start->data.sequence_start.anchor, n, line, &slot)) != SMELT_OK)
        goto fail;
    size_t cap = 0;
    for (;;) {
        yaml_event_t ev;
        if ((*rc = next_event(b, &ev)) != SMELT_OK)
            goto fail;
        if (ev.type == YAML_SEQUENCE_END_EVENT) {
            yaml_event_delete(&ev);
            break;
        }
        smelt_ynode *item = parse_node(b, &ev, depth + 1, rc);
        yaml_event_delete(&ev);
        if (!item)
            goto fail;
        if (grow((void **)&n->items, &cap, n->nitems, sizeof *n->items) != 0) {
            smelt_ynode_free(item);
            *rc = nomem(b, line);
            goto fail;
        }
        n->items[n->nitems++] = item;
    }
    complete_anchor(b, slot);
    return n;
fail:
    smelt_ynode_free(n);
    return NULL;
}

typedef struct keyref {
    const char *text;
    size_t index;
} keyref;

static int keyref_cmp(const void *a, const void *b)
{
    const keyref *x = a, *y = b;
    int c = strcmp(x->text, y->text);
    return c ? c : (x->index > y->index) - (x->index < y->index);
}

/* Refuses a key given twice, naming the earliest repeat in document order. Sorting keeps this
 * O(n log n): a pairwise check would let one large hostile mapping take hours. */
static int check_duplicates(ybuild *b, const smelt_ynode *map)
{
    if (map->npairs < 2)
        return SMELT_OK;
    keyref *refs = malloc(map->npairs * sizeof *refs);
    if (!refs)
        return nomem(b, map->line);
    for (size_t i = 0; i < map->npairs; i++)
        refs[i] = (keyref){map->pairs[i].key->text, i};
    qsort(refs, map->npairs, sizeof *refs, keyref_cmp);
    size_t repeat = SIZE_MAX, first = 0;
    for (size_t i = 1; i < map->npairs; i++) {
        /* Within a run of equal keys, the second element is that key's first repeat. */
        if (strcmp(refs[i].text, refs[i - 1].text) == 0 &&
            (i < 2 || strcmp(refs[i - 1].text, refs[i - 2].text) != 0) &&
            refs[i].index < repeat)
            repeat = refs[i].index, first = refs[i - 1].index;
    }
    free(refs);
    if (repeat == SIZE_MAX)
        return SMELT_OK;
    const smelt_ynode *key = map->pairs[repeat].key;
    return yfail(b, SMELT_E_CONFIG, key->line, "duplicate key '%s' (first given on line %d)",
                 key->text, map->pairs[first].key->line);
}

static smelt_ynode *map_node(ybuild *b, const yaml_event_t *start, int depth, int *rc)
{
    int line = event_line(start);
    if ((*rc = check_tag(b, start->data.mapping_start.tag, YAML_MAP_TAG, line)) != SMELT_OK)
        return NULL;
    smelt_ynode *n = new_node(b, SMELT_YN_MAP, line, rc);
    if (!n)
        return NULL;
    size_t slot;
    if ((*rc = add_anchor(b, start->data.mapping_start.anchor, n, line, &slot)) != SMELT_OK)
        goto fail;
    size_t cap = 0;
    for (;;) {
        yaml_event_t ev;
        if ((*rc = next_event(b, &ev)) != SMELT_OK)
            goto fail;
        if (ev.type == YAML_MAPPING_END_EVENT) {
            yaml_event_delete(&ev);
            break;
        }
        smelt_ynode *key = parse_node(b, &ev, depth + 1, rc);
        yaml_event_delete(&ev);
        if (!key)
            goto fail;
        if (key->kind != SMELT_YN_SCALAR) {
            *rc = yfail(b, SMELT_E_CONFIG, key->line, "a mapping key must be a scalar, not %s",
                        smelt_ynode_describe(key));
            smelt_ynode_free(key);
            goto fail;
        }
        if (key->plain && strcmp(key->text, "<<") == 0) {
            *rc = yfail(b, SMELT_E_UNSUPPORTED, key->line, "YAML merge keys ('<<') are not "
                        "supported (write the keys out)");
            smelt_ynode_free(key);
            goto fail;
        }
        if (grow((void **)&n->pairs, &cap, n->npairs, sizeof *n->pairs) != 0) {
            smelt_ynode_free(key);
            *rc = nomem(b, line);
            goto fail;
        }
        /* The pair is counted before its value exists so that a failure frees the key. */
        n->pairs[n->npairs++] = (smelt_ypair){key, NULL};
        if ((*rc = next_event(b, &ev)) != SMELT_OK)
            goto fail;
        smelt_ynode *value = parse_node(b, &ev, depth + 1, rc);
        yaml_event_delete(&ev);
        if (!value)
            goto fail;
        n->pairs[n->npairs - 1].value = value;
    }
    if ((*rc = check_duplicates(b, n)) != SMELT_OK)
        goto fail;
    complete_anchor(b, slot);
    return n;
fail:
    smelt_ynode_free(n);
    return NULL;
}

/* Builds the node that starts with `ev` (the caller deletes ev). */
static smelt_ynode *parse_node(ybuild *b, yaml_event_t *ev, int depth, int *rc)
{
    if (depth > SMELT_YAML_MAX_DEPTH) {
        *rc = yfail(b, SMELT_E_CONFIG, event_line(ev), "nesting deeper than %d levels",
                    SMELT_YAML_MAX_DEPTH);
        return NULL;
    }
    switch (ev->type) {
    case YAML_SCALAR_EVENT: return scalar_node(b, ev, rc);
    case YAML_SEQUENCE_START_EVENT: return seq_node(b, ev, depth, rc);
    case YAML_MAPPING_START_EVENT: return map_node(b, ev, depth, rc);
    case YAML_ALIAS_EVENT: return alias_node(b, ev, depth, rc);
    default:
        /* libyaml only emits well-nested event streams; anything else is its bug or ours. */
        *rc = yfail(b, SMELT_E_INTERNAL, event_line(ev), "unexpected YAML event %d",
                    (int)ev->type);
        return NULL;
    }
}

/* Expects an event of `type` next. */
static int expect(ybuild *b, yaml_event_type_t type, yaml_event_t *ev)
{
    int rc = next_event(b, ev);
    if (rc != SMELT_OK)
        return rc;
    if (ev->type != type) {
        int line = event_line(ev), got = (int)ev->type;
        yaml_event_delete(ev);
        return yfail(b, SMELT_E_INTERNAL, line, "unexpected YAML event %d", got);
    }
    return SMELT_OK;
}

static int parse_stream(ybuild *b, smelt_ynode **root)
{
    yaml_event_t ev;
    int rc = expect(b, YAML_STREAM_START_EVENT, &ev);
    if (rc != SMELT_OK)
        return rc;
    yaml_event_delete(&ev);
    if ((rc = next_event(b, &ev)) != SMELT_OK)
        return rc;
    if (ev.type == YAML_STREAM_END_EVENT) {
        yaml_event_delete(&ev);
        return yfail(b, SMELT_E_CONFIG, 1, "the document is empty");
    }
    yaml_event_delete(&ev); /* DOCUMENT_START: nothing follows a stream start otherwise */
    if ((rc = next_event(b, &ev)) != SMELT_OK)
        return rc;
    smelt_ynode *node = parse_node(b, &ev, 1, &rc);
    yaml_event_delete(&ev);
    if (!node)
        return rc;
    if ((rc = expect(b, YAML_DOCUMENT_END_EVENT, &ev)) != SMELT_OK)
        goto fail;
    yaml_event_delete(&ev);
    if ((rc = next_event(b, &ev)) != SMELT_OK)
        goto fail;
    if (ev.type != YAML_STREAM_END_EVENT) {
        int line = event_line(&ev);
        yaml_event_delete(&ev);
        rc = yfail(b, SMELT_E_CONFIG, line, "a second YAML document starts here (a config is "
                   "one document)");
        goto fail;
    }
    yaml_event_delete(&ev);
    *root = node;
    return SMELT_OK;
fail:
    smelt_ynode_free(node);
    return rc;
}

int smelt_yaml_parse(smelt_ctx *ctx, const char *path, const char *text, size_t len,
                     smelt_ynode **root)
{
    *root = NULL;
    ybuild b = {.ctx = ctx, .path = path, .text = text, .len = len};
    if (len > SMELT_YAML_MAX_BYTES)
        return yfail(&b, SMELT_E_CONFIG, 1, "%zu bytes is larger than the %zu a config may "
                     "have", len, SMELT_YAML_MAX_BYTES);
    if (!yaml_parser_initialize(&b.parser))
        return nomem(&b, 1);
    yaml_parser_set_input_string(&b.parser, (const unsigned char *)text, len);
    int rc = parse_stream(&b, root);
    yaml_parser_delete(&b.parser);
    for (size_t i = 0; i < b.nanchors; i++)
        free(b.anchors[i].name);
    free(b.anchors);
    return rc;
}

const smelt_ypair *smelt_ymap_find(const smelt_ynode *map, const char *key)
{
    if (!map || map->kind != SMELT_YN_MAP)
        return NULL;
    for (size_t i = 0; i < map->npairs; i++)
        if (strcmp(map->pairs[i].key->text, key) == 0)
            return &map->pairs[i];
    return NULL;
}

/* ---- PyYAML's YAML 1.1 implicit resolver, as hand-written matchers of its regular
 * expressions (yaml/resolver.py) and its constructors (yaml/constructor.py). ---- */

static int is_digit(char c) { return c >= '0' && c <= '9'; }

/* [0-9_]* from s; returns the end. */
static const char *skip_digits_(const char *s)
{
    while (is_digit(*s) || *s == '_')
        s++;
    return s;
}

/* (:[0-5]?[0-9])+ from s; NULL when there is not at least one group. */
static const char *skip_base60(const char *s)
{
    const char *start = s;
    while (*s == ':') {
        const char *d = s + 1;
        size_t n = 0;
        while (is_digit(d[n]))
            n++;
        if (n == 1 || (n == 2 && d[0] <= '5'))
            s = d + n;
        else
            return NULL;
    }
    return s == start ? NULL : s;
}

/* ([eE][-+][0-9]+)? from s. */
static const char *skip_exponent(const char *s)
{
    if ((*s == 'e' || *s == 'E') && (s[1] == '-' || s[1] == '+') && is_digit(s[2])) {
        s += 2;
        while (is_digit(*s))
            s++;
    }
    return s;
}

static int match_float(const char *s)
{
    const char *p = s + (*s == '-' || *s == '+');
    if (strcmp(p, ".inf") == 0 || strcmp(p, ".Inf") == 0 || strcmp(p, ".INF") == 0)
        return 1;
    if (p == s && (strcmp(s, ".nan") == 0 || strcmp(s, ".NaN") == 0 || strcmp(s, ".NAN") == 0))
        return 1;
    if (p == s && s[0] == '.' && is_digit(s[1])) /* \.[0-9][0-9_]*(exp)? : no sign allowed */
        return *skip_exponent(skip_digits_(s + 1)) == '\0';
    if (!is_digit(*p))
        return 0;
    const char *q = skip_digits_(p + 1);
    if (*q == '.') /* [-+]?[0-9][0-9_]*\.[0-9_]*(exp)? */
        return *skip_exponent(skip_digits_(q + 1)) == '\0';
    q = skip_base60(q); /* [-+]?[0-9][0-9_]*(:[0-5]?[0-9])+\.[0-9_]* */
    return q && *q == '.' && *skip_digits_(q + 1) == '\0';
}

static int all_of(const char *s, const char *set)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (!strchr(set, *s))
            return 0;
    return 1;
}

static int match_int(const char *s)
{
    const char *p = s + (*s == '-' || *s == '+');
    if (p[0] == '0' && p[1] == 'b')
        return all_of(p + 2, "01_");
    if (p[0] == '0' && p[1] == 'x')
        return all_of(p + 2, "0123456789abcdefABCDEF_");
    if (p[0] == '0')
        return p[1] == '\0' || all_of(p + 1, "01234567_");
    if (*p < '1' || *p > '9')
        return 0;
    const char *q = skip_digits_(p + 1);
    if (*q == '\0')
        return 1;
    q = skip_base60(q);
    return q && *q == '\0';
}

static int digits_n(const char *s, int min, int max)
{
    int n = 0;
    while (n < max && is_digit(s[n]))
        n++;
    return n >= min ? n : 0;
}

static int match_timestamp(const char *s)
{
    int n;
    if (!digits_n(s, 4, 4) || s[4] != '-')
        return 0;
    s += 5;
    if (digits_n(s, 2, 2) == 2 && s[2] == '-' && digits_n(s + 3, 2, 2) == 2 && s[5] == '\0')
        return 1; /* yyyy-mm-dd */
    if (!(n = digits_n(s, 1, 2)) || s[n] != '-')
        return 0;
    s += n + 1;
    if (!(n = digits_n(s, 1, 2)))
        return 0;
    s += n;
    if (*s == 'T' || *s == 't')
        s++;
    else if (*s == ' ' || *s == '\t')
        while (*s == ' ' || *s == '\t')
            s++;
    else
        return 0;
    if (!(n = digits_n(s, 1, 2)) || s[n] != ':' || digits_n(s + n + 1, 2, 2) != 2 ||
        s[n + 3] != ':' || digits_n(s + n + 4, 2, 2) != 2)
        return 0;
    s += n + 6;
    if (*s == '.')
        for (s++; is_digit(*s); s++)
            ;
    while (*s == ' ' || *s == '\t')
        s++;
    if (*s == 'Z')
        return s[1] == '\0';
    if (*s == '-' || *s == '+') {
        s++;
        if (!(n = digits_n(s, 1, 2)))
            return 0;
        s += n;
        if (*s == ':') {
            if (digits_n(s + 1, 2, 2) != 2)
                return 0;
            s += 3;
        }
    }
    return *s == '\0';
}

/* Python's float(str) for the strings the float pattern admits, independent of the locale. */
static double c_strtod(const char *s)
{
    locale_t c = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
    double v = c ? strtod_l(s, NULL, c) : strtod(s, NULL);
    if (c)
        freelocale(c);
    return v;
}

/* Sum of parts * 60^k, accumulated from the last part as PyYAML does (same rounding). */
static double base60(char *digits, int as_float)
{
    double value = 0, base = 1;
    for (char *colon = strrchr(digits, ':');; colon = strrchr(digits, ':')) {
        const char *part = colon ? colon + 1 : digits;
        value += (as_float ? c_strtod(part) : (double)strtoull(part, NULL, 10)) * base;
        base *= 60;
        if (!colon)
            break;
        *colon = '\0';
    }
    return value;
}

/* int(digits, radix) → double; 0 when there are no digits (PyYAML raises: INVALID). */
static int radix_value(const char *digits, int radix, double *out)
{
    if (!*digits)
        return 0;
    uint64_t exact = 0;
    double approx = 0;
    int overflow = 0;
    for (const char *p = digits; *p; p++) {
        int d = is_digit(*p) ? *p - '0' : (*p | 0x20) - 'a' + 10;
        approx = approx * radix + d;
        if (!overflow && (__builtin_mul_overflow(exact, (uint64_t)radix, &exact) ||
                          __builtin_add_overflow(exact, (uint64_t)d, &exact)))
            overflow = 1;
    }
    *out = overflow ? approx : (double)exact;
    return 1;
}

static smelt_yscalar_type construct_int(const char *text, double *number)
{
    size_t len = strlen(text);
    char *v = malloc(len + 1), *w = v;
    if (!v)
        return SMELT_YS_INVALID;
    for (const char *r = text; *r; r++)
        if (*r != '_')
            *w++ = *r;
    *w = '\0';
    double sign = v[0] == '-' ? -1 : 1;
    char *p = v + (v[0] == '-' || v[0] == '+');
    double value = 0;
    int ok = 1;
    if (strcmp(p, "0") == 0)
        value = 0;
    else if (p[0] == '0' && p[1] == 'b')
        ok = radix_value(p + 2, 2, &value);
    else if (p[0] == '0' && p[1] == 'x')
        ok = radix_value(p + 2, 16, &value);
    else if (p[0] == '0')
        ok = radix_value(p, 8, &value);
    else if (strchr(p, ':'))
        value = base60(p, 0);
    else
        value = c_strtod(p); /* correctly rounded, like Python's float(int) */
    free(v);
    if (!ok)
        return SMELT_YS_INVALID;
    if (number)
        *number = sign * value;
    return SMELT_YS_INT;
}

static smelt_yscalar_type construct_float(const char *text, double *number)
{
    size_t len = strlen(text);
    char *v = malloc(len + 1), *w = v;
    if (!v)
        return SMELT_YS_INVALID;
    for (const char *r = text; *r; r++)
        if (*r != '_')
            *w++ = (char)(*r >= 'A' && *r <= 'Z' ? *r | 0x20 : *r);
    *w = '\0';
    double sign = v[0] == '-' ? -1 : 1;
    char *p = v + (v[0] == '-' || v[0] == '+');
    double value;
    if (strcmp(p, ".inf") == 0)
        value = sign * INFINITY;
    else if (strcmp(p, ".nan") == 0)
        value = NAN;
    else if (strchr(p, ':'))
        value = sign * base60(p, 1);
    else
        value = sign * c_strtod(p);
    free(v);
    if (number)
        *number = value;
    return SMELT_YS_FLOAT;
}

smelt_yscalar_type smelt_yscalar_resolve(const smelt_ynode *n, double *number)
{
    if (!n || n->kind != SMELT_YN_SCALAR || !n->plain)
        return SMELT_YS_STRING;
    const char *s = n->text;
    static const char *const trues[] = {"yes", "Yes", "YES", "true", "True", "TRUE", "on", "On",
                                        "ON"};
    static const char *const falses[] = {"no", "No", "NO", "false", "False", "FALSE", "off",
                                         "Off", "OFF"};
    for (size_t i = 0; i < sizeof trues / sizeof trues[0]; i++) {
        if (strcmp(s, trues[i]) == 0 || strcmp(s, falses[i]) == 0) {
            if (number)
                *number = strcmp(s, trues[i]) == 0;
            return SMELT_YS_BOOL;
        }
    }
    if (!*s || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 || strcmp(s, "Null") == 0 ||
        strcmp(s, "NULL") == 0)
        return SMELT_YS_NULL;
    if (match_float(s))
        return construct_float(s, number);
    if (match_int(s))
        return construct_int(s, number);
    if (match_timestamp(s))
        return SMELT_YS_TIMESTAMP;
    /* PyYAML resolves these to tags its safe constructor has no constructor for. */
    if (strcmp(s, "=") == 0 || strcmp(s, "<<") == 0)
        return SMELT_YS_INVALID;
    return SMELT_YS_STRING;
}

const char *smelt_ynode_describe(const smelt_ynode *n)
{
    if (!n)
        return "nothing";
    if (n->kind == SMELT_YN_SEQ)
        return "a list";
    if (n->kind == SMELT_YN_MAP)
        return "a mapping";
    switch (smelt_yscalar_resolve(n, NULL)) {
    case SMELT_YS_STRING: return "a string";
    case SMELT_YS_NULL: return "null";
    case SMELT_YS_BOOL: return "a boolean";
    case SMELT_YS_INT:
    case SMELT_YS_FLOAT: return "a number";
    case SMELT_YS_TIMESTAMP: return "a date";
    default: return "a value PyYAML cannot load";
    }
}
