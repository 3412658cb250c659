#include "inspect/report.h"

#include <math.h>
#include <string.h>

const char *smelt_report_base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

int smelt_report_dump_json(const json_t *root, FILE *out)
{
    if (json_dumpf(root, out, JSON_INDENT(2) | JSON_PRESERVE_ORDER) != 0)
        return -1;
    return fputc('\n', out) == EOF ? -1 : 0;
}

json_t *smelt_report_json_real(double v)
{
    if (isnan(v))
        return json_string("nan");
    if (isinf(v))
        return json_string(v > 0 ? "inf" : "-inf");
    return json_real(v);
}
