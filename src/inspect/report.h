/* Helpers shared by the reports of `smelt inspect` and `smelt diff`. Private to src/inspect/. */
#ifndef SMELT_REPORT_H
#define SMELT_REPORT_H

#include <jansson.h>
#include <stdio.h>

/* The last component of a path (the path itself when it has no '/'). */
const char *smelt_report_base_name(const char *path);

/* Writes one JSON document (indented, keys in insertion order) and a newline. Returns 0, or -1
 * when jansson fails (out of memory) or the stream reports an error. */
int smelt_report_dump_json(const json_t *root, FILE *out);

/* A JSON value for a figure: a number when finite, else the string "nan", "inf" or "-inf",
 * because JSON has no literal for them and a null would hide which it was. New reference. */
json_t *smelt_report_json_real(double v);

/* smelt_inspect() for a .gguf file (inspect_gguf.c): same contract, GGUF's fields. */
#include "smelt.h"
int smelt_inspect_gguf(smelt_ctx *ctx, const char *path, int json, FILE *out);

#endif
