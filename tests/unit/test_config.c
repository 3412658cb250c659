/* config/: mergekit YAML → merge spec, PyYAML scalar typing, parameter evaluation.
 * Expected values marked "PyYAML" were produced by PyYAML 6.0.3's safe_load; gradient values were
 * computed with mergekit's evaluate_setting expression in Python (bit-exact doubles). */
#include "common/errors.h"
#include "config/config.h"
#include "config/yaml_tree.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static smelt_merge_spec *parse_ok(smelt_ctx *ctx, const char *text)
{
    smelt_merge_spec *spec = NULL;
    int rc = smelt_config_parse(ctx, "merge.yml", text, strlen(text), &spec);
    ck_assert_msg(rc == SMELT_OK, "%s\n--- config:\n%s", smelt_errmsg(ctx), text);
    ck_assert_ptr_nonnull(spec);
    return spec;
}

static double eval_ok(const smelt_pvalue *v, const char *tensor, double t)
{
    double out = -12345;
    ck_assert_ptr_nonnull(v);
    ck_assert_int_eq(smelt_pvalue_eval(v, tensor, t, &out), 1);
    return out;
}

static const char linear_yml[] =
    "# a linear merge, as mergekit's examples write them\n"
    "merge_method: linear\n"
    "base_model: ./models/base\n"
    "models:\n"
    "  - model: ./models/a\n"
    "    parameters:\n"
    "      weight: 0.6\n"
    "  - model: \"org/model-b@main\"\n"
    "    parameters:\n"
    "      weight: 0.4\n"
    "parameters:\n"
    "  normalize: true\n"
    "dtype: bfloat16\n"
    "out_dtype: float16\n"
    "tokenizer_source: union\n"
    "chat_template: chatml\n"
    "name: my-merge\n";

START_TEST(linear_config)
{
    smelt_ctx *ctx = smelt_ctx_new();
    smelt_merge_spec *s = parse_ok(ctx, linear_yml);
    ck_assert_str_eq(s->path, "merge.yml");
    ck_assert_str_eq(s->text, linear_yml);
    ck_assert_str_eq(s->merge_method, "linear");
    ck_assert_int_eq(s->line_merge_method, 2);
    ck_assert_str_eq(s->base_model, "./models/base");
    ck_assert_int_eq(s->line_base_model, 3);
    ck_assert_uint_eq(s->nmodels, 2);
    ck_assert_str_eq(s->models[0].model, "./models/a");
    ck_assert_int_eq(s->models[0].line, 5);
    ck_assert_str_eq(s->models[1].model, "org/model-b@main");
    const smelt_pvalue *w = smelt_params_find(&s->models[0].params, "weight");
    ck_assert_int_eq(w->kind, SMELT_PV_NUMBER);
    ck_assert_double_eq(w->number, 0.6);
    ck_assert_int_eq(w->line, 7);
    ck_assert_double_eq(eval_ok(smelt_params_find(&s->models[1].params, "weight"), "x", 0), 0.4);
    ck_assert_ptr_null(smelt_params_find(&s->models[0].params, "density"));
    const smelt_pvalue *n = smelt_params_find(&s->params, "normalize");
    ck_assert_int_eq(n->kind, SMELT_PV_BOOL);
    ck_assert_int_eq(n->boolean, 1);
    ck_assert_str_eq(s->dtype, "bfloat16");
    ck_assert_str_eq(s->out_dtype, "float16");
    ck_assert_str_eq(s->tokenizer_source, "union");
    ck_assert_str_eq(s->chat_template, "chatml");
    smelt_spec_free(s);

    /* Optional keys absent or null are NULL; models may carry no parameters. */
    s = parse_ok(ctx, "merge_method: linear\nbase_model: ~\ndtype: null\nparameters:\n"
                      "models:\n  - model: a\n  - {model: b, parameters: null}\n");
    ck_assert_ptr_null(s->base_model);
    ck_assert_ptr_null(s->dtype);
    ck_assert_ptr_null(s->out_dtype);
    ck_assert_ptr_null(s->tokenizer_source);
    ck_assert_ptr_null(s->chat_template);
    ck_assert_uint_eq(s->params.n, 0);
    ck_assert_uint_eq(s->models[0].params.n, 0);
    ck_assert_uint_eq(s->models[1].params.n, 0);
    smelt_spec_free(s);

    /* A base model that is not listed is kept for the plan to add. */
    s = parse_ok(ctx, "merge_method: task_arithmetic\nbase_model: base\ntokenizer_source: "
                      "org/tok\nmodels: [{model: a, parameters: {weight: 1}}]\n");
    ck_assert_str_eq(s->base_model, "base");
    ck_assert_str_eq(s->tokenizer_source, "org/tok");
    ck_assert_uint_eq(s->nmodels, 1);
    smelt_spec_free(s);
    smelt_spec_free(NULL);
    smelt_ctx_free(ctx);
}
END_TEST

START_TEST(load_from_file)
{
    char *dir = tu_tmpdir();
    char *path = tu_path(dir, "merge.yml");
    tu_write_file(path, linear_yml, strlen(linear_yml));
    smelt_ctx *ctx = smelt_ctx_new();
    smelt_merge_spec *s;
    ck_assert_msg(smelt_config_load(ctx, path, &s) == SMELT_OK, "%s", smelt_errmsg(ctx));
    ck_assert_str_eq(s->path, path);
    ck_assert_str_eq(s->text, linear_yml);
    smelt_spec_free(s);

    char *missing = tu_path(dir, "nope.yml");
    ck_assert_int_eq(smelt_config_load(ctx, missing, &s), SMELT_E_IO);
    ck_assert_ptr_null(s);
    ck_assert_ptr_nonnull(strstr(smelt_errmsg(ctx), "nope.yml"));

    /* Larger than a config may be: refused before reading (sparse file, nothing written). */
    char *big = tu_path(dir, "big.yml");
    tu_write_file(big, "a: 1\n", 5);
    ck_assert_int_eq(truncate(big, (off_t)SMELT_YAML_MAX_BYTES + 1), 0);
    ck_assert_int_ne(smelt_config_load(ctx, big, &s), SMELT_OK);
    ck_assert_msg(strstr(smelt_errmsg(ctx), "larger") != NULL, "%s", smelt_errmsg(ctx));
    free(big);
    free(missing);
    free(path);
    free(dir);
    smelt_ctx_free(ctx);
}
END_TEST

