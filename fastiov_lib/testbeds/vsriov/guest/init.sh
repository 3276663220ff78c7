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
devsets=""; devvfs=4; reps=1; vmcfgs=""; vmcounts=""; vmmem=128; bios=""; marker=FASTIOV-VM-UP
q62stock=""; q62fastiov=""; q62mem=256
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        vs.*=*)
            key=${arg%%=*}; key=${key#vs.}
            case "$key" in *[!a-z0-9_]*) continue ;; esac
            value=$(echo "${arg#*=}" | tr , ' '); eval "$key=\"\$value\"" ;;
    esac
done

uptime() { cut -d' ' -f1 /proc/uptime; }
# --- the guest kernel's own account of VFIO calls (tracefs): kprobes on the group ioctl (the device
# open is VFIO_GROUP_GET_DEVICE_FD, where vfio-pci takes the device set's mutex) and on the type1
# IOMMU ioctl (VFIO_IOMMU_MAP_DMA), plus lock contention; CLOCK_MONOTONIC timestamps. Printed as
# `KTRACE <line>` between `VSRIOV trace begin=<label>` and `VSRIOV trace end=<label>`.
T=/sys/kernel/tracing
ktrace_on() {  # ktrace_on COMM_GLOB
    [ -e $T/trace ] || mount -t tracefs nodev $T 2>/dev/null || return 1
    echo 0 >$T/tracing_on
    echo mono >$T/trace_clock
    if [ ! -e $T/events/kprobes/vfio_grp ]; then
        echo 'p:vfio_grp vfio_group_fops_unl_ioctl cmd=%si:x32' >>$T/kprobe_events &&
        echo 'r:vfio_grp_ret vfio_group_fops_unl_ioctl ret=$retval:s64' >>$T/kprobe_events &&
        echo 'p:vfio_iommu vfio_iommu_type1_ioctl cmd=%si:x32' >>$T/kprobe_events &&
        echo 'r:vfio_iommu_ret vfio_iommu_type1_ioctl ret=$retval:s64' >>$T/kprobe_events || return 1
    fi
    echo "comm ~ \"$1\"" >$T/events/kprobes/filter
    echo "comm ~ \"$1\"" >$T/events/lock/contention_begin/filter 2>/dev/null
    echo "comm ~ \"$1\"" >$T/events/lock/contention_end/filter 2>/dev/null
    echo 1 >$T/events/kprobes/enable
    echo 1 >$T/events/lock/contention_begin/enable 2>/dev/null
    echo 1 >$T/events/lock/contention_end/enable 2>/dev/null
    echo 8192 >$T/buffer_size_kb
    echo >$T/trace
    echo 1 >$T/tracing_on
}
ktrace_dump() {  # ktrace_dump LABEL
    [ -e $T/trace ] || return 0
    echo 0 >$T/tracing_on
    echo "VSRIOV trace begin=$1"
    grep -v '^#' $T/trace | sed 's/^/KTRACE /'
    echo "VSRIOV trace end=$1"
    echo 0 >$T/events/kprobes/enable
    echo 0 >$T/events/lock/contention_begin/enable 2>/dev/null
    echo 0 >$T/events/lock/contention_end/enable 2>/dev/null
}

