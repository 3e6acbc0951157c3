#!/bin/sh
# PID 1 of the kernel-matrix initramfs (built by xtask/src/vm.rs). Mounts what schedlat needs,
# runs its checks against this kernel and reports one line per check on the serial console:
#
#   VMTEST <check> PASS|FAIL|SKIP <detail>
#
# The host knows which checks to expect: a check whose line never arrives counts as failed.
# Diagnostics go to the console too, prefixed with two spaces, so the host log explains a FAIL.

export PATH=/usr/sbin:/usr/bin:/sbin:/bin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup
ip link set lo up
# Everything this script starts runs on CPU 1, except the workloads, which pin their busy
# threads to CPU 0: the contention is theirs alone, and the run_delay oracle stays exact.
taskset -p 2 $$ > /dev/null

debian_version=$(sed -n 's/.* Debian \([^ ]*\) .*/\1/p' /proc/version)
echo "VMTEST-BOOTED $(uname -r) ${debian_version:-unknown} uptime=$(cut -d' ' -f1 /proc/uptime)s"
# The clocks decide how well waits measured with ktime agree with the scheduler's run_delay.
echo "  boot| clocksource $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"
dmesg | grep -i -E 'tsc|sched_clock|clocksource' | cut -c1-200 | sed 's/^/  boot| /'

report() { # check status detail...
    name=$1
    status=$2
    shift 2
    echo "VMTEST $name $status $*"
}

# Waits until FILE contains PATTERN; fails after SECONDS.
wait_for() { # file pattern seconds
    tenths=0
    while ! grep -q "$2" "$1" 2> /dev/null; do
        tenths=$((tenths + 1))
        [ "$tenths" -gt $(($3 * 10)) ] && return 1
        usleep 100000
    done
}

# Prints the last lines of a file as diagnostics.
show_tail() { # file lines
    tail -n "$2" "$1" 2> /dev/null | cut -c1-300 | sed 's/^/  | /'
}

# Sum of the kernel's run-queue wait (schedstat field 2, ns) over a process's threads.
run_delay_sum() { # pid
    total=0
    for f in /proc/"$1"/task/*/schedstat; do
        read -r _ delay _ < "$f" && total=$((total + delay))
    done
    echo "$total"
}

# True while PID has not exited (a zombie has exited).
alive() { # pid
    state=$(sed 's/.*) \(.\).*/\1/' /proc/"$1"/stat 2> /dev/null)
    [ -n "$state" ] && [ "$state" != Z ]
}

bpf_programs() { bpftool prog show 2> /dev/null | grep -c '^[0-9]*:'; }
bpf_links() { bpftool link show 2> /dev/null | grep -c '^[0-9]*:'; }

metric() { # file name: the value of an unlabelled sample, or the sum over a labelled family
    awk -v name="$2" '$1 == name || index($1, name "{") == 1 { sum += $2; seen = 1 }
        END { if (seen) printf "%d", sum; else print "absent" }' "$1"
}

programs_before=$(bpf_programs)
links_before=$(bpf_links)

# --- schedlat check: every program set loads ---------------------------------------------------
schedlat check > /tmp/check.out 2>&1
rc=$?
grep -E '^(kernel release|sched_info|trace programs|daemon programs|daemon fallback|CPU sampler|result)' /tmp/check.out |
    cut -c1-200 | sed 's/^/  check| /'
if [ "$rc" = 0 ]; then report check PASS "exit 0"; else report check FAIL "exit $rc"; fi
diag_line=$(grep '^diagnosis ' /tmp/check.out | head -n 1 | cut -c1-200)
case "$diag_line" in
    *yes*) report check-diagnosis PASS "${diag_line#diagnosis }" ;;
    *) report check-diagnosis FAIL "${diag_line:-no diagnosis line}" ;;
