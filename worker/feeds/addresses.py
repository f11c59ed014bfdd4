"""Which addresses a feed fetch may connect to, and a connection that goes where it was vetted.

Checking a host's addresses and then letting the HTTP client resolve the name again to connect is
open to DNS rebinding: the name answers a public address to the check and 127.0.0.1 to the
connection. `PinnedBackend` resolves once per connection, vets every address of the answer, and
connects to a vetted address itself. The URL keeps its host name, so the Host header, the TLS
server name (SNI) and the certificate check are the name's, as without pinning.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from typing import Any

import httpcore

#: host, port -> the addresses (as text) the name resolves to.
Resolver = Callable[[str, int], list[str]]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: NAT64 (RFC 6052): the last 32 bits are an IPv4 address, reachable through a NAT64 gateway.
NAT64 = ipaddress.ip_network("64:ff9b::/96")


class AddressRefused(Exception):
    """A host resolves to an address a feed may not reach (or does not resolve)."""


def system_resolver(host: str, port: int) -> list[str]:
    """The host's addresses from the system resolver (literals come back as they are)."""
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise AddressRefused(f"cannot resolve {host}: {exc}") from None
    return [str(info[4][0]) for info in infos]


def embedded(address: IPAddress) -> list[IPAddress]:
    """The address and every IPv4 address an IPv6 form carries (mapped, 6to4, Teredo, NAT64)."""
    found: list[IPAddress] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            found.append(address.ipv4_mapped)
        if address.sixtofour is not None:
            found.append(address.sixtofour)
        if address.teredo is not None:
            found.extend(address.teredo)
        if address in NAT64:
            found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def is_public(address: IPAddress) -> bool:
    """True for a global unicast address, in every form it (or an address inside it) takes."""
    return all(a.is_global and not a.is_multicast for a in embedded(address))


def vet(host: str, addresses: Iterable[str]) -> list[str]:
    """The addresses, when every one of them is public; else AddressRefused naming the first that
    is not (one bad answer refuses the name: a client might pick any of them)."""
    vetted = []
    for text in addresses:
        address = ipaddress.ip_address(text.split("%", 1)[0])
        if not is_public(address):
            raise AddressRefused(
                f"{host} resolves to {address}, a private, loopback or link-local address"
                " (set NEWSLETTER_FEEDS_ALLOW_PRIVATE_ADDRESSES=true to allow it)"
            )
        vetted.append(text)
    if not vetted:
        raise AddressRefused(f"cannot resolve {host}: no address")
    return vetted


class PinnedBackend(httpcore.SyncBackend):
    """httpcore's socket backend, connecting to an address vetted from one resolution of the host.

    With `allow_private` the addresses are not vetted, but the connection is still made to the
    address that was resolved (one resolution per connection either way).
    """

    def __init__(self, *, allow_private: bool, resolve: Resolver = system_resolver) -> None:
        self.allow_private = allow_private
        self.resolve = resolve

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = self.resolve(host, port)
        if not self.allow_private:
            addresses = vet(host, addresses)
        error: Exception | None = None
        for address in addresses:
            try:
                return self.open(address, port, timeout, local_address, socket_options)
            except (
                httpcore.ConnectError
            ) as exc:  # try the next address, as a resolver's client would
                error = exc
        raise error or httpcore.ConnectError(f"cannot connect to {host}")

    def open(
        self,
        address: str,
        port: int,
        timeout: float | None,
        local_address: str | None,
        socket_options: Iterable[Any] | None,
    ) -> httpcore.NetworkStream:
        """Connect to this very address (a literal: no second resolution)."""
        return super().connect_tcp(address, port, timeout, local_address, socket_options)
