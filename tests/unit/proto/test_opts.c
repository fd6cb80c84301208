/* The daemons' one option table (icefarm/opts.h): precedence, validation,
 * config files (unknown keys are errors), secrets from files, --help and
 * --version. Each case runs ifm_opts_parse() on a real argv, environment and
 * files in a private directory, with stdout and stderr captured. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "icefarm/err.h"
#include "icefarm/opts.h"

static const ifm_opt own[] = {
    { .name = "data", .type = IFM_OPT_TEXT, .arg = "DIR", .def = "./data", .help = "where" },
    { .name = "lease", .type = IFM_OPT_INT, .arg = "S", .def = "3600", .help = "how long", .min = 1, .max = 86400 },
    { .name = "worker-name", .type = IFM_OPT_TEXT, .arg = "ID", .help = "name", .env = "ICEFARM_TEST_WORKER" },
    { 0 },
};
static const ifm_opts_spec spec = {
    .prog = "icefarm-test",
    .about = "A daemon of the tests.",
    .shared = IFM_OPTS_MQTT | IFM_OPTS_METRICS,
    .own = own,
};

static char dir[64];
static char out_text[8192], err_text[8192];

static void path(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/%s", dir, name);
}

static void write_file(const char *name, const char *text, mode_t mode)
{
    char p[128];
    path(p, sizeof p, name);
    unlink(p);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    assert_int_equal(chmod(p, mode), 0);
}

static void slurp(int fd, char *buf, size_t cap)
{
    lseek(fd, 0, SEEK_SET);
    ssize_t n = read(fd, buf, cap - 1);
    buf[n > 0 ? n : 0] = '\0';
}

/* Parses argv (NULL-terminated, argv[0] included) with stdout and stderr
 * captured into out_text and err_text. */
static ifm_opts *parse(int *code, char **argv)
{
    int argc = 0;
    while (argv[argc])
        argc++;
    char po[128], pe[128];
    path(po, sizeof po, "stdout");
    path(pe, sizeof pe, "stderr");
    fflush(stdout);
    fflush(stderr);
    int so = dup(1), se = dup(2);
    int fo = open(po, O_RDWR | O_CREAT | O_TRUNC, 0600), fe = open(pe, O_RDWR | O_CREAT | O_TRUNC, 0600);
    dup2(fo, 1);
    dup2(fe, 2);
    ifm_opts *o = ifm_opts_parse(&spec, argc, argv, code);
    fflush(stdout);
    fflush(stderr);
    dup2(so, 1);
    dup2(se, 2);
    close(so);
    close(se);
    slurp(fo, out_text, sizeof out_text);
    slurp(fe, err_text, sizeof err_text);
    close(fo);
    close(fe);
    return o;
}

#define ARGV(...) ((char *[]){ "icefarm-test", __VA_ARGS__, NULL })

static int setup(void **state)
{
    snprintf(dir, sizeof dir, "/tmp/ifm-opts-XXXXXX");
    assert_non_null(mkdtemp(dir));
    static const char *const vars[] = { "ICEFARM_BROKER",        "ICEFARM_USER",        "ICEFARM_PASSWORD",
                                        "ICEFARM_PASSWORD_FILE", "ICEFARM_LEASE",       "ICEFARM_DATA",
                                        "ICEFARM_CONFIG",        "ICEFARM_KEEPALIVE",   "ICEFARM_CAFILE",
                                        "ICEFARM_LOG_LEVEL",     "ICEFARM_TEST_WORKER", "ICEFARM_METRICS_LISTEN" };
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++)
        unsetenv(vars[i]);
    return 0;
}

