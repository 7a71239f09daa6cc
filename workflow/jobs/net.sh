# Guest job: GuestB of the network testbed (guestio.net): bring up the NIC, turn its GRO off,
# serve netperf for the reverse extra, run the host's benchmarks as the paper's client (the
# sender), and mark the windows the host asks for until it says "done".
#
# Input: $GUESTIO_IN/params, KEY=VALUE lines written by guestio.workloads.netbench_session:
#   GUEST_IP      the guest's address (network.subnet's third host)
#   PREFIXLEN     its prefix length
#   CONTROL_PORT  TCP port on which the host sends one command per connection:
#                   "phase NAME"  -> counters snapshot steps/NAME.*-before, then "GUESTIO: phase
#                                    NAME" on the console (a window of the exit plugin, and a hook
#                                    call on the host): a step the host runs (ping, the reverse
#                                    netperf from HostA)
#                   "end NAME"    -> "GUESTIO: phase NAME.end", then steps/NAME.*-after
#                   "run NAME SECS PROG ARGS..."
#                                 -> a step the guest runs (PROG: netperf or iperf3, the paper's
#                                    client in GuestB, at most SECS s): snapshot, "GUESTIO: phase
#                                    NAME", PROG's stdout/stderr/exit status in steps/NAME.txt,
#                                    .stderr and .rc, "GUESTIO: phase NAME.end", snapshot.  A
#                                    repeated NAME is ignored (the host may resend a command).
#                   "done"        -> stop the server, collect, exit
#   NETPERF_PORT  netserver's control port (netperf's default 12865), for the reverse extra
#   GRO           off (the paper's 2.6.27 had no GRO) or on: set with ethtool and read back
# The host waits for "GUESTIO: phase net-ready".
#
# Output ($GUESTIO_OUT): nic.txt (interface, driver, device, MAC), gro.txt (requested=, readback=),
# offloads.txt (ethtool -k), link.txt (ip addr/link), interrupts-before.txt /
# interrupts-after.txt (/proc/interrupts), netdev-before.txt / netdev-after.txt (/proc/net/dev),
# softnet-before.txt / softnet-after.txt (/proc/net/softnet_stat), steps/ (per step: snmp,
# softnet and interrupts snapshots before and after, and a guest-run step's output), commands.txt (the host's
# commands as received), netserver.log, clocksource.txt, uname.txt.
# Any failure: a line "net job: error: ..." and a non-zero exit.

set -u

JOB_NAME=net
. "${GUESTIO_IN:-/guestio/in}/lib.sh" || { echo "net job: error: lib.sh missing from ${GUESTIO_IN:-/guestio/in}" >&2; exit 1; }
load_params
GUEST_IP=${GUEST_IP:-}
PREFIXLEN=${PREFIXLEN:-24}
CONTROL_PORT=${CONTROL_PORT:-5999}
NETPERF_PORT=${NETPERF_PORT:-12865}
GRO=${GRO:-off}
[ -n "$GUEST_IP" ] || fail "GUEST_IP not set in $PARAMS"
case "$GRO" in on|off) ;; *) fail "GRO must be on or off, not '$GRO'" ;; esac
command -v ethtool >/dev/null || fail "ethtool is not in the image: add it to image.packages and image.programs (config/config.yaml)"

record_system
mkdir -p "$OUT/steps" || fail "cannot create $OUT/steps"

# The one NIC: the first interface that is not lo (probing may take a moment).
IF=
tries=0
while [ -z "$IF" ] && [ $tries -lt 100 ]; do
	for d in /sys/class/net/*; do
		n=${d##*/}
		[ "$n" = lo ] && continue
		IF=$n
		break
	done
	[ -n "$IF" ] || { sleep 0.1; tries=$((tries + 1)); }
done
[ -n "$IF" ] || fail "no network interface (interfaces: $(ls /sys/class/net | tr '\n' ' '))"
driver=$(basename "$(readlink /sys/class/net/$IF/device/driver 2>/dev/null)" 2>/dev/null)
device=$(basename "$(readlink /sys/class/net/$IF/device 2>/dev/null)" 2>/dev/null)
echo "interface=$IF driver=$driver device=$device mac=$(cat /sys/class/net/$IF/address)" >"$OUT/nic.txt"

