# shellcheck shell=bash
# The QEMU USB lab every USB/IP test with a real Linux kernel shares
# (shared/reference/usbip.md section 6): Debian's own kernel package, downloaded
# once and cached outside the clone, booted under TCG with a busybox initramfs
# that holds the usbip tools and the kernel modules a scenario names.
# Sourced after tests/lib/e2e.sh (it needs $RUN and ok/not_ok).
#
#   qemu_usb_setup                      QEMU, BUSYBOX, USBIP, USBIPD, KVER, KROOT; exits 77
#                                       with a reason when QEMU cannot run here at all
#   qemu_usb_initramfs DIR MODULE...    DIR: busybox, usbip + usbipd and their libraries,
#                                       usb.ids, mods/<name>.ko (paths under drivers/ without .ko),
#                                       and /lib/guest.sh for the scenario's /init to source:
#                                       guest_up MODULE... (mounts, insmod in that order, eth0
#                                       as 10.0.2.15 behind 10.0.2.2, each icefarm.K=V of the
#                                       kernel command line as $K) and guest_done (the dmesg
#                                       between DMESG-BEGIN/END, GUEST-DONE, power off)
#   qemu_usb_boot DIR LOG APPEND [QEMU ARGS...]
#                                       packs DIR (with its /init) and runs the guest until it
#                                       powers off (240 s at most); its console goes to LOG
#   qemu_usb_start DIR LOG APPEND [QEMU ARGS...]
#                                       the same in the background (QEMU_PID, added to E2E_BG):
#                                       for scenarios where the host acts while the guest runs
#   qemu_usb_wait LOG MARKER SECONDS    until the guest's console says MARKER
#
# The cache: $ICEFARM_CACHE (default /var/cache/icefarm, else ~/.cache/icefarm)/kernel,
# the package as downloaded and root-<version>/ as extracted. The kernel's version
# comes from `apt-cache depends linux-image-amd64` (it moves with Debian's updates).

qemu_usb_skip() {
    echo "skip: $*"
    exit 77
}

