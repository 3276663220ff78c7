#!/bin/sh
# /init of the virtual SR-IOV guest (busybox sh). The host (fastiov_lib.vsriov) passes the plan as
# `vs.<key>=<value>` kernel arguments (lists comma-separated). stdout/stderr of this script go to
# the second serial port (ttyS1), the host's result channel; the kernel console stays on ttyS0.
# Every measurement is a `RESULT <kind> key=value ...` line; `VSRIOV ...` lines mark progress.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
exec >/dev/ttyS1 2>&1
# keep kernel chatter off the console while measuring (the host keeps the console as a log)
echo 4 >/proc/sys/kernel/printk

device=nvme; pfid=1b36:0010; drvmod=nvme; share=0; nic=0; nicvfs=2; bench=0; counts=1; sizes=64
parallel=1; dmareps=1; innerreps=1; innermem=""; innerqemu=""; py=""; repo=""
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        vs.*=*)
            key=${arg%%=*}; key=${key#vs.}
            case "$key" in *[!a-z0-9_]*) continue ;; esac
            value=$(echo "${arg#*=}" | tr , ' '); eval "$key=\"\$value\"" ;;
    esac
done

uptime() { cut -d' ' -f1 /proc/uptime; }
echo "VSRIOV booted uptime=$(uptime)"
thp=$(sed 's/.*\[\(.*\)\].*/\1/' /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null)
echo "RESULT guest kernel=$(uname -r) device=$device uptime_s=$(uptime)" \
    "clocksource=$(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)" \
    "thp=${thp:-unknown} mem_kb=$(sed -n 's/^MemTotal: *\([0-9]*\).*/\1/p' /proc/meminfo) cpus=$(grep -c ^processor /proc/cpuinfo)"

finish() {
    echo "VSRIOV done uptime=$(uptime)"
    sync
    poweroff -f
}

step() {  # step NAME CMD...: run a set-up command, report its exit code
    name=$1; shift
    out=$("$@" 2>&1); rc=$?
    [ -n "$out" ] && echo "$out" | head -5
    echo "RESULT step name=$name rc=$rc"
    return $rc
}

echo "VSRIOV phase=setup"
step modules_device modprobe "$drvmod" || finish
step modules_vfio modprobe -a vfio-pci vfio_iommu_type1 || finish
groups=$(ls /sys/kernel/iommu_groups | wc -l)

PF=""
for d in /sys/bus/pci/devices/*; do
    id=$(echo "$(cat "$d/vendor"):$(cat "$d/device")" | sed 's/0x//g')
    if [ "$id" = "$pfid" ] && [ -e "$d/sriov_totalvfs" ]; then PF=${d##*/}; fi
done
if [ -z "$PF" ]; then
    echo "RESULT pf found=0 pfid=$pfid iommu_groups=$groups"
    finish
fi
pfdrv=$(basename "$(readlink /sys/bus/pci/devices/$PF/driver)" 2>/dev/null)
echo "RESULT pf found=1 pf=$PF pfid=$pfid totalvfs=$(cat /sys/bus/pci/devices/$PF/sriov_totalvfs) driver=${pfdrv:-none} iommu_groups=$groups"

vfs_of() {  # the PF's VFs, one per line
    for l in /sys/bus/pci/devices/$1/virtfn*; do [ -e "$l" ] && basename "$(readlink "$l")"; done
}

# The host's / shared read-only over 9p; chroot into it runs the host's Python and QEMU against
# this guest's kernel (its own /proc, /sys, /dev are bound in). The host's /tmp stays visible (the
# repository or the venv may live there, as in a CI clone); scratch space is a tmpfs on /dev/shm.
hosted=0
if [ "$share" = 1 ]; then
    if step modules_9p modprobe -a virtio_pci 9pnet_virtio 9p && \
       step mount_host mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=524288,cache=loose hostroot /host && \
       step bind_guest_fs sh -c 'mount -t proc proc /host/proc && mount --bind /sys /host/sys &&
                                 mkdir -p /dev/shm && mount -t tmpfs tmpfs /dev/shm && mount -o rbind /dev /host/dev'; then
        hosted=1
    fi
