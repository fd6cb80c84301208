/* This machine's vhci_hcd, driven through sysfs as the Linux usbip tool does
 * (tools/usb/usbip/libsrc/vhci_driver.c): find a free port of the right speed,
 * hand it an imported socket (`attach`: "PORT SOCKFD DEVID SPEED"), detach it,
 * read which local device and tty a port became. For icefarm-cli usbip attach.
 *
 * The sysfs root is injectable ($ICEFARM_SYSFS, default /sys) so the logic is
 * tested against a fake directory; so is the record directory the usbip tool
 * reads for `usbip port` ($ICEFARM_VHCI_RUN, default /var/run/vhci_hcd).
 * No state beyond the paths; not thread-safe (one CLI thread). */
#ifndef ICEFARM_CLI_USBIP_VHCI_H
#define ICEFARM_CLI_USBIP_VHCI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    char sysfs[200]; /* "/sys" */
    char dev[300];   /* <sysfs>/devices/platform/vhci_hcd.0 */
    char run[200];   /* /var/run/vhci_hcd */
    int nports;
} vhci;

/* Port states in the status file (drivers/usb/usbip/usbip_common.h). */
enum {
    VHCI_ST_NULL = 4, /* free */
    VHCI_ST_NOTASSIGNED = 5,
    VHCI_ST_USED = 6,
    VHCI_ST_ERROR = 7
};

typedef struct {
    int port;
    bool super; /* on the SuperSpeed hub */
    int status; /* VHCI_ST_* */
    uint32_t devid;
    char local_busid[32]; /* "3-1" when used */
} vhci_port;

/* 0, or a negative errno with a one-line reason naming what to run: -ENOENT
 * (vhci_hcd not loaded), -EACCES (no right to attach: root needed). */
int vhci_open(vhci *v, char *why, size_t whylen);
/* The ports as the status file(s) list them; count, or -errno. */
int vhci_ports(const vhci *v, vhci_port *out, int max);
/* A free port for a device of `speed` (Linux usb_device_speed), or -EBUSY. */
int vhci_free_port(const vhci *v, uint32_t speed);
/* Hands the imported socket `fd` to the kernel on `port`. 0 or -errno with why. */
int vhci_attach(const vhci *v, int port, int fd, uint32_t devid, uint32_t speed, char *why, size_t whylen);
/* A port the kernel freed itself meanwhile (the server closed the connection;
 * vhci then answers EINVAL, "not connected") counts as detached: 0. */
int vhci_detach(const vhci *v, int port, char *why, size_t whylen);
/* What `usbip port` shows: "<host> <port> <busid>" in <run>/port<N>. Best effort. */
void vhci_record(const vhci *v, int port, const char *host, const char *service, const char *busid);
void vhci_unrecord(const vhci *v, int port);
/* The port's state (a port missing from the status file is -ENOENT). */
int vhci_port_get(const vhci *v, int port, vhci_port *out);
/* The tty devices of the device on `port` ("/dev/ttyACM0", in interface order),
 * up to max; count (0: none yet). */
int vhci_ttys(const vhci *v, int port, char (*out)[64], int max);

#endif