static const char ties_yml[] =
    "models:\n"                                   /* 1 */
    "  - model: base\n"                           /* 2 */
    "  - model: org/a\n"                          /* 3 */
    "    parameters:\n"                           /* 4 */
    "      density: [1, 0.7, 0.1]\n"              /* 5 */
    "      weight:\n"                             /* 6 */
    "        - filter: self_attn\n"               /* 7 */
    "          value: [0.2, 0.8]\n"               /* 8 */
    "        - filter: mlp\n"                     /* 9 */
    "          value: 0.5\n"                      /* 10 */
    "        - value: 0.1\n"                      /* 11 */
    "  - model: org/b\n"                          /* 12 */
    "    parameters:\n"                           /* 13 */
    "      density: 0.5\n"                        /* 14 */
    "      weight: {filter: \"*\", value: 0.3}\n" /* 15 */
    "merge_method: ties\n"                        /* 16 */
    "base_model: base\n"                          /* 17 */
    "parameters:\n"                               /* 18 */
    "  normalize: yes\n"                          /* 19 */
    "  int8_mask: On\n"                           /* 20 */
    "  lambda: 1.0e+0\n"                          /* 21 */
    "  epsilon: 1e-3\n"                           /* 22: a string for PyYAML */
    "  weight: [{filter: lm_head, value: 2}]\n"   /* 23 */
    "dtype: float16\n";                           /* 24 */

START_TEST(ties_config)
{
    smelt_ctx *ctx = smelt_ctx_new();
    smelt_merge_spec *s = parse_ok(ctx, ties_yml);
    ck_assert_str_eq(s->merge_method, "ties");
    ck_assert_int_eq(s->line_merge_method, 16);
    ck_assert_uint_eq(s->nmodels, 3);
    ck_assert_uint_eq(s->models[0].params.n, 0);

    const smelt_params *a = &s->models[1].params;
    const smelt_pvalue *density = smelt_params_find(a, "density");
    ck_assert_int_eq(density->kind, SMELT_PV_GRADIENT);
    ck_assert_uint_eq(density->ngradient, 3);
    ck_assert_int_eq(density->line, 5);
    ck_assert_double_eq(eval_ok(density, "model.layers.0.mlp.up_proj.weight", 0), 1);
    ck_assert_double_eq(eval_ok(density, "x", 0.5), 0.7);
    ck_assert_double_eq(eval_ok(density, "x", 1), 0.1);

    const smelt_pvalue *wa = smelt_params_find(a, "weight");
    ck_assert_int_eq(wa->kind, SMELT_PV_FILTERED);
    ck_assert_uint_eq(wa->nfilters, 3);
    ck_assert_int_eq(wa->line, 7);
    ck_assert_str_eq(wa->filters[0].filter, "self_attn");
    ck_assert_int_eq(wa->filters[0].value->kind, SMELT_PV_GRADIENT);
    ck_assert_ptr_null(wa->filters[2].filter);
    ck_assert_double_eq(eval_ok(wa, "model.layers.3.self_attn.q_proj.weight", 0), 0.2);
    ck_assert_double_eq(eval_ok(wa, "model.layers.31.self_attn.o_proj.weight", 1), 0.8);
    ck_assert_double_eq(eval_ok(wa, "model.layers.3.mlp.down_proj.weight", 0.7), 0.5);
    ck_assert_double_eq(eval_ok(wa, "model.embed_tokens.weight", 0), 0.1);

    const smelt_pvalue *wb = smelt_params_find(&s->models[2].params, "weight");
    ck_assert_int_eq(wb->kind, SMELT_PV_FILTERED);
    ck_assert_uint_eq(wb->nfilters, 1);
    ck_assert_str_eq(wb->filters[0].filter, "*");
    ck_assert_double_eq(eval_ok(wb, "anything", 0.3), 0.3);
    ck_assert_double_eq(eval_ok(smelt_params_find(&s->models[2].params, "density"), "x", 0), 0.5);

    const smelt_pvalue *norm = smelt_params_find(&s->params, "normalize");
    ck_assert_int_eq(norm->kind, SMELT_PV_BOOL);
    ck_assert_double_eq(eval_ok(norm, "x", 0), 1);
    ck_assert_int_eq(smelt_params_find(&s->params, "int8_mask")->kind, SMELT_PV_BOOL);
    ck_assert_double_eq(eval_ok(smelt_params_find(&s->params, "lambda"), "x", 0), 1);
    const smelt_pvalue *eps = smelt_params_find(&s->params, "epsilon");
    ck_assert_int_eq(eps->kind, SMELT_PV_STRING);
    ck_assert_str_eq(eps->string, "1e-3");
    double out;
    ck_assert_int_eq(smelt_pvalue_eval(eps, "x", 0, &out), -1);

    /* Top-level filters without a catch-all: no match means "not given here". */
    const smelt_pvalue *wtop = smelt_params_find(&s->params, "weight");
    ck_assert_double_eq(eval_ok(wtop, "lm_head.weight", 0), 2);
    ck_assert_int_eq(smelt_pvalue_eval(wtop, "model.norm.weight", 0, &out), 0);
    smelt_spec_free(s);
    smelt_ctx_free(ctx);
}
END_TEST

typedef struct bad_case {
    const char *text;
    int status;
    const char *message; /* the whole message must start with this */
} bad_case;

