"""Outbound webhook requests: which targets may be reached, the secrets, the signatures, and one
POST that reaches only the address it checked.

A target is checked when an endpoint is saved (every address its host resolves to, in whatever
spelling the URL gives it) and again at send time, where requests-hardened resolves the host once,
checks the answer and connects to that very address (so a DNS answer that changes between the
check and the connection cannot switch it); a stricter check of the pinned address is added here.
Redirects are never followed and the environment's proxies are ignored. No Django models.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import secrets
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, cast
from urllib.parse import urlsplit

import requests
from requests_hardened import HTTPSession
from requests_hardened.config import Config
from requests_hardened.ip_filter import EXTRA_BLOCKED_NET_RANGES, InvalidIPAddress
from requests_hardened.ip_filter_adapter import IPFilterAdapter
from standardwebhooks import Webhook

SECRET_PREFIX = "whsec_"
SECRET_MIN_BYTES, SECRET_MAX_BYTES = 24, 64
EXCERPT_CHARS = 500
MAX_URL_CHARS = 2000
USER_AGENT = "Trackers-Webhooks/1"

IP = ipaddress.IPv4Address | ipaddress.IPv6Address

# Past what Python's ipaddress calls private: ranges that must never be a webhook target either.
_MORE_BLOCKED = (
    *EXTRA_BLOCKED_NET_RANGES,
    ipaddress.ip_network("fec0::/10"),  # deprecated site-local
    ipaddress.ip_network("100::/64"),  # discard-only
    ipaddress.ip_network("fd00:ec2::254/128"),  # a cloud's metadata service over IPv6
)


PRIVATE_TARGETS_HINT = (
    "An install that delivers inside its own network (a receiver on this machine or the LAN) sets "
    "TRACKERS_WEBHOOK_ALLOW_PRIVATE_TARGETS=1"
)


class TargetRefused(ValueError):
    """A webhook URL that may not be reached, and why."""


# --- secrets and signatures -----------------------------------------------------------------


def new_secret(n_bytes: int = 32) -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(n_bytes)).decode()


def check_secret(secret: str) -> bytes:
    """The key bytes of a ``whsec_`` secret, refusing what the signing library would accept but the
    Standard Webhooks spec does not (no prefix, bad base64, too short or long)."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"a webhook secret starts with '{SECRET_PREFIX}'")
    body = secret[len(SECRET_PREFIX) :]
    try:
        key = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook secret is 'whsec_' and then base64") from None
    if not SECRET_MIN_BYTES <= len(key) <= SECRET_MAX_BYTES:
        raise ValueError(
            f"a webhook secret holds {SECRET_MIN_BYTES} to {SECRET_MAX_BYTES} random bytes; this one holds {len(key)}"
        )
    return key


def signed_headers(
    webhook_id: str, body: bytes, secrets_: list[str], at: datetime | None = None
) -> dict[str, str]:
    """Standard Webhooks headers for one attempt: a fresh timestamp, and a signature by each secret."""
    at = at or datetime.now(UTC)
    text = body.decode()
    signatures = [Webhook(s).sign(webhook_id, at, text) for s in secrets_ if check_secret(s)]
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": " ".join(signatures),
    }


# --- targets ----------------------------------------------------------------------------------


def forbidden(ip: IP) -> str | None:
    """Why ``ip`` may not be a target (None: a public unicast address)."""
    if isinstance(ip, ipaddress.IPv6Address) and not (ip.is_loopback or ip.is_unspecified):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in ipaddress.ip_network("::/96") and ip != ipaddress.IPv6Address("::"):
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)  # IPv4-compatible (deprecated)
        if embedded is not None:
            why = forbidden(embedded)
            return f"{why} (as {ip})" if why else None
    if ip.is_loopback:
        return f"{ip} is a loopback address"
    if ip.is_unspecified:
        return f"{ip} is the unspecified address"
    if ip.is_link_local:
        return f"{ip} is link-local (where cloud metadata services answer)"
    if ip.is_multicast:
        return f"{ip} is a multicast address"
    if ip in ipaddress.ip_network("100.64.0.0/10"):
        return f"{ip} is carrier-grade NAT space"
    if any(ip in net for net in _MORE_BLOCKED if net.version == ip.version):
        return f"{ip} is a reserved or translation address"
    if ip.is_private:
        return f"{ip} is a private address"
    if ip.is_reserved or not ip.is_global:
        return f"{ip} is a reserved address"
    return None


@dataclass(frozen=True)
class Target:
    url: str  # as given, with the host in its ASCII (IDNA) form
    host: str
    port: int
    addresses: tuple[str, ...]


def _ascii_host(host: str) -> str:
    host = host.rstrip(".")
    if not host:
        raise TargetRefused("the URL has no host")
    try:
        return host.encode("idna").decode("ascii").lower()  # IDNA 2003 maps look-alikes as browsers do
    except UnicodeError:
        raise TargetRefused(f"'{host}' is not a valid host name") from None


