/* `smelt plan`: the plan in words, for debugging gradients, filters and slices. */
#include "engine/engine_layout.h"
#include "engine/source.h"
#include "format/delta.h"

#include "format/lora.h"

#include <stdlib.h>
#include <string.h>

static void print_shape(FILE *out, const smelt_tensor_info *t)
{
    fputc('[', out);
    for (uint32_t d = 0; d < t->ndim; d++)
        fprintf(out, "%s%llu", d ? ", " : "", (unsigned long long)t->shape[d]);
    fputc(']', out);
}

/* The shortest of %.15g/%.16g/%.17g that reads back as the same double: exact for scripts,
 * short for people. */
static void print_double(FILE *out, double v)
{
    char buf[40];
    for (int digits = 15; digits <= 17; digits++) {
        snprintf(buf, sizeof buf, "%.*g", digits, v);
        if (strtod(buf, NULL) == v || digits == 17)
            break;
    }
    fputs(buf, out);
}

static void print_params(FILE *out, const smelt_plan *plan, const smelt_plan_tensor *pt,
                         double **values)
{
    const smelt_method *m = plan->method;
    /* Full precision, no spaces: scripts read these back and compare them exactly. */
    fprintf(out, "    parameters:");
    for (size_t p = 0; p < m->nparams; p++) {
        const smelt_param_def *def = &m->params[p];
        fprintf(out, " %s=", def->name);
        if (!def->per_model) {
            print_double(out, values[p][0]);
            continue;
        }
        fputc('[', out);
        for (size_t i = 0; i < pt->ninputs; i++) {
            if (i)
                fputc(',', out);
            print_double(out, values[p][i]);
        }
        fputc(']', out);
    }
    fputc('\n', out);
}

int smelt_plan_describe(smelt_ctx *ctx, const smelt_plan *plan, const smelt_engine_layout *layout,
                        uint64_t max_memory, FILE *out)
{
    const smelt_method *m = plan->method;
    fprintf(out, "config:   %s\nmethod:   %s\n", plan->spec->path, m->name);
    fprintf(out, "output:   %zu tensors in %zu shard%s, %u layers, model config from '%s'\n",
            plan->ntensors, plan->nshards, plan->nshards == 1 ? "" : "s", plan->num_layers,
            plan->models[plan->ref_model]->ref);
    fprintf(out, "tokenizer: %s\n", plan->tokenizer_model < 0
                                        ? "not copied"
                                        : plan->models[plan->tokenizer_model]->ref);
    for (size_t s = 0; s < plan->nslices; s++) {
        const smelt_plan_slice *sl = &plan->slices[s];
        fprintf(out, "slice %zu:  output layers [%u, %u)\n", s, sl->out_layer0,
                sl->out_layer0 + sl->nlayers);
        for (size_t i = 0; i < sl->ninputs; i++)
            fprintf(out, "  input %zu: %s%s, layers [%ld, %ld)\n", i, sl->input_names[i],
                    sl->has_base && i == 0 ? " (base)" : "", sl->layer_begin[i],
                    sl->layer_begin[i] + (long)sl->nlayers);
    }
    double **values = calloc(m->nparams + 1, sizeof *values);
    int rc = values ? SMELT_OK : smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    for (size_t p = 0; rc == SMELT_OK && p < m->nparams; p++)
        if (!(values[p] = calloc(plan->ninputs + 1, sizeof(double))))
            rc = smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    fprintf(out, "tensors (in processing order):\n");
    for (size_t t = 0; rc == SMELT_OK && t < plan->ntensors; t++) {
        const smelt_plan_tensor *pt = &plan->tensors[t];
        fprintf(out, "  %s %s ", pt->name, smelt_dtype_name(pt->out_dtype));
        print_shape(out, pt->ref);
        fprintf(out, " -> %s @ %llu, t=%.6g", plan->shards[pt->shard].name,
                (unsigned long long)pt->out_offset, pt->layer_t);
        /* Under this budget: read once, or streamed and read again for each statistics pass. */
        unsigned reads = smelt_engine_tensor_reads(plan, layout, t);
        unsigned fallback = smelt_engine_tensor_fallback_reads(plan, layout, t);
        if (pt->kind == SMELT_TASK_MERGE && plan->method->passes &&
            plan->method->passes(pt->method_state) > 0) {
            fprintf(out, ", %s, read %ux",
                    smelt_engine_tensor_resident(&plan, 1, layout, t) ? "resident" : "streamed",
                    reads);
            if (fallback)
                fprintf(out, " (+%u if its sample misses)", fallback);
        }
        fputc('\n', out);
        if (pt->kind == SMELT_TASK_COPY) {
            fprintf(out, "    copy from %s:%s\n", plan->models[pt->input_model[0]]->ref,
                    pt->inputs[0]->name);
            continue;
        }
        for (size_t i = 0; i < pt->ninputs; i++) {
            const smelt_model *model = plan->models[pt->input_model[i]];
            const smelt_lora_module *lm = pt->sources ? pt->sources[i].lora : NULL;
            fprintf(out, "    from %s:%s (%s)", model->ref, pt->inputs[i]->name,
                    smelt_dtype_name(pt->inputs[i]->dtype));
            if (lm)
                fprintf(out, " + LoRA delta, rank %u, scale %.9g%s%s", lm->rank,
                        (double)lm->scale, lm->transposed ? ", transposed" : "",
                        lm->magnitude ? ", DoRA (its norm pass reads the weight once more)" : "");
            else if (model->lora && pt->inputs[i]->file >= model->nfiles - model->lora->weights->nfiles)
                fprintf(out, ", the adapter's copy (modules_to_save)");
            else if (pt->sources && pt->sources[i].delta)
                fprintf(out, " %s the delta's %llu frames (%llu bytes compressed)",
                        pt->sources[i].delta->mode == SMELT_DELTA_RAW ? "stored whole: decoded from"
                                                                       : "XOR",
                        (unsigned long long)pt->sources[i].delta->nframes,
                        (unsigned long long)pt->sources[i].delta->blob_size);
            size_t reader = smelt_source_reader(plan, pt, i);
            if (reader != i && reader != SMELT_SOURCE_NO_READ)
                fprintf(out, ", the same bytes as input %zu's (read once)", reader);
            fputc('\n', out);
        }
        rc = smelt_plan_resolve_params(ctx, plan, pt, values);
        if (rc == SMELT_OK)
            print_params(out, plan, pt, values);
    }
    for (size_t p = 0; values && p < m->nparams; p++)
        free(values[p]);
    free(values);
    if (rc != SMELT_OK)
        return rc;
    for (size_t s = 0; s < plan->nshards; s++)
        fprintf(out, "shard:    %s, %llu tensors, %llu bytes\n", plan->shards[s].name,
                (unsigned long long)plan->shards[s].ntensors,
                (unsigned long long)plan->shards[s].size);
    uint64_t in_bytes = 0;
    for (size_t t = 0; t < plan->ntensors; t++)
        for (size_t i = 0; i < plan->tensors[t].ninputs; i++)
            in_bytes += smelt_dtype_span(plan->tensors[t].inputs[i]->dtype,
                                         plan->tensors[t].ref->numel);
    uint64_t to_read = smelt_engine_bytes_to_read(plan, layout), fallback_bytes = 0;
    for (size_t t = 0; t < plan->ntensors; t++) {
        unsigned n = smelt_engine_tensor_fallback_reads(plan, layout, t);
        if (n)
            fallback_bytes += n * smelt_engine_tensor_bytes_to_read(plan, NULL, t);
    }
    fprintf(out, "read:     %llu bytes (%.2f x the input tensors' %llu bytes)",
            (unsigned long long)to_read, in_bytes ? (double)to_read / (double)in_bytes : 0.0,
            (unsigned long long)in_bytes);
    if (fallback_bytes)
        fprintf(out, ", up to %llu more where a streamed tensor's sample misses",
                (unsigned long long)fallback_bytes);
    fputc('\n', out);
    fprintf(out, "write:    %llu bytes\n", (unsigned long long)plan->bytes_to_write);
    fprintf(out, "memory:   budget %llu bytes: chunks of %llu elements, %u in flight, %llu bytes "
            "of buffers\n", (unsigned long long)max_memory,
            (unsigned long long)layout->chunk_elements, layout->depth,
            (unsigned long long)layout->buffer_bytes);
    return SMELT_OK;
}

