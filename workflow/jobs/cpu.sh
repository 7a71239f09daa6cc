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

JOB_NAME=cpu
. "${GUESTIO_IN:-/guestio/in}/lib.sh" || { echo "cpu job: error: lib.sh missing from ${GUESTIO_IN:-/guestio/in}" >&2; exit 1; }
load_params
EVENTS=${EVENTS:-}
MAX_PRIME=${MAX_PRIME:-}
whole_number EVENTS "$EVENTS"
whole_number MAX_PRIME "$MAX_PRIME"

record_system
echo "running: sysbench cpu --threads=1 --cpu-max-prime=$MAX_PRIME --events=$EVENTS --time=0 run"

tick_window_start
sysbench cpu --threads=1 --cpu-max-prime="$MAX_PRIME" --events="$EVENTS" --time=0 run >"$OUT/sysbench.txt" 2>&1
rc=$?
tick_window_end

cat "$OUT/sysbench.txt"
[ $rc -eq 0 ] || fail "sysbench exited with status $rc (its report: sysbench.txt, above)"
grep -q "total number of events: *$EVENTS\$" "$OUT/sysbench.txt" || fail "sysbench did not run $EVENTS events"
echo "cpu job ok"
