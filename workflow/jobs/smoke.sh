# Trivial job: shows the kernel, its clock source and timer set-up, and that
# the programs of the image run.  Output goes to $GUESTIO_OUT.
set -e
uname -a > "$GUESTIO_OUT/uname.txt"
cat /proc/cmdline > "$GUESTIO_OUT/cmdline.txt"
cat /sys/devices/system/clocksource/clocksource0/current_clocksource > "$GUESTIO_OUT/clocksource.txt"
dmesg > "$GUESTIO_OUT/dmesg.txt"
for prog in "bonnie++ -h" "iperf3 --version" "fio --version" "sysbench --version"; do
    $prog > /dev/null 2>&1 || [ $? -eq 1 ] || { echo "cannot run $prog"; exit 1; }
done
echo "smoke job ok"
