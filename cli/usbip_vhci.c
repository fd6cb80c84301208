/* vhci_hcd through sysfs (usbip_vhci.h). */
#include "usbip_vhci.h"
#include "icefarm/err.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int read_file(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    size_t n = 0;
    while (n + 1 < cap) {
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            int e = -errno;
            close(fd);
            return e;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    buf[n] = '\0';
    close(fd);
    return (int)n;
}

static int write_attr(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n = write(fd, text, strlen(text));
    int e = n < 0 ? -errno : (size_t)n == strlen(text) ? 0 : -EIO;
    close(fd);
    return e;
}

int vhci_open(vhci *v, char *why, size_t whylen)
{
    memset(v, 0, sizeof *v);
    const char *sys = getenv("ICEFARM_SYSFS");
    const char *run = getenv("ICEFARM_VHCI_RUN");
    snprintf(v->sysfs, sizeof v->sysfs, "%s", sys && *sys ? sys : "/sys");
    snprintf(v->run, sizeof v->run, "%s", run && *run ? run : "/var/run/vhci_hcd");
    snprintf(v->dev, sizeof v->dev, "%s/devices/platform/vhci_hcd.0", v->sysfs);
    struct stat st;
    if (stat(v->dev, &st) != 0)
        return ifm_failbuf(
            why, whylen, -ENOENT,
            "vhci_hcd is not loaded (no %s): run `sudo modprobe vhci-hcd` (the module comes with Debian's "
            "kernel package, linux-image-amd64; the usbip tools, for `usbip port`, are in package usbip)",
            v->dev);
    char path[400], buf[32];
    snprintf(path, sizeof path, "%s/nports", v->dev);
    if (read_file(path, buf, sizeof buf) > 0)
        v->nports = atoi(buf);
    snprintf(path, sizeof path, "%s/attach", v->dev);
    if (access(path, W_OK) != 0)
        return ifm_failbuf(
            why, whylen, -EACCES,
            "cannot write %s (%s): attaching to the kernel needs root: sudo icefarm-cli usbip attach ... "
            "(no root? `icefarm-cli serial SERIAL --pty` gives the console without the kernel)",
            path, strerror(errno));
    return 0;
}

int vhci_ports(const vhci *v, vhci_port *out, int max)
{
    int n = 0;
    /* one status file per controller: status, status.1, status.2 ... */
    for (int i = 0; i < 16 && n < max; i++) {
        char path[400];
        if (i == 0)
            snprintf(path, sizeof path, "%s/status", v->dev);
        else
            snprintf(path, sizeof path, "%s/status.%d", v->dev, i);
        char *buf = malloc(65536);
        if (!buf)
            return -ENOMEM;
        int r = read_file(path, buf, 65536);
        if (r < 0) {
            free(buf);
            if (i == 0)
                return r;
            break;
        }
        char *save = NULL;
        for (char *line = strtok_r(buf, "\n", &save); line && n < max; line = strtok_r(NULL, "\n", &save)) {
            char hub[4], busid[32];
            unsigned port, sta, spd, sockfd;
            unsigned devid;
            if (sscanf(line, "%3s %u %u %u %x %u %31s", hub, &port, &sta, &spd, &devid, &sockfd, busid) != 7)
                continue; /* the header */
            vhci_port *p = &out[n++];
            p->port = (int)port;
            p->super = strcmp(hub, "ss") == 0;
            p->status = (int)sta;
            p->devid = devid;
            snprintf(p->local_busid, sizeof p->local_busid, "%s", busid);
        }
        free(buf);
    }
    return n;
}

int vhci_port_get(const vhci *v, int port, vhci_port *out)
{
    vhci_port ps[256];
    int n = vhci_ports(v, ps, 256);
    if (n < 0)
        return n;
    for (int i = 0; i < n; i++)
        if (ps[i].port == port) {
            *out = ps[i];
            return 0;
        }
    return -ENOENT;
}

