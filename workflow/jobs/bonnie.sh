# Guest job: bonnie++ sequential block write / rewrite / block read on the data disk.
#
# Input: $GUESTIO_IN/params, KEY=VALUE lines written by guestio.workloads.bonnie_vm.run_vm_bonnie:
#   DEVICE        block device of the data disk (/dev/sda: IDE via ata_piix, /dev/vda: virtio)
#   SIZE_MIB      bonnie++ -s (MiB)
#   RAM_MIB       bonnie++ -r (MiB)
#   IO_SCHEDULER  optional: none | bfq | mq-deadline | kyber, set on DEVICE before the run
#   MOUNT_OPTS    optional: mount -o options for the ext4 file system
#   LABEL         optional: bonnie++ -m (the name field of its CSV line)
# The disk holds an ext4 file system made by the host (a fresh copy for every run);
# it is mounted on /mnt/data and bonnie++ runs there.  The options must stay those of
# guestio.bonnie.bonnie_args: -d DIR -s SIZE -r RAM -n 0 -f -u root -q [-m LABEL].
#
# Output ($GUESTIO_OUT): bonnie.csv (bonnie++'s stdout: its CSV line), bonnie.log
# (its stderr: the human-readable table under -q, and any error), scheduler.txt
# (/sys/block/DEV/queue/scheduler after the set-up, the effective one in brackets),
# clocksource.txt / clocksource-after.txt (the current clocksource before and after
# bonnie++: without clocksource= on the kernel command line a TCG guest switches from
# tsc-early to tsc about 1.7 s after boot, i.e. possibly during the job),
# interrupts-before.txt / interrupts-after.txt (/proc/interrupts), and beside them
# uptime-*.txt, stat-*.txt and clockevent.txt: the tick window of guestio.workloads.tick,
# marked on the console with "GUESTIO: phase benchmark" at both ends,
# diskstat-before.txt / diskstat-after.txt (/sys/block/DEV/stat), mounts.txt, uname.txt.
# Any failure: a line "bonnie job: error: ..." and a non-zero exit.

set -u

JOB_NAME=bonnie
. "${GUESTIO_IN:-/guestio/in}/lib.sh" || { echo "bonnie job: error: lib.sh missing from ${GUESTIO_IN:-/guestio/in}" >&2; exit 1; }
MNT=/mnt/data
load_params

DEVICE=${DEVICE:-}
SIZE_MIB=${SIZE_MIB:-}
RAM_MIB=${RAM_MIB:-}
IO_SCHEDULER=${IO_SCHEDULER:-}
MOUNT_OPTS=${MOUNT_OPTS:-}
LABEL=${LABEL:-}

[ -n "$DEVICE" ] || fail "DEVICE not set in $PARAMS"
whole_number SIZE_MIB "$SIZE_MIB"
whole_number RAM_MIB "$RAM_MIB"

dev=${DEVICE#/dev/}
sysdev=/sys/block/$dev

# The disk is normally there when init starts; allow a few seconds for late probing.
tries=0
while [ ! -b "$DEVICE" ] && [ $tries -lt 50 ]; do
	sleep 0.1 2>/dev/null || sleep 1
	tries=$((tries + 1))
done
[ -b "$DEVICE" ] || fail "$DEVICE is not a block device (block devices: $(ls /sys/block | tr '\n' ' '))"
[ -d "$sysdev/queue" ] || fail "$sysdev/queue missing: give the whole disk (e.g. /dev/sda), not a partition"

record_system

if [ -n "$IO_SCHEDULER" ]; then
	echo "$IO_SCHEDULER" >"$sysdev/queue/scheduler" 2>/dev/null \
		|| fail "cannot set I/O scheduler '$IO_SCHEDULER' on $dev (available: $(cat "$sysdev/queue/scheduler"))"
fi
cat "$sysdev/queue/scheduler" >"$OUT/scheduler.txt" || fail "cannot read $sysdev/queue/scheduler"
effective=$(sed -n 's/.*\[\([^]]*\)\].*/\1/p' "$OUT/scheduler.txt")
if [ -n "$IO_SCHEDULER" ] && [ "$effective" != "$IO_SCHEDULER" ]; then
	fail "I/O scheduler of $dev is '$effective' after asking for '$IO_SCHEDULER' ($(cat "$OUT/scheduler.txt"))"
fi
echo "device $DEVICE, I/O scheduler: $(cat "$OUT/scheduler.txt"), clocksource: $(cat "$OUT/clocksource.txt")"

mkdir -p "$MNT"
if [ -n "$MOUNT_OPTS" ]; then
	mount -t ext4 -o "$MOUNT_OPTS" "$DEVICE" "$MNT" || fail "cannot mount $DEVICE (ext4, -o $MOUNT_OPTS) on $MNT"
else
	mount -t ext4 "$DEVICE" "$MNT" || fail "cannot mount $DEVICE (ext4) on $MNT"
fi
grep " $MNT " /proc/mounts >"$OUT/mounts.txt"
df -k "$MNT" >>"$OUT/mounts.txt" 2>&1

set -- -d "$MNT" -s "$SIZE_MIB" -r "$RAM_MIB" -n 0 -f -u root -q
[ -n "$LABEL" ] && set -- "$@" -m "$LABEL"
echo "running: bonnie++ $*"

tick_window_start
cat "$sysdev/stat" >"$OUT/diskstat-before.txt"
bonnie++ "$@" >"$OUT/bonnie.csv" 2>"$OUT/bonnie.log"
rc=$?
tick_window_end
cat "$sysdev/stat" >"$OUT/diskstat-after.txt"
cat /sys/devices/system/clocksource/clocksource0/current_clocksource >"$OUT/clocksource-after.txt"
cat "$OUT/bonnie.log"

sync
umount "$MNT"
urc=$?

[ $rc -eq 0 ] || fail "bonnie++ exited with status $rc (its messages: bonnie.log, above)"
[ -s "$OUT/bonnie.csv" ] || fail "bonnie++ exited 0 but wrote no CSV line"
[ $urc -eq 0 ] || fail "cannot unmount $MNT"
echo "bonnie job ok"