# --- which vfio-pci-core is loaded: "stock" (this kernel: every VF its own device set) or "shared"
# (built from this kernel's source with the per-VF set reverted: VFs share their bus's set)
cur_devset=stock
devset_use() {
    [ "$cur_devset" = "$1" ] && return 0
    rmmod vfio_pci vfio_pci_core 2>/dev/null
    if [ "$1" = shared ]; then insmod /lib/vfio-shared-devset/vfio-pci-core.ko || return 1; fi
    modprobe vfio-pci || return 1
    cur_devset=$1
    echo "RESULT devset_module variant=$1 srcversion=$(cat /sys/module/vfio_pci_core/srcversion 2>/dev/null) tainted=$(cat /proc/sys/kernel/tainted)"
}
devset_info() {  # devset_info VARIANT BDF...: each VF's device set by vfio-pci's rule, and what it is based on
    variant=$1; shift
    for b in "$@"; do
        d=/sys/bus/pci/devices/$b
        parent=$(basename "$(dirname "$(readlink -f $d)")")
        root=0; case $parent in pci*) root=1 ;; esac
        virtfn=0; [ -e $d/physfn ] && virtfn=1
        slot=$(basename "$(readlink $d/slot 2>/dev/null)" 2>/dev/null)
        if [ $root = 1 ] || { [ "$variant" = stock ] && [ $virtfn = 1 ]; }; then set="device:$b"
        elif [ -n "$slot" ]; then set="slot:$slot"
        else set="bus:${b%:*}"; fi
        echo "RESULT devset_vf variant=$variant bdf=$b group=$(basename "$(readlink $d/iommu_group)") virtfn=$virtfn" \
            "physfn=$(basename "$(readlink $d/physfn 2>/dev/null)" 2>/dev/null) parent=$parent root_bus=$root" \
            "slot=${slot:-none} reset_method=$(cat $d/reset_method 2>/dev/null | tr ' ' +) driver=$(basename "$(readlink $d/driver)")" \
            "expected_set=$set"
    done
}
tag() { sed "s/^\(RESULT [a-z_]*\)/\1 $*/"; }  # tag k=v...: add fields to the RESULT lines passing through
rotate() {  # rotate K WORD...: the words turned K-1 places (the first ones moved to the end)
    _rk=$1; shift
    while [ "$_rk" -gt 1 ] && [ $# -gt 1 ]; do _rw=$1; shift; set -- "$@" "$_rw"; _rk=$((_rk - 1)); done
    echo "$@"
}
first_n() { echo $2 | tr ' ' '\n' | head -$1 | tr '\n' ',' | sed 's/,$//'; }

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
                                 mkdir -p /dev/shm && mount -t tmpfs -o size=75% tmpfs /dev/shm && mount -o rbind /dev /host/dev'; then
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
# 4. The device-set lock, both behaviours: the same VFs opened one after another and all at once,
#    with this kernel's vfio-pci-core (per-VF sets) and with the reverted one (a shared bus set).
if [ "$bench" = 1 ] && [ -n "$devsets" ]; then
    echo "VSRIOV phase=devset"
    for variant in $devsets; do
        devset_use $variant || { echo "RESULT step name=devset_$variant rc=1"; continue; }
        vfbench numvfs "$PF" "$devvfs" | tag variant=$variant || continue
        vfs=$(vfs_of "$PF")
        for vf in $vfs; do vfbench bind "$vf" >/dev/null; done
        devset_info $variant $vfs
        # the two modes take turns, one repeat at a time, so that drift falls on both alike
        rep=0
        while [ $rep -lt "$reps" ]; do rep=$((rep + 1)); for mode in $(rotate $rep seq par); do
            ktrace_on vfbench
            vfbench opens $mode 1 $vfs | sed "s/ rep=1 / rep=$rep /" | tag variant=$variant
            ktrace_dump "devset-$variant-$mode-$rep"
        done; done
        vfbench numvfs "$PF" 0 >/dev/null
    done
    devset_use stock
fi

# 5. N VMs started at once, each with its own VF (a QEMU inside this guest per VM, as Kata starts
#    one per pod): "vanilla" = shared device set + untouched guest memory, "fastiov" = per-VF sets +
#    pre-faulted memory. Each VM runs firmware that prints $marker and halts.
inner_vm() {  # inner_vm QEMU MEMORY-ARGS...: the command line of one inner VM ({VF} is filled by vmstart)
    q=$1; shift
    echo "chroot /host $q -L ${q%/*}/pc-bios -machine q35,accel=tcg -cpu qemu64 -smp 1 $* -nodefaults -display none" \
         "-monitor none -serial stdio -bios $bios -device vfio-pci,host={VF}"
}
if [ "$bench" = 1 ] && [ -n "$vmcfgs" ] && [ $hosted = 1 ]; then
    echo "VSRIOV phase=vmstart"
    maxn=0; for n in $vmcounts; do [ $n -gt $maxn ] && maxn=$n; done
    first=${vmcfgs%% *}
    case $first in vanilla) devset_use shared ;; *) devset_use stock ;; esac
    if vfbench numvfs "$PF" $maxn >/dev/null; then
        vfs=$(vfs_of "$PF")
        for vf in $vfs; do vfbench bind "$vf" >/dev/null; done
        # one unrecorded start reads QEMU and its libraries over 9p into the page cache
        vmstart "$marker" 300 $(first_n 1 "$vfs") -- $(inner_vm "$innerqemu" "-m 64M") >/dev/null
        # every repeat is a block of every (N, configuration) round, the configurations taking turns to
        # go first, so that the host's drift (load, page cache, TCG) falls on both alike
        rep=0; order=0; cell=0
        while [ $rep -lt "$reps" ]; do rep=$((rep + 1)); for n in $vmcounts; do
            cell=$((cell + 1))
            for cfg in $(rotate $((rep + cell)) $vmcfgs); do
                order=$((order + 1))
                # pre-faulted: each VM's RAM is a file on this guest's tmpfs, written (faulted in, zeroed)
                # before the timed start, as FastIOV takes zeroing off the start path; vanilla: anonymous
                # memory that the DMA map itself has to fault in and zero
                case $cfg in
                    vanilla) variant=shared; memargs="-m ${vmmem}M" ;;
                    *) variant=stock; memargs="-m ${vmmem}M -object memory-backend-file,id=ram0,size=${vmmem}M,share=on,mem-path=/dev/shm/vm-{VF} -machine memory-backend=ram0" ;;
                esac
                if [ "$cur_devset" != $variant ]; then
                    devset_use $variant || { echo "RESULT step name=vmstart_$cfg rc=1"; continue; }
                    for vf in $vfs; do vfbench bind "$vf" >/dev/null; done  # the module swap unbound them
                fi
                echo "VSRIOV round n=$n"
                if [ $cfg = fastiov ]; then
                    for vf in $(first_n $n "$vfs" | tr , ' '); do dd if=/dev/zero of=/dev/shm/vm-$vf bs=1M count=$vmmem 2>/dev/null; done
                fi
                ktrace_on 'qemu*'
                vmstart "$marker" 300 $(first_n $n "$vfs") config=$cfg devset=$variant rep=$rep order=$order mem_mb=$vmmem -- \
                    $(inner_vm "$innerqemu" $memargs)
                ktrace_dump "vm-$cfg-$n-$rep"
                rm -f /dev/shm/vm-*
            done
        done; done
        vfbench numvfs "$PF" 0 >/dev/null
    fi
    devset_use stock