static const bad_case bad_cases[] = {
    /* shape */
    {"merge_method: linear\nmodelz: [{model: a}]\n", SMELT_E_CONFIG,
     "merge.yml:2: unknown key 'modelz' (allowed: merge_method, base_model, models, slices, "
     "parameters, dtype, out_dtype, tokenizer_source, chat_template, name)"},
    {"merge_method: linear\nmodels:\n  - model: a\n    paramters: {weight: 1}\n", SMELT_E_CONFIG,
     "merge.yml:4: models[0]: unknown key 'paramters' (allowed: model, parameters)"},
    {"models: [{model: a}]\n", SMELT_E_CONFIG, "merge.yml:1: 'merge_method' is required"},
    {"models: [{model: a}]\nmerge_method:\n", SMELT_E_CONFIG,
     "merge.yml:2: 'merge_method' is required"},
    {"merge_method: 3\nmodels: [{model: a}]\n", SMELT_E_CONFIG,
     "merge.yml:1: 'merge_method' must be a string, not a number (quote it)"},
    {"merge_method: linear\n", SMELT_E_CONFIG, "merge.yml:1: 'models' is required"},
    /* slices */
    {"merge_method: passthrough\nmodels: [{model: a}]\nslices: [{sources: [{model: a, "
     "layer_range: [0, 2]}]}]\n", SMELT_E_CONFIG,
     "merge.yml:3: give either 'models' or 'slices', not both"},
    {"merge_method: passthrough\nslices: []\n", SMELT_E_CONFIG,
     "merge.yml:2: 'slices' must be a non-empty list"},
    {"merge_method: passthrough\nslices:\n  - sources: [{model: a}]\n", SMELT_E_CONFIG,
     "merge.yml:3: slices[0]: sources[0]: 'layer_range' is required"},
    {"merge_method: passthrough\nslices:\n  - sources: [{model: a, layer_range: [4, 2]}]\n",
     SMELT_E_CONFIG, "merge.yml:3: slices[0]: sources[0]: layer_range [4, 2] must satisfy"},
    {"merge_method: passthrough\nslices:\n  - sources: [{model: a, layer_range: [0, x]}]\n",
     SMELT_E_CONFIG, "merge.yml:3: slices[0]: sources[0]: layer_range: expected an integer"},
    {"merge_method: passthrough\nslices:\n  - sources: [{model: a, layer_range: [0]}]\n",
     SMELT_E_CONFIG, "merge.yml:3: slices[0]: sources[0]: 'layer_range' must be a list of two"},
    {"merge_method: passthrough\nslices:\n  - sources: [{model: a, layer_rang: [0, 1]}]\n",
     SMELT_E_CONFIG, "merge.yml:3: slices[0]: sources[0]: unknown key 'layer_rang'"},
    {"merge_method: passthrough\nslices:\n  - {sources: [{model: a, layer_range: [0, 1]}], "
     "residual_weight: 0.5}\n", SMELT_E_UNSUPPORTED,
     "merge.yml:3: slices[0]: 'residual_weight' is not supported yet"},
    {"merge_method: passthrough\nslices:\n  - {srcs: []}\n", SMELT_E_CONFIG,
     "merge.yml:3: slices[0]: unknown key 'srcs' (allowed: sources, base_model, parameters)"},
    {"merge_method: linear\nmodels:\n", SMELT_E_CONFIG, "merge.yml:2: 'models' is required"},
    {"merge_method: linear\nmodels: {model: a}\n", SMELT_E_CONFIG,
     "merge.yml:2: 'models' must be a list of {model: ..., parameters: ...}, not a mapping"},
    {"merge_method: linear\nmodels: []\n", SMELT_E_CONFIG, "merge.yml:2: 'models' is empty"},
    {"merge_method: linear\nmodels:\n  - org/a\n", SMELT_E_CONFIG,
     "merge.yml:3: models[0]: expected a mapping {model: ..., parameters: ...}, not a string"},
    {"merge_method: linear\nmodels:\n  - model: a\n  - parameters: {weight: 1}\n",
     SMELT_E_CONFIG, "merge.yml:4: models[1]: 'model' is required"},
    {"merge_method: linear\nmodels:\n  - model: 12\n", SMELT_E_CONFIG,
     "merge.yml:3: models[0]: 'model' must be a string, not a number (quote it)"},
    {"merge_method: linear\nmodels:\n  - model: ''\n", SMELT_E_CONFIG,
     "merge.yml:3: models[0]: 'model' is empty"},
    {"merge_method: linear\ndtype: 16\nmodels: [{model: a}]\n", SMELT_E_CONFIG,
     "merge.yml:2: 'dtype' must be a string, not a number (quote it)"},
    {"merge_method: linear\nchat_template: [a]\nmodels: [{model: a}]\n", SMELT_E_CONFIG,
     "merge.yml:2: 'chat_template' must be a string, not a list"},
    {"hello\n", SMELT_E_CONFIG, "merge.yml:1: a config must be a mapping"},
    {"- merge_method: linear\n", SMELT_E_CONFIG,
     "merge.yml:1: a config must be a mapping (merge_method: ..., models: ...), not a list"},
    {"merge_method: linear\nparameters: [1]\nmodels: [{model: a}]\n", SMELT_E_CONFIG,
     "merge.yml:2: 'parameters' must be a mapping, not a list"},
    {"merge_method: linear\nmodels: [{model: a, parameters: 0.5}]\n", SMELT_E_CONFIG,
     "merge.yml:2: models[0]: 'parameters' must be a mapping, not a number"},
    /* parameter values */
    {"merge_method: linear\nmodels:\n  - model: a\n    parameters:\n      weight: ~\n",
     SMELT_E_CONFIG, "merge.yml:5: models[0]: parameter 'weight': expected a number, a boolean, "
                     "a string, a list of numbers (a gradient) or a list of {filter, value}, not "
                     "null"},
    {"merge_method: linear\nparameters: {weight: 2024-01-31}\nmodels: [{model: a}]\n",
     SMELT_E_CONFIG, "merge.yml:2: parameter 'weight': expected a number, a boolean, a string, a "
                     "list of numbers (a gradient) or a list of {filter, value}, not a date"},
    {"merge_method: linear\nparameters: {weight: 0b_}\nmodels: [{model: a}]\n", SMELT_E_CONFIG,
     "merge.yml:2: parameter 'weight': expected a number, a boolean, a string, a list of numbers "
     "(a gradient) or a list of {filter, value}, not a value PyYAML cannot load"},
    {"merge_method: linear\nparameters:\n  weight: {a: 1}\nmodels: [{model: a}]\n",
     SMELT_E_CONFIG, "merge.yml:3: parameter 'weight': unknown key 'a' (allowed: filter, value)"},
    {"merge_method: linear\nparameters:\n  weight: [{filter: x}]\nmodels: [{model: a}]\n",
     SMELT_E_CONFIG, "merge.yml:3: parameter 'weight': a {filter, value} entry needs 'value'"},
    {"merge_method: linear\nparameters:\n  weight: [1, a]\nmodels: [{model: a}]\n",
     SMELT_E_CONFIG, "merge.yml:3: parameter 'weight': a gradient must hold only numbers, but "
                     "item 2 is a string"},
    {"merge_method: linear\nparameters:\n  weight: [1, ~]\nmodels: [{model: a}]\n",
     SMELT_E_CONFIG, "merge.yml:3: parameter 'weight': a gradient must hold only numbers, but "
                     "item 2 is null"},
    {"merge_method: linear\nparameters:\n  weight: [[1]]\nmodels: [{model: a}]\n",
     SMELT_E_CONFIG, "merge.yml:3: parameter 'weight': a gradient must hold only numbers, but "
                     "item 1 is a list"},
    {"merge_method: linear\nparameters:\n  weight: [{value: 1}, 2]\nmodels: [{model: a}]\n",
     SMELT_E_CONFIG, "merge.yml:3: parameter 'weight': a list of {filter, value} must hold only "
                     "mappings, but item 2 is a number"},
    {"merge_method: linear\nparameters:\n  weight: []\nmodels: [{model: a}]\n", SMELT_E_CONFIG,
     "merge.yml:3: parameter 'weight': an empty list (a gradient needs at least one number)"},
    {"merge_method: linear\nparameters:\n  weight: [{value: []}]\nmodels: [{model: a}]\n",
     SMELT_E_CONFIG, "merge.yml:3: parameter 'weight': an empty list"},
    {"merge_method: linear\nparameters:\n  weight: [{value: {a: 1}}]\nmodels: [{model: a}]\n",
     SMELT_E_CONFIG, "merge.yml:3: parameter 'weight': 'value' must be a scalar or a list of "
                     "numbers, not a mapping"},
    {"merge_method: linear\nparameters:\n  weight: [{value: [{value: 1}]}]\nmodels: "
     "[{model: a}]\n", SMELT_E_CONFIG, "merge.yml:3: parameter 'weight': a gradient must hold "
                                       "only numbers, but item 1 is a mapping"},
    {"merge_method: linear\nparameters:\n  weight: [{filter: 3, value: 1}]\nmodels: "
     "[{model: a}]\n", SMELT_E_CONFIG, "merge.yml:3: parameter 'weight': 'filter' must be a "
                                       "string, not a number (quote it)"},
    {"merge_method: linear\nparameters:\n  weight: [{filter: a, value: 1, bias: 2}]\nmodels: "
     "[{model: a}]\n", SMELT_E_CONFIG, "merge.yml:3: parameter 'weight': unknown key 'bias' "
                                       "(allowed: filter, value)"},
    {"merge_method: linear\nparameters:\n  weight: [a, b]\nmodels: [{model: a}]\n",
     SMELT_E_UNSUPPORTED, "merge.yml:3: parameter 'weight': a list of strings is not supported "
                          "yet"},
    /* YAML level */
    {"merge_method: linear\nmodels:\n  - model: a\n   bad: [\n", SMELT_E_CONFIG,
     "merge.yml:4: YAML syntax error: "},
    {"merge_method: linear\nmodels: [{model: a}\n", SMELT_E_CONFIG,
     "merge.yml:3: YAML syntax error: did not find expected ',' or ']' (while parsing a flow "
     "sequence that starts on line 2)"},
    {"merge_method: linear\nmodel: \xff\n", SMELT_E_CONFIG, "merge.yml:2: YAML syntax error: "},
    {"merge_method: linear\nmodels: [{model: a}]\nmerge_method: ties\n", SMELT_E_CONFIG,
     "merge.yml:3: duplicate key 'merge_method' (first given on line 1)"},
    {"merge_method: linear\nmodels:\n  - model: a\n    parameters: {weight: 1, weight: 2}\n",
     SMELT_E_CONFIG, "merge.yml:4: duplicate key 'weight' (first given on line 4)"},
    {"a: 1\nb: 2\nc: 3\nb: 4\na: 5\n", SMELT_E_CONFIG,
     "merge.yml:4: duplicate key 'b' (first given on line 2)"},
    {"merge_method: linear\nmodels: [{model: a}]\n---\nmerge_method: ties\n", SMELT_E_CONFIG,
     "merge.yml:3: a second YAML document starts here (a config is one document)"},
    {"", SMELT_E_CONFIG, "merge.yml:1: the document is empty"},
    {"# nothing\n\n", SMELT_E_CONFIG, "merge.yml:1: the document is empty"},
    {"merge_method: \"a\\0b\"\n", SMELT_E_CONFIG,
     "merge.yml:1: a scalar contains a NUL character"},
    {"merge_method: linear\n[a]: 1\n", SMELT_E_CONFIG,
     "merge.yml:2: a mapping key must be a scalar, not a list"},
    {"merge_method: linear\nparameters: {weight: *w}\n", SMELT_E_CONFIG,
     "merge.yml:2: alias '*w' has no anchor '&w' before it"},
    {"merge_method: linear\nparameters: &p {weight: *p}\n", SMELT_E_CONFIG,
     "merge.yml:2: alias '*p' refers to a node that contains it"},
    {"merge_method: linear\nparameters:\n  <<: {weight: 1}\n", SMELT_E_UNSUPPORTED,
     "merge.yml:3: YAML merge keys ('<<') are not supported (write the keys out)"},
    {"merge_method: linear\nparameters: {weight: !!float 1}\n", SMELT_E_UNSUPPORTED,
     "merge.yml:2: YAML tag 'tag:yaml.org,2002:float' is not supported"},
    {"merge_method: !!python/name:os.system linear\n", SMELT_E_UNSUPPORTED,
     "merge.yml:1: YAML tag 'tag:yaml.org,2002:python/name:os.system' is not supported"},
    /* known to mergekit, not implemented yet */
    {"merge_method: linear\nmodules:\n  text: {models: [{model: a}]}\n", SMELT_E_UNSUPPORTED,
     "merge.yml:2: 'modules' is not supported yet"},
    {"merge_method: linear\nmodels: [{model: a}]\ntokenizer:\n  source: union\n",
     SMELT_E_UNSUPPORTED, "merge.yml:3: 'tokenizer' is not supported yet (use 'tokenizer_source')"},
    /* "model+lora" parses (the planner opens base and adapter); its halves must not be empty
     * and each takes at most one @revision. */
    {"merge_method: linear\nmodels:\n  - model: +org/lora\n", SMELT_E_CONFIG,
     "merge.yml:3: models[0]: 'model': '+org/lora' needs a model before the '+' and an adapter "
     "after it"},
    {"merge_method: linear\nbase_model: org/m+\nmodels: [{model: a}]\n", SMELT_E_CONFIG,
     "merge.yml:2: 'base_model': 'org/m+' needs a model before the '+'"},
    {"merge_method: linear\nmodels:\n  - model: org/m@a+org/l@b@c\n", SMELT_E_CONFIG,
     "merge.yml:3: models[0]: 'model': cannot parse model reference 'org/m@a+org/l@b@c' (more "
     "than one '@' on one side of the '+')"},
    {"merge_method: linear\nmodels:\n  - model: a+b+c\n", SMELT_E_CONFIG,
     "merge.yml:3: models[0]: 'model': cannot parse model reference 'a+b+c' (more than one '+')"},
    {"merge_method: linear\nmodels:\n  - model: a@r1@r2\n", SMELT_E_CONFIG,
     "merge.yml:3: models[0]: 'model': cannot parse model reference 'a@r1@r2' (more than one '@')"},
    {"merge_method: linear\nmodels:\n  - model: {model: {path: a}}\n", SMELT_E_UNSUPPORTED,
     "merge.yml:3: models[0]: 'model': a model reference written as a mapping is not supported"},
};

