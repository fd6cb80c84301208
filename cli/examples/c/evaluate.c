/* The smallest useful libicefarm program: reserve one pulse-count board,
 * evaluate the bitstreams named on the command line, print the counts, end.
 * It uses only the installed API (<icefarm/icefarm.h>, nothing of msgpack-c
 * or libmosquitto):
 *
 *   cc evaluate.c $(pkg-config --cflags --libs icefarm) -o evaluate
 *   ICEFARM_BROKER=mqtt://127.0.0.1:1883 ./evaluate a.bin b.bin
 *
 * Prints "SERIAL FILE PULSES" per bitstream (or "SERIAL FILE failed: why").
 */
#include <stdio.h>
#include <stdlib.h>

#include <icefarm/icefarm.h>

typedef struct {
    size_t want, got;
} progress;

static void on_results(icefarm *f, const icefarm_event *ev, void *arg)
{
    (void)f;
    progress *p = arg;
    for (size_t i = 0; i < icefarm_event_nresults(ev); i++) {
        icefarm_result r;
        if (icefarm_event_result(ev, i, &r, NULL, 0) != 0)
            continue;
        if (r.type == ICEFARM_VALUE_PULSES)
            printf("%s %s %lld\n", icefarm_event_serial(ev), r.id, (long long)r.pulses);
        else
            printf("%s %s failed: %s\n", icefarm_event_serial(ev), r.id, r.error);
        p->got++;
    }
}

static bool done(void *arg)
{
    progress *p = arg;
    return p->got >= p->want;
}

typedef struct {
    icefarm *f;
    const char *serial;
} board;

static bool ready(void *arg)
{
    board *b = arg;
    return icefarm_get_board_state(b->f, b->serial) == ICEFARM_BOARD_RESERVED;
}

int main(int argc, char **argv)
{
    char why[256];
    icefarm *f;
    icefarm_opts opts = { .name = "example-evaluate" };
    int rc = icefarm_connect(&opts, &f, why, sizeof why);
    if (rc) {
        fprintf(stderr, "connect: %s (%s)\n", why, icefarm_strerror(rc));
        return 1;
    }
    char(*serials)[ICEFARM_SERIAL_MAX];
    size_t n;
    rc = icefarm_reserve(f, 1, "pulsecount", NULL, 0, 30000, &serials, &n, why, sizeof why);
    if (rc) {
        fprintf(stderr, "reserve: %s (%s)\n", why, icefarm_strerror(rc));
        icefarm_close(f);
        return 1;
    }
    board b = { f, serials[0] };
    if ((rc = icefarm_run_until(f, ready, &b, 60000)) != 0)
        fprintf(stderr, "board %s not ready: %s\n", serials[0], icefarm_strerror(rc));
    progress p = { (size_t)argc - 1, 0 };
    if ((rc = icefarm_on(f, "results", on_results, &p)) != 0) {
        fprintf(stderr, "results handler: %s\n", icefarm_strerror(rc));
        icefarm_end_all(f, NULL, why, sizeof why);
        free(serials);
        icefarm_close(f);
        return 1;
    }
    for (int i = 1; i < argc; i++) {
        static unsigned char buf[ICEFARM_BITSTREAM_SIZE];
        FILE *fp = fopen(argv[i], "rb");
        size_t len = fp ? fread(buf, 1, sizeof buf, fp) : 0;
        if (fp)
            fclose(fp);
        icefarm_file file = { argv[i], buf, len };
        if ((rc = icefarm_evaluate(f, serials[0], "example", &file, 1)) != 0) {
            fprintf(stderr, "%s: %s\n", argv[i], icefarm_strerror(rc));
            p.want--;
        }
    }
    rc = icefarm_run_until(f, done, &p, 120000);
    if (rc)
        fprintf(stderr, "results: %s\n", icefarm_strerror(rc));
    icefarm_end_all(f, NULL, why, sizeof why);
    free(serials);
    icefarm_close(f);
    return rc ? 1 : 0;
}
