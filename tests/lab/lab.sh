#!/usr/bin/env bash
# The VM lab for the Ansible role (`make lab-test`): "VMs" that boot real systemd, with no
# hypervisor and no Docker.
#
# Each VM is
#   * a copy-on-write overlay over one Debian 12 rootfs (mmdebstrap; built once, cached in
#     $LAB/rootfs; delete it to rebuild),
#   * its own network namespace, whose eth0 is a veth into bridge br0 of the lab's controller
#     namespace ($PFX-ctl); addresses $NET.0/24 exist only inside these namespaces (no uplink, no
#     route to or from the host's own namespace),
#   * `systemd-nspawn --boot`: systemd as PID 1 in its own PID/mount/UTS/IPC namespaces.
# The controller (Ansible, on the host) reaches VM i's sshd through an ssh ProxyCommand,
# `lab.sh tcp i 22`, a relay that joins only VM i's network namespace and dials 127.0.0.1:22.
#
#   LAB=build/lab tests/lab/lab.sh rootfs          build the image once (cached)
#   LAB=... tests/lab/lab.sh up NAME...            boot one VM per name; writes $LAB/hosts (name ip)
#   LAB=... tests/lab/lab.sh vm NAME CMD...        run CMD inside a VM (nsenter into all its namespaces)
#   LAB=... tests/lab/lab.sh tcp NAME PORT         relay stdio to 127.0.0.1:PORT inside the VM's netns
#   LAB=... tests/lab/lab.sh down                  stop every VM by PID, unmount, delete the namespaces
#
# Root only (CI is root). Needs mmdebstrap (or debootstrap: LAB_DEBOOTSTRAP=1, or when mmdebstrap is
# missing), systemd-container, iproute2, util-linux, python3.
set -euo pipefail

