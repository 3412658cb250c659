#include "common/errors.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int smelt_parse_size(smelt_ctx *ctx, const char *text, uint64_t *out)
{
    if (!text || !isdigit((unsigned char)text[0]))
        return smelt_fail(ctx, SMELT_E_ARG, "'%s': not a size (expected e.g. 512M, 4G, 1Gi)",
                          text ? text : "");
    errno = 0;
    char *end;
    double value = strtod(text, &end);
    if (errno != 0 || value < 0)
        return smelt_fail(ctx, SMELT_E_ARG, "'%s': not a size", text);
    static const struct { const char *suffix; double factor; } units[] = {
        {"", 1},          {"B", 1},           {"K", 1e3},         {"KB", 1e3},
        {"M", 1e6},       {"MB", 1e6},        {"G", 1e9},         {"GB", 1e9},
        {"T", 1e12},      {"TB", 1e12},       {"Ki", 1024.0},     {"KiB", 1024.0},
        {"Mi", 1048576.0}, {"MiB", 1048576.0}, {"Gi", 1073741824.0}, {"GiB", 1073741824.0},
        {"Ti", 1099511627776.0}, {"TiB", 1099511627776.0},
    };
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcasecmp(end, units[i].suffix) != 0 || (i >= 10 && strcmp(end, units[i].suffix)))
            continue;
        double bytes = value * units[i].factor;
        if (bytes >= 18446744073709551615.0)
            return smelt_fail(ctx, SMELT_E_ARG, "'%s': size too large", text);
        *out = (uint64_t)bytes;
        return SMELT_OK;
    }
    return smelt_fail(ctx, SMELT_E_ARG,
                      "'%s': unknown size suffix '%s' (use K, M, G, T or Ki, Mi, Gi, Ti)", text, end);
}

const char *smelt_version(void) { return SMELT_VERSION_STRING; }
