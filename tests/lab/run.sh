#!/usr/bin/env bash
# `make lab-test`: the Ansible role on five booted VMs (tests/lab/lab.sh), checked from inside them.
#
#   rootfs (cached) -> wheelhouse -> boot 3 servers + 2 clients -> site.yml -> from every VM:
#   `murmur members` (5 alive, over HTTPS) and `dig web.service.murmur` through the system resolver
#   (the clients' addresses; ACLs deny by default, and the agents' default token may read) ->
#   gossip encrypted, TLS-only API and RPC -> an anonymous write refused, the management token's
#   accepted -> add a service to a host's variables, re-apply: it resolves on every VM
#   and no agent restarted (same PIDs) -> a second run changes nothing -> no secret in a log ->
#   ansible-lint -> down.
#
# Root only. Prints a TIME line per step and the total. Env: LAB (default build/lab), KEEP=1 leaves
# the VMs up for a look (then: LAB=build/lab tests/lab/lab.sh down).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
export LAB=${LAB:-$ROOT/build/lab}
mkdir -p "$LAB"
LABSH=$ROOT/tests/lab/lab.sh
PY=${PY:-$ROOT/.venv/bin/python}
SERVERS=(s1 s2 s3)
CLIENTS=(c1 c2)
VMS=("${SERVERS[@]}" "${CLIENTS[@]}")
RUN=$LAB/run
export ANSIBLE_CONFIG=$ROOT/deploy/ansible/ansible.cfg
export ANSIBLE_ROLES_PATH=$ROOT/deploy/ansible/roles
set -o pipefail
export ANSIBLE_NOCOLOR=1 ANSIBLE_HOST_KEY_CHECKING=False ANSIBLE_SSH_ARGS="-o ControlMaster=auto -o ControlPersist=60s -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
T_START=$SECONDS

step() { # step NAME CMD...: run, print its time; stop the test on failure
  local name=$1 t0=$SECONDS rc=0
  shift
  echo "=== $name"
  "$@" || rc=$?
  printf 'TIME %-22s %4d s%s\n' "$name" $((SECONDS - t0)) "$([[ $rc == 0 ]] || echo "  FAILED (rc=$rc)")"
  return $rc
}

cleanup() {
  local rc=$? p
  for p in ${ROOTFS_PID:-} ${LINT_PID:-}; do kill "$p" 2>/dev/null || true; done  # ours, by PID (a failed run)
  if [[ ${KEEP:-} == 1 ]]; then echo "KEEP=1: VMs left up; LAB=$LAB $LABSH down"; else "$LABSH" down || true; fi
  printf 'TIME %-22s %4d s  (%s)\n' total $((SECONDS - T_START)) "$([[ $rc == 0 ]] && echo passed || echo FAILED)"
}

wheelhouse() { # dependencies' wheels cached per pyproject.toml; murmur's own wheel rebuilt every run
  local wh=$LAB/wheelhouse key
  key=$(sha256sum pyproject.toml | cut -c1-16)
  if [[ $(cat "$wh/.key" 2>/dev/null) != "$key" ]]; then
    rm -rf "$wh" && mkdir -p "$wh"
    "$PY" -m pip wheel -q --disable-pip-version-check --wheel-dir "$wh" . 2>&1 | grep -v "is ignored" || true
    echo "$key" >"$wh/.key"
  fi
  rm -rf "$LAB/wheel.tmp" "$wh"/murmur-*.whl
  "$PY" -m pip wheel -q --disable-pip-version-check --no-deps --wheel-dir "$LAB/wheel.tmp" . >/dev/null
  mv "$LAB"/wheel.tmp/murmur-*.whl "$wh"/
  # one archive, sorted and dated, so an unchanged wheelhouse is an unchanged file
  (cd "$wh" && tar --sort=name --mtime=@0 --owner=0 --group=0 -cf "$LAB/wheelhouse.tar" -- *.whl)  # files only: no "./" entry to re-chmod
  basename "$wh"/murmur-*.whl
}

