/* The USB/IP client's descriptor parser and CDC ACM discovery (cli/lib/
 * usbip_desc.h): the pico-ice firmware's two functions by IAD, Linux g_serial's
 * ACM configuration (value 2, no IAD: found through the Union descriptor), a
 * data interface whose bulk pair is in alternate setting 1, and malformed
 * descriptors rejected with a reason. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "usbip_desc.h"

/* pico-ice firmware (as wrk/sim/sim_desc.c builds it, written out by hand) */
static const uint8_t pico_ice[] = { 9, 2, 0, 0, 5, 1, 0, 0x80, 250,
                                    /* CDC0 */
                                    8, 0x0b, 0, 2, 2, 2, 0, 4, 9, 4, 0, 0, 1, 2, 2, 0, 4, 5, 0x24, 0, 0x20, 1, 5, 0x24,
                                    1, 0, 1, 4, 0x24, 2, 2, 5, 0x24, 6, 0, 1, 7, 5, 0x81, 3, 8, 0, 16, 9, 4, 1, 0, 2,
                                    0x0a, 0, 0, 0, 7, 5, 0x02, 2, 64, 0, 0, 7, 5, 0x82, 2, 64, 0, 0,
                                    /* CDC1 */
                                    8, 0x0b, 2, 2, 2, 2, 0, 5, 9, 4, 2, 0, 1, 2, 2, 0, 5, 5, 0x24, 0, 0x20, 1, 5, 0x24,
                                    1, 0, 3, 4, 0x24, 2, 2, 5, 0x24, 6, 2, 3, 7, 5, 0x83, 3, 8, 0, 16, 9, 4, 3, 0, 2,
                                    0x0a, 0, 0, 0, 7, 5, 0x04, 2, 64, 0, 0, 7, 5, 0x84, 2, 64, 0, 0,
                                    /* DFU, two alternate settings */
                                    9, 4, 4, 0, 0, 0xfe, 1, 2, 6, 9, 0x21, 0x0d, 0xe8, 3, 0, 0x10, 0x10, 1, 9, 4, 4, 1,
                                    0, 0xfe, 1, 2, 7, 9, 0x21, 0x0d, 0xe8, 3, 0, 0x10, 0x10, 1 };

/* Linux g_serial use_acm=1 (configuration value 2), high speed: no IAD */
static const uint8_t g_serial[] = { 9, 2, 0,    0, 2,    2,    4, 0xc0, 1, 9, 4, 0,    0,    1, 2, 2,    1,
                                    0, 5, 0x24, 0, 0x10, 1,    5, 0x24, 1, 0, 1, 4,    0x24, 2, 2, 5,    0x24,
                                    6, 0, 1,    7, 5,    0x83, 3, 10,   0, 9, 9, 4,    1,    0, 2, 0x0a, 0,
                                    0, 0, 7,    5, 0x81, 2,    0, 2,    0, 7, 5, 0x02, 2,    0, 2, 0 };

static void fix_total(uint8_t *cfg, size_t len)
{
    cfg[2] = (uint8_t)len;
    cfg[3] = (uint8_t)(len >> 8);
}

static void test_pico_ice(void **state)
{
    (void)state;
    uint8_t cfg[sizeof pico_ice];
    memcpy(cfg, pico_ice, sizeof cfg);
    fix_total(cfg, sizeof cfg);
    usbc_config c;
    ifm_err err;
    assert_int_equal(usbc_parse_config(cfg, sizeof cfg, &c, &err), 0);
    assert_int_equal(c.value, 1);
    assert_int_equal(c.ncdc, 2);
    assert_int_equal(c.cdc[0].comm_iface, 0);
    assert_int_equal(c.cdc[0].data_iface, 1);
    assert_true(c.cdc[0].via_iad);
    assert_true(c.cdc[0].has_notify);
    assert_int_equal(c.cdc[0].notify.addr, 0x81);
    assert_int_equal(c.cdc[0].in.addr, 0x82);
    assert_int_equal(c.cdc[0].out.addr, 0x02);
    assert_int_equal(c.cdc[0].istr, 4);
    assert_int_equal(c.cdc[1].comm_iface, 2);
    assert_int_equal(c.cdc[1].data_iface, 3);
    assert_int_equal(c.cdc[1].in.addr, 0x84);
    assert_int_equal(c.cdc[1].out.addr, 0x04);
    assert_ptr_equal(usbc_cdc_by_comm(&c, 2), &c.cdc[1]);
    assert_null(usbc_cdc_by_comm(&c, 4));
}