/* A frankenmerge in mergekit's documentation style, with parameters at every slice level. */
START_TEST(slices_config)
{
    static const char yml[] =
        "slices:\n"
        "  - sources:\n"
        "      - model: org/a\n"
        "        layer_range: [0, 24]\n"
        "        parameters: {scale: 0.5}\n"
        "    parameters: {t: [0, 1]}\n"
        "  - sources:\n"
        "      - {model: org/b, layer_range: [8, 32]}\n"
        "    base_model: org/b\n"
        "merge_method: passthrough\n"
        "dtype: bfloat16\n";
    smelt_ctx *ctx = smelt_ctx_new();
    smelt_merge_spec *s = parse_ok(ctx, yml);
    ck_assert_uint_eq(s->nmodels, 0);
    ck_assert_uint_eq(s->nslices, 2);
    ck_assert_uint_eq(s->slices[0].nsources, 1);
    ck_assert_str_eq(s->slices[0].sources[0].model, "org/a");
    ck_assert_int_eq(s->slices[0].sources[0].layer_begin, 0);
    ck_assert_int_eq(s->slices[0].sources[0].layer_end, 24);
    ck_assert_double_eq(eval_ok(smelt_params_find(&s->slices[0].sources[0].params, "scale"), "x",
                                0), 0.5);
    ck_assert_double_eq(eval_ok(smelt_params_find(&s->slices[0].params, "t"), "x", 0.5), 0.5);
    ck_assert_ptr_null(s->slices[0].base_model);
    ck_assert_str_eq(s->slices[1].base_model, "org/b");
    ck_assert_int_eq(s->slices[1].sources[0].layer_begin, 8);
    ck_assert_int_eq(s->slices[1].sources[0].layer_end, 32);
    ck_assert_int_eq(s->slices[1].sources[0].line, 8);
    smelt_spec_free(s);
    smelt_ctx_free(ctx);
}
END_TEST

