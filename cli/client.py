"""The CLI's HTTP client: where the agent is and how to authenticate, from flags or environment."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    import httpx

DEFAULT_ADDR = "http://127.0.0.1:8500"


def http_options(f: Any) -> Any:
    """--http-addr and --token (Consul's single-dash spellings too) for commands that call an agent."""
    f = click.option("--token", "-token", default=None, help="ACL token (else MURMUR_HTTP_TOKEN / CONSUL_HTTP_TOKEN).")(f)
    f = click.option("--http-addr", "-http-addr", default=None,
                     help="Agent HTTP address (else MURMUR_HTTP_ADDR / CONSUL_HTTP_ADDR; default http://127.0.0.1:8500).")(f)
    return f


def fail(msg: str) -> None:
    """One line on stderr and exit status 1: how every command reports an error."""
    click.echo(f"Error: {msg}", err=True)
    sys.exit(1)


def resolve_addr(flag: str | None) -> str:
    """--http-addr, else MURMUR_HTTP_ADDR, else CONSUL_HTTP_ADDR, else the default; scheme optional."""
    addr = flag or os.environ.get("MURMUR_HTTP_ADDR") or os.environ.get("CONSUL_HTTP_ADDR") or DEFAULT_ADDR
    if "://" not in addr:
        ssl = (os.environ.get("CONSUL_HTTP_SSL") or "").lower() in ("1", "true")
        addr = ("https://" if ssl else "http://") + addr
    return addr.rstrip("/")


def resolve_token(flag: str | None) -> str:
    return flag or os.environ.get("MURMUR_HTTP_TOKEN") or os.environ.get("CONSUL_HTTP_TOKEN") or ""


def _env(name: str) -> str:
    return os.environ.get(f"MURMUR_{name}") or os.environ.get(f"CONSUL_{name}") or ""


def tls_kwargs() -> dict[str, Any]:
    """HTTPS settings from MURMUR_/CONSUL_ CACERT, CLIENT_CERT, CLIENT_KEY (Consul's variables)."""
    out: dict[str, Any] = {}
    if _env("CACERT"):
        import ssl

        ctx = ssl.create_default_context(cafile=_env("CACERT"))
        if _env("CLIENT_CERT"):
            ctx.load_cert_chain(_env("CLIENT_CERT"), _env("CLIENT_KEY") or None)
        out["verify"] = ctx
    elif _env("CLIENT_CERT"):
        out["cert"] = (_env("CLIENT_CERT"), _env("CLIENT_KEY")) if _env("CLIENT_KEY") else _env("CLIENT_CERT")
    return out


class APIError(Exception):
    pass


class Client:
    def __init__(self, addr: str | None = None, token: str | None = None, timeout: float = 30.0) -> None:
        import httpx  # lazily: `murmur agent` never needs it, and it costs ~4 MiB and 0.1 s to import

        self._error: type[Exception] = httpx.HTTPError
        self.base = resolve_addr(addr)
        headers = {}
        tok = resolve_token(token)
        if tok:
            headers["X-Consul-Token"] = tok
        self.http: httpx.Client = httpx.Client(base_url=self.base, headers=headers, timeout=timeout, **tls_kwargs())

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            resp = self.http.request(method, path, **kwargs)
        except self._error as exc:
            raise APIError(f"cannot reach the agent at {self.base}: {exc}") from exc
        if resp.status_code >= 400:
            raise APIError(f"{method} {path}: {resp.status_code} {resp.text.strip()}")
        if not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            return resp.text

    def blocking_get(self, path: str, index: int, wait: str, params: dict[str, Any] | None = None
                     ) -> tuple[Any, int, int]:
        """One blocking query: (JSON body or None for a 404, X-Consul-Index, HTTP status)."""
        query = {**(params or {}), "index": str(index), "wait": wait}
        try:
            resp = self.http.request("GET", path, params=query)
        except self._error as exc:
            raise APIError(f"cannot reach the agent at {self.base}: {exc}") from exc
        if resp.status_code >= 400 and resp.status_code != 404:
            raise APIError(f"GET {path}: {resp.status_code} {resp.text.strip()}")
        try:
            new_index = int(resp.headers.get("X-Consul-Index", "0"))
        except ValueError:
            new_index = 0
        body = resp.json() if resp.status_code == 200 and resp.content else None
        return body, new_index, resp.status_code