int vhci_free_port(const vhci *v, uint32_t speed)
{
    vhci_port ps[256];
    int n = vhci_ports(v, ps, 256);
    if (n < 0)
        return n;
    bool super = speed >= 5; /* USB_SPEED_SUPER and above go to the SuperSpeed hub */
    for (int i = 0; i < n; i++)
        if (ps[i].status == VHCI_ST_NULL && ps[i].super == super)
            return ps[i].port;
    return -EBUSY;
}

int vhci_attach(const vhci *v, int port, int fd, uint32_t devid, uint32_t speed, char *why, size_t whylen)
{
    char path[400], text[64];
    snprintf(path, sizeof path, "%s/attach", v->dev);
    snprintf(text, sizeof text, "%d %d %u %u", port, fd, devid, speed);
    int rc = write_attr(path, text);
    if (rc == -EACCES || rc == -EPERM)
        return ifm_failbuf(why, whylen, rc, "cannot write %s: %s: attaching to the kernel needs root", path,
                           strerror(-rc));
    if (rc)
        return ifm_failbuf(why, whylen, rc, "vhci_hcd refused the attach of port %d (%s)", port, strerror(-rc));
    return 0;
}

int vhci_detach(const vhci *v, int port, char *why, size_t whylen)
{
    char path[400], text[16];
    snprintf(path, sizeof path, "%s/detach", v->dev);
    snprintf(text, sizeof text, "%d", port);
    int rc = write_attr(path, text);
    vhci_port p;
    /* EINVAL is vhci's "not connected": the kernel let the port go itself
     * between our look at the status and the write (the server closed the
     * connection, as a worker does when its board re-enumerates). Detached. */
    if (rc == -EINVAL && vhci_port_get(v, port, &p) == 0 && p.status != VHCI_ST_USED)
        return 0;
    if (rc)
        return ifm_failbuf(why, whylen, rc, "vhci_hcd refused to detach port %d (%s)", port, strerror(-rc));
    return 0;
}

void vhci_record(const vhci *v, int port, const char *host, const char *service, const char *busid)
{
    mkdir(v->run, 0755);
    char path[300], text[400];
    snprintf(path, sizeof path, "%s/port%d", v->run, port);
    snprintf(text, sizeof text, "%s %s %s\n", host, service, busid);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    ssize_t n = write(fd, text, strlen(text));
    (void)n;
    close(fd);
}

void vhci_unrecord(const vhci *v, int port)
{
    char path[300];
    snprintf(path, sizeof path, "%s/port%d", v->run, port);
    unlink(path);
}

static int by_name(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

int vhci_ttys(const vhci *v, int port, char (*out)[64], int max)
{
    vhci_port p;
    if (vhci_port_get(v, port, &p) != 0 || p.status != VHCI_ST_USED || strcmp(p.local_busid, "0-0") == 0)
        return 0;
    char dir[400];
    snprintf(dir, sizeof dir, "%s/bus/usb/devices/%s", v->sysfs, p.local_busid);
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    char ifaces[32][64];
    int ni = 0;
    size_t bl = strlen(p.local_busid);
    for (struct dirent *e; (e = readdir(d)) && ni < 32;)
        if (strncmp(e->d_name, p.local_busid, bl) == 0 && e->d_name[bl] == ':')
            snprintf(ifaces[ni++], sizeof ifaces[0], "%.63s", e->d_name);
    closedir(d);
    qsort(ifaces, (size_t)ni, sizeof ifaces[0], by_name);
    int n = 0;
    for (int i = 0; i < ni && n < max; i++) {
        char tdir[600];
        snprintf(tdir, sizeof tdir, "%s/%.63s/tty", dir, ifaces[i]);
        DIR *t = opendir(tdir);
        if (!t)
            continue;
        for (struct dirent *e; (e = readdir(t)) && n < max;)
            if (strncmp(e->d_name, "tty", 3) == 0)
                snprintf(out[n++], 64, "/dev/%.58s", e->d_name);
        closedir(t);
    }
    return n;
}