inventory() { # the lab's inventory: real groups, ansible_host = the VM's lab address, ssh via the relay
  rm -rf "$RUN" && mkdir -p "$RUN/host_vars" "$RUN/group_vars"
  local name ip
  {
    echo "[servers]"
    for name in "${SERVERS[@]}"; do echo "$name ansible_host=$(vm_ip "$name")"; done
    echo "[clients]"
    for name in "${CLIENTS[@]}"; do echo "$name ansible_host=$(vm_ip "$name")"; done
  } >"$RUN/hosts.ini"
  cat >"$RUN/group_vars/all.yml" <<YML
ansible_user: root
ansible_ssh_private_key_file: $LAB/id_ed25519
ansible_ssh_common_args: -o ProxyCommand="env LAB=$LAB $LABSH tcp %h 22"
murmur_wheelhouse: $LAB/wheelhouse.tar
murmur_version: $(basename "$LAB"/wheelhouse/murmur-*.whl | cut -d- -f2)
murmur_install_os_packages: false   # the lab has no package index; the image has python3-venv and dnsmasq
murmur_gossip_preset: local
# secrets made on this controller by the checkout's own CLI; TLS and gossip encryption are the
# role's defaults. Plain HTTP off: every CLI call below goes over HTTPS with the CA.
murmur_controller_cli: $ROOT/.venv/bin/murmur
murmur_http_port: -1
YML
  for name in "${CLIENTS[@]}"; do
    cat >"$RUN/host_vars/$name.yml" <<YML
murmur_services:
  - name: web
    port: 22
    checks:
      - tcp: 127.0.0.1:22
        interval: 1s
YML
  done
}

vm_ip() { awk -v n="$1" '$1 == n {print $2}' "$LAB/hosts"; }
invm() { "$LABSH" vm "$@"; }

stamp() { local line; while IFS= read -r line; do printf '%(%T)T %s\n' -1 "$line"; done; }

play() { # play LOGNAME: run site.yml, keep the log, print the recap
  local log=$LAB/$1.log
  # (each output line stamped with the time: the log shows where a run spends it)
  if ! ansible-playbook -i "$RUN/hosts.ini" deploy/ansible/site.yml 2>&1 | stamp >"$log"; then
    tail -40 "$log"; return 1
  fi
  sed -n '/PLAY RECAP/,$p' "$log"
}

poll() { # poll SECONDS DESCRIPTION CMD...: until CMD succeeds, at most SECONDS
  local limit=$1 what=$2 t0=$SECONDS
  shift 2
  until "$@"; do
    if ((SECONDS - t0 >= limit)); then echo "timed out after ${limit}s: $what"; "$@" || true; return 1; fi
    sleep 0.5
  done
}

acl_token() { cat "$RUN/murmur-secrets/acl-$1.token"; }  # management, dns, agent: made by the role

mcli() { # VM ARGS...: the murmur CLI inside the VM, set up as the role sets up login shells
  # (/etc/profile.d/murmur.sh: MURMUR_HTTP_ADDR=https://..., MURMUR_CACERT, MURMUR_CLIENT_CERT/KEY),
  # with the management token from the environment (MURMUR_HTTP_TOKEN; nsenter passes it on, so
  # it is on no command line)
  local vm=$1; shift
  MURMUR_HTTP_TOKEN=$(acl_token management) invm "$vm" \
    bash -c '. /etc/profile.d/murmur.sh && exec /opt/murmur/venv/bin/murmur "$@"' murmur "$@"
}

members_ok() { # VM: `murmur members` inside it lists the 5 VMs, all alive
  local out
  out=$(mcli "$1" members 2>&1) || return 1
  [[ $(grep -cE '^(s[1-3]|c[12]) .* alive ' <<<"$out") == 5 && $(grep -c ' alive ' <<<"$out") == 5 ]] || {
    [[ -n ${VERBOSE:-} ]] && echo "$1: $out"; return 1; }
}

dig_is() { # VM NAME WANT: `dig +short NAME` through the VM's system resolver gives exactly WANT (sorted, space-separated)
  local got
  got=$(invm "$1" dig +short +time=2 +tries=1 "$2" A 2>/dev/null | sort | xargs) || return 1
  [[ $got == "$3" ]] || { [[ -n ${VERBOSE:-} ]] && echo "$1: $2 -> '$got', want '$3'"; return 1; }
}

check_members() {
  local name
  for name in "${VMS[@]}"; do VERBOSE=1 poll 60 "$name: 5 members alive" members_ok "$name" || return 1; done
  mcli s1 members
  echo "murmur members: 5 alive, seen from each of the ${#VMS[@]} VMs"
}

check_dns() { # NAME WANT_VMS...
  local svc=$1 name want
  shift
  want=$(for name in "$@"; do vm_ip "$name"; done | sort | xargs)
  for name in "${VMS[@]}"; do
    invm "$name" grep -qx 'nameserver 127.0.0.1' /etc/resolv.conf || { echo "$name: resolv.conf not ours"; return 1; }
    VERBOSE=1 poll 60 "$name: $svc" dig_is "$name" "$svc" "$want" || return 1
  done
  echo "dig $svc through the system resolver: '$want' on all ${#VMS[@]} VMs"
}

