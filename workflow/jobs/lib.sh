# What every guest job shares, sourced at its top after setting JOB_NAME:
#   JOB_NAME=cpu; . "${GUESTIO_IN:-/guestio/in}/lib.sh" || exit 1
# The host delivers this file beside each job (fw_cfg opt/guestio/lib.sh, guestio.vm.machine).
#
# OUT, PARAMS        the job's output directory and its KEY=VALUE parameters file
# fail MSG           "<JOB_NAME> job: error: MSG" on stderr, exit 1 (the host reports the line)
# load_params        source PARAMS, or fail naming it
# whole_number K V   fail unless V (the value of parameter K) is a whole number
# record_system      uname.txt and clocksource.txt (the clocksource at the job's start)
# tick_window_start / tick_window_end
#                    the two ends of the benchmark: the console line "GUESTIO: phase benchmark"
#                    (the phase the job is already in, so exit tables keep their phases) and the
#                    snapshots guestio.workloads.tick reads (its MARK_BEFORE_SH / MARK_AFTER_SH)

OUT=${GUESTIO_OUT:-/guestio/out}
PARAMS=${GUESTIO_IN:-/guestio/in}/params

fail() {
	echo "${JOB_NAME:-guest} job: error: $*" >&2
	exit 1
}

load_params() {
	[ -r "$PARAMS" ] || fail "parameters file $PARAMS missing (the host writes it: fw_cfg opt/guestio/params)"
	. "$PARAMS" || fail "cannot read $PARAMS"
}

whole_number() {
	case "$2" in ''|*[!0-9]*) fail "$1 must be a whole number, not '$2'" ;; esac
}

record_system() {
	uname -a >"$OUT/uname.txt"
	cat /sys/devices/system/clocksource/clocksource0/current_clocksource >"$OUT/clocksource.txt" \
		|| fail "cannot read the current clocksource"
}

tick_window_start() {
	echo "GUESTIO: phase benchmark" >/dev/kmsg
	cat /sys/devices/system/clockevents/clockevent0/current_device >"$OUT/clockevent.txt" 2>/dev/null
	cat /proc/interrupts >"$OUT/interrupts-before.txt"
	cat /proc/uptime >"$OUT/uptime-before.txt"
	head -n 1 /proc/stat >"$OUT/stat-before.txt"
}

tick_window_end() {
	cat /proc/interrupts >"$OUT/interrupts-after.txt"
	cat /proc/uptime >"$OUT/uptime-after.txt"
	head -n 1 /proc/stat >"$OUT/stat-after.txt"
	echo "GUESTIO: phase benchmark" >/dev/kmsg
}
