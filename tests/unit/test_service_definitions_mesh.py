"""Service-mesh fields of a service definition: Kind/Proxy/Locality echoed, Connect sidecar_service
expanded into `<id>-sidecar-proxy` as Consul does."""

from __future__ import annotations

import json

import pytest
from murmur.agent.definitions import parse_service, sidecar_definition
from murmur.catalog import queries
from murmur.checks.definitions import DefinitionError


def test_kind_proxy_locality_are_stored_and_echoed_by_agent_services() -> None:
    sdef = parse_service({"name": "web-sidecar-proxy", "port": 21000, "kind": "connect-proxy",
                          "proxy": {"DestinationServiceName": "web", "LocalServicePort": 8080},
                          "locality": {"Region": "us-west-1", "Zone": "us-west-1a"}})
    out = queries.agent_service_json(None, sdef.spec, "dc1")
    assert out["Kind"] == "connect-proxy"
    assert out["Proxy"] == {"DestinationServiceName": "web", "LocalServicePort": 8080}
    assert out["Locality"] == {"Region": "us-west-1", "Zone": "us-west-1a"}
    # A plain service still has none of them (py-consul compares its entry exactly).
    plain = queries.agent_service_json(None, parse_service({"name": "foo"}).spec, "dc1")
    assert not {"Kind", "Proxy", "Connect", "Locality"} & set(plain)
    with pytest.raises(DefinitionError):
        parse_service({"name": "x", "proxy": "not an object"})


def test_sidecar_service_becomes_its_own_connect_proxy_service() -> None:
    parent = parse_service({"name": "foo", "id": "foo-1", "port": 8080, "connect": {"sidecar_service": {}}})
    assert parent.sidecar == {}
    assert parent.spec.connect == ""  # the sidecar request is not kept on the parent
    side = sidecar_definition(parent, used_ports={21000, 9999})
    s = side.spec
    assert (s.id, s.name, s.kind, s.port) == ("foo-1-sidecar-proxy", "foo-sidecar-proxy", "connect-proxy", 21001)
    assert json.loads(s.proxy) == {"DestinationServiceName": "foo", "DestinationServiceID": "foo-1",
                                   "LocalServiceAddress": "127.0.0.1", "LocalServicePort": 8080}
    assert [(c.id, c.kind) for c in side.checks] == [("service:foo-1-sidecar-proxy:1", "tcp"),
                                                     ("service:foo-1-sidecar-proxy:2", "alias")]
    # Its own port and checks win; every port taken is an error.
    own = parse_service({"name": "bar", "connect": {"SidecarService": {"Port": 22000, "Checks": []}}})
    assert sidecar_definition(own, set()).spec.port == 22000
    with pytest.raises(DefinitionError):
        sidecar_definition(parent, set(range(21000, 21256)))