esac
for set in "trace programs:check-trace-programs" "daemon programs:check-daemon-programs" \
    "daemon fallback:check-daemon-fallback" "CPU sampler:check-cpu-sampler"; do
    label=${set%%:*}
    name=${set#*:}
    line=$(grep "^$label " /tmp/check.out | head -n 1 | cut -c1-160)
    if echo "$line" | grep -q "^$label *yes"; then
        report "$name" PASS "loaded"
    else
        report "$name" FAIL "${line:-no line for $label}"
        # The verifier's decisive lines are at the end of its log.
        show_tail /tmp/check.out 12
    fi
done

# --- schedlat trace: total wait against the kernel's run_delay --------------------------------
# The workload: a hog thread on CPU 0 from the start, and on "go" a sleeper thread on CPU 0
# (2 ms bursts, 1 ms sleeps, 150 times) that then blocks for good and prints its run_delay.
mkfifo /tmp/workload.in
schedlat-workload 0 150 2000 1000 < /tmp/workload.in > /tmp/workload.out 2>&1 &
workload=$!
exec 3> /tmp/workload.in
trace_detail="workload never ready"
if wait_for /tmp/workload.out ready 30; then
    schedlat trace --pid "$workload" --threshold 2ms --format json > /tmp/trace.json 2> /tmp/trace.err &
    tracer=$!
    # The kernel's totals are read while the workload is quiet (main thread blocked on stdin,
    # hog alone on CPU 0): run_delay grows when a wait ends, so a wait in progress at a reading
    # would count on one side only. Hence after attaching, and after the trace has stopped.
    if wait_for /tmp/trace.err "Tracing run-queue waits" 90; then
        before=$(run_delay_sum "$workload")
        echo go >&3
        if wait_for /tmp/workload.out run_delay_ns 120; then
            trace_detail=""
        else
            trace_detail="workload never finished"
        fi
    else
        trace_detail="trace never attached"
    fi
    kill -INT "$tracer"
    wait "$tracer"
    trace_rc=$?
    after=$(run_delay_sum "$workload")
    if [ "$trace_rc" = 0 ]; then
        report trace-exit PASS "exit 0 on SIGINT"
    else
        report trace-exit FAIL "exit $trace_rc on SIGINT"
        show_tail /tmp/trace.err 12
    fi
else
    report trace-exit FAIL "$trace_detail"
fi
exec 3>&-
wait "$workload"

if [ -z "$trace_detail" ]; then
    summary=$(grep '"summary"' /tmp/trace.json | head -n 1)
    sleeper_tid=$(sed -n 's/.*"sleeper_tid": *\([0-9]*\).*/\1/p' /tmp/workload.out)
    sleeper_kernel=$(sed -n 's/.*"run_delay_ns": *\([0-9]*\).*/\1/p' /tmp/workload.out)
    # The process total is the one outside the threads array; the sleeper's follows its tid.
    process_traced=$(echo "$summary" | sed 's/"threads": *\[[^]]*\]//' |
        sed -n 's/.*"total_wait_ns": *\([0-9]*\).*/\1/p')
    sleeper_traced=$(echo "$summary" |
        sed -n "s/.*\"tid\": *$sleeper_tid,[^}]*\"total_wait_ns\": *\([0-9]*\).*/\1/p")
    process_kernel=$((after - before))
    # Limits: on the host the sleeper agrees within 2 %. Under TCG the scheduler's path from
    # the rq clock update to the sched_switch tracepoint is some 50x slower, and a loaded host
    # stalls the vCPUs at random points of it: that adds up to ~150 us to a traced wait, a few %
    # of the sleeper's short (2-3 ms) waits, less of the process total, whose hog waits are
    # longer. Measured in 12 guest runs (6 per kernel) on a 2-core host, busy with other tests
    # during some: process 0.1-2.9 %, sleeper 0.3-5.7 %. A lost class of waits is 10 % or more.
    verdict=$(awk -v pt="${process_traced:-0}" -v pk="$process_kernel" \
        -v st="${sleeper_traced:-0}" -v sk="${sleeper_kernel:-0}" 'BEGIN {
        pe = pk > 0 ? (pt - pk) / pk * 100 : 100; if (pe < 0) pe = -pe
        se = sk > 0 ? (st - sk) / sk * 100 : 100; if (se < 0) se = -se
        ok = pk > 20000000 && sk > 20000000 && pe < 5 && se < 8
        printf "%s process traced=%dns kernel=%dns (%.2f%%, limit 5%%); sleeper traced=%dns kernel=%dns (%.2f%%, limit 8%%)",
            ok ? "PASS" : "FAIL", pt, pk, pe, st, sk, se }')
    report trace-accuracy "${verdict%% *}" "${verdict#* }"
    # Every long wait is diagnosed: a cause (and the culprits with their shares, none when
    # the CPU's history did not cover the wait), and most have culprits.
    grep '"wait_ns"' /tmp/trace.json | grep -v '"summary"' > /tmp/events.json
    events=$(grep -c . /tmp/events.json)
    diagnosed=$(grep -c '"cause":"[a-z_]*","culprits":\[' /tmp/events.json)
    with_culprits=$(grep -c '"culprits":\[{' /tmp/events.json)
    causes=$(grep -o '"cause":"[a-z_]*"' /tmp/events.json | sort | uniq -c | tr -s ' \n' ' ')
    if [ "$events" -gt 0 ] && [ "$diagnosed" = "$events" ] && [ $((with_culprits * 10)) -ge $((events * 9)) ]; then
        report trace-diagnosis PASS "$diagnosed of $events long waits diagnosed, $with_culprits with culprits:$causes"
    else
        report trace-diagnosis FAIL "$diagnosed of $events long waits diagnosed, $with_culprits with culprits"
        show_tail /tmp/trace.json 2
    fi
    case "$verdict" in FAIL*) show_tail /tmp/trace.json 3 ;; esac
