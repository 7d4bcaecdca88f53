#!/usr/bin/env bash
# Stop what slurm-up.sh started, by pid file (never by name).
for p in /run/slurmd.pid /run/slurmctld.pid /run/slurmdbd.pid /run/mysqld/mysqld.pid /run/munge/munged.pid; do
  if [ -s "$p" ]; then kill "$(cat "$p")" 2>/dev/null || true; fi
  sleep 0.5
done
