"""`PUT /v1/catalog/register` bodies as clients send them (parse_catalog_register is pure)."""

from __future__ import annotations

import pytest
from murmur.agent.http.catalog_routes import parse_catalog_register
from murmur.agent.http.server import HTTPError


def test_catalog_service_is_named_by_its_service_key_as_consul_nodeservice() -> None:
    # py-consul's catalog.register(node, address, service={"service": "s1"}): NodeService.Service
    cmd = parse_catalog_register({"node": "n1", "address": "10.1.10.11", "service": {"service": "s1", "port": 80}})
    assert cmd.service is not None
    assert (cmd.service.id, cmd.service.name, cmd.service.port) == ("s1", "s1", 80)
    # Consul's own casing, with an explicit ID, and the agent-definition spelling `Name`, still work.
    cmd = parse_catalog_register({"Node": "n1", "Address": "a", "Service": {"Service": "web", "ID": "web-1"}})
    assert cmd.service is not None and (cmd.service.id, cmd.service.name) == ("web-1", "web")
    cmd = parse_catalog_register({"Node": "n1", "Address": "a", "Service": {"Name": "db"}})
    assert cmd.service is not None and cmd.service.name == "db"


def test_catalog_service_without_any_name_is_a_400() -> None:
    with pytest.raises(HTTPError) as exc:
        parse_catalog_register({"Node": "n1", "Address": "a", "Service": {"Port": 80}})
    assert exc.value.status == 400


def test_body_datacenter_is_kept_for_the_route_to_check() -> None:
    cmd = parse_catalog_register({"node": "foo", "address": "10.1.10.11", "datacenter": "dc2"})
    assert cmd.datacenter == "dc2"


@pytest.mark.parametrize("field,value", [("NodeMeta", {"rack": 7}), ("NodeMeta", {"up": True}),
                                         ("NodeMeta", {"x": {"y": "z"}}), ("TaggedAddresses", {"lan": None})])
def test_non_string_node_meta_or_tagged_address_values_are_a_400_not_stringified(field: str, value: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(HTTPError) as exc:
        parse_catalog_register({"Node": "n1", "Address": "a", field: value})
    assert exc.value.status == 400 and field in str(exc.value)
    cmd = parse_catalog_register({"Node": "n1", "Address": "a", "NodeMeta": {"rack": "7"}})
    assert cmd.node_meta == (("rack", "7"),)