LAB=${LAB:?set LAB to the lab state directory}
LAB=$(realpath -m "$LAB")
NET=10.99.77                 # the lab's /24, inside 10.99.0.0/16; never on the host's own namespace
PFX=${LAB_PREFIX:-mlab}
CTL=$PFX-ctl
SUITE=bookworm
MIRROR=${LAB_MIRROR:-$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SELF=$(realpath "${BASH_SOURCE[0]}")
PACKAGES=systemd,systemd-sysv,dbus,python3,python3-venv,openssh-server,dnsmasq,bind9-dnsutils,iproute2,procps

log() { echo "[lab] $*" >&2; }
die() { echo "[lab] error: $*" >&2; exit 1; }
[[ $(id -u) == 0 ]] || die "needs root"
[[ $PFX =~ ^[a-z][a-z0-9]{0,7}$ ]] || die "LAB_PREFIX: 1-8 of [a-z0-9], starting with a letter"

stamp() { local line; while IFS= read -r line; do printf '%(%T)T %s\n' -1 "$line"; done; }  # each log line timed

cmd_rootfs() {
  local r=$LAB/rootfs
  if [[ -f $r/.lab-ready ]]; then log "rootfs cached in $r"; return; fi
  mkdir -p "$LAB"
  rm -rf "$r" "$r.tmp"
  if command -v mmdebstrap >/dev/null && [[ ${LAB_DEBOOTSTRAP:-} != 1 ]]; then
    # mmdebstrap: one apt run (parallel downloads, one dpkg pass) instead of debootstrap's
    # package-by-package shell loop; the same package set (minbase = Essential + Priority required).
    # Its merged-usr hook makes the /usr symlinks itself (as debootstrap does), so apt picks
    # usr-is-merged and not usrmerge, which would bring perl (~50 MB); eatmydata: dpkg skips fsync
    # (a throwaway image). No docs, man pages or translations: the VMs are read by scripts only.
    log "mmdebstrap $SUITE into $r (once; log: $LAB/rootfs.log)"
    local ex=(--dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*'
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
      --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias')
    timeout 900 mmdebstrap --mode=root --variant=minbase --include="$PACKAGES" "${ex[@]}" \
      --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr --hook-dir=/usr/share/mmdebstrap/hooks/eatmydata \
      --aptopt='Acquire::Retries "3"' \
      "$SUITE" "$r.tmp" "$MIRROR" 2>&1 | stamp >"$LAB/rootfs.log" || { tail -20 "$LAB/rootfs.log" >&2; die "mmdebstrap failed"; }
  else
    log "debootstrap $SUITE into $r (once; log: $LAB/rootfs.log)"
    timeout 900 debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$r.tmp" "$MIRROR" \
      2>&1 | stamp >"$LAB/rootfs.log" || { tail -20 "$LAB/rootfs.log" >&2; die "debootstrap failed"; }
  fi
  [[ -f $LAB/id_ed25519 ]] || ssh-keygen -q -t ed25519 -N '' -C murmur-lab -f "$LAB/id_ed25519"
  install -d -m 700 "$r.tmp/root/.ssh"
  install -m 600 "$LAB/id_ed25519.pub" "$r.tmp/root/.ssh/authorized_keys"
  cat >"$r.tmp/etc/ssh/sshd_config.d/lab.conf" <<'CONF'
PermitRootLogin prohibit-password
PasswordAuthentication no
UseDNS no
MaxStartups 100:30:200
CONF
  # The lab has no upstream resolver: the bridge address answers nothing, and nothing leaves the lab.
  echo "nameserver $NET.1" >"$r.tmp/etc/resolv.conf"
  # Boot fast: nothing in the lab needs these.
  for u in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer; do
    rm -f "$r.tmp/etc/systemd/system/timers.target.wants/$u"
  done
  rm -f "$r.tmp"/var/cache/apt/archives/*.deb
  mv "$r.tmp" "$r"
  touch "$r/.lab-ready"
}

vm_index() { # NAME or address -> its index (line number in $LAB/hosts)
  awk -v n="$1" '$1 == n || $2 == n {print NR; found=1} END {exit !found}' "$LAB/hosts" || die "no such VM: $1"
}

cmd_up() {
  (($# >= 1)) || die "up NAME..."
  [[ -f $LAB/rootfs/.lab-ready ]] || cmd_rootfs
  [[ ! -e $LAB/hosts ]] || die "a lab is already up ($LAB/hosts); run: $0 down"
  ip netns add "$CTL"
  ip -n "$CTL" link set lo up
  ip -n "$CTL" link add br0 type bridge
  ip -n "$CTL" addr add "$NET.1/24" dev br0
  ip -n "$CTL" link set br0 up
  : >"$LAB/hosts"
  local i=0 name
  for name in "$@"; do
    i=$((i + 1))
    [[ $name =~ ^[a-z][a-z0-9-]{0,30}$ ]] || die "bad VM name: $name"
    local ns=$PFX-$i d=$LAB/vms/$name ip=$NET.$((10 + i))
    echo "$name $ip" >>"$LAB/hosts"
    mkdir -p "$d"/{upper,work,root}
    ip netns add "$ns"
    ip -n "$CTL" link add "v$i" type veth peer name eth0 netns "$ns"
    ip -n "$CTL" link set "v$i" master br0 up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add "$ip/24" dev eth0
    ip -n "$ns" link set eth0 up
    mount -t overlay overlay -o "lowerdir=$LAB/rootfs,upperdir=$d/upper,workdir=$d/work" "$d/root"
    echo "$name" >"$d/root/etc/hostname"
    printf '127.0.0.1 localhost\n%s %s\n' "$ip" "$name" >"$d/root/etc/hosts"
    # --register=no --keep-unit: needs no machined or D-Bus on the host. The VM is stopped by the
    # PID recorded here (see down).
    systemd-nspawn --quiet -D "$d/root" --boot --register=no --keep-unit --machine="$PFX-$name" \
      --hostname="$name" --network-namespace-path="/run/netns/$ns" --resolv-conf=off \
      --timezone=off --link-journal=no --console=pipe >"$d/console.log" 2>&1 </dev/null &
    echo $! >"$d/nspawn.pid"
  done
  for name in "$@"; do
    local ok=""
    for _ in $(seq 1 300); do  # 30 s per VM at most
      if vm_init "$name" >/dev/null && cmd_vm "$name" systemctl is-active --quiet ssh.service 2>/dev/null; then
        ok=1; break
      fi
      sleep 0.1
    done
    [[ -n $ok ]] || { tail -20 "$LAB/vms/$name/console.log" >&2; die "$name did not boot"; }
  done
  log "up: $# VMs ($*), hosts in $LAB/hosts"
}

vm_init() { # NAME -> host PID of the VM's systemd (the nspawn process's child)
  local p
  p=$(cat "$LAB/vms/$1/nspawn.pid" 2>/dev/null) || return 1
  p=$(ps -o pid= --ppid "$p" | awk 'NR==1{print $1}')
  [[ -n $p ]] && echo "$p"
}

cmd_vm() {
  local name=$1; shift
  local p
  p=$(vm_init "$name") || die "$name is not running"
  nsenter --target "$p" --mount --uts --ipc --net --pid --root --wd "$@"
}

cmd_tcp() { # stdio <-> 127.0.0.1:PORT inside the VM's network namespace (an ssh ProxyCommand)
  local i
  i=$(vm_index "$1")
  exec ip netns exec "$PFX-$i" python3 -c '
import os, socket, sys, threading
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
s.settimeout(None)
def up():
    while (b := os.read(0, 65536)):
        s.sendall(b)
    s.shutdown(socket.SHUT_WR)
threading.Thread(target=up, daemon=True).start()
while (b := s.recv(65536)):
    os.write(1, b)
' "$2"
}

alive() { local st; st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1; [[ $st != Z* ]]; }

cmd_down() {
  local d
  for d in "$LAB"/vms/*; do
    [[ -d $d ]] || continue
    if [[ -f $d/nspawn.pid ]]; then
      local n init
      n=$(cat "$d/nspawn.pid")
      # SIGKILL the VM's systemd: when a PID namespace's init dies the kernel kills everything in
      # it, and nspawn exits. A clean halt buys a throwaway VM nothing.
      init=$(ps -o pid= --ppid "$n" 2>/dev/null | awk 'NR==1{print $1}' || true)
      [[ -n $init ]] && kill -KILL "$init" 2>/dev/null || true
      for _ in $(seq 1 100); do alive "$n" || break; sleep 0.05; done
      if alive "$n"; then kill -KILL "$n" 2>/dev/null || true; fi
      for _ in $(seq 1 40); do alive "$n" || break; sleep 0.05; done
      rm -f "$d/nspawn.pid"
    fi
    if mountpoint -q "$d/root"; then umount "$d/root" || umount -l "$d/root"; fi
    rm -rf "$d"
  done
  local ns
  for ns in $(ip netns list | awk '{print $1}' | grep -E "^$PFX-(ctl|[0-9]+)$" || true); do
    ip netns del "$ns"
  done
  rm -f "$LAB/hosts"
  log "down"
}

sub=${1:-}
shift || true
case $sub in
  rootfs) cmd_rootfs ;;
  up) cmd_up "$@" ;;
  down) cmd_down ;;
  vm) cmd_vm "$@" ;;
  tcp) cmd_tcp "$@" ;;
  *) echo "usage: LAB=dir $0 rootfs | up NAME... | vm NAME CMD... | tcp NAME PORT | down" >&2; exit 2 ;;
esac