else
    report trace-accuracy FAIL "$trace_detail"
    show_tail /tmp/trace.err 12
fi

# Contention for the daemons: three hogs on CPU 0, each waiting behind the other two. They run
# until their stdin closes (fd 4).
start_hogs() {
    mkfifo /tmp/hogs.in
    hogs=""
    for i in 1 2 3; do
        # All threads on CPU 0: whichever thread of a hog waits, it waits behind the others.
        taskset -c 0 schedlat-workload 0 0 1 1 < /tmp/hogs.in > /tmp/hog$i.out 2>&1 &
        hogs="$hogs $!"
    done
    exec 4> /tmp/hogs.in
    for i in 1 2 3; do wait_for /tmp/hog$i.out ready 30; done
}

# Sends SIGTERM to the daemon, reports how fast it exits and whether anything stays attached.
stop_daemon() { # prefix pid log
    kill -TERM "$2"
    tenths=0
    while alive "$2" && [ "$tenths" -lt 50 ]; do
        usleep 100000
        tenths=$((tenths + 1))
    done
    if alive "$2"; then
        report "$1-sigterm" FAIL "still running 5 s after SIGTERM"
        kill -KILL "$2"
        wait "$2"
    else
        wait "$2"
        rc=$?
        if [ "$rc" = 0 ]; then
            report "$1-sigterm" PASS "exit 0 within $((tenths / 10)).$((tenths % 10)) s"
        else
            report "$1-sigterm" FAIL "exit $rc"
            show_tail "$3" 12
        fi
    fi
    # Links go with the process; the kernel frees programs after an RCU grace period.
    tenths=0
    while [ "$(bpf_programs)" != "$programs_before" ] || [ "$(bpf_links)" != "$links_before" ]; do
        [ "$tenths" -ge 50 ] && break
        usleep 100000
        tenths=$((tenths + 1))
    done
    programs=$(bpf_programs)
    links=$(bpf_links)
    detail="programs $programs_attached while running; after exit programs $programs links $links (before start $programs_before/$links_before)"
    if [ "$programs" = "$programs_before" ] && [ "$links" = "$links_before" ] &&
        [ "$programs_attached" -gt "$programs_before" ]; then
        report "$1-detached" PASS "$detail"
    else
        report "$1-detached" FAIL "$detail"
        bpftool prog show 2> /dev/null | grep '^[0-9]*:' | sed 's/^/  | /'
    fi
}

