"""Which addresses the crawler may reach: public ones, plus what TWIN_FETCH_ALLOWED_NETWORKS names.

A link in a sources file or a feed must not make the crawler call the cloud metadata service
(169.254.169.254), a private network, or another service of the deployment by name. The check
runs on the addresses a name resolves to, when each connection opens (every redirect hop, and
robots.txt too); the connection then goes to the address that was checked, so a name cannot
resolve to a public address for the check and a private one for the connection (DNS rebinding).
"""

from __future__ import annotations

import ipaddress
import re
import socket
import typing
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpcore
import httpx

from twin.crawl.errors import CrawlError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
SETTING = "TWIN_FETCH_ALLOWED_NETWORKS"
_HOST_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*\.?")


class BlockedAddressError(CrawlError):
    """The target resolves to an address the crawler is not allowed to reach."""


@dataclass(frozen=True)
class AddressPolicy:
    networks: tuple[Network, ...] = ()
    hosts: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, text: str) -> AddressPolicy:
        """`127.0.0.0/8, ::1, intranet.example` -> networks and host names allowed besides public ones."""
        networks: list[Network] = []
        hosts: set[str] = set()
        for item in (part.strip() for part in text.split(",")):
            if not item:
                continue
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                if not _HOST_NAME.fullmatch(item):
                    raise ValueError(f"{SETTING}: {item!r} is neither a network (CIDR) nor a host name") from None
                hosts.add(item.lower().rstrip("."))
        return cls(tuple(networks), frozenset(hosts))

    def why_refused(self, host: str, address: Address) -> str | None:
        """None when allowed, else the reason, for the crawl-run record."""
        if host.lower().rstrip(".") in self.hosts or any(address in net for net in self.networks):
            return None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            return self.why_refused(host, address.ipv4_mapped)
        if address.is_global:
            return None
        kind = next((name for name, flag in (
            ("loopback", address.is_loopback), ("link-local", address.is_link_local),
            ("private", address.is_private), ("multicast", address.is_multicast),
            ("reserved", address.is_reserved), ("unspecified", address.is_unspecified),
        ) if flag), "non-public")
        return (f"refused to connect to {host} ({address}): a {kind} address; "
                f"allow it with {SETTING} if it is meant to be crawled")

    def resolve(self, host: str, port: int) -> list[str]:
        """The addresses of `host` if every one of them is allowed; one refused address refuses the host
        (a name that resolves to a public and a private address is not trusted)."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise CrawlError(f"cannot resolve {host}: {exc.strerror}", retryable=True) from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        for address in addresses:
            reason = self.why_refused(host, ipaddress.ip_address(address.split("%")[0]))
            if reason:
                raise BlockedAddressError(reason)
        return addresses

    def check_url(self, url: str) -> None:
        parts = urlsplit(url)
        if not parts.hostname:
            raise CrawlError(f"URL without a host: {url}")
        default_port = 443 if parts.scheme in {"https", "ssh"} else 80
        self.resolve(parts.hostname, parts.port or default_port)


class GuardedBackend(httpcore.SyncBackend):
    """httpcore's socket backend, connecting only to checked addresses."""

    def __init__(self, policy: AddressPolicy) -> None:
        self.policy = policy

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: typing.Iterable[typing.Any] | None = None) -> httpcore.NetworkStream:
        last: Exception | None = None
        for address in self.policy.resolve(host, port):
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectError as exc:  # try the host's next address, as a browser would
                last = exc
        raise last or httpcore.ConnectError(f"no address for {host}")


def guarded_transport(policy: AddressPolicy, verify: typing.Any) -> httpx.HTTPTransport:
    """An httpx transport whose connections go through GuardedBackend.

    httpx takes no network backend, so its connection pool is rebuilt with one (httpx 0.28 keeps it
    in `_pool`; the lock file pins that version). TLS still checks the certificate against the host
    name, since httpcore passes the URL's host as the server name, not the address.
    """
    transport = httpx.HTTPTransport(verify=verify)
    transport._pool = httpcore.ConnectionPool(
        ssl_context=verify if hasattr(verify, "wrap_socket") else None,
        network_backend=GuardedBackend(policy),
    )
    return transport
