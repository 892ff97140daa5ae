#!/usr/bin/env bash
# A real one-node SLURM (slurmctld + slurmd + slurmdbd/mariadb accounting) on localhost, for CI and tests.
# Needs root and Debian/Ubuntu packages; no systemd or cgroups. See scripts/slurm/README.md.
#   localhost.sh install              apt-get install slurm-wlm munge slurmdbd mariadb-server
#   localhost.sh up     [STATE_DIR]   start the daemons; then `source STATE_DIR/env` (sets SLURM_CONF)
#   localhost.sh down   [STATE_DIR]   stop the daemons `up` started (by their recorded PIDs), nothing else
#   localhost.sh status [STATE_DIR]   exit 0 if the cluster answers (sinfo) with accounting (sacct)
# STATE_DIR defaults to /tmp/charrnn-slurm.
set -euo pipefail

CMD=${1:-} STATE=$(realpath -m "${2:-/tmp/charrnn-slurm}")
ETC=$STATE/etc LOG=$STATE/log RUN=$STATE/run PIDS=$STATE/pids
export SLURM_CONF=$ETC/slurm.conf
MYSQL_SOCK=/run/mysqld/mysqld.sock       # the client library's default: slurmdbd has no socket setting
MYSQL_PID=/run/mysqld/charrnn-slurm.pid  # under a temp dir it failed with "Permission denied"
INNODB="--innodb-log-file-size=16M --innodb-buffer-pool-size=64M --innodb-data-file-path=ibdata1:12M:autoextend"
T0=$(date +%s%N)

say() { echo "slurm-localhost: $*"; }
elapsed() { local ms=$((($(date +%s%N) - T0) / 1000000)); printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100)); }
die() {
    echo "slurm-localhost: ERROR: $1" >&2
    [[ -n ${2:-} && -f ${2:-} ]] && { echo "--- last lines of $2:" >&2; tail -n 15 "$2" >&2; }
    exit 1
}
# check_daemons: die, with its log's tail, if a daemon that up started has exited.
check_daemons() {
    local name pid log
    while read -r name pid; do
        alive "$pid" && continue
        log=$LOG/$name.log && [[ -s $LOG/$name.out ]] && log=$LOG/$name.out
        die "$name (pid $pid) exited during bring-up" "$log"
    done <"$PIDS"
}
# wait_for SECONDS WHAT LOGFILE CMD...: poll CMD every 0.2 s; die with the log's tail on timeout.
wait_for() {
    local n=$(($1 * 5)) what=$2 log=$3; shift 3
    for ((i = 0; i < n; i++)); do "$@" >/dev/null 2>&1 && return 0; check_daemons; sleep 0.2; done
    die "$what not ready after $1 s" "$log"
}
# scontrol ping fails at once when slurmctld does not listen (yet), where sinfo retries for ~9 s.
node_state() { timeout 5 scontrol ping >/dev/null 2>&1 && timeout 5 sinfo -h -o %T 2>/dev/null | head -n1; }
# alive PID: running, and not a zombie (this machine's init reaps its orphans only every ~2 s).
alive() { local s; s=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) && [[ -n $s && $s != Z ]]; }
ctld_alive() { local p; p=$(awk '$1 == "slurmctld" {print $2}' "$PIDS" 2>/dev/null) && [[ -n $p ]] && alive "$p"; }
answers() { ctld_alive && [[ $(node_state) =~ ^(idle|mixed|allocated|completing)$ ]]; }
accounting() { timeout 5 sacct -n -X -S now >/dev/null 2>&1; }
is_idle() { [[ $(node_state) == idle ]]; }
munge_ok() { munge -n | unmunge; }
mysql_ok() { mariadb --socket="$MYSQL_SOCK" -e 'select 1'; }

# start NAME LOGFILE CMD...: run a daemon in the foreground of its own session, record its PID.
start() {
    local name=$1 log=$2; shift 2
    setsid "$@" </dev/null >>"$log" 2>&1 9>&- &  # 9: the bring-up lock (cmd_up), not the daemons' to hold
    echo "$name $!" >>"$PIDS"
}

