/* fuzz_rules.c -- libFuzzer target: the scan kind's rules-file parser on any bytes.
 * Checks, beyond "no crash": every rule has a valid id, a non-empty pattern, and a
 * line number inside the text; a failure always says which line.
 *
 * Run longer:  build/fuzz/tests/fuzz/fuzz_rules -max_total_time=600 corpus/ */
#include "service/scan_rules.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct scan_rules rules;
    char err[256];
    if (scan_rules_parse((const char *)data, size, &rules, err, sizeof err) != 0) {
        if (strncmp(err, "line ", 5) != 0)
            abort();
        return 0;
    }
    size_t lines = 1;
    for (size_t i = 0; i < size; i++)
        lines += data[i] == '\n';
    for (size_t i = 0; i < rules.count; i++) {
        size_t idlen = strlen(rules.ids[i]);
        if (idlen == 0 || idlen > SCAN_RULES_ID_MAX || rules.patterns[i][0] == '\0' ||
            rules.lines[i] == 0 || rules.lines[i] > lines)
            abort();
    }
    scan_rules_free(&rules);
    return 0;
}
