#include "common/dtype.h"

#include "common/ggml_type.h"

#include <string.h>
#include <strings.h>

static const struct {
    const char *name;
    unsigned bits;
    int is_float;
} dtype_table[SMELT_DT_COUNT] = {
    [SMELT_DT_BOOL] = {"BOOL", 8, 0},          [SMELT_DT_U8] = {"U8", 8, 0},
    [SMELT_DT_I8] = {"I8", 8, 0},              [SMELT_DT_I16] = {"I16", 16, 0},
    [SMELT_DT_U16] = {"U16", 16, 0},           [SMELT_DT_F16] = {"F16", 16, 1},
    [SMELT_DT_BF16] = {"BF16", 16, 1},         [SMELT_DT_I32] = {"I32", 32, 0},
    [SMELT_DT_U32] = {"U32", 32, 0},           [SMELT_DT_F32] = {"F32", 32, 1},
    [SMELT_DT_F64] = {"F64", 64, 1},           [SMELT_DT_I64] = {"I64", 64, 0},
    [SMELT_DT_U64] = {"U64", 64, 0},           [SMELT_DT_C64] = {"C64", 64, 0},
    [SMELT_DT_F8_E4M3] = {"F8_E4M3", 8, 1},    [SMELT_DT_F8_E5M2] = {"F8_E5M2", 8, 1},
    [SMELT_DT_F8_E8M0] = {"F8_E8M0", 8, 1},    [SMELT_DT_F8_E4M3FNUZ] = {"F8_E4M3FNUZ", 8, 1},
    [SMELT_DT_F8_E5M2FNUZ] = {"F8_E5M2FNUZ", 8, 1}, [SMELT_DT_F4] = {"F4", 4, 1},
    [SMELT_DT_F6_E2M3] = {"F6_E2M3", 6, 1},    [SMELT_DT_F6_E3M2] = {"F6_E3M2", 6, 1},
};

static int valid(smelt_dtype dt) { return dt >= 0 && dt < SMELT_DT_COUNT; }

int smelt_dtype_is_block(smelt_dtype dt)
{
    switch (dt) {
    case SMELT_DT_Q4_0: case SMELT_DT_Q4_1: case SMELT_DT_Q5_0: case SMELT_DT_Q5_1:
    case SMELT_DT_Q8_0: case SMELT_DT_Q2_K: case SMELT_DT_Q3_K: case SMELT_DT_Q4_K:
    case SMELT_DT_Q5_K: case SMELT_DT_Q6_K: case SMELT_DT_IQ4_NL: case SMELT_DT_IQ4_XS:
        return 1;
    default:
        return 0;
    }
}

static const smelt_ggml_type *block_type(smelt_dtype dt)
{
    return smelt_dtype_is_block(dt) ? smelt_ggml_type_get((uint32_t)(dt - SMELT_DT_GGML_BASE))
                                    : NULL;
}

const char *smelt_dtype_name(smelt_dtype dt)
{
    if (smelt_dtype_is_block(dt))
        return block_type(dt)->name;
    return valid(dt) ? dtype_table[dt].name : "?";
}

smelt_dtype smelt_dtype_from_name(const char *name)
{
    for (int i = 0; i < SMELT_DT_COUNT; i++)
        if (strcmp(dtype_table[i].name, name) == 0)
            return (smelt_dtype)i;
    return SMELT_DT_INVALID;
}

smelt_dtype smelt_dtype_from_any_name(const char *name)
{
    smelt_dtype dt = smelt_dtype_from_name(name);
    for (int t = 0; dt == SMELT_DT_INVALID && t < SMELT_DT_GGML_END - SMELT_DT_GGML_BASE; t++)
        if (smelt_dtype_is_block((smelt_dtype)(SMELT_DT_GGML_BASE + t)) &&
            strcmp(smelt_dtype_name((smelt_dtype)(SMELT_DT_GGML_BASE + t)), name) == 0)
            dt = (smelt_dtype)(SMELT_DT_GGML_BASE + t);
    return dt;
}

