# Guest job: GuestB of the network testbed (guestio.net): bring up the NIC, serve
# netperf and iperf3, and mark the windows the host asks for until it says "done".
#
# Input: $GUESTIO_IN/params, KEY=VALUE lines written by guestio.net.session:
#   GUEST_IP      the guest's address (network.subnet's third host)
#   PREFIXLEN     its prefix length
#   CONTROL_PORT  TCP port on which the host sends one command per connection:
#                   "phase NAME"  -> "GUESTIO: phase NAME" on the console (a window of the
#                                    exit plugin, and a hook call on the host)
#                   "done"        -> stop the servers, collect, exit
#   NETPERF_PORT  netserver's control port (netperf's default 12865)
#   IPERF3_PORT   iperf3 -s port (5201)
# The host drives every measurement (ping, netperf, iperf3 from HostA/HostB): the guest
# only answers, as GuestB did in the paper.  The host waits for "GUESTIO: phase net-ready".
#
# Output ($GUESTIO_OUT): nic.txt (interface, driver, MAC), link.txt (ip addr/link),
# interrupts-before.txt / interrupts-after.txt (/proc/interrupts), netdev-before.txt /
# netdev-after.txt (/proc/net/dev), softnet-before.txt / softnet-after.txt
# (/proc/net/softnet_stat), commands.txt (the host's commands as received), netserver.log,
# iperf3.log, clocksource.txt, uname.txt.
# Any failure: a line "net job: error: ..." and a non-zero exit.

set -u

JOB_NAME=net
. "${GUESTIO_IN:-/guestio/in}/lib.sh" || { echo "net job: error: lib.sh missing from ${GUESTIO_IN:-/guestio/in}" >&2; exit 1; }
load_params
GUEST_IP=${GUEST_IP:-}
PREFIXLEN=${PREFIXLEN:-24}
CONTROL_PORT=${CONTROL_PORT:-5999}
NETPERF_PORT=${NETPERF_PORT:-12865}
IPERF3_PORT=${IPERF3_PORT:-5201}
[ -n "$GUEST_IP" ] || fail "GUEST_IP not set in $PARAMS"

record_system

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
echo "interface=$IF driver=$driver mac=$(cat /sys/class/net/$IF/address)" >"$OUT/nic.txt"

ip addr add "$GUEST_IP/$PREFIXLEN" dev "$IF" || fail "cannot add $GUEST_IP/$PREFIXLEN to $IF"
ip link set "$IF" up || fail "cannot bring $IF up"
tries=0
until [ "$(cat /sys/class/net/$IF/carrier 2>/dev/null)" = 1 ]; do
	tries=$((tries + 1))
	[ $tries -lt 100 ] || fail "$IF has no carrier after 10 s (operstate $(cat /sys/class/net/$IF/operstate))"
	sleep 0.1
done
{ ip addr show dev "$IF"; ip link show dev "$IF"; } >"$OUT/link.txt" 2>&1

netserver -D -4 -p "$NETPERF_PORT" >"$OUT/netserver.log" 2>&1 &
netserver_pid=$!
iperf3 -s -4 -p "$IPERF3_PORT" >"$OUT/iperf3.log" 2>&1 &
iperf3_pid=$!
sleep 0.3
kill -0 $netserver_pid 2>/dev/null || fail "netserver did not start: $(cat "$OUT/netserver.log")"
kill -0 $iperf3_pid 2>/dev/null || fail "iperf3 -s did not start: $(cat "$OUT/iperf3.log")"

cat /proc/interrupts >"$OUT/interrupts-before.txt"
cat /proc/net/dev >"$OUT/netdev-before.txt"
cat /proc/net/softnet_stat >"$OUT/softnet-before.txt" 2>/dev/null
echo "net job: $IF ($driver) $GUEST_IP/$PREFIXLEN up; netserver :$NETPERF_PORT, iperf3 :$IPERF3_PORT"
echo "GUESTIO: phase net-ready" >/dev/kmsg

# One command per connection; nc exits when the host closes it.
: >"$OUT/commands.txt"
while :; do
	cmd=$(nc -l -p "$CONTROL_PORT" </dev/null) || fail "nc -l -p $CONTROL_PORT failed"
	echo "$cmd" >>"$OUT/commands.txt"
	case "$cmd" in
	"phase "*)
		name=${cmd#phase }
		echo "GUESTIO: phase $name" >/dev/kmsg
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
kill $netserver_pid $iperf3_pid 2>/dev/null
wait 2>/dev/null
echo "net job ok"
