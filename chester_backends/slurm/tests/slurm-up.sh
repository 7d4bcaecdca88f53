#!/usr/bin/env bash
# Single-node Slurm 22.05 (Debian 12) on loopback, run as root, no systemd.
# WITH_DBD=1 (default) also starts MariaDB (unix socket only) + slurmdbd so `sacct` works.
# WITH_DBD=0: no DB; `sacct -j` says "accounting storage is disabled", use `sacct -c` (jobcomp/filetxt).
set -euo pipefail
WITH_DBD=${WITH_DBD:-1}
running() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
export DEBIAN_FRONTEND=noninteractive
pkgs="slurmctld slurmd slurm-client munge"
[ "$WITH_DBD" = 1 ] && pkgs="$pkgs slurmdbd mariadb-server"
if ! dpkg -s $pkgs >/dev/null 2>&1; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
fi

# Slurm (with NoInAddrAny/NoCtldInAddrAny) binds to the address `hostname` resolves to.
# Make sure that is loopback, otherwise slurmctld would listen on a real interface.
first=$(getent ahostsv4 "$(hostname)" | awk 'NR==1{print $1}')
case "$first" in 127.*) ;; *) echo "127.0.0.1 $(hostname)" >> /etc/hosts ;; esac

mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
if [ "$WITH_DBD" = 1 ]; then
  ACCT="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30"
else
  ACCT="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
fi
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=localcluster
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# bind every daemon/srun to the hostname's address (loopback), not 0.0.0.0
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# default batch_sched_delay=3 makes each scheduling cycle wait 3 s after a job ends
SchedulerParameters=batch_sched_delay=0
$ACCT
JobCompType=jobcomp/filetxt
JobCompLoc=/var/log/slurm/jobcomp.log
DependencyParameters=kill_invalid_depend
ReturnToService=2
MpiDefault=none
SwitchType=switch/none
MinJobAge=${SLURM_MIN_JOB_AGE:-300}
MaxArraySize=${SLURM_MAX_ARRAY_SIZE:-1001}
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
Waittime=0
# CPUs may exceed the real count thanks to config_overrides (lets 8 array tasks run at once on 2 cores)
SlurmdParameters=config_overrides
NodeName=localhost NodeAddr=127.0.0.1 CPUs=${SLURM_CPUS:-8} RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF

# munge (Debian's postinst already created /etc/munge/munge.key)
[ -s /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key
chown munge:munge /etc/munge/munge.key; chmod 600 /etc/munge/munge.key
install -d -o munge -g munge -m 0755 /run/munge
running /run/munge/munged.pid || runuser -u munge -- /usr/sbin/munged
for i in $(seq 50); do munge -n >/dev/null 2>&1 && break; sleep 0.1; done

if [ "$WITH_DBD" = 1 ]; then
  install -d -o mysql -g mysql -m 0755 /run/mysqld
  [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
  if ! running /run/mysqld/mysqld.pid; then
    # --skip-networking: unix socket only, no TCP port at all
    setsid -f runuser -u mysql -- /usr/sbin/mariadbd --skip-networking \
      --socket=/run/mysqld/mysqld.sock --pid-file=/run/mysqld/mysqld.pid \
      >/var/log/slurm/mariadb.log 2>&1 </dev/null
    for i in $(seq 100); do mariadb -e 'select 1' >/dev/null 2>&1 && break; sleep 0.1; done
  fi
  mariadb -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmpw';
              GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
  cat > /etc/slurm/slurmdbd.conf <<CONF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
# undocumented for slurmdbd.conf but honoured: bind to hostname's address instead of 0.0.0.0
CommunicationParameters=NoInAddrAny
SlurmUser=root
LogFile=/var/log/slurm/slurmdbd.log
PidFile=/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurmpw
StorageLoc=slurm_acct_db
CONF
  chmod 600 /etc/slurm/slurmdbd.conf
  running /run/slurmdbd.pid || slurmdbd
  for i in $(seq 100); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.1; done
  sacctmgr -i -Q add cluster localcluster >/dev/null 2>&1 || true
fi

running /run/slurmctld.pid || slurmctld
running /run/slurmd.pid || slurmd -N localhost
for i in $(seq 100); do sinfo -h -o %t 2>/dev/null | grep -qx idle && break; sleep 0.2; done
sinfo
# safety: nothing of ours may listen on a non-loopback address
if ss -ltnH | awk '{print $4}' | grep -E ':(6817|6818|6819)$' | grep -vq '^127\.'; then
  echo "slurm bound to a non-loopback address, stopping" >&2; bash "$(dirname "$0")/slurm-down.sh"; exit 1
fi
