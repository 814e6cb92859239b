#!/usr/bin/env bash
# The rolling upgrade on the lab that `KEEP=1 tests/lab/run.sh` left up (`make lab-upgrade-test`):
# builds murmur 0.1.0+lab2 from a copy of the checkout, runs upgrade.yml with it while every VM
# asks its system resolver for web.service.murmur every 200 ms, then checks that every agent runs
# the new build (gossip tag build ...:murmur-<version>+lab2), every agent's PID changed, and no
# probe failed. The caller stops the lab (make lab-down).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
export LAB=${LAB:-$ROOT/build/lab}
LABSH=$ROOT/tests/lab/lab.sh
PY=${PY:-$ROOT/.venv/bin/python}
RUN=$LAB/run
VMS=(s1 s2 s3 c1 c2)
export ANSIBLE_CONFIG=$ROOT/deploy/ansible/ansible.cfg ANSIBLE_ROLES_PATH=$ROOT/deploy/ansible/roles
export ANSIBLE_NOCOLOR=1 ANSIBLE_HOST_KEY_CHECKING=False ANSIBLE_SSH_ARGS="-o ControlMaster=auto -o ControlPersist=60s -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
[[ -f $LAB/hosts && -d $RUN ]] || { echo "no lab up: run KEEP=1 tests/lab/run.sh first"; exit 1; }
t0=$SECONDS
invm() { "$LABSH" vm "$@"; }
pids() { local n; for n in "${VMS[@]}"; do echo "$n $(invm "$n" systemctl show -P MainPID murmur)"; done; }

# the new version: the checkout copied, its version bumped to <version>+lab2
base=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
new=$base+lab2
src=$LAB/src-lab2
rm -rf "$src" && mkdir -p "$src"
git ls-files -z | xargs -0 cp --parents -t "$src"
sed -i "s/^version = \".*\"/version = \"$new\"/" "$src/pyproject.toml"
sed -i "s/^__version__ = \".*\"/__version__ = \"$new\"/" "$src/__init__.py"
rm -rf "$LAB/wheelhouse2" && cp -r "$LAB/wheelhouse" "$LAB/wheelhouse2" && rm -f "$LAB"/wheelhouse2/murmur-*.whl
"$PY" -m pip wheel -q --disable-pip-version-check --no-deps --wheel-dir "$LAB/wheelhouse2" "$src" 2>&1 | grep -v "is ignored" || true
(cd "$LAB/wheelhouse2" && tar --sort=name --mtime=@0 --owner=0 --group=0 -cf "$LAB/wheelhouse2.tar" -- *.whl)
echo "built murmur $new"

pids >"$LAB/pids.pre-upgrade"
# DNS probes: every 200 ms from every VM through its system resolver, until told to stop
for n in "${VMS[@]}"; do
  invm "$n" rm -f /run/probe.stop /run/probe.fail
  # a failed probe is logged in the VM's /run/probe.fail: its time and what it got (the rcode, or
  # TIMEOUT when no answer came within the second, or NOERROR/NXDOMAIN with no address)
  invm "$n" bash -c 'ok=0; bad=0; while [[ ! -e /run/probe.stop ]]; do
      out=$(dig +time=1 +tries=1 web.service.murmur A 2>&1)
      if grep -qE "^web\.service\.murmur\.[[:space:]].*[[:space:]]A[[:space:]]" <<<"$out"; then ok=$((ok+1)); else
        bad=$((bad+1)); st=$(sed -n "s/.*status: \([A-Z]*\),.*/\1/p" <<<"$out")
        echo "$(date +%T.%3N) ${st:-TIMEOUT}" >>/run/probe.fail; fi
      sleep 0.2; done; echo "$ok $bad"' >"$LAB/probe.$n" 2>&1 &
done
rc=0
stamp() { local line; while IFS= read -r line; do printf '%(%T)T %s\n' -1 "$line"; done; }
ansible-playbook -i "$RUN/hosts.ini" deploy/ansible/upgrade.yml -e murmur_wheelhouse="$LAB/wheelhouse2.tar" \
  -e murmur_version="$new" 2>&1 | stamp >"$LAB/upgrade.log" || { tail -30 "$LAB/upgrade.log"; rc=1; }
for n in "${VMS[@]}"; do invm "$n" touch /run/probe.stop; done
wait
sed -n '/PLAY RECAP/,$p' "$LAB/upgrade.log"
for n in "${VMS[@]}"; do
  read -r ok bad <"$LAB/probe.$n" || { echo "$n: probe output: $(cat "$LAB/probe.$n")"; rc=1; continue; }
  echo "$n: DNS probes ok=$ok failed=$bad"
  [[ $bad == 0 ]] || invm "$n" cat /run/probe.fail | sed "s/^/  $n failed: /"
  [[ $bad == 0 && $ok -gt 0 ]] || rc=1
done
# when each agent stopped and started (to line up with the failed probes above)
for n in "${VMS[@]}"; do
  invm "$n" journalctl -q -u murmur -o short-precise --no-hostname | grep -E "systemd\[1\]: (Stopping|Started)" \
    | tail -2 | sed "s/^/  $n /"
done
pids >"$LAB/pids.post-upgrade"
while read -r n before; do
  after=$(awk -v n="$n" '$1 == n {print $2}' "$LAB/pids.post-upgrade")
  [[ $after != "$before" && $after != 0 ]] || { echo "$n: PID $before -> $after (not restarted)"; rc=1; }
done <"$LAB/pids.pre-upgrade"
n_new=$(invm s1 bash -c ". /etc/profile.d/murmur.sh && /opt/murmur/venv/bin/murmur members --detailed" | grep -c "murmur-$new" || true)
echo "members running murmur-$new: $n_new of 5"
[[ $n_new == 5 ]] || rc=1
echo "TIME upgrade $((SECONDS - t0)) s ($([[ $rc == 0 ]] && echo passed || echo FAILED))"
exit $rc
