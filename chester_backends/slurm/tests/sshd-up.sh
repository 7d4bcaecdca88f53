#!/usr/bin/env bash
# Key-only sshd on 127.0.0.1:$PORT, all state in $DIR (no changes to /etc/ssh).
# usage: sshd-up.sh DIR [PORT]   -> prints nothing; pid in DIR/sshd.pid, client key DIR/id_ed25519
set -euo pipefail
DIR=$1; PORT=${2:-2222}
command -v /usr/sbin/sshd >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssh-server rsync >/dev/null; }
mkdir -p "$DIR" /run/sshd; chmod 700 "$DIR"
[ -f "$DIR/host_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -f "$DIR/host_ed25519"
[ -f "$DIR/id_ed25519" ]   || ssh-keygen -q -t ed25519 -N '' -f "$DIR/id_ed25519"
cp "$DIR/id_ed25519.pub" "$DIR/authorized_keys"
cat > "$DIR/sshd_config" <<CONF
ListenAddress 127.0.0.1
Port $PORT
HostKey $DIR/host_ed25519
PidFile $DIR/sshd.pid
AuthorizedKeysFile $DIR/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
MaxStartups 100:30:200
MaxSessions 50
Subsystem sftp internal-sftp
LogLevel ERROR
CONF
cat > "$DIR/ssh_config" <<CONF
Host testhost
  HostName 127.0.0.1
  Port $PORT
  User root
  IdentityFile $DIR/id_ed25519
  IdentitiesOnly yes
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  LogLevel ERROR
CONF
/usr/sbin/sshd -t -f "$DIR/sshd_config"
/usr/sbin/sshd -f "$DIR/sshd_config" -E "$DIR/sshd.log"
for i in $(seq 50); do [ -s "$DIR/sshd.pid" ] && ss -ltnH | grep -q "127.0.0.1:$PORT " && break; sleep 0.1; done