static void test_g_serial(void **state)
{
    (void)state;
    usbc_config c;
    ifm_err err;
    uint8_t cfg[sizeof g_serial];
    memcpy(cfg, g_serial, sizeof cfg);
    fix_total(cfg, sizeof cfg);
    assert_int_equal(usbc_parse_config(cfg, sizeof cfg, &c, &err), 0);
    assert_int_equal(c.value, 2);
    assert_int_equal(c.ncdc, 1);
    assert_false(c.cdc[0].via_iad);
    assert_int_equal(c.cdc[0].data_iface, 1);
    assert_int_equal(c.cdc[0].in.addr, 0x81);
    assert_int_equal(c.cdc[0].in.max_packet, 512);
    assert_int_equal(c.cdc[0].out.addr, 0x02);
    assert_int_equal(c.cdc[0].notify.addr, 0x83);
}

static void test_union_points_elsewhere(void **state)
{
    (void)state;
    /* comm 0, its data interface is 2 (Union), interface 1 is something else;
     * the data interface's bulk pair is in alternate setting 1 */
    uint8_t cfg[] = { 9, 2, 0, 0, 3,    7,    0, 0x80, 50, 9, 4,    0,    0,  0,  2, 2, 0, 0, 5,    0x24, 6,    0, 2, 9,
                      4, 1, 0, 1, 0xff, 0,    0, 0,    7,  5, 0x85, 2,    64, 0,  0, 9, 4, 2, 0,    0,    0x0a, 0, 0, 0,
                      9, 4, 2, 1, 2,    0x0a, 0, 0,    0,  7, 5,    0x86, 2,  64, 0, 0, 7, 5, 0x07, 2,    64,   0, 0 };
    fix_total(cfg, sizeof cfg);
    usbc_config c;
    ifm_err err;
    assert_int_equal(usbc_parse_config(cfg, sizeof cfg, &c, &err), 0);
    assert_int_equal(c.ncdc, 1);
    assert_int_equal(c.cdc[0].data_iface, 2);
    assert_int_equal(c.cdc[0].data_alt, 1);
    assert_false(c.cdc[0].has_notify);
    assert_int_equal(c.cdc[0].in.addr, 0x86);
}

static void test_malformed(void **state)
{
    (void)state;
    usbc_config c;
    ifm_err err;
    uint8_t cfg[sizeof g_serial];
    memcpy(cfg, g_serial, sizeof cfg);
    fix_total(cfg, sizeof cfg);
    /* wTotalLength beyond what was read */
    assert_int_equal(usbc_parse_config(cfg, sizeof cfg - 1, &c, &err), -EBADMSG);
    assert_non_null(strstr(err.msg, "wTotalLength"));
    /* a descriptor running past the end */
    cfg[9] = 200;
    assert_int_equal(usbc_parse_config(cfg, sizeof cfg, &c, &err), -EBADMSG);
    assert_non_null(strstr(err.msg, "offset 9"));
    /* a zero-length descriptor (would loop forever) */
    cfg[9] = 0;
    assert_int_equal(usbc_parse_config(cfg, sizeof cfg, &c, &err), -EBADMSG);
    /* short interface and endpoint descriptors */
    memcpy(cfg, g_serial, sizeof cfg);
    fix_total(cfg, sizeof cfg);
    cfg[9] = 5;
    assert_int_equal(usbc_parse_config(cfg, sizeof cfg, &c, &err), -EBADMSG);
    assert_non_null(strstr(err.msg, "interface descriptor"));
    /* not a configuration */
    cfg[1] = 1;
    assert_int_equal(usbc_parse_config(cfg, sizeof cfg, &c, &err), -EBADMSG);
    usbc_device_desc d;
    const uint8_t dev[18] = { 18, 1, 0, 2, 0xef, 2, 1, 64, 0x09, 0x12, 0xc0, 0xb1, 0, 1, 1, 2, 3, 1 };
    assert_int_equal(usbc_parse_device(dev, 18, &d, &err), 0);
    assert_int_equal(d.vid, 0x1209);
    assert_int_equal(d.pid, 0xb1c0);
    assert_int_equal(d.iSerial, 3);
    assert_int_equal(usbc_parse_device(dev, 17, &d, &err), -EBADMSG);
    char s[16];
    const uint8_t str[] = { 8, 3, 'a', 0, 'b', 0, 'c', 0 };
    assert_int_equal(usbc_parse_string(str, sizeof str, s, sizeof s, &err), 0);
    assert_string_equal(s, "abc");
    const uint8_t odd[] = { 7, 3, 'a', 0, 'b', 0, 'c' };
    assert_int_equal(usbc_parse_string(odd, sizeof odd, s, sizeof s, &err), -EBADMSG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pico_ice),
        cmocka_unit_test(test_g_serial),
        cmocka_unit_test(test_union_points_elsewhere),
        cmocka_unit_test(test_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