# Scrapes /metrics until FILE shows waits counted (the first window has closed); gives up
# after SECONDS or when the daemon has exited.
scrape_until_counted() { # file seconds pid
    tenths=0
    while [ "$tenths" -lt $(($2 * 10)) ] && alive "$3"; do
        # (busybox-static's `wget -T` crashes: `timeout` bounds it instead.)
        if timeout 10 wget -q -O "$1" http://127.0.0.1:9747/metrics 2> /dev/null &&
            [ "$(metric "$1" schedlat_events_total)" != absent ] &&
            [ "$(metric "$1" schedlat_events_total)" -gt 0 ]; then
            return 0
        fi
        sleep 1
        tenths=$((tenths + 10))
    done
    return 1
}

# --- schedlat run: metrics, an incident with flame graph and run queues, SIGTERM --------------
# Only the hogs may trigger, and only once they are running steadily: the daemon starts
# watching no process, and a SIGHUP with the hogs' name follows. (Under TCG the shell's own
# commands, and the hogs while they start, wait over 5 ms too: they would use up the rate limit
# and the per-process cooldown with bundles of an idle CPU 0.)
watch() { # process name
    printf '[incidents]\nwatch_processes = ["%s"]\n' "$1" > /tmp/schedlat.toml
}
watch nothing-yet
taskset -c 1 schedlat --log-level info run --config /tmp/schedlat.toml --listen 127.0.0.1:9747 \
    --window 2s --threshold 5ms --incident-dir /tmp/incidents > /tmp/run.log 2>&1 &
daemon=$!
wait_for /tmp/run.log "serving" 60
# The first scrape, before any window has closed, already names the kernel.
timeout 10 wget -q -O /tmp/metrics-first.txt http://127.0.0.1:9747/metrics 2> /dev/null
build_info=$(grep '^schedlat_build_info' /tmp/metrics-first.txt 2> /dev/null | head -n 1)
if echo "$build_info" | grep -qF "kernel=\"$(uname -r)\""; then
    report run-first-scrape PASS "$build_info"
else
    report run-first-scrape FAIL "${build_info:-no schedlat_build_info} (uname -r: $(uname -r))"
fi
start_hogs
sleep 2
watch schedlat-worklo
kill -HUP "$daemon"
wait_for /tmp/run.log "configuration reloaded" 10
bundle=""
tenths=0
while [ "$tenths" -lt 900 ] && alive "$daemon"; do
    bundle=$(ls -d /tmp/incidents/*-wait-*/ 2> /dev/null | head -n 1)
    [ -n "$bundle" ] && [ -s "$bundle/metadata.json" ] && break
    bundle=""
    usleep 500000
    tenths=$((tenths + 5))
done
bundle_seconds=$((tenths / 10))
programs_attached=$(bpf_programs)
if scrape_until_counted /tmp/metrics.txt 30 "$daemon"; then
    # Counters of incidents written may lag the bundle by a window.
    tenths=0
    while [ "$(metric /tmp/metrics.txt schedlat_incidents_total)" = absent ] ||
        [ "$(metric /tmp/metrics.txt schedlat_incidents_total)" = 0 ]; do
        [ "$tenths" -ge 150 ] && break
        sleep 1
        tenths=$((tenths + 10))
        timeout 10 wget -q -O /tmp/metrics.txt http://127.0.0.1:9747/metrics 2> /dev/null
    done
    events=$(metric /tmp/metrics.txt schedlat_events_total)
    samples=$(metric /tmp/metrics.txt schedlat_cpu_samples_total)
    incidents=$(metric /tmp/metrics.txt schedlat_incidents_total)
    detail="events_total=$events cpu_samples_total=$samples incidents_total=$incidents ($((tenths / 10)) s after the bundle)"
    if [ "$samples" != absent ] && [ "$samples" -gt 0 ] && [ "$incidents" != absent ] &&
        [ "$incidents" -gt 0 ]; then
        report run-metrics PASS "$detail"
    else
        report run-metrics FAIL "$detail"
    fi