smelt_dtype smelt_dtype_from_torch_name(const char *name)
{
    if (!strncmp(name, "torch.", 6))
        name += 6;
    static const struct { const char *alias; smelt_dtype dt; } aliases[] = {
        {"bfloat16", SMELT_DT_BF16}, {"bf16", SMELT_DT_BF16}, {"float16", SMELT_DT_F16},
        {"fp16", SMELT_DT_F16},      {"half", SMELT_DT_F16},  {"f16", SMELT_DT_F16},
        {"float32", SMELT_DT_F32},   {"fp32", SMELT_DT_F32},  {"float", SMELT_DT_F32},
        {"f32", SMELT_DT_F32},
    };
    for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
        if (strcasecmp(aliases[i].alias, name) == 0)
            return aliases[i].dt;
    return SMELT_DT_INVALID;
}

const char *smelt_dtype_torch_name(smelt_dtype dt)
{
    switch (dt) {
    case SMELT_DT_BF16: return "bfloat16";
    case SMELT_DT_F16: return "float16";
    case SMELT_DT_F32: return "float32";
    case SMELT_DT_F64: return "float64";
    default: return smelt_dtype_name(dt);
    }
}

unsigned smelt_dtype_bits(smelt_dtype dt) { return valid(dt) ? dtype_table[dt].bits : 0; }

unsigned smelt_dtype_size(smelt_dtype dt)
{
    unsigned bits = smelt_dtype_bits(dt);
    return bits % 8 ? 0 : bits / 8;
}

unsigned smelt_dtype_block(smelt_dtype dt)
{
    if (smelt_dtype_is_block(dt))
        return block_type(dt)->block;
    return smelt_dtype_size(dt) ? 1 : 0;
}

uint64_t smelt_dtype_span(smelt_dtype dt, uint64_t n)
{
    const smelt_ggml_type *b = block_type(dt);
    if (b)
        return (n + b->block - 1) / b->block * b->bytes;
    return n * smelt_dtype_size(dt);
}

smelt_dtype smelt_dtype_from_ggml(uint32_t ggml_type)
{
    switch (ggml_type) {
    case SMELT_GGML_F32: return SMELT_DT_F32;
    case SMELT_GGML_F16: return SMELT_DT_F16;
    case SMELT_GGML_BF16: return SMELT_DT_BF16;
    case SMELT_GGML_F64: return SMELT_DT_F64;
    case SMELT_GGML_I8: return SMELT_DT_I8;
    case SMELT_GGML_I16: return SMELT_DT_I16;
    case SMELT_GGML_I32: return SMELT_DT_I32;
    case SMELT_GGML_I64: return SMELT_DT_I64;
    default: break;
    }
    smelt_dtype dt = ggml_type < SMELT_DT_GGML_END - SMELT_DT_GGML_BASE
                         ? (smelt_dtype)(SMELT_DT_GGML_BASE + (int)ggml_type)
                         : SMELT_DT_INVALID;
    return smelt_dtype_is_block(dt) ? dt : SMELT_DT_INVALID;
}

int smelt_dtype_to_ggml(smelt_dtype dt)
{
    switch (dt) {
    case SMELT_DT_F32: return SMELT_GGML_F32;
    case SMELT_DT_F16: return SMELT_GGML_F16;
    case SMELT_DT_BF16: return SMELT_GGML_BF16;
    case SMELT_DT_F64: return SMELT_GGML_F64;
    case SMELT_DT_I8: return SMELT_GGML_I8;
    case SMELT_DT_I16: return SMELT_GGML_I16;
    case SMELT_DT_I32: return SMELT_GGML_I32;
    case SMELT_DT_I64: return SMELT_GGML_I64;
    default: return smelt_dtype_is_block(dt) ? (int)(dt - SMELT_DT_GGML_BASE) : -1;
    }
}

int smelt_dtype_mergeable(smelt_dtype dt)
{
    return dt == SMELT_DT_F32 || dt == SMELT_DT_F16 || dt == SMELT_DT_BF16 ||
           smelt_dtype_is_block(dt);
}

int smelt_dtype_is_float(smelt_dtype dt)
{
    return smelt_dtype_is_block(dt) || (valid(dt) && dtype_table[dt].is_float);
}