cmd_install() {
    local b missing=
    for b in slurmctld slurmd slurmdbd sacct munged mariadbd; do command -v $b >/dev/null || missing+=" $b"; done
    [[ -z $missing ]] && { say "already installed ($(slurmctld -V)), skipped in $(elapsed) s"; return; }
    [[ $EUID == 0 ]] || die "install needs root (sudo $0 install)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq slurm-wlm munge slurmdbd mariadb-server >"/tmp/charrnn-slurm-apt.log" 2>&1 \
        || { apt-get update -qq && apt-get install -y -qq slurm-wlm munge slurmdbd mariadb-server \
                >"/tmp/charrnn-slurm-apt.log" 2>&1; } \
        || die "apt-get install failed" /tmp/charrnn-slurm-apt.log
    say "installed $(slurmctld -V) in $(elapsed) s"
}

# The node's CPUs: the cores we may use (nproc honours OMP_NUM_THREADS, which the test suite sets to 1).
cores() { env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc; }

write_conf() {
    local host cpus mem pw
    host=$(hostname -s) cpus=$(cores)
    mem=$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)  # MB, below `free -m`'s total
    pw=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
    mkdir -p "$ETC" "$LOG" "$RUN" "$STATE/state" "$STATE/spool"
    cat >"$ETC/slurm.conf" <<EOF
# Written by scripts/slurm/localhost.sh; rewritten on every \`up\`.
ClusterName=charrnn
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
# A requeued job is held (Reason BeginTime) for cred_expire+1 s before it may run again: default 120,
# 5 is the least slurm accepts (it is also the job credential's lifetime; raise it if steps fail
# with "Credential expired" on a loaded machine).
AuthInfo=cred_expire=5
MailProg=/bin/true
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
ReturnToService=2
# Fast turnaround: finished jobs leave squeue after 2 s (sacct keeps them), kill escalation after 2 s,
# the scheduler runs every 2 s and at once on submit/completion.
MinJobAge=2
KillWait=2
SchedulerParameters=sched_interval=2,batch_sched_delay=0,bf_interval=1,sched_min_interval=0
SlurmdTimeout=30
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
StateSaveLocation=$STATE/state
SlurmdSpoolDir=$STATE/spool
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    rm -f "$ETC/slurmdbd.conf" && (umask 077 && cat >"$ETC/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$pw
StorageLoc=slurm_acct_db
PidFile=$RUN/slurmdbd.pid
LogFile=$LOG/slurmdbd.log
EOF
    )
    echo "export SLURM_CONF=$SLURM_CONF" >"$STATE/env"
    echo "$pw"
}

start_mysql() {
    # A datadir of our own under STATE_DIR when the mysql user can reach it; else the package's default.
    # A fresh one is copied from a pristine template that mariadb-install-db (1-5 s) builds only once.
    local datadir=$STATE/mysql tpl=/var/cache/charrnn-slurm/mysql-template
    mkdir -p "$datadir" && chown mysql:mysql "$datadir"
    if ! setpriv --reuid=mysql --regid=mysql --clear-groups test -w "$datadir"; then
        datadir=/var/lib/mysql
    elif [[ ! -d $datadir/mysql ]]; then
        if [[ ! -d $tpl/mysql ]]; then
            rm -rf "$tpl.new" && mkdir -p "$tpl.new" && chown mysql:mysql "$tpl.new"
            mariadb-install-db --user=mysql --datadir="$tpl.new" --auth-root-authentication-method=socket \
                --skip-test-db $INNODB >"$LOG/mariadb-install.log" 2>&1 \
                || die "mariadb-install-db failed" "$LOG/mariadb-install.log"
            rm -rf "$tpl" && mv "$tpl.new" "$tpl"
        fi
        cp -a "$tpl/." "$datadir/"
    fi
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
    start mariadb "$LOG/mariadb.log" mariadbd --user=mysql --datadir="$datadir" --socket="$MYSQL_SOCK" \
        --pid-file="$MYSQL_PID" --skip-networking $INNODB
    wait_for 30 "mariadb (datadir $datadir)" "$LOG/mariadb.log" mysql_ok
}