int smelt_group_describe(smelt_ctx *ctx, const smelt_plan *const *plans,
                         const char *const *labels, size_t n, const smelt_engine_layout *layout,
                         uint64_t max_memory, FILE *out)
{
    fprintf(out, "outputs:  %zu, written from one read of their shared inputs\n", n);
    uint64_t separate = 0, written = 0;
    for (size_t o = 0; o < n; o++) {
        fprintf(out, "\n== output %zu of %zu: %s (%s)\n", o + 1, n, labels[o],
                plans[o]->method->name);
        int rc = smelt_plan_describe(ctx, plans[o], layout, max_memory, out);
        if (rc != SMELT_OK)
            return rc;
        separate += smelt_engine_bytes_to_read(plans[o], layout);
        written += plans[o]->bytes_to_write;
    }
    uint64_t in_bytes = 0;
    for (size_t t = 0; t < plans[0]->ntensors; t++)
        for (size_t i = 0; i < plans[0]->tensors[t].ninputs; i++)
            in_bytes += smelt_dtype_span(plans[0]->tensors[t].inputs[i]->dtype,
                                         plans[0]->tensors[t].ref->numel);
    uint64_t to_read = smelt_engine_group_bytes_to_read(plans, n, layout);
    fprintf(out, "\ngroup:    %zu outputs read their inputs together: %llu bytes (%.2f x the "
            "input tensors' %llu bytes; %llu as separate merges), %llu bytes written\n", n,
            (unsigned long long)to_read, in_bytes ? (double)to_read / (double)in_bytes : 0.0,
            (unsigned long long)in_bytes, (unsigned long long)separate,
            (unsigned long long)written);
    fprintf(out, "memory:   budget %llu bytes for all outputs: chunks of %llu elements, %u in "
            "flight, %llu bytes of buffers\n", (unsigned long long)max_memory,
            (unsigned long long)layout->chunk_elements, layout->depth,
            (unsigned long long)layout->buffer_bytes);
    return SMELT_OK;
}