static int teardown(void **state)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void defaults_and_precedence(void **state)
{
    int code = -1;
    ifm_opts *o = parse(&code, ARGV("--data", "/flag"));
    assert_non_null(o);
    assert_int_equal(code, 0);
    assert_string_equal(ifm_opts_get(o, "data"), "/flag");
    assert_true(ifm_opts_isset(o, "data"));
    assert_string_equal(ifm_opts_get(o, "broker"), "mqtt://127.0.0.1:1883");
    assert_false(ifm_opts_isset(o, "broker"));
    assert_int_equal(ifm_opts_long(o, "lease"), 3600);
    assert_int_equal(ifm_opts_long(o, "keepalive"), 5);
    assert_null(ifm_opts_get(o, "password"));
    assert_null(ifm_opts_get(o, "metrics-listen"));
    ifm_opts_free(o);

    /* flag > environment > file > default */
    char conf[128];
    path(conf, sizeof conf, "a.conf");
    write_file("a.conf", "# comment\n data = /file \n lease=7 # trailing comment\nkeepalive = 9\nworker-name = w1\n",
               0644);
    setenv("ICEFARM_LEASE", "8", 1);
    setenv("ICEFARM_TEST_WORKER", "w-env", 1);
    o = parse(&code, ARGV("--config", conf, "--lease", "9"));
    assert_non_null(o);
    assert_string_equal(ifm_opts_get(o, "data"), "/file");
    assert_int_equal(ifm_opts_long(o, "lease"), 9);
    assert_int_equal(ifm_opts_long(o, "keepalive"), 9);
    assert_string_equal(ifm_opts_get(o, "worker-name"), "w-env"); /* the option's own variable */
    ifm_opts_free(o);
    setenv("ICEFARM_CONFIG", conf, 1);
    o = parse(&code, ARGV("--keepalive", "6"));
    assert_non_null(o);
    assert_int_equal(ifm_opts_long(o, "lease"), 8);
    assert_int_equal(ifm_opts_long(o, "keepalive"), 6);
    ifm_opts_free(o);
    unsetenv("ICEFARM_CONFIG");
    unsetenv("ICEFARM_LEASE");
    unsetenv("ICEFARM_TEST_WORKER");

    ifm_mqtt_opts mo = { 0 };
    char host[64];
    o = parse(&code, ARGV("--broker", "mqtts://farm.example:9883", "--user", "u", "--cafile", "/ca"));
    assert_non_null(o);
    ifm_opts_mqtt(o, &mo, host, sizeof host);
    assert_string_equal(host, "farm.example");
    assert_int_equal(mo.port, 9883);
    assert_true(mo.tls);
    assert_string_equal(mo.username, "u");
    assert_string_equal(mo.cafile, "/ca");
    assert_null(mo.password);
    assert_int_equal(mo.keepalive, 5);
    ifm_opts_free(o);
}

static void expect_error(char **argv, const char *needle)
{
    int code = -1;
    ifm_opts *o = parse(&code, argv);
    assert_null(o);
    assert_int_equal(code, 2);
    if (!strstr(err_text, needle))
        fail_msg("expected \"%s\" in stderr \"%s\"", needle, err_text);
}

static void bad_values(void **state)
{
    expect_error(ARGV("--lease", "0"), "--lease must be a number from 1 to 86400, not \"0\"");
    expect_error(ARGV("--lease", "12x"), "--lease must be a number");
    expect_error(ARGV("--keepalive", "4"), "--keepalive must be a number from 5 to 3600");
    expect_error(ARGV("--broker", "http://x"), "bad broker address");
    expect_error(ARGV("--metrics-listen", "localhost"), "--metrics-listen must be HOST:PORT");
    expect_error(ARGV("--metrics-listen", "a:99999"), "--metrics-listen must be HOST:PORT");
    expect_error(ARGV("--log-level", "loud"), "--log-level must be debug, info, warn or error");
    expect_error(ARGV("--no-such-option", "1"), "Try 'icefarm-test --help'");
    expect_error(ARGV("--data", "d", "extra"), "unexpected argument extra");
    setenv("ICEFARM_LEASE", "-5", 1);
    expect_error(ARGV("--data", "d"), "ICEFARM_LEASE must be a number");
    unsetenv("ICEFARM_LEASE");
    char missing[128];
    path(missing, sizeof missing, "missing.conf");
    expect_error(ARGV("--config", missing), "cannot open config file");
    int code = -1;
    ifm_opts *o = parse(&code, ARGV("--metrics-listen", ":9100", "--log-level", "warn"));
    assert_non_null(o);
    assert_string_equal(getenv("ICEFARM_LOG_LEVEL"), "warn"); /* the logger reads it */
    ifm_opts_free(o);
    unsetenv("ICEFARM_LOG_LEVEL");
}

