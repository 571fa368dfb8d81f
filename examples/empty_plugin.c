/* empty_plugin.c -- a plugin that exports no kinds: warmpool must refuse it (tests). */
#include <warmpool/kind.h>

const struct wp_kind *const wp_kinds[] = {NULL};