fi

# 1. The project's own NIC code (fastiov_lib.nic) against this kernel's sysfs.
if [ "$nic" = 1 ] && [ $hosted = 1 ]; then
    echo "VSRIOV phase=nic"
    t0=$(uptime)
    chroot /host /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/dev/shm TMPDIR=/dev/shm PYTHONDONTWRITEBYTECODE=1 \
        PYTHONPATH="$repo" "$py" -m fastiov_lib.testbeds.vsriov.guest.nic_steps --pf "$PF" --num-vfs "$nicvfs"
    echo "RESULT step name=nic_steps rc=$? start_uptime_s=$t0 end_uptime_s=$(uptime)"
    # leave the PF as the benchmarks expect it, whatever the NIC steps did
    [ "$(cat /sys/bus/pci/devices/$PF/sriov_numvfs)" != 0 ] && echo 0 >/sys/bus/pci/devices/$PF/sriov_numvfs
fi

# 2. Micro-benchmarks with vfbench (static C): VF enable/disable, bind, VFIO open/reset/close, MAP_DMA.
if [ "$bench" = 1 ]; then
    echo "VSRIOV phase=bench"
    echo 0 >/sys/bus/pci/devices/$PF/sriov_drivers_autoprobe
    echo "RESULT step name=autoprobe_off rc=$?"
    dmalist=""  # every size dmareps times, interleaved, so drift spreads over all sizes
    i=0; while [ $i -lt "$dmareps" ]; do dmalist="$dmalist $sizes"; i=$((i + 1)); done
    round=0
    for n in $counts; do
        round=$((round + 1))
        echo "VSRIOV round n=$n"
        vfbench numvfs "$PF" "$n" || continue
        vfs=$(vfs_of "$PF")
        for vf in $vfs; do vfbench bind "$vf"; done
        first=1
        for vf in $vfs; do
            # the DMA sweep runs once, on the first VF of the first round
            if [ $first = 1 ] && [ $round = 1 ]; then vfbench vfio "$vf" $dmalist; else vfbench vfio "$vf"; fi
            first=0
        done
        [ "$parallel" = 1 ] && vfbench parallel $vfs
        vfbench numvfs "$PF" 0
    done
fi

# 3. A VMM inside this guest (the host's QEMU, as Kata starts one) with and without a VF, with and
#    without pre-allocated memory: where a VF-backed VM start spends its time.
if [ "$bench" = 1 ] && [ -n "$innermem" ] && [ $hosted = 1 ]; then
    echo "VSRIOV phase=inner_qemu"
    if vfbench numvfs "$PF" 1 && vf=$(vfs_of "$PF" | head -1) && vfbench bind "$vf"; then
        echo quit >/tmp/quit
        # a first, unrecorded start reads the QEMU binary and its libraries over 9p into the cache
        timeout 300 chroot /host "$innerqemu" -machine q35 -accel tcg -m 64M -nodefaults -display none -S \
            -monitor stdio </tmp/quit >/dev/null 2>&1
        rep=0
        while [ $rep -lt "$innerreps" ]; do rep=$((rep + 1)); for mem in $innermem; do
            for variant in plain vf prealloc prealloc+vf; do
                case $variant in
                    plain) extra="" ;;
                    vf) extra="-device vfio-pci,host=$vf" ;;
                    prealloc) extra="-mem-prealloc" ;;
                    *) extra="-mem-prealloc -device vfio-pci,host=$vf" ;;
                esac
                vfbench time inner_qemu mem_mb="$mem" variant="$variant" repeat="$rep" -- timeout 300 chroot /host \
                    "$innerqemu" -machine q35 -accel tcg -m "${mem}M" -nodefaults -display none -S -monitor stdio \
                    $extra </tmp/quit || tail -3 /tmp/vfbench-child.log
            done
        done; done
    fi
    vfbench numvfs "$PF" 0
fi
[ $hosted = 1 ] && umount /host/dev/shm /host/dev /host/sys /host/proc /host 2>/dev/null
finish