qemu_usb_setup() {
    QEMU=$(command -v qemu-system-x86_64 || true)
    [[ -n $QEMU ]] || qemu_usb_skip "qemu-system-x86_64 is not installed (apt install qemu-system-x86)"
    BUSYBOX=$(command -v busybox || true)
    if [[ -z $BUSYBOX ]] || ! file -L "$BUSYBOX" | grep -q "statically linked"; then
        qemu_usb_skip "no static busybox (apt install busybox-static)"
    fi
    command -v cpio >/dev/null || qemu_usb_skip "cpio is not installed"
    USBIP=$(command -v usbip || echo /usr/sbin/usbip)
    USBIPD=$(command -v usbipd || echo /usr/sbin/usbipd)
    [[ -x $USBIP && -x $USBIPD ]] || qemu_usb_skip "the usbip tools are not installed (apt install usbip)"

    local cache=${ICEFARM_CACHE:-/var/cache/icefarm} pkg deb
    mkdir -p "$cache/kernel" 2>/dev/null && [[ -w $cache/kernel ]] || cache=$HOME/.cache/icefarm
    mkdir -p "$cache/kernel"
    pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
    [[ -n $pkg ]] || pkg=$(cd "$cache/kernel" && find . -maxdepth 1 -name 'linux-image-*.deb' -printf '%f\n' |
        sort | tail -n1 | cut -d_ -f1)
    [[ -n $pkg ]] || qemu_usb_skip "cannot tell which Debian kernel package to use (apt-cache depends linux-image-amd64)"
    KVER=${pkg#linux-image-}
    KROOT=$cache/kernel/root-$KVER
    if [[ ! -e $KROOT/boot/vmlinuz-$KVER ]]; then
        (cd "$cache/kernel" && timeout 240 apt-get download "$pkg" >"$RUN/apt.log" 2>&1) ||
            qemu_usb_skip "cannot download $pkg (see $RUN/apt.log)"
        deb=$(find "$cache/kernel" -maxdepth 1 -name "${pkg}_*.deb" | sort | tail -n1)
        rm -rf "$KROOT.tmp.$$"
        dpkg-deb -x "$deb" "$KROOT.tmp.$$"
        mv "$KROOT.tmp.$$" "$KROOT" 2>/dev/null || rm -rf "$KROOT.tmp.$$" # another test got there first
    fi
    ok "kernel $KVER from $KROOT"
}

# Copies a program and every library ldd names, at the same paths.
qemu_usb_copy_prog() {
    local dir=$1 prog=$2 lib
    mkdir -p "$dir$(dirname "$prog")"
    cp "$prog" "$dir$prog"
    for lib in $(ldd "$prog" | awk '/=> \// {print $3} /^\t\/lib/ {print $1}'); do
        mkdir -p "$dir$(dirname "$lib")"
        cp -L "$lib" "$dir$lib"
    done
}

qemu_usb_initramfs() {
    local dir=$1 m
    shift
    mkdir -p "$dir"/{bin,sbin,proc,sys,dev,tmp,mods,var/run,usr/share/misc,usr/share/hwdata,etc}
    cp "$BUSYBOX" "$dir/bin/busybox"
    qemu_usb_copy_prog "$dir" "$USBIP"
    qemu_usb_copy_prog "$dir" "$USBIPD"
    [[ $USBIP == /sbin/usbip ]] || ln -sf "$USBIP" "$dir/sbin/usbip"
    [[ $USBIPD == /sbin/usbipd ]] || ln -sf "$USBIPD" "$dir/sbin/usbipd"
    # `usbip port` and `usbip list` want the ID database (hwdata); an empty one does
    if [[ -e /usr/share/hwdata/usb.ids ]]; then
        cp /usr/share/hwdata/usb.ids "$dir/usr/share/misc/usb.ids"
        cp /usr/share/hwdata/usb.ids "$dir/usr/share/hwdata/usb.ids"
    else
        : >"$dir/usr/share/misc/usb.ids"
    fi
    mkdir -p "$dir/lib"
    cat >"$dir/lib/guest.sh" <<'GUEST'
# The part of every scenario's /init that is the same (busybox sh; see qemu_usb.sh).
guest_up() {
    export PATH=/sbin:/usr/sbin:/bin:/usr/bin HOME=/tmp
    mount -t proc proc /proc
    mount -t sysfs sysfs /sys
    mount -t devtmpfs dev /dev
    for m in "$@"; do insmod "/mods/$m.ko" || echo "INSMOD-FAILED $m"; done
    ip link set lo up
    ip link set eth0 up
    ip addr add 10.0.2.15/24 dev eth0
    ip route add default via 10.0.2.2
    for kv in $(cat /proc/cmdline); do
        case $kv in icefarm.*=*) k=${kv#icefarm.}; eval "${k%%=*}=${kv#*=}" ;; esac
    done
}
guest_done() {
    echo "DMESG-BEGIN"
    dmesg
    echo "DMESG-END"
    echo "GUEST-DONE"
    poweroff -f
}
GUEST
    local mods=$KROOT/lib/modules/$KVER/kernel/drivers
    for m in "$@"; do
        cp "$mods/$m.ko" "$dir/mods/" || { not_ok "kernel module $m.ko in $KVER"; return 1; }
    done
}

qemu_usb_start() {
    local dir=$1 log=$2 append=$3
    shift 3
    (cd "$dir" && find . | cpio -o -H newc 2>/dev/null | gzip -1 >"$dir.cpio.gz")
    timeout 240 "$QEMU" -accel tcg -m 512 -smp 1 -kernel "$KROOT/boot/vmlinuz-$KVER" -initrd "$dir.cpio.gz" \
        -append "console=ttyS0 panic=-1 loglevel=4 $append" -nographic -no-reboot "$@" </dev/null >"$log" 2>&1 &
    QEMU_PID=$!
    E2E_BG+=("$QEMU_PID")
}

qemu_usb_boot() {
    qemu_usb_start "$@"
    wait "$QEMU_PID" || true
}

qemu_usb_wait() {
    wait_until "$3" grep -q "$2" "$1"
}
