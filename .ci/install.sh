#!/usr/bin/env bash
# Install the Debian packages the integration tests need (Debian 12, run as root).
#
# Idempotent: when every package is already installed it does nothing. It never starts a
# service: the test suite (testinfra/) starts the daemons it needs and stops them by pid.
set -euo pipefail

PKGS=(
  openssh-server openssh-client rsync      # SSH hosts (chester_testinfra.sshd)
  iproute2 nftables util-linux procps       # network namespaces, blackholes, unshare/nsenter
  munge slurmctld slurmd slurm-client       # single-node SLURM (chester_testinfra.slurm)
  slurmdbd mariadb-server mariadb-client    # SLURM accounting, so that `sacct` works
  graphviz                                  # the docs' diagrams (docs/diagrams/*.dot -> SVG)
  chromium chromium-driver fonts-dejavu-core  # the docs site checked in a real browser
)

installed=$(dpkg-query -W -f='${Status}\n' "${PKGS[@]}" 2>/dev/null | grep -c '^install ok installed$' || true)
if [ "$installed" -ne "${#PKGS[@]}" ]; then
  export DEBIAN_FRONTEND=noninteractive
  # Keep maintainer scripts from starting daemons (without systemd, invoke-rc.d would run
  # /etc/init.d scripts). A policy-rc.d that is already there is left as it is.
  policy=/usr/sbin/policy-rc.d
  own_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod 755 "$policy"
    own_policy=1
  fi
  trap '[ "$own_policy" = 1 ] && rm -f "$policy"' EXIT
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${PKGS[@]}" >/dev/null
fi