START_TEST(bad_configs)
{
    smelt_ctx *ctx = smelt_ctx_new();
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        const bad_case *b = &bad_cases[i];
        smelt_merge_spec *s = (smelt_merge_spec *)1;
        smelt_ctx_clear(ctx);
        int rc = smelt_config_parse(ctx, "merge.yml", b->text, strlen(b->text), &s);
        ck_assert_msg(rc == b->status, "case %zu: status %s, want %s: %s\n--- config:\n%s", i,
                      smelt_status_name(rc), smelt_status_name(b->status), smelt_errmsg(ctx),
                      b->text);
        ck_assert_ptr_null(s);
        ck_assert_msg(strncmp(smelt_errmsg(ctx), b->message, strlen(b->message)) == 0,
                      "case %zu:\n got: %s\nwant: %s", i, smelt_errmsg(ctx), b->message);
    }
    smelt_ctx_free(ctx);
}
END_TEST

START_TEST(hostile_yaml_is_bounded)
{
    smelt_ctx *ctx = smelt_ctx_new();
    smelt_merge_spec *s;
    /* Nesting: 64 levels are fine for the tree, 65 are not. */
    char deep[512] = "merge_method: ";
    size_t at = strlen(deep);
    for (int i = 0; i < 100; i++)
        deep[at++] = '[';
    for (int i = 0; i < 100; i++)
        deep[at++] = ']';
    deep[at] = '\0';
    ck_assert_int_eq(smelt_config_parse(ctx, "merge.yml", deep, strlen(deep), &s), SMELT_E_CONFIG);
    ck_assert_str_eq(smelt_errmsg(ctx), "merge.yml:1: nesting deeper than 64 levels");
    smelt_ynode *root;
    char nest[200];
    for (int levels = 64; levels <= 65; levels++) {
        memset(nest, '[', (size_t)levels);
        memset(nest + levels, ']', (size_t)levels);
        int rc = smelt_yaml_parse(ctx, "t.yml", nest, 2 * (size_t)levels, &root);
        ck_assert_msg(rc == (levels <= SMELT_YAML_MAX_DEPTH ? SMELT_OK : SMELT_E_CONFIG),
                      "%d levels: %s", levels, smelt_errmsg(ctx));
        smelt_ynode_free(root);
    }
    ck_assert_ptr_null(root);

    /* Aliases expand into copies, but only so far ("billion laughs"). */
    static const char laughs[] =
        "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
        "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
        "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
        "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
        "f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
        "g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\n";
    ck_assert_int_eq(smelt_yaml_parse(ctx, "t.yml", laughs, strlen(laughs), &root),
                     SMELT_E_CONFIG);
    ck_assert_msg(strstr(smelt_errmsg(ctx), "more than 1048576 nodes") != NULL, "%s",
                  smelt_errmsg(ctx));

    /* Many anchors or keys stay cheap to check, and the anchor table is bounded. */
    size_t cap = 40000 * 24, at2 = 0;
    char *many = malloc(cap);
    for (int i = 0; i <= SMELT_YAML_MAX_ANCHORS; i++)
        at2 += (size_t)snprintf(many + at2, cap - at2, "k%d: &a%d %d\n", i, i, i);
    ck_assert_int_eq(smelt_yaml_parse(ctx, "t.yml", many, at2, &root), SMELT_E_CONFIG);
    ck_assert_str_eq(smelt_errmsg(ctx), "t.yml:10001: more than 10000 anchors");
    at2 = 0;
    for (int i = 0; i < 40000; i++)
        at2 += (size_t)snprintf(many + at2, cap - at2, "k%d: %d\n", i, i);
    ck_assert_int_eq(smelt_yaml_parse(ctx, "t.yml", many, at2, &root), SMELT_OK);
    ck_assert_uint_eq(root->npairs, 40000);
    smelt_ynode_free(root);
    at2 += (size_t)snprintf(many + at2, cap - at2, "k123: dup\n");
    ck_assert_int_eq(smelt_yaml_parse(ctx, "t.yml", many, at2, &root), SMELT_E_CONFIG);
    ck_assert_str_eq(smelt_errmsg(ctx), "t.yml:40001: duplicate key 'k123' (first given on "
                                        "line 124)");
    free(many);

    /* A modest alias is expanded and behaves like the written-out value. */
    s = parse_ok(ctx, "merge_method: linear\nmodels:\n  - model: a\n    parameters: &p\n"
                      "      weight: [0, 1]\n  - model: b\n    parameters: *p\n");
    ck_assert_double_eq(eval_ok(smelt_params_find(&s->models[1].params, "weight"), "x", 1), 1);
    ck_assert_int_eq(smelt_params_find(&s->models[1].params, "weight")->line, 7);
    smelt_spec_free(s);

    /* Input over the size limit is refused before parsing. */
    size_t big = SMELT_YAML_MAX_BYTES + 1;
    char *text = malloc(big);
    memset(text, ' ', big);
    ck_assert_int_eq(smelt_config_parse(ctx, "merge.yml", text, big, &s), SMELT_E_CONFIG);
    ck_assert_msg(strncmp(smelt_errmsg(ctx), "merge.yml:1: 16777217 bytes is larger", 37) == 0,
                  "%s", smelt_errmsg(ctx));
    free(text);
    smelt_ctx_free(ctx);
}
END_TEST

