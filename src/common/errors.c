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

int smelt_fail(smelt_ctx *ctx, int status, const char *fmt, ...)
{
    if (!ctx)
        return status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->message, sizeof ctx->message, fmt, ap);
    va_end(ap);
    ctx->status = status;
    return status;
}

int smelt_fail_errno(smelt_ctx *ctx, int err, const char *fmt, ...)
{
    if (!ctx)
        return SMELT_E_IO;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(ctx->message, sizeof ctx->message, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < sizeof ctx->message)
        snprintf(ctx->message + n, sizeof ctx->message - (size_t)n, ": %s", strerror(err));
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
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, ctx->message, sizeof old);
    size_t plen = strlen(prefix), olen = strlen(old);
    if (plen >= sizeof ctx->message)
        plen = sizeof ctx->message - 1;
    if (olen > sizeof ctx->message - 1 - plen)
        olen = sizeof ctx->message - 1 - plen;
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
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (ctx && ctx->log_fn) {
        ctx->log_fn(ctx->log_user, level, line);
        return;
    }
    fprintf(stderr, "smelt: %s: %s\n", level == SMELT_LOG_WARNING ? "warning" : "notice", line);
}
