/* The smallest useful libicefarm program: reserve one pulse-count board,
 * evaluate the bitstreams named on the command line, print the counts, end.
 *
 *   cc evaluate.c $(pkg-config --cflags --libs icefarm) -o evaluate
 *   ICEFARM_BROKER=mqtt://127.0.0.1:1883 ./evaluate a.bin b.bin
 */
#include <stdio.h>
#include <stdlib.h>

#include <icefarm/client.h>

typedef struct {
    size_t want, got;
} progress;

static void on_results(icefarm *f, const ifm_event *ev, void *arg)
{
    progress *p = arg;
    for (size_t i = 0; ev->results && i < ev->results->via.array.size; i++) {
        ifm_result r;
        ifm_err err;
        if (ifm_event_result_at(ev, i, &r, NULL, 0, &err) == 0) {
            if (r.type == IFM_VALUE_PULSES)
                printf("%s %s %lld\n", ev->serial, r.id, (long long)r.pulses);
            else
                printf("%s %s failed: %s\n", ev->serial, r.id, r.error);
            p->got++;
        }
    }
}

static bool done(void *arg)
{
    progress *p = arg;
    return p->got >= p->want;
}

static bool ready(void *arg)
{
    void **a = arg;
    return icefarm_board_state(a[0], a[1]) == IFM_BOARD_RESERVED;
}

int main(int argc, char **argv)
{
    char err[256];
    icefarm_opts opts = { .name = "example-evaluate" };
    icefarm *f = icefarm_connect(&opts, err, sizeof err);
    if (!f) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    char(*serials)[IFM_SERIAL_MAX];
    size_t n;
    if (icefarm_reserve(f, 1, "pulsecount", NULL, 0, 30000, &serials, &n, err, sizeof err)) {
        fprintf(stderr, "reserve: %s\n", err);
        icefarm_close(f);
        return 1;
    }
    void *args[2] = { f, serials[0] };
    icefarm_run_until(f, ready, args, 60000);
    progress p = { (size_t)argc - 1, 0 };
    icefarm_on(f, "results", on_results, &p);
    for (int i = 1; i < argc; i++) {
        FILE *fp = fopen(argv[i], "rb");
        static uint8_t buf[IFM_BITSTREAM_SIZE];
        size_t len = fp ? fread(buf, 1, sizeof buf, fp) : 0;
        if (fp)
            fclose(fp);
        ifm_file file = { "", buf, len };
        snprintf(file.id, sizeof file.id, "%s", argv[i]);
        icefarm_evaluate(f, serials[0], "example", &file, 1);
    }
    int rc = icefarm_run_until(f, done, &p, 120000) ? 1 : 0;
    icefarm_end_all(f, NULL, err, sizeof err);
    free(serials);
    icefarm_close(f);
    return rc;
}
