/* A merge group: several outputs written from one read of their shared inputs. A group comes
 * from one config (N = 1, the ordinary merge), a sweep over a top-level parameter of one
 * config (`--sweep NAME=V1,V2,...`), or a batch file listing configs and output directories
 * (`--batch FILE`). Every output has its own plan, built exactly as a separate merge of its
 * config would build it, so each output directory is byte-identical to that merge. */
#ifndef SMELT_GROUP_H
#define SMELT_GROUP_H

#include "plan/plan.h"

typedef struct smelt_merge_group {
    smelt_model_cache models; /* every plan's models, opened once for all of them */
    smelt_plan **plans;  /* owned */
    char **out_dirs;     /* owned; NULL entries when the group was built without directories */
    char **labels;       /* owned: what names each output in messages ("a.yml", "t=0.4") */
    size_t n;
} smelt_merge_group;

/* Where a group's configs come from. Exactly one of config_path / config_text / batch_path is
 * the source; sweep (may be NULL) applies to a config, not to a batch. */
typedef struct smelt_group_source {
    const char *config_path;  /* a config file (with config_text: only its name) */
    const char *config_text;  /* the config as text */
    const char *out_dir;      /* the output directory (a sweep's parent); NULL for `plan` */
    const char *sweep;        /* "NAME=V1,V2,...", or NULL */
    const char *batch_path;   /* a batch file, or NULL */
} smelt_group_source;

/* Builds every output's plan with popts (its models opened once, in group->models) and checks that they share their inputs
 * (smelt_group_check). On failure nothing is left in *group (it is freed) and the message
 * names the config, the sweep value or the batch entry, and the rule. Reads headers only. */
int smelt_group_build(smelt_ctx *ctx, const smelt_group_source *src,
                      const smelt_plan_options *popts, smelt_merge_group *group);

/* Frees the plans still owned, then the models and the strings; NULL fields are fine. */
void smelt_group_free(smelt_merge_group *group);

/* SMELT_OK when every plan reads, at every tensor position, the same input tensors as plans[0]
 * (the same files, offsets, dtypes and element counts, derived the same way), cut into the
 * same tasks; else SMELT_E_CONFIG naming labels[o], the tensor and what differs. */
int smelt_group_check(smelt_ctx *ctx, const smelt_plan *const *plans, const char *const *labels,
                      size_t n);

/* Parses "NAME=V1,V2,...": *name and the values (malloc'd, NUL-terminated, caller frees each
 * and the array) exactly as written. SMELT_E_ARG for a missing name or '=', an empty value, or
 * a value given twice. */
int smelt_sweep_parse(smelt_ctx *ctx, const char *sweep, char **name, char ***values,
                      size_t *nvalues);

/* The config text with top-level parameter `name` set to `value` (malloc'd in *out): the value
 * replaced in place when the config gives it at the top level as one scalar, else the line
 * "  name: value" added as the first entry of the top-level `parameters:` block, else
 * "parameters:\n  name: value\n" appended. SMELT_E_ARG when the top-level value is a gradient
 * or a filter list, or `parameters:` is written in flow style without the name. */
int smelt_sweep_rewrite(smelt_ctx *ctx, const char *path, const char *text, const char *name,
                        const char *value, char **out);

#endif