typedef struct typing_case {
    const char *yaml;
    smelt_yscalar_type type;
    double value; /* INT/FLOAT/BOOL */
} typing_case;

/* Every row checked against PyYAML 6.0.3 safe_load. */
static const typing_case typing_cases[] = {
    {"0.5", SMELT_YS_FLOAT, 0.5},
    {"'0.5'", SMELT_YS_STRING, 0},
    {"\"0.5\"", SMELT_YS_STRING, 0},
    {"|\n  0.5", SMELT_YS_STRING, 0},
    {"!!str 0.5", SMELT_YS_STRING, 0},
    {"! 0.5", SMELT_YS_FLOAT, 0.5},
    {"! \"0.5\"", SMELT_YS_FLOAT, 0.5},
    {"1e-3", SMELT_YS_STRING, 0},
    {"1E+3", SMELT_YS_STRING, 0},
    {"1.0E3", SMELT_YS_STRING, 0},
    {"1.0e-3", SMELT_YS_FLOAT, 0.001},
    {"1.e-3", SMELT_YS_FLOAT, 0.001},
    {"1.5e-3", SMELT_YS_FLOAT, 0.0015},
    {"6.02e+23", SMELT_YS_FLOAT, 6.02e+23},
    {".5", SMELT_YS_FLOAT, 0.5},
    {"-.5", SMELT_YS_STRING, 0},
    {"+.5", SMELT_YS_STRING, 0},
    {"._5", SMELT_YS_STRING, 0},
    {"-0.5", SMELT_YS_FLOAT, -0.5},
    {"1.", SMELT_YS_FLOAT, 1.0},
    {"1_.5", SMELT_YS_FLOAT, 1.5},
    {"1_000.5", SMELT_YS_FLOAT, 1000.5},
    {"1:30.5", SMELT_YS_FLOAT, 90.5},
    {"1:5:07.25", SMELT_YS_FLOAT, 3907.25},
    {".inf", SMELT_YS_FLOAT, INFINITY},
    {"-.Inf", SMELT_YS_FLOAT, -INFINITY},
    {"+.INF", SMELT_YS_FLOAT, INFINITY},
    {".iNf", SMELT_YS_STRING, 0},
    {"Infinity", SMELT_YS_STRING, 0},
    {"nan", SMELT_YS_STRING, 0},
    {"1", SMELT_YS_INT, 1},
    {"-1", SMELT_YS_INT, -1},
    {"+1", SMELT_YS_INT, 1},
    {"0", SMELT_YS_INT, 0},
    {"0_", SMELT_YS_INT, 0},
    {"1_000", SMELT_YS_INT, 1000},
    {"0x10", SMELT_YS_INT, 16},
    {"-0x1F", SMELT_YS_INT, -31},
    {"0x_1", SMELT_YS_INT, 1},
    {"010", SMELT_YS_INT, 8},
    {"017", SMELT_YS_INT, 15},
    {"08", SMELT_YS_STRING, 0},
    {"0o7", SMELT_YS_STRING, 0},
    {"0b11", SMELT_YS_INT, 3},
    {"0b1010", SMELT_YS_INT, 10},
    {"0b_", SMELT_YS_INVALID, 0},
    {"1:30", SMELT_YS_INT, 90},
    {"190:20:30", SMELT_YS_INT, 685230},
    {"1:60", SMELT_YS_STRING, 0},
    {"12345678901234567890", SMELT_YS_INT, 0x1.56a95319d63e1p+63},
    {"yes", SMELT_YS_BOOL, 1},
    {"No", SMELT_YS_BOOL, 0},
    {"on", SMELT_YS_BOOL, 1},
    {"OFF", SMELT_YS_BOOL, 0},
    {"TRUE", SMELT_YS_BOOL, 1},
    {"False", SMELT_YS_BOOL, 0},
    {"y", SMELT_YS_STRING, 0},
    {"n", SMELT_YS_STRING, 0},
    {"tRUE", SMELT_YS_STRING, 0},
    {"~", SMELT_YS_NULL, 0},
    {"null", SMELT_YS_NULL, 0},
    {"NULL", SMELT_YS_NULL, 0},
    {"", SMELT_YS_NULL, 0},
    {"''", SMELT_YS_STRING, 0},
    {"2024-01-31", SMELT_YS_TIMESTAMP, 0},
    {"2024-01-05T10:00:00Z", SMELT_YS_TIMESTAMP, 0},
    {"2024-1-5 1:02:03.5 +01:00", SMELT_YS_TIMESTAMP, 0},
    {"2024-1-5", SMELT_YS_STRING, 0},
    {"chatml", SMELT_YS_STRING, 0},
};