static void config_file_errors(void **state)
{
    char conf[128], want[256];
    path(conf, sizeof conf, "b.conf");
    write_file("b.conf", "data = /x\n\nbrokr = mqtt://oops\n", 0644);
    snprintf(want, sizeof want, "icefarm-test: %s:3: unknown key brokr\n", conf);
    expect_error(ARGV("--config", conf), want);
    assert_string_equal(err_text, want); /* exactly one line */
    write_file("b.conf", "config = other.conf\n", 0644);
    snprintf(want, sizeof want, "%s:1: unknown key config", conf);
    expect_error(ARGV("--config", conf), want);
    write_file("b.conf", "lease = 5\nlease = 6\n", 0644);
    snprintf(want, sizeof want, "%s:2: key lease given twice (first on line 1)", conf);
    expect_error(ARGV("--config", conf), want);
    write_file("b.conf", "just words\n", 0644);
    snprintf(want, sizeof want, "%s:1: expected `name = value`", conf);
    expect_error(ARGV("--config", conf), want);
    write_file("b.conf", "lease = 100000\n", 0644);
    snprintf(want, sizeof want, "%s:1: lease must be a number from 1 to 86400", conf);
    expect_error(ARGV("--config", conf), want);
    write_file("b.conf", "data =\n", 0644);
    snprintf(want, sizeof want, "%s:1: key data has no value", conf);
    expect_error(ARGV("--config", conf), want);
    /* A password in a config file others may read is refused... */
    write_file("b.conf", "user = u\npassword = hunter2\n", 0640);
    expect_error(ARGV("--config", conf), "the file holds a password but group or others may read it");
    /* ...and accepted from a private one. */
    write_file("b.conf", "user = u\npassword = hunter2\n", 0600);
    int code = -1;
    ifm_opts *o = parse(&code, ARGV("--config", conf));
    assert_non_null(o);
    assert_string_equal(ifm_opts_get(o, "password"), "hunter2");
    assert_string_equal(err_text, ""); /* no warning: not on the command line */
    ifm_opts_free(o);
}

static void password_sources(void **state)
{
    char pw[128];
    path(pw, sizeof pw, "pw");
    write_file("pw", "s3cret\nsecond line ignored\n", 0600);
    int code = -1;
    ifm_opts *o = parse(&code, ARGV("--password-file", pw));
    assert_non_null(o);
    assert_string_equal(ifm_opts_get(o, "password"), "s3cret");
    assert_string_equal(err_text, "");
    ifm_opts_free(o);
    write_file("pw", "r3ad-only\r\n", 0400);
    setenv("ICEFARM_PASSWORD_FILE", pw, 1);
    o = parse(&code, ARGV("--data", "d"));
    assert_non_null(o);
    assert_string_equal(ifm_opts_get(o, "password"), "r3ad-only");
    ifm_opts_free(o);
    /* the flag beats the environment, whichever of the two it is */
    char arg[] = "from-flag";
    o = parse(&code, ARGV("--password", arg));
    assert_non_null(o);
    assert_string_equal(ifm_opts_get(o, "password"), "from-flag");
    assert_non_null(strstr(err_text, "warning: --password is visible to every local user"));
    assert_string_equal(arg, "*********"); /* blanked in argv */
    ifm_opts_free(o);
    setenv("ICEFARM_PASSWORD", "env-pw", 1);
    expect_error(ARGV("--data", "d"), "ICEFARM_PASSWORD_FILE and ICEFARM_PASSWORD both give the password");
    unsetenv("ICEFARM_PASSWORD_FILE");
    o = parse(&code, ARGV("--data", "d"));
    assert_non_null(o);
    assert_string_equal(ifm_opts_get(o, "password"), "env-pw");
    assert_string_equal(err_text, "");
    ifm_opts_free(o);
    unsetenv("ICEFARM_PASSWORD");
    char a2[] = "x";
    expect_error(ARGV("--password-file", pw, "--password", a2), "both give the password");
    /* files others may read, and files that hold nothing, are refused with the reason */
    write_file("pw", "s3cret\n", 0644);
    expect_error(ARGV("--password-file", pw), "is mode 0644: group or others may read it");
    write_file("pw", "s3cret\n", 0660);
    expect_error(ARGV("--password-file", pw), "0600 or stricter");
    write_file("pw", "\nlater\n", 0600);
    expect_error(ARGV("--password-file", pw), "holds no secret");
    expect_error(ARGV("--password-file", dir), "is not a regular file");
    char missing[128];
    path(missing, sizeof missing, "nope");
    expect_error(ARGV("--password-file", missing), "cannot open");
}

