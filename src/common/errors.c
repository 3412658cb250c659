#include "common/errors.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

smelt_ctx *smelt_ctx_new(void) { return calloc(1, sizeof(smelt_ctx)); }

void smelt_ctx_free(smelt_ctx *ctx) { free(ctx); }

const char *smelt_errmsg(const smelt_ctx *ctx) { return ctx ? ctx->message : ""; }

int smelt_errcode(const smelt_ctx *ctx) { return ctx ? ctx->status : SMELT_OK; }

void smelt_ctx_clear(smelt_ctx *ctx)
{
    if (!ctx)
        return;
    ctx->status = SMELT_OK;
    ctx->message[0] = '\0';
}

const char *smelt_status_name(int status)
{
    switch (status) {
    case SMELT_OK: return "SMELT_OK";
    case SMELT_E_ARG: return "SMELT_E_ARG";
    case SMELT_E_IO: return "SMELT_E_IO";
    case SMELT_E_FORMAT: return "SMELT_E_FORMAT";
    case SMELT_E_CONFIG: return "SMELT_E_CONFIG";
    case SMELT_E_PLAN: return "SMELT_E_PLAN";
    case SMELT_E_NOMEM: return "SMELT_E_NOMEM";
    case SMELT_E_BUDGET: return "SMELT_E_BUDGET";
    case SMELT_E_INTERRUPTED: return "SMELT_E_INTERRUPTED";
    case SMELT_E_UNSUPPORTED: return "SMELT_E_UNSUPPORTED";
    case SMELT_E_INTERNAL: return "SMELT_E_INTERNAL";
    default: return "SMELT_E_UNKNOWN";
    }
}

size_t smelt_shorten_words(char *dst, size_t cap, const char *src)
{
    size_t at = 0;
    if (cap == 0)
        return 0;
    while (*src && at + 1 < cap) {
        size_t word = strcspn(src, " \t\n");
        int cut = word > SMELT_WORD_MAX;
        const char *parts[3] = {src, "...", cut ? src + word - SMELT_WORD_KEEP : src};
        size_t lens[3] = {cut ? SMELT_WORD_KEEP : word, cut ? 3 : 0, cut ? SMELT_WORD_KEEP : 0};
        for (int i = 0; i < 3; i++) {
            size_t n = lens[i] < cap - 1 - at ? lens[i] : cap - 1 - at;
            memcpy(dst + at, parts[i], n);
            at += n;
        }
        src += word;
        if (*src && at + 1 < cap)
            dst[at++] = *src++; /* the separator */
    }
    dst[at] = '\0';
    return at;
}

/* Formats into a heap string first so that nothing is cut before the long words are
 * shortened; falls back to formatting into dst directly when memory is short. */
static size_t format_short(char *dst, size_t cap, const char *fmt, va_list ap)
{
    char *full = NULL;
    va_list copy;
    va_copy(copy, ap);
    int n = vasprintf(&full, fmt, copy);
    va_end(copy);
    if (n < 0) {
        vsnprintf(dst, cap, fmt, ap);
        return strlen(dst);
    }
    size_t len = smelt_shorten_words(dst, cap, full);
    free(full);
    return len;
}

int smelt_fail(smelt_ctx *ctx, int status, const char *fmt, ...)
{
    if (!ctx)
        return status;
    va_list ap;
    va_start(ap, fmt);
    format_short(ctx->message, sizeof ctx->message, fmt, ap);
    va_end(ap);
    ctx->status = status;
    return status;
}

int smelt_fail_errno(smelt_ctx *ctx, int err, const char *fmt, ...)
{
    if (!ctx)
        return SMELT_E_IO;
    char reason[256];
    snprintf(reason, sizeof reason, ": %s", strerror(err));
    size_t rlen = strlen(reason);
    /* The reason always fits: the message gives way to it. */
    va_list ap;
    va_start(ap, fmt);
    size_t n = format_short(ctx->message, sizeof ctx->message - rlen, fmt, ap);
    va_end(ap);
    memcpy(ctx->message + n, reason, rlen + 1);
    ctx->status = err == ENOMEM ? SMELT_E_NOMEM : SMELT_E_IO;
    return ctx->status;
}

void smelt_error_prefix(smelt_ctx *ctx, const char *fmt, ...)
{
    if (!ctx)
        return;
    char prefix[1024], old[sizeof ctx->message];
    va_list ap;
    va_start(ap, fmt);
    size_t plen = format_short(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, ctx->message, sizeof old);
    size_t olen = strlen(old);
    /* The message ends with the reason: the prefix gives way to it. */
    if (plen > sizeof ctx->message - 1 - olen)
        plen = sizeof ctx->message - 1 - olen;
    memcpy(ctx->message, prefix, plen);
    memcpy(ctx->message + plen, old, olen);
    ctx->message[plen + olen] = '\0';
}

void smelt_ctx_set_log(smelt_ctx *ctx, smelt_log_fn fn, void *user)
{
    ctx->log_fn = fn;
    ctx->log_user = user;
}

void smelt_notice(smelt_ctx *ctx, int level, const char *fmt, ...)
{
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    format_short(line, sizeof line, fmt, ap);
    va_end(ap);
    if (ctx && ctx->log_fn) {
        ctx->log_fn(ctx->log_user, level, line);
        return;
    }
    fprintf(stderr, "smelt: %s: %s\n", level == SMELT_LOG_WARNING ? "warning" : "notice", line);
}