cmd_up() {
    [[ $EUID == 0 ]] || die "up needs root"
    command -v slurmctld >/dev/null || die "slurm is not installed: run sudo $0 install"
    # One bring-up at a time on this machine: two would race for the ports and the mariadb template.
    mkdir -p /var/cache/charrnn-slurm
    exec 9>/var/cache/charrnn-slurm/up.lock
    flock -w 300 9 || die "another bring-up has held /var/cache/charrnn-slurm/up.lock for 5 minutes"
    if answers && accounting; then say "already up ($STATE); source $STATE/env"; return; fi
    [[ -f $PIDS ]] && { say "stale daemons from an earlier up: stopping them"; cmd_down >/dev/null; }
    local port pw
    for port in 6817 6818 6819; do  # slurmctld, slurmd, slurmdbd: else our clients would reach another SLURM
        ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || die "port $port is in use: another SLURM runs here"
    done
    pw=$(write_conf)
    : >"$PIDS"
    trap 'cmd_down >/dev/null 2>&1' EXIT  # a failed bring-up stops what it started
    if munge_ok >/dev/null 2>&1; then say "munged already running: reusing it"
    else
        mkdir -p /run/munge && chown munge:munge /run/munge
        start munged "$LOG/munged.out" setpriv --reuid=munge --regid=munge --init-groups munged -F
        wait_for 10 munged "$LOG/munged.out" munge_ok
    fi
    if mysql_ok >/dev/null 2>&1; then say "mariadb already running on $MYSQL_SOCK: reusing it"
    else start_mysql; fi
    mariadb --socket="$MYSQL_SOCK" -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost';
        ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$pw';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';" || die "could not create the db user slurm"
    say "munged, mariadb up ($(elapsed) s)"
    start slurmdbd "$LOG/slurmdbd.out" slurmdbd -D
    wait_for 20 slurmdbd "$LOG/slurmdbd.log" timeout 5 sacctmgr -n list cluster
    say "slurmdbd up ($(elapsed) s)"
    start slurmctld "$LOG/slurmctld.out" slurmctld -D -f "$SLURM_CONF"
    start slurmd "$LOG/slurmd.out" slurmd -D -f "$SLURM_CONF"
    wait_for 30 "node idle" "$LOG/slurmctld.log" is_idle
    check_daemons
    # slurmctld registers its cluster with slurmdbd itself; make sure, since sacct (and submitit) need it.
    timeout 5 sacctmgr -n -P list cluster format=cluster | grep -qx charrnn \
        || timeout 5 sacctmgr -i add cluster charrnn >/dev/null || die "could not register the cluster"
    accounting || die "sacct does not answer" "$LOG/slurmdbd.log"
    trap - EXIT
    say "up in $(elapsed) s: $(hostname -s) $(cores) CPUs, partition debug; source $STATE/env"
}

cmd_down() {
    [[ -f $PIDS ]] || { say "nothing recorded in $PIDS: nothing to stop"; return; }
    local -a names pids; local name pid
    while read -r name pid; do names=("$name" "${names[@]}"); pids=("$pid" "${pids[@]}"); done <"$PIDS"
    # Jobs still running would outlive slurmd as orphaned slurmstepd processes: cancel them, give them a moment.
    if answers && [[ -n $(squeue -h -o %A 2>/dev/null) ]]; then
        scancel --full --user="$(id -un)" 2>/dev/null || true
        for ((w = 0; w < 50; w++)); do [[ -z $(squeue -h -o %A 2>/dev/null) ]] && break; sleep 0.1; done
    fi
    # Reverse start order; a PID is ours only while its command line still names the daemon.
    for i in "${!pids[@]}"; do
        pid=${pids[$i]} name=${names[$i]}
        alive "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "${name%d}" || continue
        kill -TERM "$pid" 2>/dev/null || continue
        for ((w = 0; w < 50; w++)); do alive "$pid" || break; sleep 0.1; done
        alive "$pid" && { say "$name ($pid) ignored TERM: KILL"; kill -KILL "$pid" 2>/dev/null || true; }
        say "stopped $name ($pid) at $(elapsed) s"
    done
    rm -f "$PIDS"
}

case $CMD in
    install) cmd_install ;;
    up | down) "cmd_$CMD" ;;
    status) if ! answers; then say "not answering ($STATE)"; exit 1
            elif ! accounting; then say "up, but sacct fails (slurmdbd down?)"; exit 1
            else say "up: node $(node_state), accounting on"; fi ;;
    *) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