static void secret_read(void **state)
{
    char p[128], buf[8], err[256];
    path(p, sizeof p, "s");
    write_file("s", "1234567\n", 0600);
    assert_int_equal(ifm_secret_read(p, buf, sizeof buf, err, sizeof err), 0);
    assert_string_equal(buf, "1234567");
    write_file("s", "12345678\n", 0600);
    assert_int_equal(ifm_secret_read(p, buf, sizeof buf, err, sizeof err), IFM_EMSGSIZE);
    assert_non_null(strstr(err, "longer than 7 bytes"));
    write_file("s", "1234567", 0600); /* no newline at all: fine */
    assert_int_equal(ifm_secret_read(p, buf, sizeof buf, err, sizeof err), 0);
    write_file("s", "ab\0cd\n", 0600);
    /* write_file stops at the NUL: write the bytes by hand */
    int fd = open(p, O_WRONLY | O_TRUNC);
    assert_int_equal(write(fd, "ab\0cd\n", 6), 6);
    close(fd);
    assert_int_equal(ifm_secret_read(p, buf, sizeof buf, err, sizeof err), IFM_EINVAL);
    assert_non_null(strstr(err, "NUL"));
    write_file("s", "x\n", 0604);
    assert_int_equal(ifm_secret_read(p, buf, sizeof buf, err, sizeof err), IFM_EACCES);
}

static void help_and_version(void **state)
{
    int code = -1;
    assert_null(parse(&code, ARGV("--help")));
    assert_int_equal(code, 0);
    /* generated from the table: every option, its variable and default */
    static const char *const want[] = { "Usage: icefarm-test [OPTIONS]",
                                        "A daemon of the tests.",
                                        "--broker URL",
                                        "[ICEFARM_BROKER, mqtt://127.0.0.1:1883]",
                                        "--password-file FILE",
                                        "[ICEFARM_PASSWORD_FILE]",
                                        "--lease S",
                                        "[ICEFARM_LEASE, 3600]",
                                        "--worker-name ID",
                                        "[ICEFARM_TEST_WORKER]",
                                        "--metrics-listen HOST:PORT",
                                        "--config FILE",
                                        "--log-level LEVEL",
                                        "--version" };
    for (size_t i = 0; i < sizeof want / sizeof *want; i++)
        if (!strstr(out_text, want[i]))
            fail_msg("--help lacks \"%s\":\n%s", want[i], out_text);
    assert_null(strstr(out_text, "--usbip-listen")); /* not picked by this daemon */
    assert_null(strstr(out_text, "--dcss"));
    assert_string_equal(err_text, "");
    assert_null(parse(&code, ARGV("--version")));
    assert_int_equal(code, 0);
    char v[64];
    snprintf(v, sizeof v, "icefarm-test %s\n", ifm_version());
    assert_string_equal(out_text, v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults_and_precedence), cmocka_unit_test(bad_values),  cmocka_unit_test(config_file_errors),
        cmocka_unit_test(password_sources),        cmocka_unit_test(secret_read), cmocka_unit_test(help_and_version),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
