"""agent/maintenance.py: the checks it adds, the file it keeps, and a bad file refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from murmur.agent.local_state import LocalState, NodeInfo
from murmur.agent.maintenance import Maintenance, MaintenanceError
from murmur.catalog.commands import ServiceSpec


def local() -> LocalState:
    st = LocalState(NodeInfo("n1", "id", "127.0.0.1", "dc1"))
    st.add_service(ServiceSpec(id="web", name="web"))
    return st


def test_enable_disable_and_reload_from_file(tmp_path: Path) -> None:
    st = local()
    m = Maintenance(st, str(tmp_path))
    assert not m.set_service("nope", True, "x", 0.0)  # unknown service
    assert m.set_service("web", True, "", 0.0)
    m.set_node(True, "upgrade", 0.0)
    chk = st.checks["_service_maintenance:web"]
    assert (chk.machine.status, chk.defn.service_id) == ("critical", "web")
    assert "no reason was provided" in chk.defn.notes
    assert st.checks["_node_maintenance"].defn.notes == "upgrade"

    st2 = local()
    st2.remove_service("web")
    m2 = Maintenance(st2, str(tmp_path))
    m2.load()
    m2.apply(0.0)
    assert set(st2.checks) == {"_node_maintenance"}  # web is not registered: its entry waits
    st2.add_service(ServiceSpec(id="web", name="web"))
    m2.apply(0.0)
    assert set(st2.checks) == {"_node_maintenance", "_service_maintenance:web"}

    m2.set_node(False, "", 0.0)
    m2.forget_service("web")
    m3 = Maintenance(local(), str(tmp_path))
    m3.load()
    assert (m3.node, m3.services) == (None, {})


def test_bad_or_newer_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "maintenance.json").write_text("{not json")
    with pytest.raises(MaintenanceError, match="maintenance.json"):
        Maintenance(local(), str(tmp_path)).load()
    (tmp_path / "maintenance.json").write_text('{"format": 99, "node": null, "services": {}}')
    with pytest.raises(MaintenanceError, match="newer"):
        Maintenance(local(), str(tmp_path)).load()
    # Positive control: a good file loads.
    (tmp_path / "maintenance.json").write_text('{"format": 1, "node": "r", "services": {}}')
    m = Maintenance(local(), str(tmp_path))
    m.load()
    assert m.node == "r"


def test_a_failed_write_changes_nothing(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    st = local()
    m = Maintenance(st, str(blocker / "data"))  # its parent is a file: the write fails
    with pytest.raises(OSError):
        m.set_node(True, "x", 0.0)
    with pytest.raises(OSError):
        m.set_service("web", True, "x", 0.0)
    assert (m.node, m.services, set(st.checks)) == (None, {}, set())
    ok = Maintenance(st, str(tmp_path / "data"))  # positive control
    ok.set_node(True, "x", 0.0)
    assert ok.node == "x" and "_node_maintenance" in st.checks
