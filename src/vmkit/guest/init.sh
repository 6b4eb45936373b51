#!/bin/sh
# vmkit tiny guest /init. Reads options from the kernel command line word by word
# (never evaluates them): vmkit.ip=ADDR/PREFIX vmkit.gw=ADDR vmkit.dhcp=1
# vmkit.marker=WORD vmkit.ticker=1 vmkit.share=TAG. Prints "<marker> <ip>|-" on every console once up.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /tmp /run
mount -t devpts devpts /dev/pts
hostname vmkit-guest

while read -r mod; do
    insmod "/lib/modules/$mod" 2>/dev/null
done < /etc/modules.order

# The console the host reads: the kernel's primary one (ttyS0 on x86, ttyAMA0 on arm64
# QEMU, hvc0 on vfkit), for the shell `vmkit console` talks to and the ticker.
con=$(cat /sys/class/tty/console/active 2>/dev/null)
con=${con##* }
[ -n "$con" ] && [ -c "/dev/$con" ] || con=ttyS0

ip_addr= gw= dhcp= marker=VMKIT_READY ticker= shares=
for word in $(cat /proc/cmdline); do
    case "$word" in
        vmkit.ip=*) ip_addr=${word#vmkit.ip=} ;;
        vmkit.gw=*) gw=${word#vmkit.gw=} ;;
        vmkit.dhcp=1) dhcp=1 ;;
        vmkit.marker=*) marker=${word#vmkit.marker=} ;;
        vmkit.ticker=1) ticker=1 ;;
        vmkit.share=*) shares="$shares ${word#vmkit.share=}" ;;
    esac
done

ip link set lo up
addr=-
if [ -e /sys/class/net/eth0 ]; then
    ip link set eth0 up
    if [ -n "$ip_addr" ]; then
        ip addr add "$ip_addr" dev eth0 && addr=${ip_addr%/*}
        [ -n "$gw" ] && ip route add default via "$gw"
    elif [ -n "$dhcp" ]; then
        udhcpc -q -f -n -t 5 -i eth0 -s /etc/udhcpc.script >/dev/null 2>&1
        addr=$(ip -4 -o addr show dev eth0 | awk '{split($4, a, "/"); print a[1]; exit}')
        [ -n "$addr" ] || addr=-
    fi
fi

# --- vmkit.share=TAG: mount each virtio-fs share at /mnt/TAG -----------------------------
for tag in $shares; do
    mkdir -p "/mnt/$tag"
    mount -t virtiofs "$tag" "/mnt/$tag" || echo "vmkit-guest: cannot mount share $tag" > /dev/console
done

poweroff_cleanly() {
    echo "vmkit-guest: powering off" > /dev/console
    sync
    umount -a -r 2>/dev/null
    poweroff -f
}
trap poweroff_cleanly TERM USR2

# The ACPI power button arrives as an input event; acpid runs /etc/acpi/PWRF/00000080.
acpid -c /etc/acpi -a /etc/acpid.conf -M /etc/acpi.map -l /dev/null 2>/dev/null

# The /dev/vportNpM of the virtio-serial port named $1.
vport() {
    for n in /sys/class/virtio-ports/*/name; do
        [ -r "$n" ] && [ "$(cat "$n")" = "$1" ] && {
            d=${n%/name}
            echo "/dev/${d##*/}"
            return
        }
    done
}

# --- SSH: dropbear with the per-VM host key vmkit appends at start -----------------------
# vmkit appends a second initramfs archive holding /etc/vmkit/ssh_host_ed25519_key (OpenSSH
# format; dropbear wants its own) and /root/.ssh/authorized_keys. Password logins are off.
# The virtio-serial port "org.vmkit.ssh" carries one SSH connection at a time (vmkit
# multiplexes on it): the host says "vmkit-ssh" first, then the port is bridged to dropbear.
ssh_loop() {
    port=$(vport org.vmkit.ssh)
    [ -n "$port" ] || return
    while :; do
        if read -r word < "$port" 2>/dev/null; then
            [ "$word" = vmkit-ssh ] && nc 127.0.0.1 22 <> "$port" >&0 2>/dev/null
        else
            sleep 0.2 # EOF: no host connected
        fi
    done
}
if [ -r /etc/vmkit/ssh_host_ed25519_key ] &&
    dropbearconvert openssh dropbear /etc/vmkit/ssh_host_ed25519_key \
        /etc/dropbear/dropbear_ed25519_host_key >/dev/null 2>&1; then
    dropbear -r /etc/dropbear/dropbear_ed25519_host_key -s -p 22 -P /run/dropbear.pid
    ssh_loop &
