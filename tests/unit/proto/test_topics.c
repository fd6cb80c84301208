/* libicefarm-proto topics: name and serial validation, topic builders, levels. */
#include <mosquitto.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "icefarm/topics.h"

static void test_name_valid(void **state)
{
    assert_true(ifm_name_valid("a", IFM_NAME_MAX));
    assert_true(ifm_name_valid("alice", IFM_NAME_MAX));
    assert_true(ifm_name_valid("quo\"te", IFM_NAME_MAX));
    assert_true(ifm_name_valid("back\\slash", IFM_NAME_MAX));
    assert_true(ifm_name_valid("'single'", IFM_NAME_MAX));
    assert_true(ifm_name_valid("with space", IFM_NAME_MAX));
    assert_true(ifm_name_valid(" ", IFM_NAME_MAX));
    assert_true(ifm_name_valid("\xc3\xa9l\xc3\xa8ve", IFM_NAME_MAX)); /* UTF-8 */
    assert_true(ifm_name_valid("a$", IFM_NAME_MAX));                  /* '$' only matters first */
    assert_true(ifm_name_valid("a.b-c_d:e@f", IFM_NAME_MAX));
    assert_true(ifm_name_valid("worker", IFM_NAME_MAX)); /* reserved only for serials */

    assert_false(ifm_name_valid(NULL, IFM_NAME_MAX));
    assert_false(ifm_name_valid("", IFM_NAME_MAX));
    assert_false(ifm_name_valid("a/b", IFM_NAME_MAX));
    assert_false(ifm_name_valid("/", IFM_NAME_MAX));
    assert_false(ifm_name_valid("a/", IFM_NAME_MAX));
    assert_false(ifm_name_valid("/a", IFM_NAME_MAX));
    assert_false(ifm_name_valid("+", IFM_NAME_MAX));
    assert_false(ifm_name_valid("a+b", IFM_NAME_MAX));
    assert_false(ifm_name_valid("#", IFM_NAME_MAX));
    assert_false(ifm_name_valid("a#", IFM_NAME_MAX));
    assert_false(ifm_name_valid("$SYS", IFM_NAME_MAX));
    assert_false(ifm_name_valid("$", IFM_NAME_MAX));

    /* length: at most max - 1 bytes */
    char buf[IFM_NAME_MAX + 2];
    memset(buf, 'n', sizeof buf);
    buf[IFM_NAME_MAX - 1] = '\0';
    assert_true(ifm_name_valid(buf, IFM_NAME_MAX));
    buf[IFM_NAME_MAX - 1] = 'n';
    buf[IFM_NAME_MAX] = '\0';
    assert_false(ifm_name_valid(buf, IFM_NAME_MAX));
    buf[IFM_NAME_MAX + 1] = '\0';
    buf[IFM_NAME_MAX] = 'n';
    assert_false(ifm_name_valid(buf, IFM_NAME_MAX));
    assert_true(ifm_name_valid("ab", 3));
    assert_false(ifm_name_valid("abc", 3));
    assert_false(ifm_name_valid("a", 1));
    assert_false(ifm_name_valid("a", 0));
    /* a '/' beyond the length limit does not matter: the name is too long anyway */
    assert_false(ifm_name_valid("abc/", 3));
}

/* A valid name must be usable as a topic level: MQTT topics are UTF-8 without
 * control characters, and libmosquitto refuses to publish anything else. */
static void test_name_is_topic_level(void **state)
{
    const char *names[] = { "a\x01",   "tab\there", "nl\n",   "\x7f",
                            "\xff",    "\xc3",      "a\xc3(", "\xed\xa0\x80" /* UTF-16 surrogate */,
                            "\xc2\x85" /* C1 control */ };
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        char topic[IFM_TOPIC_MAX];
        snprintf(topic, sizeof topic, "icefarm/%s/cmd", names[i]);
        bool mqtt_ok = mosquitto_validate_utf8(topic, (int)strlen(topic)) == MOSQ_ERR_SUCCESS;
        assert_false(mqtt_ok); /* (the premise) */
        if (ifm_name_valid(names[i], IFM_NAME_MAX))
            fail_msg("name %zu (\"%s\") is accepted but cannot be an MQTT topic level", i, names[i]);
        if (ifm_serial_valid(names[i]))
            fail_msg("serial %zu is accepted but cannot be an MQTT topic level", i);
    }
    /* the good ones really are good topics */
    const char *good[] = { "quo\"te", "back\\slash", "\xc3\xa9l\xc3\xa8ve", "a b", "a$" };
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        char topic[IFM_TOPIC_MAX];
        assert_int_equal(ifm_topic_board(topic, sizeof topic, good[i], "cmd"), 0);
        assert_int_equal(mosquitto_validate_utf8(topic, (int)strlen(topic)), MOSQ_ERR_SUCCESS);
        assert_int_equal(mosquitto_pub_topic_check(topic), MOSQ_ERR_SUCCESS);
    }
}