def check_target(url: str, *, allow_private: bool, resolve: bool = True) -> Target:
    """The URL as a webhook target, or ``TargetRefused`` saying what is wrong with it: the scheme,
    credentials in it, or (unless ``allow_private``) any address its host resolves to."""
    url = url.strip()
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TargetRefused(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise TargetRefused(f"a webhook URL is http:// or https://, not {parts.scheme or 'relative'}")
    if parts.username or parts.password:
        raise TargetRefused("a webhook URL may not hold a user name or password")
    if parts.hostname is None:
        raise TargetRefused("the URL has no host")
    host = _ascii_host(parts.hostname)
    port = port or (443 if parts.scheme == "https" else 80)
    try:
        literal: IP | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses: tuple[str, ...] = (str(literal),)
    elif not resolve:
        addresses = ()
    else:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError, ValueError) as exc:
            raise TargetRefused(f"'{host}' does not resolve ({exc})") from None
        addresses = tuple(dict.fromkeys(str(info[4][0]) for info in infos))
    if not allow_private:
        for address in addresses:
            why = forbidden(ipaddress.ip_address(address.split("%")[0]))
            if why:
                shown = "" if literal is not None else f" ({host} resolves to it)"
                raise TargetRefused(
                    f"webhooks may not reach non-public addresses: {why}{shown}. {PRIVATE_TARGETS_HINT}"
                )
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    clean = parts._replace(netloc=netloc).geturl()
    if len(clean) > MAX_URL_CHARS:
        raise TargetRefused(f"the URL is longer than {MAX_URL_CHARS} characters")
    return Target(url=clean, host=host, port=port, addresses=addresses)


class _Pinned(IPFilterAdapter):  # type: ignore[misc]  # requests-hardened has no types
    """requests-hardened's adapter (resolve once, check, connect to that address), with this
    module's stricter check of the address it pinned."""

    def build_connection_pool_key_attributes(self, request: Any, verify: Any, cert: Any = None) -> Any:
        try:
            host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        except InvalidIPAddress as exc:  # the library's own check: say why, as at save time
            ip = exc.args[0] if exc.args else None
            why = forbidden(ip) if isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address) else None
            raise InvalidIPAddress(why or str(exc)) from None
        pinned = ipaddress.ip_address(host_params["host"].strip("[]"))
        why = forbidden(pinned)
        if why:
            raise InvalidIPAddress(why)
        return host_params, pool_kwargs


def _session(allow_private: bool, timeout: float) -> requests.Session:
    config = Config(
        ip_filter_enable=not allow_private,
        ip_filter_allow_loopback_ips=False,
        never_redirect=True,
        default_timeout=(timeout, timeout),
        user_agent_override=USER_AGENT,
    )
    session = HTTPSession(config)
    session.trust_env = False  # no proxy from the environment: it would reach what we refuse
    if not allow_private:
        session.mount("http://", _Pinned(is_https_proto=False))
        session.mount("https://", _Pinned(is_https_proto=True))
    return cast("requests.Session", session)


@dataclass(frozen=True)
class Sent:
    """What one attempt got: a status and an excerpt of the body, or the error that stopped it."""

    status: int | None
    excerpt: str
    error: str
    duration_ms: float
    retry_after: float | None  # seconds, from a Retry-After header
    location: str = ""
    refused: bool = False  # the target's address may not be reached (a permanent failure)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


def post(url: str, body: bytes, headers: dict[str, str], *, allow_private: bool, timeout: float) -> Sent:
    """One POST of a webhook body; never raises for what the receiver or the network does."""
    started = time.perf_counter()
    try:
        target = check_target(url, allow_private=allow_private, resolve=False)
        with _session(allow_private, timeout) as session:
            response = session.post(
                target.url,
                data=body,
                headers={"content-type": "application/json", **headers},
                allow_redirects=False,
                stream=True,
            )
            try:
                raw = response.raw.read(EXCERPT_CHARS * 4, decode_content=True) or b""
            finally:
                response.close()
        return Sent(
            status=response.status_code,
            excerpt=raw.decode("utf-8", "replace")[:EXCERPT_CHARS],
            error="",
            duration_ms=(time.perf_counter() - started) * 1000,
            retry_after=_retry_after(response.headers.get("retry-after")),
            location=response.headers.get("location", "")[:300],
        )
    except (TargetRefused, InvalidIPAddress) as exc:
        why = (
            str(exc)
            if isinstance(exc, TargetRefused)
            else f"webhooks may not reach non-public addresses: {exc}"
        )
        return Sent(
            None,
            "",
            f"refused: {why}"[:EXCERPT_CHARS],
            (time.perf_counter() - started) * 1000,
            None,
            refused=True,
        )
    except requests.Timeout:
        error = f"timed out after {timeout:g} s"
    except requests.ConnectionError as exc:
        error = f"could not connect: {_root(exc)}"
    except requests.RequestException as exc:
        error = f"{type(exc).__name__}: {_root(exc)}"
    return Sent(None, "", error[:EXCERPT_CHARS], (time.perf_counter() - started) * 1000, None)


def _root(exc: BaseException) -> str:
    while exc.__context__ is not None and str(exc.__context__):
        exc = exc.__context__
    return str(exc)[:300]
