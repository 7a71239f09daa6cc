# Trivial job: records the kernel, its clock source and timer set-up, and shows
# that each benchmark program of the image really runs.  Output: $GUESTIO_OUT.
set -e
uname -a > "$GUESTIO_OUT/uname.txt"
cat /proc/cmdline > "$GUESTIO_OUT/cmdline.txt"
cat /sys/devices/system/clocksource/clocksource0/current_clocksource > "$GUESTIO_OUT/clocksource.txt"
dmesg > "$GUESTIO_OUT/dmesg.txt"
iperf3 --version | head -1
sysbench --version
fio --name=smoke --filename=/tmp/fio.dat --size=1M --bs=4k --rw=write --ioengine=psync --minimal > "$GUESTIO_OUT/fio.txt"
bonnie++ -d /tmp -s 8 -r 4 -n 0 -f -u root -q > "$GUESTIO_OUT/bonnie.csv"
echo "smoke job ok"