static void test_serial_valid(void **state)
{
    assert_true(ifm_serial_valid("E6614C311B4B8F2C"));
    assert_true(ifm_serial_valid("a\"b\\c"));
    assert_true(ifm_serial_valid("Worker")); /* case matters */
    assert_true(ifm_serial_valid("workers"));
    assert_true(ifm_serial_valid("farm2"));
    assert_true(ifm_serial_valid("ctl "));
    const char *reserved[] = { "worker", "ctl", "client", "lease", "farm" };
    for (size_t i = 0; i < sizeof reserved / sizeof *reserved; i++)
        assert_false(ifm_serial_valid(reserved[i]));
    assert_false(ifm_serial_valid(NULL));
    assert_false(ifm_serial_valid(""));
    assert_false(ifm_serial_valid("a/b"));
    assert_false(ifm_serial_valid("a+"));
    assert_false(ifm_serial_valid("#"));
    assert_false(ifm_serial_valid("$x"));
    char buf[IFM_SERIAL_MAX + 1];
    memset(buf, 's', sizeof buf);
    buf[IFM_SERIAL_MAX - 1] = '\0';
    assert_true(ifm_serial_valid(buf));
    buf[IFM_SERIAL_MAX - 1] = 's';
    buf[IFM_SERIAL_MAX] = '\0';
    assert_false(ifm_serial_valid(buf));
}

