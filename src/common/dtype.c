#include "common/dtype.h"

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

const char *smelt_dtype_name(smelt_dtype dt) { return valid(dt) ? dtype_table[dt].name : "?"; }

smelt_dtype smelt_dtype_from_name(const char *name)
{
    for (int i = 0; i < SMELT_DT_COUNT; i++)
        if (strcmp(dtype_table[i].name, name) == 0)
            return (smelt_dtype)i;
    return SMELT_DT_INVALID;
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

int smelt_dtype_mergeable(smelt_dtype dt)
{
    return dt == SMELT_DT_F32 || dt == SMELT_DT_F16 || dt == SMELT_DT_BF16;
}

int smelt_dtype_is_float(smelt_dtype dt) { return valid(dt) && dtype_table[dt].is_float; }