# GRO arrived in 2.6.29: the paper's guest had none.  The nonapi drivers hand packets to
# netif_rx, which never merges; the NAPI drivers use napi_gro_receive, which merges unless the
# device's GRO feature is off.  Set it before the link is up and read it back.
ethtool -K "$IF" gro "$GRO" 2>"$OUT/ethtool-K.log" || fail "ethtool -K $IF gro $GRO failed: $(cat "$OUT/ethtool-K.log")"
ethtool -k "$IF" >"$OUT/offloads.txt" 2>&1 || fail "ethtool -k $IF failed: $(cat "$OUT/offloads.txt")"
gro_now=$(sed -n 's/^generic-receive-offload: *\([a-z]*\).*/\1/p' "$OUT/offloads.txt")
printf 'requested=%s\nreadback=%s\n' "$GRO" "$gro_now" >"$OUT/gro.txt"
[ "$gro_now" = "$GRO" ] || fail "GRO of $IF reads '$gro_now' after ethtool -K $IF gro $GRO"

ip addr add "$GUEST_IP/$PREFIXLEN" dev "$IF" || fail "cannot add $GUEST_IP/$PREFIXLEN to $IF"
ip link set "$IF" up || fail "cannot bring $IF up"
tries=0
until [ "$(cat /sys/class/net/$IF/carrier 2>/dev/null)" = 1 ]; do
	tries=$((tries + 1))
	[ $tries -lt 100 ] || fail "$IF has no carrier after 10 s (operstate $(cat /sys/class/net/$IF/operstate))"
	sleep 0.1
done
{ ip addr show dev "$IF"; ip link show dev "$IF"; } >"$OUT/link.txt" 2>&1

# The reverse extra (HostA sends to the guest) needs a netserver here.
netserver -D -4 -p "$NETPERF_PORT" >"$OUT/netserver.log" 2>&1 &
netserver_pid=$!
sleep 0.3
kill -0 $netserver_pid 2>/dev/null || fail "netserver did not start: $(cat "$OUT/netserver.log")"

# The counters of one end of a step: TCP's (RetransSegs), the softnet drops, the interrupts.
snapshot() {
	cat /proc/net/snmp >"$OUT/steps/$1.snmp-$2" 2>/dev/null
	cat /proc/net/softnet_stat >"$OUT/steps/$1.softnet-$2" 2>/dev/null
	cat /proc/interrupts >"$OUT/steps/$1.interrupts-$2" 2>/dev/null
}

run_step() {
	name=$1 seconds=$2
	shift 2
	case "$1" in
	netperf|iperf3) ;;
	*) echo "net job: refusing to run '$1' (only netperf and iperf3)" >&2; return ;;
	esac
	timeout=
	command -v timeout >/dev/null && timeout="timeout $seconds"
	snapshot "$name" before
	echo "GUESTIO: phase $name" >/dev/kmsg
	$timeout "$@" >"$OUT/steps/$name.txt" 2>"$OUT/steps/$name.stderr"
	echo $? >"$OUT/steps/$name.rc"
	echo "GUESTIO: phase $name.end" >/dev/kmsg
	snapshot "$name" after
}

cat /proc/interrupts >"$OUT/interrupts-before.txt"
cat /proc/net/dev >"$OUT/netdev-before.txt"
cat /proc/net/softnet_stat >"$OUT/softnet-before.txt" 2>/dev/null
echo "net job: $IF ($driver) $GUEST_IP/$PREFIXLEN up, GRO $gro_now; netserver :$NETPERF_PORT"
echo "GUESTIO: phase net-ready" >/dev/kmsg

# One command per connection; nc exits when the host closes it.
: >"$OUT/commands.txt"
ran=" "
while :; do
	cmd=$(nc -l -p "$CONTROL_PORT" </dev/null) || fail "nc -l -p $CONTROL_PORT failed"
	echo "$cmd" >>"$OUT/commands.txt"
	set -f
	# shellcheck disable=SC2086 # the host's words, split on purpose
	set -- $cmd
	set +f
	case "${1:-}" in
	phase)
		[ $# -eq 2 ] || { echo "net job: ignoring '$cmd'" >&2; continue; }
		snapshot "$2" before
		echo "GUESTIO: phase $2" >/dev/kmsg
		;;
	end)
		[ $# -eq 2 ] || { echo "net job: ignoring '$cmd'" >&2; continue; }
		echo "GUESTIO: phase $2.end" >/dev/kmsg
		snapshot "$2" after
		;;
	run)
		[ $# -ge 4 ] || { echo "net job: ignoring '$cmd'" >&2; continue; }
		case "$ran" in *" $2 "*) echo "net job: $2 already ran, ignoring the repeat" >&2; continue ;; esac
		ran="$ran$2 "
		shift
		run_step "$@"
		;;
	done)
		break
		;;
	*)
		echo "net job: ignoring unknown command '$cmd'" >&2
		;;
	esac
done

cat /proc/interrupts >"$OUT/interrupts-after.txt"
cat /proc/net/dev >"$OUT/netdev-after.txt"
cat /proc/net/softnet_stat >"$OUT/softnet-after.txt" 2>/dev/null
kill $netserver_pid 2>/dev/null
wait 2>/dev/null
echo "net job ok"