static void test_builders(void **state)
{
    char t[IFM_TOPIC_MAX];
    assert_int_equal(ifm_topic_board(t, sizeof t, "SER1", "cmd"), 0);
    assert_string_equal(t, "icefarm/SER1/cmd");
    assert_int_equal(ifm_topic_board(t, sizeof t, "SER1", "event"), 0);
    assert_string_equal(t, "icefarm/SER1/event");
    assert_int_equal(ifm_topic_board(t, sizeof t, "a\"b", "state"), 0);
    assert_string_equal(t, "icefarm/a\"b/state");
    assert_int_equal(ifm_topic_worker(t, sizeof t, "w1", "state"), 0);
    assert_string_equal(t, "icefarm/worker/w1/state");
    assert_int_equal(ifm_topic_worker(t, sizeof t, "w1", "cmd"), 0);
    assert_string_equal(t, "icefarm/worker/w1/cmd");
    assert_int_equal(ifm_topic_client(t, sizeof t, "alice", "reply"), 0);
    assert_string_equal(t, "icefarm/client/alice/reply");
    assert_int_equal(ifm_topic_client(t, sizeof t, "alice", "event"), 0);
    assert_string_equal(t, "icefarm/client/alice/event");
    assert_int_equal(ifm_topic_ctl_req(t, sizeof t, "reserve"), 0);
    assert_string_equal(t, "icefarm/ctl/req/reserve");
    assert_int_equal(ifm_topic_lease(t, sizeof t, "SER1"), 0);
    assert_string_equal(t, "icefarm/lease/SER1");

    /* names that do not validate */
    strcpy(t, "untouched?");
    assert_int_equal(ifm_topic_board(t, sizeof t, "worker", "cmd"), -1);
    assert_int_equal(ifm_topic_board(t, sizeof t, "a/b", "cmd"), -1);
    assert_int_equal(ifm_topic_board(t, sizeof t, "", "cmd"), -1);
    assert_int_equal(ifm_topic_board(t, sizeof t, NULL, "cmd"), -1);
    assert_int_equal(ifm_topic_lease(t, sizeof t, "ctl"), -1);
    assert_int_equal(ifm_topic_lease(t, sizeof t, "+"), -1);
    assert_int_equal(ifm_topic_worker(t, sizeof t, "#", "state"), -1);
    assert_int_equal(ifm_topic_worker(t, sizeof t, "$w", "state"), -1);
    assert_int_equal(ifm_topic_client(t, sizeof t, "a/b", "reply"), -1);
    assert_int_equal(ifm_topic_client(t, sizeof t, "", "reply"), -1);
    assert_int_equal(ifm_topic_ctl_req(t, sizeof t, "re+serve"), -1);
    assert_int_equal(ifm_topic_ctl_req(t, sizeof t, ""), -1);
    assert_string_equal(t, "untouched?");
    /* workers and clients may be called like reserved words; they live under their own prefix */
    assert_int_equal(ifm_topic_worker(t, sizeof t, "worker", "state"), 0);
    assert_string_equal(t, "icefarm/worker/worker/state");

    /* capacity: exact fit, one short */
    const char *want = "icefarm/SER1/cmd";
    size_t need = strlen(want) + 1;
    assert_int_equal(ifm_topic_board(t, need, "SER1", "cmd"), 0);
    assert_string_equal(t, want);
    assert_int_equal(ifm_topic_board(t, need - 1, "SER1", "cmd"), -1);
    assert_int_equal(ifm_topic_lease(t, strlen("icefarm/lease/S") + 1, "S"), 0);
    assert_int_equal(ifm_topic_lease(t, strlen("icefarm/lease/S"), "S"), -1);
    assert_int_equal(ifm_topic_client(t, 1, "alice", "reply"), -1);

    /* the longest names fit IFM_TOPIC_MAX */
    char name[IFM_NAME_MAX];
    memset(name, 'n', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    assert_int_equal(ifm_topic_client(t, sizeof t, name, "reply"), 0);
    assert_int_equal(ifm_topic_worker(t, sizeof t, name, "state"), 0);
    char serial[IFM_SERIAL_MAX];
    memset(serial, 's', sizeof serial - 1);
    serial[sizeof serial - 1] = '\0';
    assert_int_equal(ifm_topic_board(t, sizeof t, serial, "event"), 0);
    assert_int_equal(ifm_topic_lease(t, sizeof t, serial), 0);

    /* the constant topics */
    assert_string_equal(IFM_TOPIC_CTL_STATE, "icefarm/ctl/state");
    assert_int_equal(mosquitto_sub_topic_check(IFM_TOPIC_CTL_REQ_ALL), MOSQ_ERR_SUCCESS);
    assert_int_equal(mosquitto_sub_topic_check(IFM_TOPIC_BOARD_STATE_ALL), MOSQ_ERR_SUCCESS);
    assert_int_equal(mosquitto_sub_topic_check(IFM_TOPIC_WORKER_STATE_ALL), MOSQ_ERR_SUCCESS);
    assert_int_equal(mosquitto_pub_topic_check(IFM_TOPIC_AVAILABLE), MOSQ_ERR_SUCCESS);
    /* a board's state topic matches the board filter; a worker's does not collide */
    bool match = false;
    assert_int_equal(ifm_topic_board(t, sizeof t, "SER1", "state"), 0);
    mosquitto_topic_matches_sub(IFM_TOPIC_BOARD_STATE_ALL, t, &match);
    assert_true(match);
    assert_int_equal(ifm_topic_worker(t, sizeof t, "w1", "state"), 0);
    mosquitto_topic_matches_sub(IFM_TOPIC_BOARD_STATE_ALL, t, &match);
    assert_false(match);
    mosquitto_topic_matches_sub(IFM_TOPIC_WORKER_STATE_ALL, t, &match);
    assert_true(match);
}

static void test_topic_level(void **state)
{
    char out[32];
    const char *t = "icefarm/SER1/cmd";
    assert_int_equal(ifm_topic_level(t, 0, out, sizeof out), 0);
    assert_string_equal(out, "icefarm");
    assert_int_equal(ifm_topic_level(t, 1, out, sizeof out), 0);
    assert_string_equal(out, "SER1");
    assert_int_equal(ifm_topic_level(t, 2, out, sizeof out), 0);
    assert_string_equal(out, "cmd");
    assert_int_equal(ifm_topic_level(t, 3, out, sizeof out), -1);
    assert_int_equal(ifm_topic_level(t, 100, out, sizeof out), -1);
    /* capacity: "SER1" needs 5 */
    assert_int_equal(ifm_topic_level(t, 1, out, 5), 0);
    assert_string_equal(out, "SER1");
    assert_int_equal(ifm_topic_level(t, 1, out, 4), -1);
    assert_int_equal(ifm_topic_level(t, 1, out, 0), -1);
    /* empty levels */
    assert_int_equal(ifm_topic_level("a//b", 1, out, sizeof out), 0);
    assert_string_equal(out, "");
    assert_int_equal(ifm_topic_level("a//b", 2, out, sizeof out), 0);
    assert_string_equal(out, "b");
    assert_int_equal(ifm_topic_level("a/", 1, out, sizeof out), 0);
    assert_string_equal(out, "");
    assert_int_equal(ifm_topic_level("/a", 0, out, sizeof out), 0);
    assert_string_equal(out, "");
    assert_int_equal(ifm_topic_level("", 0, out, sizeof out), 0);
    assert_string_equal(out, "");
    assert_int_equal(ifm_topic_level("", 1, out, sizeof out), -1);
    /* a quoted serial comes back intact */
    assert_int_equal(ifm_topic_level("icefarm/a\"b\\c/event", 1, out, sizeof out), 0);
    assert_string_equal(out, "a\"b\\c");
    /* request verb from a ctl request topic */
    char topic[IFM_TOPIC_MAX];
    assert_int_equal(ifm_topic_ctl_req(topic, sizeof topic, "reserve_serials"), 0);
    assert_int_equal(ifm_topic_level(topic, 3, out, sizeof out), 0);
    assert_string_equal(out, "reserve_serials");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_name_valid),   cmocka_unit_test(test_name_is_topic_level),
        cmocka_unit_test(test_serial_valid), cmocka_unit_test(test_builders),
        cmocka_unit_test(test_topic_level),
    };
    return cmocka_run_group_tests_name("proto_topics", tests, NULL, NULL);
}