fi

# One write that starts and ends its own line: a kernel message printed just before or after
# cannot glue itself to the marker's line.
announce() {
    said=
    for tty in /dev/ttyS0 /dev/hvc0 /dev/ttyAMA0; do
        [ -c "$tty" ] && printf '\n%s %s\n' "$marker" "$addr" 2>/dev/null > "$tty" && said=1
    done
    [ -n "$said" ] || printf '\n%s %s\n' "$marker" "$addr" > /dev/console
}
announce

# --- vmkit control port (virtio-serial "org.vmkit.ctl") -------------------------------
# The host writes one line per request, answered with one line:
#   ping             -> "ok <ip>|-"
#   restored MAC...  -> after a snapshot restore: take the new MACs (eth0, eth1, ...), renew
#                       eth0's DHCP lease, answer "ok <ip>|-", then announce readiness on
#                       the console again. The answer comes first: it is the host's
#                       readiness signal, and nothing in a restored guest's first run
#                       (slow under TCG) needs to come before it.
# and notes, which get no answer and apply to the next request only:
#   keep-addr        -> the next "restored" keeps eth0's address instead of renewing the
#                       lease (the host sends it when eth0 is on QEMU's private user-mode NAT,
#                       in the same write as "restored"). An agent that predates the note
#                       ignores the unknown word and renews: the host needs no version check.
ctl_restored() {
    i=0
    for mac in "$@"; do
        ip link set "eth$i" address "$mac" 2>/dev/null || {
            ip link set "eth$i" down
            ip link set "eth$i" address "$mac"
            ip link set "eth$i" up
            [ "$i" = 0 ] && keep= # its routes went with the link: lease again
        }
        i=$((i + 1))
    done
    if [ -z "$keep" ] && [ -e /sys/class/net/eth0 ] && [ -z "$ip_addr" ] && [ -n "$dhcp" ]; then
        ip -4 addr flush dev eth0
        udhcpc -q -f -n -t 5 -i eth0 -s /etc/udhcpc.script >/dev/null 2>&1
        addr=$(ip -4 -o addr show dev eth0 | awk '{split($4, a, "/"); print a[1]; exit}')
        [ -n "$addr" ] || addr=-
    fi
}
ctl_loop() {
    port=$(vport org.vmkit.ctl)
    [ -n "$port" ] || return
    # One open for the agent's life: closing the port discards what the host sent meanwhile
    # (and it can be open only once). vmkit's QEMU puts the port on a pipe chardev, which is
    # always connected: read blocks until the host writes. EOF means a host-less (socket)
    # chardev: wait then.
    exec 3<> "$port"
    keep=
    while :; do
        if read -r cmd args <&3; then
            case "$cmd" in
                keep-addr) keep=1; continue ;;
                restored) ctl_restored $args; echo "ok $addr" >&3; announce ;;
                ping) echo "ok $addr" >&3 ;;
            esac
            keep= # a note lasts one request, answered or not
        else
            sleep 1
        fi
    done
}
ctl_loop &

# --- vmkit.ticker=1: a counter on the console twice a second (tests see the guest run) --
if [ -n "$ticker" ]; then
    (
        n=0
        while :; do
            n=$((n + 1))
            echo "VMKIT_TICK $n" > "/dev/$con"
            sleep 0.5
        done
    ) &
fi

# An interactive shell on the serial console for `vmkit console`, respawned on exit.
(
    while :; do
        setsid -c sh -l <"/dev/$con" >"/dev/$con" 2>&1
        sleep 1
    done
) &

while :; do
    sleep 3600 &
    wait $!
done
