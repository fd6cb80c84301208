/* icefarm-sim-firmware KIND OUT.uf2: writes a simulated firmware image, e.g. the
 * files the demo stack points ICEFARM_DEFAULT / ICEFARM_PULSE_COUNT /
 * ICEFARM_VARIANCE at when it runs without real boards. It is installed in bin/
 * with the daemons, so it answers --version and --help like them. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "icefarm/opts.h"
#include "sim_firmware.h"

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--version") == 0) {
        printf("icefarm-sim-firmware %s\n", ifm_version());
        return 0;
    }
    if (argc == 2 && strcmp(argv[1], "--help") == 0) {
        printf("usage: %s default|pulsecount|variance|unknown OUT.uf2\n"
               "Writes the simulated pico2-ice firmware image of that kind to OUT.uf2 (for a farm\n"
               "with simulated boards: ICEFARM_DEFAULT, ICEFARM_PULSE_COUNT, ICEFARM_VARIANCE).\n",
               argv[0]);
        return 0;
    }
    sim_fw_kind kind;
    if (argc != 3 || sim_fw_kind_from_name(argv[1], &kind) != 0) {
        fprintf(stderr, "usage: %s default|pulsecount|variance|unknown OUT.uf2\n", argv[0]);
        return 2;
    }
    size_t len;
    uint8_t *img = sim_fw_build_uf2(kind, &len);
    if (!img) {
        fprintf(stderr, "%s: out of memory\n", argv[0]);
        return 1;
    }
    FILE *f = fopen(argv[2], "wb");
    int rc = 0;
    if (!f || fwrite(img, 1, len, f) != len) {
        fprintf(stderr, "%s: %s: %s\n", argv[0], argv[2], strerror(errno));
        rc = 1;
    }
    if (f && fclose(f) != 0 && rc == 0) {
        fprintf(stderr, "%s: %s: %s\n", argv[0], argv[2], strerror(errno));
        rc = 1;
    }
    free(img);
    return rc;
}
