# Guest job: a CPU-bound workload with the guest timer running (Table 1's stand-in for
# SPECjbb2005, which is proprietary): sysbench cpu, one thread, a fixed amount of work.
#
# Input: $GUESTIO_IN/params, KEY=VALUE lines written by guestio.workloads.cpuload:
#   EVENTS     sysbench --events (prime searches; the work is fixed, the time is measured)
#   MAX_PRIME  sysbench --cpu-max-prime (the size of one event)
# Output ($GUESTIO_OUT): sysbench.txt (its report), the tick snapshots of
# guestio.workloads.tick (clockevent.txt, interrupts-, uptime-, stat-before/after.txt),
# uname.txt, clocksource.txt.  The benchmark window is marked on the console with
# "GUESTIO: phase benchmark" at both ends (the tick window; exit tables keep their phases).
# Any failure: a line "cpu job: error: ..." and a non-zero exit.

set -u

OUT=${GUESTIO_OUT:-/guestio/out}
PARAMS=${GUESTIO_IN:-/guestio/in}/params

fail() {
	echo "cpu job: error: $*" >&2
	exit 1
}

[ -r "$PARAMS" ] || fail "parameters file $PARAMS missing (the host writes it: fw_cfg opt/guestio/params)"
. "$PARAMS" || fail "cannot read $PARAMS"
EVENTS=${EVENTS:-}
MAX_PRIME=${MAX_PRIME:-}
case "$EVENTS" in ''|*[!0-9]*) fail "EVENTS must be a whole number, not '$EVENTS'" ;; esac
case "$MAX_PRIME" in ''|*[!0-9]*) fail "MAX_PRIME must be a whole number, not '$MAX_PRIME'" ;; esac

uname -a >"$OUT/uname.txt"
cat /sys/devices/system/clocksource/clocksource0/current_clocksource >"$OUT/clocksource.txt" \
	|| fail "cannot read the current clocksource"
echo "running: sysbench cpu --threads=1 --cpu-max-prime=$MAX_PRIME --events=$EVENTS --time=0 run"

# tick window: start (guestio.workloads.tick.MARK_BEFORE_SH)
echo "GUESTIO: phase benchmark" >/dev/kmsg
cat /sys/devices/system/clockevents/clockevent0/current_device >"$OUT/clockevent.txt" 2>/dev/null
cat /proc/interrupts >"$OUT/interrupts-before.txt"
cat /proc/uptime >"$OUT/uptime-before.txt"
head -n 1 /proc/stat >"$OUT/stat-before.txt"
sysbench cpu --threads=1 --cpu-max-prime="$MAX_PRIME" --events="$EVENTS" --time=0 run >"$OUT/sysbench.txt" 2>&1
rc=$?
# tick window: end (guestio.workloads.tick.MARK_AFTER_SH)
cat /proc/interrupts >"$OUT/interrupts-after.txt"
cat /proc/uptime >"$OUT/uptime-after.txt"
head -n 1 /proc/stat >"$OUT/stat-after.txt"
echo "GUESTIO: phase benchmark" >/dev/kmsg

cat "$OUT/sysbench.txt"
[ $rc -eq 0 ] || fail "sysbench exited with status $rc (its report: sysbench.txt, above)"
grep -q "total number of events: *$EVENTS\$" "$OUT/sysbench.txt" || fail "sysbench did not run $EVENTS events"
echo "cpu job ok"