START_TEST(pyyaml_scalar_typing)
{
    smelt_ctx *ctx = smelt_ctx_new();
    for (size_t i = 0; i < sizeof typing_cases / sizeof typing_cases[0]; i++) {
        const typing_case *tc = &typing_cases[i];
        char text[128];
        snprintf(text, sizeof text, "x: %s\n", tc->yaml);
        smelt_ynode *root;
        ck_assert_msg(smelt_yaml_parse(ctx, "t.yml", text, strlen(text), &root) == SMELT_OK,
                      "%s: %s", tc->yaml, smelt_errmsg(ctx));
        const smelt_ypair *x = smelt_ymap_find(root, "x");
        double v = -999;
        smelt_yscalar_type type = smelt_yscalar_resolve(x->value, &v);
        ck_assert_msg(type == tc->type, "'%s': type %d, want %d", tc->yaml, type, tc->type);
        if (type == SMELT_YS_INT || type == SMELT_YS_FLOAT || type == SMELT_YS_BOOL)
            ck_assert_msg(v == tc->value, "'%s': %a, want %a", tc->yaml, v, tc->value);
        smelt_ynode_free(root);
    }
    /* The cases PyYAML gives a sign or no value to. */
    smelt_ynode *root;
    double v;
    ck_assert_int_eq(smelt_yaml_parse(ctx, "t.yml", "[-0.0, .NaN, 12]", 16, &root), SMELT_OK);
    ck_assert_int_eq(smelt_yscalar_resolve(root->items[0], &v), SMELT_YS_FLOAT);
    ck_assert(v == 0 && signbit(v));
    ck_assert_int_eq(smelt_yscalar_resolve(root->items[1], &v), SMELT_YS_FLOAT);
    ck_assert(isnan(v));
    ck_assert_int_eq(smelt_yscalar_resolve(root->items[2], NULL), SMELT_YS_INT);
    ck_assert_int_eq(smelt_yscalar_resolve(root, NULL), SMELT_YS_STRING); /* not a scalar */
    ck_assert_str_eq(smelt_ynode_describe(root), "a list");
    ck_assert_ptr_null(smelt_ymap_find(root, "x"));
    smelt_ynode_free(root);
    smelt_ynode_free(NULL);

    /* The same typing reaches parameters: plain numbers are numbers, quoted ones strings. */
    smelt_merge_spec *s = parse_ok(ctx, "merge_method: linear\nmodels: [{model: a}]\n"
                                        "parameters: {a: 0x10, b: \"0.5\", c: off, d: [1, yes, "
                                        ".5], e: 1e-3, f: -1_0}\n");
    ck_assert_int_eq(smelt_params_find(&s->params, "a")->kind, SMELT_PV_NUMBER);
    ck_assert_double_eq(smelt_params_find(&s->params, "a")->number, 16);
    ck_assert_int_eq(smelt_params_find(&s->params, "b")->kind, SMELT_PV_STRING);
    ck_assert_str_eq(smelt_params_find(&s->params, "b")->string, "0.5");
    ck_assert_int_eq(smelt_params_find(&s->params, "c")->kind, SMELT_PV_BOOL);
    ck_assert_int_eq(smelt_params_find(&s->params, "c")->boolean, 0);
    const smelt_pvalue *d = smelt_params_find(&s->params, "d");
    ck_assert_int_eq(d->kind, SMELT_PV_GRADIENT); /* pydantic reads a boolean item as 1.0 */
    ck_assert_double_eq(d->gradient[1], 1);
    ck_assert_double_eq(d->gradient[2], 0.5);
    ck_assert_int_eq(smelt_params_find(&s->params, "e")->kind, SMELT_PV_STRING);
    ck_assert_double_eq(smelt_params_find(&s->params, "f")->number, -10);
    smelt_spec_free(s);
    smelt_ctx_free(ctx);
}
END_TEST

static smelt_pvalue gradient(double *g, size_t n)
{
    return (smelt_pvalue){.kind = SMELT_PV_GRADIENT, .gradient = g, .ngradient = n};
}

START_TEST(pvalue_eval_scalars_and_gradients)
{
    double out;
    smelt_pvalue num = {.kind = SMELT_PV_NUMBER, .number = -0.25};
    ck_assert_int_eq(smelt_pvalue_eval(&num, "x", 0.7, &out), 1);
    ck_assert_double_eq(out, -0.25);
    smelt_pvalue yes = {.kind = SMELT_PV_BOOL, .number = 1, .boolean = 1};
    smelt_pvalue no = {.kind = SMELT_PV_BOOL, .number = 0, .boolean = 0};
    ck_assert_double_eq(eval_ok(&yes, "x", 0), 1);
    ck_assert_double_eq(eval_ok(&no, "x", 0), 0);
    smelt_pvalue str = {.kind = SMELT_PV_STRING, .string = "chatml"};
    out = 42;
    ck_assert_int_eq(smelt_pvalue_eval(&str, "x", 0, &out), -1);
    ck_assert_double_eq(out, 42);

    /* Expected values: mergekit's expression evaluated by Python, bit for bit. */
    static const double ts[] = {0, 0.25, 0.5, 1, 0.3};
    double g2[] = {0.1, 0.7}, g3[] = {0.2, 0.9, 0.3}, g5[] = {0.0, 0.3, 0.55, 0.1, 1.0};
    static const double want2[] = {0x1.999999999999ap-4, 0x1.0000000000000p-2, 0x1.9999999999999p-2,
                                   0x1.6666666666666p-1, 0x1.1eb851eb851ebp-2};
    static const double want3[] = {0x1.999999999999ap-3, 0x1.199999999999ap-1, 0x1.ccccccccccccdp-1,
                                   0x1.3333333333333p-2, 0x1.3d70a3d70a3d8p-1};
    static const double want5[] = {0, 0x1.3333333333333p-2, 0x1.199999999999ap-1, 1,
                                   0x1.6666666666666p-2};
    smelt_pvalue v2 = gradient(g2, 2), v3 = gradient(g3, 3), v5 = gradient(g5, 5);
    for (size_t i = 0; i < 5; i++) {
        double got2 = eval_ok(&v2, "x", ts[i]), got3 = eval_ok(&v3, "x", ts[i]),
               got5 = eval_ok(&v5, "x", ts[i]);
        ck_assert_msg(got2 == want2[i], "2 @ %g: %a, want %a", ts[i], got2, want2[i]);
        ck_assert_msg(got3 == want3[i], "3 @ %g: %a, want %a", ts[i], got3, want3[i]);
        ck_assert_msg(got5 == want5[i], "5 @ %g: %a, want %a", ts[i], got5, want5[i]);
    }
    /* 0.5 on [0.1, 0.7] is not 0.4 in binary: the order of operations matters. */
    ck_assert(eval_ok(&v2, "x", 0.5) != 0.4);
    /* t is clamped to [0, 1]; NaN counts as 0. */
    ck_assert_double_eq(eval_ok(&v3, "x", -0.5), g3[0]);
    ck_assert_double_eq(eval_ok(&v3, "x", 7), g3[2]);
    ck_assert_double_eq(eval_ok(&v3, "x", NAN), g3[0]);
    double g1[] = {0.42};
    smelt_pvalue v1 = gradient(g1, 1);
    ck_assert_double_eq(eval_ok(&v1, "x", 0), 0.42);
    ck_assert_double_eq(eval_ok(&v1, "x", 1), 0.42);
    smelt_pvalue v0 = gradient(NULL, 0);
    ck_assert_int_eq(smelt_pvalue_eval(&v0, "x", 0.5, &out), 0);
}
END_TEST