check_secure() { # gossip encryption and TLS, from inside every VM; no secret in any log
  local name out key
  key=$(cat "$RUN/murmur-secrets/gossip.key")
  for name in "${VMS[@]}"; do
    # keyring -list answers only with encryption on (500 otherwise): one key, held by all 5
    out=$(mcli "$name" keyring -list 2>&1) || { echo "$name: keyring -list failed: ${out//"$key"/<key>}"; return 1; }
    [[ $(grep -cE '^  \S+ \[5/5\]' <<<"$out") == 1 && $(grep -cE '^  \S+ \[' <<<"$out") == 1 ]] || {
      echo "$name: keyring -list: ${out//"$key"/<key>}"; return 1; }
    # the API is HTTPS only: plain HTTP is off, and HTTPS wants a client certificate (verify_incoming)
    if invm "$name" env MURMUR_HTTP_ADDR=http://127.0.0.1:8500 /opt/murmur/venv/bin/murmur members >/dev/null 2>&1; then
      echo "$name: plain HTTP answered"; return 1; fi
    if invm "$name" env MURMUR_HTTP_ADDR=https://127.0.0.1:8501 MURMUR_CACERT=/etc/murmur.d/tls/ca.pem \
        /opt/murmur/venv/bin/murmur members >/dev/null 2>&1; then echo "$name: HTTPS answered without a client certificate"; return 1; fi
    out=$(invm "$name" stat -c '%a %U:%G' /etc/murmur.d/tls/key.pem /etc/murmur.d/agent.toml | sort -u | xargs)
    [[ $out == "640 root:murmur" ]] || { echo "$name: key.pem/agent.toml modes: $out"; return 1; }
  done
  # server RPC is TLS only: a plaintext RPC frame from a client VM is refused (the clients' DNS
  # answers above, fetched from the servers over RPC, are the positive control)
  out=$(invm c1 python3 -c '
import socket, sys
s = socket.create_connection((sys.argv[1], 8300), timeout=5)
s.sendall(b"\x01\x00\x00\x00\x04ping")
s.settimeout(5)
try:
    print("closed" if s.recv(100) == b"" else "answered")
except ConnectionResetError:
    print("closed")
except socket.timeout:
    print("timeout")' "$(vm_ip s1)" 2>&1)
  [[ $out == closed ]] || { echo "plaintext RPC to s1:8300: $out"; return 1; }
  invm s1 journalctl -q -u murmur --no-hostname | grep -q 'refused a plaintext connection' || {
    echo "s1 did not log the refused plaintext connection"; return 1; }
  # the secrets on the controller: 0700 directory, 0600 keys
  out=$(stat -c '%a' "$RUN/murmur-secrets" "$RUN/murmur-secrets/gossip.key" "$RUN"/murmur-secrets/*-key.pem \
    "$RUN"/murmur-secrets/acl-{management,dns,agent}.token \
    "$RUN"/murmur-secrets/certs/*/*-key.pem | sort -u | xargs)
  [[ $out == "600 700" ]] || { echo "controller secrets modes: $out"; return 1; }
  echo "gossip encrypted (one key, 5/5, on every VM); API HTTPS only with client certificates; plaintext RPC refused;"
  echo "key files 0640 root:murmur on the VMs, 0600 (directories 0700) on the controller"
}

no_secret_logged() { # the gossip key and the CA key are in no Ansible log and no VM's journal
  local name secret
  for secret in "$(cat "$RUN/murmur-secrets/gossip.key")" "$(sed -n 2p "$RUN"/murmur-secrets/*-agent-ca-key.pem)" \
      "$(acl_token management)" "$(acl_token dns)" "$(acl_token agent)"; do
    [[ ${#secret} -gt 20 ]] || { echo "no secret to look for"; return 1; }
    if grep -qF -- "$secret" "$LAB"/*.log; then echo "a secret is in an Ansible log"; return 1; fi
    for name in "${VMS[@]}"; do
      if invm "$name" journalctl -q --no-hostname | grep -qF -- "$secret"; then echo "$name: a secret is in the journal"; return 1; fi
    done
  done
  echo "the gossip key, the CA key and the 3 ACL tokens: in no Ansible log ($(ls "$LAB"/*.log | xargs -n1 basename | xargs)) and no VM's journal"
}

check_acl() { # default deny, from inside a server and a client VM: no token may not write, the management token may
  local name out
  for name in s1 c1; do
    out=$(MURMUR_HTTP_TOKEN=$(acl_token management) invm "$name" python3 -c '
import json, os, ssl, urllib.error, urllib.request
tls = ssl.create_default_context(cafile="/etc/murmur.d/tls/ca.pem")
tls.load_cert_chain("/etc/murmur.d/tls/cert.pem", "/etc/murmur.d/tls/key.pem")
def call(method, path, body=None, token=None):
    req = urllib.request.Request("https://127.0.0.1:8501" + path, data=body, method=method)
    if token:
        req.add_header("X-Consul-Token", token)
    try:
        with urllib.request.urlopen(req, context=tls, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
mgmt = os.environ["MURMUR_HTTP_TOKEN"]
key = "/v1/kv/lab/acl-probe-" + os.uname().nodename
reg = json.dumps({"Node": "acl-probe", "Address": "10.99.77.250"}).encode()
got = [call("PUT", key, b"anonymous")[0], call("PUT", "/v1/catalog/register", reg)[0],
       call("GET", key, token=mgmt)[0],
       call("PUT", key, b"managed", token=mgmt), call("GET", key + "?raw", token=mgmt),
       call("DELETE", key, token=mgmt)[0]]
print(json.dumps(got))' 2>&1)
    # anonymous write: 403; anonymous catalog register: 403; the refused write left nothing (404);
    # the management token writes (true), reads back what it wrote, deletes
    [[ $out == '[403, 403, 404, [200, "true"], [200, "managed"], 200]' ]] || { echo "$name: $out"; return 1; }
  done
  echo "default deny: anonymous KV write and catalog register refused (403) on s1 and c1; the management token writes, reads, deletes"
}

pids() { local name; for name in "${VMS[@]}"; do echo "$name $(invm "$name" systemctl show -P MainPID murmur)"; done; }

add_service() { # a new service in c1's host variables, re-applied: DNS everywhere, no restart
  pids >"$LAB/pids.before"
  grep -q ' 0$' "$LAB/pids.before" && { cat "$LAB/pids.before"; echo "an agent is not running"; return 1; }
  cat >>"$RUN/host_vars/c1.yml" <<YML
  - name: api
    port: 2222
YML
  play reapply
  grep -qE '^[0-9:]+ c1 .*changed=[1-9]' "$LAB/reapply.log" || { echo "re-apply changed nothing on c1"; return 1; }
  grep -q 'RUNNING HANDLER \[murmur : Reload murmur\]' "$LAB/reapply.log" || { echo "no reload"; return 1; }
  check_dns api.service.murmur c1
  pids >"$LAB/pids.after"
  diff "$LAB/pids.before" "$LAB/pids.after" || { echo "an agent restarted"; return 1; }
  echo "agent PIDs unchanged: $(xargs <"$LAB/pids.after")"
}

idempotent() {
  play idempotence
  if grep -E '^[0-9:]+ (s[1-3]|c[12]) .*changed=[1-9]' "$LAB/idempotence.log"; then
    grep -B2 -E '^[0-9:]+ changed:' "$LAB/idempotence.log" | head -40
    echo "second run changed something"; return 1
  fi
  echo "second run: changed=0 on every VM"
}

unit_verify() {
  local name out
  for name in "${VMS[@]}"; do
    out=$(invm "$name" systemd-analyze verify /etc/systemd/system/murmur.service 2>&1) || { echo "$name: $out"; return 1; }
    [[ -z $out ]] || { echo "$name: $out"; return 1; }
  done
  echo "systemd-analyze verify murmur.service: clean on ${#VMS[@]} VMs"
}

LINT=${ANSIBLE_LINT:-$LAB/lint-venv/bin/ansible-lint}
lint_install() { # ansible-lint's own venv (build/lab/lint-venv: pip, once); run.sh starts it in the background
  [[ -x $LINT ]] && return 0
  rm -rf "$LAB/lint-venv"
  python3 -m venv "$LAB/lint-venv" && "$LAB/lint-venv/bin/pip" install -q --disable-pip-version-check ansible-lint 2>&1 \
    | grep -v "is ignored" || true
}

lint() { # ansible-lint, production profile
  if [[ -n ${LINT_PID:-} ]]; then wait "$LINT_PID" || true; LINT_PID=""; fi
  [[ -x $LINT ]] || lint_install
  [[ -x $LINT ]] || { echo "ansible-lint could not be installed (no package index?): skipped"; return 0; }
  local al=$LINT
  (cd deploy/ansible && "$al" --offline --nocolor --profile production site.yml upgrade.yml roles/murmur 2>&1 | tail -2)
}

trap cleanup EXIT
"$LABSH" down >/dev/null 2>&1 || true   # leftovers of an interrupted run
# On a fresh machine the image (network, dpkg), the wheelhouse (pip) and ansible-lint's venv (pip)
# are built at the same time; with the image cached, the rootfs step takes no time.
lint_install >"$LAB/lint-install.log" 2>&1 &
LINT_PID=$!
step rootfs "$LABSH" rootfs &
ROOTFS_PID=$!
step wheelhouse wheelhouse
wait "$ROOTFS_PID" || exit 1
ROOTFS_PID=""
step boot "$LABSH" up "${VMS[@]}"
inventory
step converge play converge
step members check_members
step dns check_dns web.service.murmur "${CLIENTS[@]}"
step secure check_secure
step acl-deny check_acl
step add-service add_service
step idempotence idempotent
step unit-verify unit_verify
step no-secret-logged no_secret_logged
step ansible-lint lint
