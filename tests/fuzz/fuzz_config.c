/*
 * Route files from arbitrary bytes: the loader must accept or reject every
 * input with a message (never crash, leak or hang), whatever the JSON.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "riffq/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = 0;
    char *err = NULL;
    Config *c = cfg_load_string(text, "/tmp/fuzz.json", &err);
    if (!c && !err) abort();
    cfg_free(c);
    free(err);
    free(text);
    return 0;
}
