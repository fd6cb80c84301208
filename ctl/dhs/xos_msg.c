/* The xos message catalogue: names, argument counts and
 * which arguments are names or handles. See xos.h. */
#include <stdio.h>
#include <string.h>

#include "xos.h"

enum {
    A0_NAME = 1,     /* argv[0] is a device/operation name */
    A1_NAME = 2,     /* argv[1] is a name (hwName, DHS) */
    A1_HANDLE = 4,   /* argv[1] is an operation handle */
    REST_AFTER1 = 8, /* contents = the text after argv[0] */
    REST_AFTER2 = 16 /* contents = the text after argv[1] */
};

typedef struct {
    xos_type type;
    const char *name;
    int min, max; /* arguments; max -1: any number */
    int flags;
} entry;

static const entry catalogue[] = {
    { XOS_STOC_SEND_CLIENT_TYPE, "stoc_send_client_type", 0, 1, 0 },
    { XOS_STOH_REGISTER_REAL_MOTOR, "stoh_register_real_motor", 2, 2, A0_NAME | A1_NAME },
    { XOS_STOH_REGISTER_PSEUDO_MOTOR, "stoh_register_pseudo_motor", 2, 2, A0_NAME | A1_NAME },
    { XOS_STOH_REGISTER_ION_CHAMBER, "stoh_register_ion_chamber", 5, 5, A0_NAME },
    { XOS_STOH_REGISTER_SHUTTER, "stoh_register_shutter", 2, 3, A0_NAME },
    { XOS_STOH_REGISTER_OPERATION, "stoh_register_operation", 2, 2, A0_NAME | A1_NAME },
    { XOS_STOH_REGISTER_ENCODER, "stoh_register_encoder", 2, 2, A0_NAME | A1_NAME },
    { XOS_STOH_REGISTER_STRING, "stoh_register_string", 2, 2, A0_NAME | A1_NAME },
    { XOS_STOH_REGISTER_OBJECT, "stoh_register_object", 2, 2, A0_NAME | A1_NAME },
    { XOS_STOH_SET_MOTOR_DEPENDENCY, "stoh_set_motor_dependency", 1, -1, A0_NAME },
    { XOS_STOH_SET_MOTOR_CHILDREN, "stoh_set_motor_children", 1, -1, A0_NAME },
    { XOS_STOH_START_OPERATION, "stoh_start_operation", 2, -1, A0_NAME | A1_HANDLE },
    { XOS_STOH_STOP_OPERATION, "stoh_stop_operation", 1, -1, A0_NAME },
    { XOS_STOH_ABORT_ALL, "stoh_abort_all", 0, 1, 0 },
    { XOS_STOH_SET_STRING, "stoh_set_string", 1, -1, A0_NAME | REST_AFTER1 },
    { XOS_STOH_CONFIGURE_STRING, "stoh_configure_string", 2, -1, A0_NAME | A1_NAME | REST_AFTER2 },
    { XOS_STOH_CONFIGURE_OPERATION, "stoh_configure_operation", 2, 2, A0_NAME | A1_NAME },
    { XOS_STOH_START_MOTOR_MOVE, "stoh_start_motor_move", 2, 2, A0_NAME },
    { XOS_STOH_ABORT_MOTOR_MOVE, "stoh_abort_motor_move", 1, 2, A0_NAME },
    { XOS_STOH_SET_MOTOR_POSITION, "stoh_set_motor_position", 2, 2, A0_NAME },
    { XOS_STOH_CORRECT_MOTOR_POSITION, "stoh_correct_motor_position", 2, 2, A0_NAME },
    { XOS_STOH_CONFIGURE_REAL_MOTOR, "stoh_configure_real_motor", 16, 16, A0_NAME },
    { XOS_STOH_CONFIGURE_PSEUDO_MOTOR, "stoh_configure_pseudo_motor", 10, 10, A0_NAME },
    { XOS_STOH_START_OSCILLATION, "stoh_start_oscillation", 4, 5, A0_NAME },
    { XOS_STOH_START_VECTOR_MOVE, "stoh_start_vector_move", 1, -1, 0 },
    { XOS_STOH_STOP_VECTOR_MOVE, "stoh_stop_vector_move", 1, -1, 0 },
    { XOS_STOH_CHANGE_VECTOR_SPEED, "stoh_change_vector_speed", 1, -1, 0 },
    { XOS_STOH_SET_SHUTTER_STATE, "stoh_set_shutter_state", 2, 2, A0_NAME },
    { XOS_STOH_READ_ION_CHAMBERS, "stoh_read_ion_chambers", 3, -1, 0 },
    { XOS_STOH_GET_ENCODER, "stoh_get_encoder", 1, 1, A0_NAME },
    { XOS_STOH_SET_ENCODER, "stoh_set_encoder", 2, 2, A0_NAME },
    { XOS_STOH_CONFIGURE_ENCODER, "stoh_configure_encoder", 1, -1, A0_NAME },
    { XOS_STOH_CONFIGURE_ION_CHAMBER, "stoh_configure_ion_chamber", 1, -1, A0_NAME },
    { XOS_STOH_CONFIGURE_SHUTTER, "stoh_configure_shutter", 1, -1, A0_NAME },
    { XOS_STOH_CONFIGURE_OBJECT, "stoh_configure_object", 1, -1, A0_NAME },
    { XOS_HTOS_CLIENT_IS_HARDWARE, "htos_client_is_hardware", 1, 2, A0_NAME },
    /* the Tcl client's spelling; DCSS reads only the second word either way */
    { XOS_HTOS_CLIENT_IS_HARDWARE, "htos_client_type_is_hardware", 1, 2, A0_NAME },
    { XOS_HTOS_OPERATION_UPDATE, "htos_operation_update", 2, -1, A0_NAME | A1_HANDLE },
    { XOS_HTOS_OPERATION_COMPLETED, "htos_operation_completed", 3, -1, A0_NAME | A1_HANDLE },
    { XOS_HTOS_START_OPERATION, "htos_start_operation", 2, -1, A0_NAME | A1_HANDLE },
    { XOS_HTOS_SET_STRING_COMPLETED, "htos_set_string_completed", 2, -1, A0_NAME | REST_AFTER2 },
    { XOS_HTOS_SEND_CONFIGURATION, "htos_send_configuration", 1, 1, A0_NAME },
    { XOS_HTOS_CONFIGURE_DEVICE, "htos_configure_device", 1, -1, A0_NAME },
    { XOS_HTOS_MOTOR_MOVE_STARTED, "htos_motor_move_started", 2, 2, A0_NAME },
    { XOS_HTOS_UPDATE_MOTOR_POSITION, "htos_update_motor_position", 3, 3, A0_NAME },
    { XOS_HTOS_MOTOR_MOVE_COMPLETED, "htos_motor_move_completed", 3, 3, A0_NAME },
    { XOS_HTOS_REPORT_SHUTTER_STATE, "htos_report_shutter_state", 2, 3, A0_NAME },
    { XOS_HTOS_REPORT_ION_CHAMBERS, "htos_report_ion_chambers", 1, -1, 0 },
    { XOS_HTOS_GET_ENCODER_COMPLETED, "htos_get_encoder_completed", 3, 3, A0_NAME },
    { XOS_HTOS_SET_ENCODER_COMPLETED, "htos_set_encoder_completed", 3, 3, A0_NAME },
    { XOS_HTOS_NOTE, "htos_note", 0, -1, 0 },
    { XOS_HTOS_LOG, "htos_log", 2, -1, 0 },
};

