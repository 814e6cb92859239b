"""Autopilot's configuration is replicated: an `Autopilot` catalog command with Consul's CAS on
ModifyIndex (0: only if none yet), kept in snapshots, ignorable by older servers; the agent reads
it from its store and falls back to its `autopilot` config block (the seed) until it is written."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from murmur.agent.autopilot import DEFAULTS, AutopilotConfig, AutopilotError
from murmur.agent.config import AutopilotSeed
from murmur.catalog import commands as cmds
from murmur.catalog.store import StateStore


def conf(**kw: object) -> tuple[tuple[str, object], ...]:
    return tuple(sorted({**DEFAULTS, **kw}.items()))


def test_cas_zero_seeds_once_and_cas_n_needs_the_modify_index() -> None:
    st = StateStore()
    assert st.apply(5, cmds.encode(cmds.Autopilot(conf(MinQuorum=3), cas=0))) is True
    assert st.autopilot is not None and st.autopilot["MinQuorum"] == 3 and st.autopilot_index == (5, 5)
    # a second seed (another leader's, say) changes nothing
    assert st.apply(6, cmds.encode(cmds.Autopilot(conf(MinQuorum=9), cas=0))) is False
    assert st.autopilot["MinQuorum"] == 3 and st.autopilot_index == (5, 5)
    assert st.apply(7, cmds.encode(cmds.Autopilot(conf(MinQuorum=4), cas=4))) is False  # stale index
    assert st.apply(8, cmds.encode(cmds.Autopilot(conf(MinQuorum=4), cas=5))) is True
    assert st.autopilot_index == (5, 8)
    assert st.apply(9, cmds.encode(cmds.Autopilot(conf(CleanupDeadServers=False)))) is True  # no cas
    assert st.autopilot == {**DEFAULTS, "CleanupDeadServers": False} and st.autopilot_index == (5, 9)
    again = StateStore.restore(st.snapshot())
    assert again.autopilot == st.autopilot and again.autopilot_index == (5, 9)
    assert StateStore.restore(StateStore().snapshot()).autopilot is None


def test_the_command_is_ignorable_and_a_malformed_one_is_a_command_error() -> None:
    data = cmds.encode(cmds.Autopilot(conf(), 0))
    assert data[0] & cmds.IGNORE_FLAG  # an older server skips it instead of stopping
    assert cmds.decode(data) == cmds.Autopilot(conf(), 0)
    import msgpack

    for body in ({"c": [1, 2]}, {"c": {"MinQuorum": [1]}}, {"c": {}, "cas": -2}, {"c": {}, "cas": True}, {}):
        with pytest.raises(cmds.CommandError):
            cmds.decode(bytes([cmds.CommandType.AUTOPILOT]) + msgpack.packb(body))


def agent_with(seed: AutopilotSeed) -> SimpleNamespace:
    return SimpleNamespace(cfg=SimpleNamespace(autopilot=seed), store=StateStore())


def test_the_seed_counts_until_a_configuration_is_replicated_then_the_store_does() -> None:
    agent = agent_with(AutopilotSeed(server_stabilization_time="2s", cleanup_dead_servers=False))
    ap = AutopilotConfig(agent)  # type: ignore[arg-type]
    assert ap.values["ServerStabilizationTime"] == "2s" and ap.values["CleanupDeadServers"] is False
    assert ap.as_json()["ModifyIndex"] == 0
    seed = ap.seed_command()
    assert seed is not None and seed.cas == 0
    agent.store.apply(3, cmds.encode(seed))
    assert ap.seed_command() is None
    cmd = ap.update_command({"serverstabilizationtime": "30s", "CreateIndex": 99, "Bogus": 1}, cas=3)
    assert cmd.cas == 3 and dict(cmd.config)["ServerStabilizationTime"] == "30s"
    assert dict(cmd.config)["CleanupDeadServers"] is False  # merged over the current configuration
    agent.store.apply(4, cmds.encode(cmd))
    assert ap.values["ServerStabilizationTime"] == "30s" and ap.as_json()["ModifyIndex"] == 4
    assert ap.as_json()["CreateIndex"] == 3


@pytest.mark.parametrize("body", [[1], {"MaxTrailingLogs": -1}, {"MinQuorum": True}, {"CleanupDeadServers": "yes"},
                                  {"LastContactThreshold": "soon"}, {"ServerStabilizationTime": 10}])
def test_a_bad_put_body_is_an_autopilot_error(body: object) -> None:
    ap = AutopilotConfig(agent_with(AutopilotSeed()))  # type: ignore[arg-type]
    with pytest.raises(AutopilotError):
        ap.update_command(body, None)
