/* Helpers shared by the Check unit tests. */
#ifndef SMELT_TESTUTIL_H
#define SMELT_TESTUTIL_H

#include <check.h>
#include <stddef.h>

/* A fresh directory under $TMPDIR (or /tmp); removed with everything in it at exit. */
char *tu_tmpdir(void);

/* dir + "/" + name, malloc'd. */
char *tu_path(const char *dir, const char *name);

/* Writes len bytes to path (creating or truncating it); aborts the test on failure. */
void tu_write_file(const char *path, const void *data, size_t len);

/* Reads a whole file (NUL-terminated); *len gets its length when non-NULL. */
char *tu_read_file(const char *path, size_t *len);

/* Removes a tree. */
void tu_rm_rf(const char *path);

/* Runs a suite with CK_NORMAL output; returns the process exit status (0 when all passed). */
int tu_run_suite(Suite *suite);

#endif