fi

# 6. QEMU 6.2.0, stock and with FastIOV's patch, as the inner QEMU with a VF; guest RAM is the
#    memory backend `mem0` (as Kata passes it), whose eager DMA map the patched QEMU skips. The
#    patched QEMU's timeline log (/root/ipu/timeline-kata-qemu, a tmpfs here) is printed as
#    `TIMELINE <line>` between `VSRIOV timeline begin=<label> file=<name>` and `... end=<label>`.
# `fastiov-ram0` is the patched binary with RAM under another name, which it maps eagerly: the
# same binary with and without the skip, so the skip's saving shows even while stock is not built.
q62variants=""
[ -n "$q62stock" ] && q62variants="stock"
[ -n "$q62fastiov" ] && q62variants="$q62variants fastiov fastiov-ram0"
if [ "$bench" = 1 ] && [ -n "$q62variants" ] && [ $hosted = 1 ]; then
    echo "VSRIOV phase=qemu62"
    devset_use stock
    if vfbench numvfs "$PF" 1 >/dev/null && vf=$(vfs_of "$PF" | head -1) && vfbench bind "$vf" >/dev/null &&
       mount -t tmpfs tmpfs /host/root && mkdir -p /host/root/ipu/timeline-kata-qemu; then
        mem="-m ${q62mem}M -object memory-backend-ram,id=mem0,size=${q62mem}M -numa node,memdev=mem0"
        for q in $q62stock $q62fastiov; do vmstart "$marker" 300 "$vf" -- $(inner_vm "$q" "$mem") >/dev/null; done
        rm -f /host/root/ipu/timeline-kata-qemu/*
        rep=0
        while [ $rep -lt "$reps" ]; do rep=$((rep + 1))
            # the variants take turns to go first (rotated by one each repeat): drift falls on all alike
            for variant in $(rotate $rep $q62variants); do
            q=$q62stock; m=$mem
            [ $variant != stock ] && q=$q62fastiov
            [ $variant = fastiov-ram0 ] && m=$(echo "$mem" | sed 's/mem0/ram0/g')
            ktrace_on 'qemu*'
            vmstart "$marker" 300 "$vf" qemu=$variant rep=$rep mem_mb=$q62mem -- $(inner_vm "$q" "$m")
            ktrace_dump "q62-$variant-$rep"
            for f in /host/root/ipu/timeline-kata-qemu/qemu-*.log; do
                [ -e "$f" ] || continue
                echo "VSRIOV timeline begin=q62-$variant-$rep file=${f##*/}"
                sed 's/^/TIMELINE /' "$f"
                echo "VSRIOV timeline end=q62-$variant-$rep"
                rm -f "$f"
            done
        done; done
        umount /host/root
    fi
    vfbench numvfs "$PF" 0 >/dev/null
fi
[ $hosted = 1 ] && umount /host/dev/shm /host/dev /host/sys /host/proc /host 2>/dev/null
finish