else
    report run-metrics FAIL "no scrape with waits counted (daemon alive: $(alive "$daemon" && echo yes || echo no))"
    show_tail /tmp/run.log 12
fi
if [ -n "$bundle" ]; then
    report run-incident PASS "$(basename "$bundle") $bundle_seconds s after watching the hogs"
    folded_lines=$(wc -l < "$bundle/stacks.folded" 2> /dev/null || echo 0)
    hog_frames=$(grep -c schedlat_workload_hog_spin "$bundle/stacks.folded" 2> /dev/null)
    detail="stacks.folded $folded_lines lines, ${hog_frames:-0} with schedlat_workload_hog_spin; flamegraph.svg $(wc -c < "$bundle/flamegraph.svg" 2> /dev/null || echo 0) bytes"
    if [ "$folded_lines" -gt 0 ] && [ "${hog_frames:-0}" -gt 0 ] && [ -s "$bundle/flamegraph.svg" ]; then
        report run-flamegraph PASS "$detail"
    else
        report run-flamegraph FAIL "$detail"
    fi
    # Queued tasks come from the sampler's run-queue walk: with three hogs on CPU 0 a sample
    # there sees the other two queued.
    queued=$(tr -d ' \n' < "$bundle/runqueue.json" 2> /dev/null | grep -o '"queued":\[{' | wc -l)
    detail="runqueue.json $(wc -c < "$bundle/runqueue.json" 2> /dev/null || echo 0) bytes, $queued CPUs with queued tasks"
    if [ -s "$bundle/runqueue.json" ] && [ "$queued" -gt 0 ]; then
        report run-runqueue PASS "$detail"
    else
        report run-runqueue FAIL "$detail"
        head -c 1500 "$bundle/runqueue.json" | sed 's/^/  | /'
    fi
else
    report run-incident FAIL "no bundle in /tmp/incidents $bundle_seconds s after watching the hogs"
    report run-flamegraph FAIL "no bundle"
    report run-runqueue FAIL "no bundle"
    show_tail /tmp/run.log 12
fi
stop_daemon run "$daemon" /tmp/run.log
sed 's/^/  run.log| /' /tmp/run.log | cut -c1-300 | head -n 30

# --- schedlat run --force-wakeup-probes: the fallback for kernels without sched_info stamps ----
taskset -c 1 schedlat run --force-wakeup-probes --listen 127.0.0.1:9747 --window 2s \
    --incident-dir /tmp/incidents-fallback > /tmp/fallback.log 2>&1 &
daemon=$!
if scrape_until_counted /tmp/metrics-fallback.txt 60 "$daemon"; then
    programs_attached=$(bpf_programs)
    wakeup_programs=$(bpftool prog show 2> /dev/null | grep -c 'name sched_wakeup')
    events=$(metric /tmp/metrics-fallback.txt schedlat_events_total)
    detail="events_total=$events; $wakeup_programs sched_wakeup programs attached"
    if [ "$wakeup_programs" -gt 0 ]; then
        report fallback-metrics PASS "$detail"
    else
        report fallback-metrics FAIL "$detail"
    fi
    stop_daemon fallback "$daemon" /tmp/fallback.log
elif grep -q "unexpected argument '--force-wakeup-probes'" /tmp/fallback.log; then
    wait "$daemon"
    for name in fallback-metrics fallback-sigterm fallback-detached; do
        report "$name" SKIP "flag unknown: this schedlat has no --force-wakeup-probes"
    done
else
    report fallback-metrics FAIL "no scrape with waits counted"
    show_tail /tmp/fallback.log 12
    programs_attached=$(bpf_programs)
    stop_daemon fallback "$daemon" /tmp/fallback.log
fi

exec 4>&-
for hog in $hogs; do wait "$hog"; done
echo "VMTEST-END uptime=$(cut -d' ' -f1 /proc/uptime)s"
sync
poweroff -f