START_TEST(pvalue_eval_filters)
{
    smelt_ctx *ctx = smelt_ctx_new();
    smelt_merge_spec *s = parse_ok(
        ctx, "merge_method: ties\nmodels: [{model: a}]\nparameters:\n"
             "  first: [{filter: self_attn, value: 0.1}, {filter: attn, value: 0.2},\n"
             "          {filter: '*', value: 0.3}, {value: 0.4}]\n"
             "  nocatch: [{filter: mlp, value: [0, 1]}, {filter: norm, value: true},\n"
             "            {filter: embed, value: chatml}]\n"
             "  nullfilter: [{filter: null, value: 5}]\n"
             "  empty: [{filter: '', value: 6}]\n");
    const smelt_pvalue *first = smelt_params_find(&s->params, "first");
    ck_assert_int_eq(first->line, 4);
    ck_assert_double_eq(eval_ok(first, "model.layers.0.self_attn.q_proj.weight", 0), 0.1);
    ck_assert_double_eq(eval_ok(first, "model.layers.0.cross_attn.q_proj.weight", 0), 0.2);
    ck_assert_double_eq(eval_ok(first, "model.layers.0.mlp.up_proj.weight", 0), 0.3);
    ck_assert_double_eq(eval_ok(first, "", 0), 0.3); /* "*" matches even no name */
    const smelt_pvalue *nc = smelt_params_find(&s->params, "nocatch");
    double out = 9;
    ck_assert_double_eq(eval_ok(nc, "model.layers.1.mlp.down_proj.weight", 0.25), 0.25);
    ck_assert_double_eq(eval_ok(nc, "model.layers.1.post_attention_layernorm.weight", 0), 1);
    ck_assert_int_eq(smelt_pvalue_eval(nc, "model.embed_tokens.weight", 0, &out), -1);
    ck_assert_int_eq(smelt_pvalue_eval(nc, "lm_head.weight", 0, &out), 0);
    ck_assert_int_eq(smelt_pvalue_eval(nc, NULL, 0, &out), 0);
    ck_assert_double_eq(out, 9);
    ck_assert_double_eq(eval_ok(smelt_params_find(&s->params, "nullfilter"), "x", 0), 5);
    /* mergekit: `tensor_name and filter in tensor_name`: '' matches every named tensor. */
    const smelt_pvalue *empty = smelt_params_find(&s->params, "empty");
    ck_assert_double_eq(eval_ok(empty, "x", 0), 6);
    ck_assert_int_eq(smelt_pvalue_eval(empty, "", 0, &out), 0);
    ck_assert_ptr_null(smelt_params_find(&s->params, "missing"));
    ck_assert_ptr_null(smelt_params_find(NULL, "x"));
    smelt_spec_free(s);
    smelt_ctx_free(ctx);
}
END_TEST

/* Every result of a hostile parse: a spec, or a failure whose message names file and line. */
static void parse_anything(smelt_ctx *ctx, const char *text, size_t len)
{
    char *copy = malloc(len ? len : 1); /* exact size, no NUL: ASan sees any over-read */
    memcpy(copy, text, len);
    smelt_merge_spec *s = NULL;
    smelt_ctx_clear(ctx);
    int rc = smelt_config_parse(ctx, "merge.yml", copy, len, &s);
    if (rc == SMELT_OK) {
        ck_assert_ptr_nonnull(s);
        ck_assert_uint_eq(strlen(s->text), len);
        smelt_spec_free(s);
    } else {
        ck_assert_ptr_null(s);
        ck_assert_msg(rc == SMELT_E_CONFIG || rc == SMELT_E_UNSUPPORTED, "%s: %s",
                      smelt_status_name(rc), smelt_errmsg(ctx));
        ck_assert_msg(strncmp(smelt_errmsg(ctx), "merge.yml:", 10) == 0, "%s", smelt_errmsg(ctx));
    }
    free(copy);
}

START_TEST(fuzz_prefixes_and_mutations)
{
    smelt_ctx *ctx = smelt_ctx_new();
    const char *texts[] = {ties_yml, linear_yml};
    for (size_t t = 0; t < 2; t++) {
        size_t len = strlen(texts[t]);
        for (size_t n = 0; n <= len; n++)
            parse_anything(ctx, texts[t], n);
        char *buf = malloc(len);
        static const char bytes[] = "[]{}:-&*!|>'\"\n #,?\t\xff\x80";
        for (size_t at = 0; at < len; at++) {
            for (size_t b = 0; b < sizeof bytes - 1; b++) {
                memcpy(buf, texts[t], len);
                buf[at] = bytes[b];
                parse_anything(ctx, buf, len);
            }
        }
        free(buf);
    }
    smelt_ctx_free(ctx);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("config");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, linear_config);
    tcase_add_test(tc, load_from_file);
    tcase_add_test(tc, ties_config);
    tcase_add_test(tc, slices_config);
    tcase_add_test(tc, bad_configs);
    tcase_add_test(tc, hostile_yaml_is_bounded);
    tcase_add_test(tc, pyyaml_scalar_typing);
    tcase_add_test(tc, pvalue_eval_scalars_and_gradients);
    tcase_add_test(tc, pvalue_eval_filters);
    tcase_add_test(tc, fuzz_prefixes_and_mutations);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
