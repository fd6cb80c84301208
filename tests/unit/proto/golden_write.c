/* golden_write DIR: writes the golden messages (golden_msgs.h) for readers in
 * other languages: DIR/NAME.mpk (the bytes) for each, and DIR/index.json, an
 * array of {name, topic, expect (the decoded value), reason (malformed ones)}.
 * tests/e2e/dashboard/golden.mjs decodes them with the dashboard's code. */
#include <stdio.h>
#include <string.h>

#include "golden_msgs.h"

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fputc('\\', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: golden_write DIR\n");
        return 2;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/index.json", argv[1]);
    FILE *idx = fopen(path, "w");
    if (!idx) {
        perror(path);
        return 1;
    }
    fputs("[\n", idx);
    for (size_t i = 0; i < golden_count; i++) {
        const golden_msg *g = &golden_msgs[i];
        ifm_enc e;
        ifm_enc_init(&e);
        golden_encode(i, &e);
        snprintf(path, sizeof path, "%s/%s.mpk", argv[1], g->name);
        FILE *f = fopen(path, "wb");
        if (!f || fwrite(ifm_enc_data(&e), 1, ifm_enc_size(&e), f) != ifm_enc_size(&e) || fclose(f)) {
            perror(path);
            return 1;
        }
        ifm_enc_free(&e);
        fputs("  {\"name\": ", idx);
        json_str(idx, g->name);
        fputs(", \"topic\": ", idx);
        json_str(idx, g->topic);
        if (g->expect)
            fprintf(idx, ", \"expect\": %s", g->expect);
        else {
            fputs(", \"reason\": ", idx);
            json_str(idx, g->reason);
        }
        fprintf(idx, "}%s\n", i + 1 < golden_count ? "," : "");
    }
    fputs("]\n", idx);
    if (fclose(idx))
        return 1;
    printf("golden_write: %zu messages in %s\n", golden_count, argv[1]);
    return 0;
}
