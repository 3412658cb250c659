/* The library's error and notice plumbing: every module reports through a smelt_ctx. */
#ifndef SMELT_ERRORS_H
#define SMELT_ERRORS_H

#include "smelt.h"

#include <stdarg.h>

struct smelt_ctx {
    int status;
    char message[2048];
    smelt_log_fn log_fn;
    void *log_user;
    int resumable; /* set by smelt_merge(): its failure left a journal to resume from */
};

/* Words (runs without blanks: paths, names) longer than SMELT_WORD_MAX characters are cut in
 * the middle to their first and last SMELT_WORD_KEEP characters around "...", so that a path
 * near PATH_MAX never pushes the rule or the reason out of a message. */
#define SMELT_WORD_MAX 160
#define SMELT_WORD_KEEP 60

/* Copies src into dst (cap bytes, NUL-terminated, truncated to fit) with every over-long word
 * shortened as above; returns the length written. Every message and notice goes through it. */
size_t smelt_shorten_words(char *dst, size_t cap, const char *src);

/* Records a failure: formats the message into ctx and returns status, so callers can write
 * `return smelt_fail(ctx, SMELT_E_FORMAT, "%s: ...", path);`. ctx may be NULL (then it only
 * returns status). */
int smelt_fail(smelt_ctx *ctx, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Like smelt_fail, for a failed system call: appends ": <strerror(err)>" to the message (the
 * reason is always kept; the message is cut to make room for it). */
int smelt_fail_errno(smelt_ctx *ctx, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefixes the message already in ctx with more context ("config.yml: " + message); the old
 * message is kept whole, the prefix cut when both do not fit. */
void smelt_error_prefix(smelt_ctx *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Sends a notice to the context's log function. */
void smelt_notice(smelt_ctx *ctx, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Clears the recorded failure. */
void smelt_ctx_clear(smelt_ctx *ctx);

#endif
