/* smelt_st_write_file (see st_write.h). */
#include "out/st_write.h"

#include "common/util.h"

#include <stdlib.h>

int smelt_st_write_file(smelt_ctx *ctx, const char *path, const smelt_st_out_tensor *descs,
                        size_t n, smelt_st_tensor_writer write, void *user, uint64_t *size)
{
    uint64_t *offsets = calloc(n + 1, sizeof *offsets);
    uint8_t *header = NULL;
    size_t header_len;
    uint64_t file_size;
    smelt_out_file file = {.fd = -1};
    int rc = offsets ? SMELT_OK : smelt_fail(ctx, SMELT_E_NOMEM, "out of memory");
    if (rc == SMELT_OK && !(rc = smelt_st_layout(ctx, descs, n, &header, &header_len, offsets,
                                                  &file_size)) &&
        !(rc = smelt_out_create(ctx, &file, path, file_size)))
        rc = smelt_out_write(ctx, &file, header, header_len, 0);
    for (size_t i = 0; i < n && rc == SMELT_OK; i++)
        rc = write(ctx, user, &file, i, offsets[i]);
    if (rc == SMELT_OK && (rc = smelt_out_finish(ctx, &file)) == SMELT_OK)
        rc = smelt_out_commit(ctx, &file);
    if (rc == SMELT_OK && size)
        *size = file_size;
    if (rc == SMELT_OK)
        smelt_out_release(&file);
    else
        smelt_out_discard(&file);
    free(header);
    free(offsets);
    return rc;
}