#define NENTRIES (sizeof catalogue / sizeof catalogue[0])

const char *xos_type_name(xos_type t)
{
    for (size_t i = 0; i < NENTRIES; i++)
        if (catalogue[i].type == t)
            return catalogue[i].name;
    return NULL;
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Points past `n` white-space separated words of `p` and the single separator
 * after them; NULL if the text has fewer words. */
static char *skip_words(char *p, int n)
{
    for (int i = 0; i < n; i++) {
        while (*p && is_space(*p))
            p++;
        if (!*p)
            return NULL;
        while (*p && !is_space(*p))
            p++;
    }
    return p;
}

int xos_parse(char *text, xos_msg *m, xos_err *err)
{
    memset(m, 0, sizeof *m);
    m->type = XOS_UNKNOWN;
    char *p = text;
    while (*p && is_space(*p))
        p++;
    size_t nlen = 0;
    while (p[nlen] && !is_space(p[nlen]))
        nlen++;
    const entry *e = NULL;
    for (size_t i = 0; i < NENTRIES && nlen; i++)
        if (strlen(catalogue[i].name) == nlen && memcmp(catalogue[i].name, p, nlen) == 0)
            e = &catalogue[i];
    if (!e) {
        if (xos_tokenize(text, &m->words, err) == 0 && m->words.n > 0)
            m->name = m->words.w[0];
        snprintf(err->msg, sizeof err->msg, "unknown message \"%.*s\"", (int)(nlen > 40 ? 40 : nlen), p);
        return -1;
    }
    /* Contents messages: split only the fixed words, keep the rest as it was. */
    if (e->flags & (REST_AFTER1 | REST_AFTER2)) {
        int fixed = 1 + ((e->flags & REST_AFTER1) ? 1 : 2);
        char *rest = skip_words(p, fixed);
        if (rest && *rest) {
            *rest = '\0';
            m->rest = rest + 1;
        } else {
            m->rest = "";
        }
    }
    if (xos_tokenize(text, &m->words, err))
        return -1;
    m->type = e->type;
    m->name = e->name;
    m->argc = m->words.n - 1;
    m->argv = m->words.w + 1;
    if (m->argc < e->min || (e->max >= 0 && m->argc > e->max)) {
        if (e->max < 0)
            snprintf(err->msg, sizeof err->msg, "%s needs at least %d arguments, got %d", e->name, e->min, m->argc);
        else if (e->min == e->max)
            snprintf(err->msg, sizeof err->msg, "%s needs %d arguments, got %d", e->name, e->min, m->argc);
        else
            snprintf(err->msg, sizeof err->msg, "%s needs %d to %d arguments, got %d", e->name, e->min, e->max,
                     m->argc);
        return -1;
    }
    if ((e->flags & A0_NAME) && !xos_name_valid(m->argv[0])) {
        snprintf(err->msg, sizeof err->msg, "%s: \"%.40s\" is not a valid name (1..%d Tcl-safe characters)", e->name,
                 m->argv[0], XOS_NAME_MAX);
        return -1;
    }
    if ((e->flags & A1_NAME) && !xos_name_valid(m->argv[1])) {
        snprintf(err->msg, sizeof err->msg, "%s: \"%.40s\" is not a valid name (1..%d Tcl-safe characters)", e->name,
                 m->argv[1], XOS_NAME_MAX);
        return -1;
    }
    if ((e->flags & A1_HANDLE) && (!xos_word_safe(m->argv[1]) || strlen(m->argv[1]) > XOS_HANDLE_MAX)) {
        snprintf(err->msg, sizeof err->msg, "%s: \"%.40s\" is not a valid handle (1..%d Tcl-safe characters)", e->name,
                 m->argv[1], XOS_HANDLE_MAX);
        return -1;
    }
    return 0;
}
