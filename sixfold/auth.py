"""Client authentication and roles (issue 17).

With SIXFOLD_AUTH_FILE set (`sixfold up --tls --auth`), a server lets a call through when the
caller is a cluster member (its TLS certificate, which the cluster's CA signed, names a
member) or presents a bearer token whose role covers the method: `read` < `write` < `admin`.
Anything else is refused with PERMISSION_DENIED before the handler runs, so nothing changes.
Health checks stay open. Tokens are stored as their SHA-256 (they are 32 random bytes, so a
hash is as good as a salted one), and the file is read again when it changes: adding or
removing a token needs no restart. Authentication needs TLS: a token sent in plaintext
could be read off the wire, and members are known by their certificates.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc

from sixfold import tls
from sixfold.core.errors import SixfoldError
from sixfold.guard import WrappingInterceptor

AUTH_FILE_VARIABLE = "SIXFOLD_AUTH_FILE"  # a server's token file
TOKEN_VARIABLE = tls.TOKEN_VARIABLE  # a client's token, sent on every call (tls.py)
ROLES = ("read", "write", "admin")  # each allows what the ones before it allow
OPEN = "open"  # needs nothing: health checks
MEMBER = "member"  # cluster members only (their certificates)
TOKEN_BYTES = 32
TOKEN_PREFIX = "sixfold_"  # every token begins so: never an option to a CLI
RELOAD_EVERY_S = 1.0  # the token file is looked at (its mtime) at most this often

# What each method needs. A method not listed needs a member's certificate.
_SERVICE_ROLES = {
    "grpc.health.v1.Health": OPEN,
    "grpc.reflection.v1alpha.ServerReflection": "read",
    "sixfold.v1.Reader": "read",
    "sixfold.v1.TopologyService": "read",
    "sixfold.v1.Sql": "write",  # read-only SQL for the read role: not told apart yet
    "sixfold.v1.Instance": "admin",  # promote, drain (switchover), replace
}
_METHOD_ROLES = {
    "sixfold.v1.Writer/WritePages": "write",
    "sixfold.v1.Writer/WritePagesStream": "write",
    "sixfold.v1.Writer/CompareAndSet": "write",
    "sixfold.v1.Writer/ReadPage": "read",
    "sixfold.v1.Writer/GetWriterState": "read",
    # Tools read the nodes' state and log (status, backups, a region's agent); what changes
    # a node's log, epoch or membership is the members' own business, or an admin's.
    **{
        f"sixfold.v1.StorageNode/{m}": "read"
        for m in ("GetState", "WatchState", "GetPage", "ReadRecords", "ReadPageImages", "FollowLog")
    },
    **{
        f"sixfold.v1.StorageNode/{m}": "admin"
        for m in ("Append", "AppendStream", "SetMembership", "SealEpoch", "Truncate")
    },
}


def role_needed(method: str) -> str:
    """What `method` (/package.Service/Method) needs: a role, OPEN or MEMBER."""
    name = method.lstrip("/")
    if name in _METHOD_ROLES:
        return _METHOD_ROLES[name]
    return _SERVICE_ROLES.get(name.split("/", 1)[0], MEMBER)


def allows(role: str, needed: str) -> bool:
    if needed == OPEN:
        return True
    if needed == MEMBER or role not in ROLES:
        return False
    return ROLES.index(role) >= ROLES.index(needed)


@dataclass(frozen=True, slots=True)
class StoredToken:
    name: str
    role: str
    sha256: str
    created_at: float


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenFile:
    """The tokens a cluster accepts, as stored (hashed) in a JSON file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> list[StoredToken]:
        if not self.path.exists():
            return []
        try:
            raw = json.loads(self.path.read_text())
            return [StoredToken(**t) for t in raw["tokens"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise SixfoldError(f"token file {self.path} is unreadable: {exc}") from None

    def add(self, name: str, role: str) -> str:
        """A new token for `name` with `role`; the token itself, which is not kept."""
        if role not in ROLES:
            raise SixfoldError(f"unknown role {role!r}: the roles are {', '.join(ROLES)}")
        tokens = self.load()
        if any(t.name == name for t in tokens):
            raise SixfoldError(f"a token named {name!r} exists: remove it first to replace it")
        # Prefixed: a bare URL-safe token starts with "-" one time in 64, and `--token -x...`
        # then reads as an option (seen in CI).
        token = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
        self._save([*tokens, StoredToken(name, role, digest(token), time.time())])
        return token

    def remove(self, name: str) -> None:
        tokens = self.load()
        if not any(t.name == name for t in tokens):
            raise SixfoldError(f"no token named {name!r} in {self.path}")
        self._save([t for t in tokens if t.name != name])

    def _save(self, tokens: list[StoredToken]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"tokens": [asdict(t) for t in tokens]}, indent=2))
        tmp.chmod(0o600)
        tmp.replace(self.path)  # atomic: a server reading it sees the old or the new


class AuthGuard(WrappingInterceptor):
    """Refuses, before the handler, a call whose caller may not make it. A second
    interceptor beside the guard against undecodable requests, only where auth is on."""

    def __init__(self, tokens: TokenFile, members: frozenset[str]) -> None:
        super().__init__()
        self.tokens = tokens
        self.members = members
        self._roles: dict[str, str] = {}  # token digest -> role
        self._seen_version: tuple[int, int, int] = (-1, -1, -1)
        self._checked_at = 0.0

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        needed = role_needed(method)
        if needed == OPEN:
            return handler
        kinds = (
            ("unary_unary", grpc.unary_unary_rpc_method_handler),
            ("unary_stream", grpc.unary_stream_rpc_method_handler),
            ("stream_unary", grpc.stream_unary_rpc_method_handler),
            ("stream_stream", grpc.stream_stream_rpc_method_handler),
        )
        for attribute, make in kinds:
            inner = getattr(handler, attribute)
            if inner is not None:
                return make(
                    self._checked(method, needed, inner),
                    handler.request_deserializer,
                    handler.response_serializer,
                )
        return handler

    def _checked(self, method: str, needed: str, inner: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.isasyncgenfunction(inner):

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await self._check(method, needed, context)
                async for reply in inner(request, context):
                    yield reply

            return stream

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await self._check(method, needed, context)
            return await inner(request, context)

        return call

    async def _check(self, method: str, needed: str, context: grpc.aio.ServicerContext) -> None:
        names = context.auth_context().get("x509_common_name", [])
        if any(n.decode() in self.members for n in names):
            return  # a member: the cluster's CA vouches for it
        if needed == MEMBER:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED, f"{method} is for cluster members only"
            )
        token = _bearer(context.invocation_metadata() or ())
        if not token:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{method} needs a token with role {needed} (none given: set {TOKEN_VARIABLE} "
                "or pass --token)",
            )
        key = digest(token)
        # A token unknown here may have been added a moment ago (`sixfold auth add`, then its
        # first use at once): look at the file again now rather than at the next reload.
        role = self._current_roles().get(key) or self._current_roles(now=True).get(key)
        if role is None:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{method}: the token given is not one this cluster accepts (unknown, or removed)",
            )
        if not allows(role, needed):
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{method} needs role {needed}; this token's role is {role}",
            )

    def _current_roles(self, now: bool = False) -> dict[str, str]:
        """The roles by token digest, as the file had them at most RELOAD_EVERY_S ago (or
        as it has them `now`)."""
        clock = time.monotonic()
        if now or clock - self._checked_at >= RELOAD_EVERY_S:
            self._checked_at = clock
            try:
                # Each save replaces the file (a new inode), so this changes with every save,
                # even two within one tick of the file system's clock.
                st = self.tokens.path.stat()
                version = (st.st_ino, st.st_mtime_ns, st.st_size)
            except OSError:
                version = (0, 0, 0)
            if version != self._seen_version:
                self._seen_version = version
                self._roles = {t.sha256: t.role for t in self.tokens.load()}
        return self._roles


def _bearer(metadata: Any) -> str:
    """The bearer token a call carries ("": none)."""
    for key, value in metadata:
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value.removeprefix("Bearer ")
    return ""


def server_guard(members: frozenset[str]) -> AuthGuard | None:
    """The guard a server puts in front of its services, None when auth is off."""
    path = os.environ.get(AUTH_FILE_VARIABLE, "")
    if not path:
        return None
    if tls.tls_files() is None:
        raise SixfoldError(
            f"{AUTH_FILE_VARIABLE} is set but TLS is off: tokens need TLS "
            f"(set {tls.TLS_DIR_VARIABLE}, or `sixfold up --tls --auth`)"
        )
    return AuthGuard(TokenFile(Path(path)), members)
