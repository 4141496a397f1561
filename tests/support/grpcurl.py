"""A grpcurl-compatible command runner for the subset of grpcurl that docs/api.md uses.

grpcurl itself is not installable on the test machines (no Debian package, no route to GitHub or
the Go module proxy), so the docs-example test runs this instead when ``grpcurl`` is not on PATH::

    python -m tests.support.grpcurl -plaintext [-H 'authorization: Bearer T'] [-d JSON] \\
        ADDR SERVICE/METHOD
    python -m tests.support.grpcurl -plaintext [-H ...] ADDR list [SERVICE]
    python -m tests.support.grpcurl -plaintext [-H ...] ADDR describe [SYMBOL]

Like grpcurl it knows nothing about the server's protos up front: every service, method and
message type is discovered through the server's reflection service
(``grpc.reflection.v1alpha.ServerReflection``, via grpc_reflection's
``ProtoReflectionDescriptorDatabase`` feeding a private ``DescriptorPool``), so an example that
works here proves reflection serves what grpcurl relies on. Request JSON is parsed and responses
are printed with protobuf's ``json_format`` the way grpcurl's jsonpb does (lowerCamelCase names,
2-space indent, default values omitted unless ``-emit-defaults``; 64-bit integers as strings),
one JSON object per response message for streaming methods. ``-H`` headers go to reflection
requests and RPCs alike (``-rpc-header`` / ``-reflect-header`` to one of them), as in grpcurl.
A non-OK status prints grpcurl's ``ERROR:`` block on stderr and exits with 64 + the status code;
usage errors exit 2, other failures 1 -- grpcurl's exit codes.

Not supported (an error, never silently ignored): TLS (only ``-plaintext``), ``-proto`` /
``-protoset`` sources, text format, ``-v``.
"""

from __future__ import annotations

import json
import sys
from collections import namedtuple
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import grpc
from google.protobuf import descriptor, descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

STATUS_CODE_OFFSET = 64  # grpcurl exits with 64 + the gRPC status code of a failed RPC
VALUE_FLAGS = {"H", "rpc-header", "reflect-header", "d", "max-time", "connect-timeout", "format"}
BOOL_FLAGS = {"plaintext", "emit-defaults", "format-error"}


class UsageError(Exception):
    """A command line grpcurl would refuse (exit 2)."""


class Failure(Exception):
    """A failure grpcurl reports as ``<what>: <error>`` (exit 1)."""


@dataclass
class Args:
    plaintext: bool = False
    headers: list[str] = field(default_factory=list)
    rpc_headers: list[str] = field(default_factory=list)
    reflect_headers: list[str] = field(default_factory=list)
    data: str = ""
    max_time: float | None = None
    connect_timeout: float = 10.0
    emit_defaults: bool = False
    format_error: bool = False
    target: str = ""
    verb: str = "invoke"  # invoke | list | describe
    symbol: str = ""


def parse_args(argv: Sequence[str]) -> Args:
    """Go ``flag`` style: flags (``-x``, ``--x``, ``-x=v``, ``-x v``) until the first argument."""
    a = Args()
    i = 0
    while i < len(argv) and argv[i].startswith("-") and argv[i] not in ("-", "--"):
        name, eq, value = argv[i].lstrip("-").partition("=")
        if name in BOOL_FLAGS:
            on = not eq or value.lower() in ("1", "t", "true")
            setattr(a, name.replace("-", "_"), on)
        elif name in VALUE_FLAGS:
            if not eq:
                i += 1
                if i >= len(argv):
                    raise UsageError(f"flag needs an argument: -{name}")
                value = argv[i]
            if name == "H":
                a.headers.append(value)
            elif name == "rpc-header":
                a.rpc_headers.append(value)
            elif name == "reflect-header":
                a.reflect_headers.append(value)
            elif name == "d":
                a.data = value
            elif name == "max-time":
                a.max_time = float(value)
            elif name == "connect-timeout":
                a.connect_timeout = float(value)
            elif name == "format" and value != "json":
                raise UsageError(f"only -format json is supported by this shim, not {value!r}")
        else:
            raise UsageError(f"flag provided but not defined: -{name}")
        i += 1
    rest = list(argv[i:])
    if rest and rest[0] == "--":
        rest = rest[1:]
    if not rest:
        raise UsageError("Too few arguments.")
    a.target, rest = rest[0], rest[1:]
    if rest and rest[0] in ("list", "describe"):
        a.verb, rest = rest[0], rest[1:]
        if rest:
            a.symbol, rest = rest[0], rest[1:]
    else:
        if not rest:
            raise UsageError("Too few arguments.")
        a.symbol, rest = rest[0], rest[1:]
    if rest:
        raise UsageError("Too many arguments.")
    if not a.plaintext:
        raise UsageError("this shim speaks plaintext only: pass -plaintext")
    return a


def metadata_from_headers(headers: Sequence[str]) -> list[tuple[str, str]]:
    """grpcurl's ``MetadataFromHeaders``: ``name: value``, name lower-cased, both trimmed."""
    out = []
    for h in headers:
        name, _, value = h.partition(":")
        out.append((name.strip().lower(), value.strip()))
    return out


def go_code_name(code: grpc.StatusCode) -> str:
    """The name Go's ``codes.Code.String()`` prints (``NOT_FOUND`` -> ``NotFound``)."""
    if code == grpc.StatusCode.CANCELLED:
        return "Canceled"
    if code == grpc.StatusCode.OK:
        return "OK"
    return "".join(p.capitalize() for p in code.name.split("_"))


def rpc_error_text(e: grpc.RpcError) -> str:
    """How grpc-go renders a status error: ``rpc error: code = X desc = msg``."""
    return f"rpc error: code = {go_code_name(e.code())} desc = {e.details()}"


class _CallDetails(
    namedtuple(
        "_CallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,  # type: ignore[misc]
):
    pass


class _Headers(grpc.UnaryUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):  # type: ignore[misc]
    """Adds fixed metadata to every call on a channel (reflection is a stream-stream call)."""

    def __init__(self, metadata: Sequence[tuple[str, str]]) -> None:
        self.metadata = list(metadata)

    def _details(self, d: Any) -> _CallDetails:
        md = [*(d.metadata or ()), *self.metadata]
        return _CallDetails(d.method, d.timeout, md, d.credentials, d.wait_for_ready, d.compression)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


class Reflection:
    """Descriptors from the server's reflection service, in a private pool."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.db = ProtoReflectionDescriptorDatabase(channel)
        self.pool = descriptor_pool.DescriptorPool(self.db)

    def services(self) -> list[str]:
        return sorted(self.db.get_services())

    def service(self, name: str) -> descriptor.ServiceDescriptor:
        return self.pool.FindServiceByName(name)

    def symbol(self, name: str) -> Any:
        name = name.lstrip(".")
        for find in (
            self.pool.FindServiceByName,
            self.pool.FindMessageTypeByName,
            self.pool.FindEnumTypeByName,
            self.pool.FindMethodByName,
            self.pool.FindFieldByName,
        ):
            try:
                return find(name)
            except KeyError:
                continue
        raise KeyError(f"Symbol not found: {name}")


# ----------------------------------------------------------------------------- describe


_SCALAR = {
    descriptor.FieldDescriptor.TYPE_DOUBLE: "double",
    descriptor.FieldDescriptor.TYPE_FLOAT: "float",
    descriptor.FieldDescriptor.TYPE_INT64: "int64",
    descriptor.FieldDescriptor.TYPE_UINT64: "uint64",
    descriptor.FieldDescriptor.TYPE_INT32: "int32",
    descriptor.FieldDescriptor.TYPE_FIXED64: "fixed64",
    descriptor.FieldDescriptor.TYPE_FIXED32: "fixed32",
    descriptor.FieldDescriptor.TYPE_BOOL: "bool",
    descriptor.FieldDescriptor.TYPE_STRING: "string",
    descriptor.FieldDescriptor.TYPE_BYTES: "bytes",
    descriptor.FieldDescriptor.TYPE_UINT32: "uint32",
    descriptor.FieldDescriptor.TYPE_SFIXED32: "sfixed32",
    descriptor.FieldDescriptor.TYPE_SFIXED64: "sfixed64",
    descriptor.FieldDescriptor.TYPE_SINT32: "sint32",
    descriptor.FieldDescriptor.TYPE_SINT64: "sint64",
}


def _type_name(f: descriptor.FieldDescriptor) -> str:
    if f.message_type is not None:
        return f".{f.message_type.full_name}"
    if f.enum_type is not None:
        return f".{f.enum_type.full_name}"
    return _SCALAR[f.type]


def _is_map(f: descriptor.FieldDescriptor) -> bool:
    mt = f.message_type
    return mt is not None and mt.GetOptions().map_entry


def _field_text(f: descriptor.FieldDescriptor) -> str:
    if _is_map(f):
        k, v = f.message_type.fields_by_name["key"], f.message_type.fields_by_name["value"]
        return f"map<{_type_name(k)}, {_type_name(v)}> {f.name} = {f.number};"
    label = "repeated " if f.is_repeated else ""
    return f"{label}{_type_name(f)} {f.name} = {f.number};"


def _method_text(m: descriptor.MethodDescriptor) -> str:
    cs = "stream " if m.client_streaming else ""
    ss = "stream " if m.server_streaming else ""
    return (
        f"rpc {m.name} ( {cs}.{m.input_type.full_name} ) "
        f"returns ( {ss}.{m.output_type.full_name} );"
    )


def describe_text(d: Any) -> tuple[str, str]:
    """(element kind, proto source text) the way grpcurl's ``describe`` prints them."""
    if isinstance(d, descriptor.ServiceDescriptor):
        body = "".join(f"  {_method_text(m)}\n" for m in d.methods)
        return "a service", f"service {d.name} {{\n{body}}}"
    if isinstance(d, descriptor.MethodDescriptor):
        return "a method", _method_text(d)
    if isinstance(d, descriptor.Descriptor):
        fields = [f for f in d.fields]
        body = "".join(f"  {_field_text(f)}\n" for f in fields)
        return "a message", f"message {d.name} {{\n{body}}}"
    if isinstance(d, descriptor.EnumDescriptor):
        body = "".join(f"  {v.name} = {v.number};\n" for v in d.values)
        return "an enum", f"enum {d.name} {{\n{body}}}"
    if isinstance(d, descriptor.FieldDescriptor):
        return "a field", _field_text(d)
    raise Failure(f"descriptor has unrecognized type {type(d).__name__}")


# ----------------------------------------------------------------------------- invoke


def split_method(symbol: str) -> tuple[str, str]:
    """``pkg.Service/Method`` or ``pkg.Service.Method`` -> (service, method)."""
    symbol = symbol.lstrip(".")
    if "/" in symbol:
        svc, _, method = symbol.rpartition("/")
    else:
        svc, _, method = symbol.rpartition(".")
    if not svc or not method:
        raise Failure(f"given method name {symbol!r} is not in expected format")
    return svc, method


def json_messages(text: str) -> Iterator[Any]:
    """The JSON values of ``-d`` (several may be concatenated, as grpcurl allows)."""
    dec = json.JSONDecoder()
    i = 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return
        value, i = dec.raw_decode(text, i)
        yield value


def format_message(msg: Any, emit_defaults: bool) -> str:
    return str(
        json_format.MessageToJson(
            msg,
            indent=2,
            preserving_proto_field_name=False,
            always_print_fields_with_no_presence=emit_defaults,
        )
    )


def print_status(e: grpc.RpcError) -> None:
    print(
        f"ERROR:\n  Code: {go_code_name(e.code())}\n  Message: {e.details()}",
        file=sys.stderr,
        flush=True,
    )


def invoke(a: Args, channel: grpc.Channel, refl: Reflection) -> int:
    svc_name, method_name = split_method(a.symbol)
    try:
        svc = refl.service(svc_name)
    except KeyError:
        raise Failure(
            f'Error invoking method "{a.symbol}": target server does not expose service '
            f'"{svc_name}"'
        ) from None
    except grpc.RpcError as e:
        raise Failure(
            f'Error invoking method "{a.symbol}": failed to query for service descriptor '
            f'"{svc_name}": {rpc_error_text(e)}'
        ) from None
    method = svc.methods_by_name.get(method_name)
    if method is None:
        raise Failure(
            f'Error invoking method "{a.symbol}": service "{svc_name}" does not include a '
            f'method named "{method_name}"'
        )
    req_cls = message_factory.GetMessageClass(method.input_type)
    resp_cls = message_factory.GetMessageClass(method.output_type)
    data = sys.stdin.read() if a.data == "@" else a.data
    requests = []
    try:
        for value in json_messages(data):
            requests.append(json_format.ParseDict(value, req_cls()))
    except (ValueError, json_format.ParseError) as e:
        raise Failure(
            f'Error invoking method "{a.symbol}": error getting request data: {e}'
        ) from None
    if not requests and not method.client_streaming:
        requests = [req_cls()]  # grpcurl sends an empty message when no body is given
    if not method.client_streaming and len(requests) > 1:
        raise Failure(
            f'Error invoking method "{a.symbol}": method {a.symbol!r} is a unary RPC, but '
            "request data contained more than 1 message"
        )
    path = f"/{svc.full_name}/{method.name}"
    md = metadata_from_headers([*a.headers, *a.rpc_headers])
    kw: dict[str, Any] = {
        "request_serializer": lambda m: m.SerializeToString(),
        "response_deserializer": resp_cls.FromString,
    }
    try:
        if method.client_streaming and method.server_streaming:
            responses: Any = channel.stream_stream(path, **kw)(
                iter(requests), metadata=md, timeout=a.max_time
            )
        elif method.client_streaming:
            responses = [
                channel.stream_unary(path, **kw)(iter(requests), metadata=md, timeout=a.max_time)
            ]
        elif method.server_streaming:
            responses = channel.unary_stream(path, **kw)(
                requests[0], metadata=md, timeout=a.max_time
            )
        else:
            responses = [
                channel.unary_unary(path, **kw)(requests[0], metadata=md, timeout=a.max_time)
            ]
        for resp in responses:
            print(format_message(resp, a.emit_defaults), flush=True)
    except grpc.RpcError as e:
        print_status(e)
        return STATUS_CODE_OFFSET + int(e.code().value[0])
    return 0


def run(a: Args) -> int:
    with grpc.insecure_channel(a.target) as raw:
        try:
            grpc.channel_ready_future(raw).result(timeout=a.connect_timeout)
        except grpc.FutureTimeoutError:
            raise Failure(
                f'Failed to dial target host "{a.target}": context deadline exceeded'
            ) from None
        reflect_md = metadata_from_headers([*a.headers, *a.reflect_headers])
        refl = Reflection(grpc.intercept_channel(raw, _Headers(reflect_md)))
        if a.verb == "list":
            try:
                if not a.symbol:
                    names = refl.services()
                    print("\n".join(names) if names else "(No services)")
                else:
                    svc = refl.service(a.symbol)
                    print("\n".join(m.full_name for m in svc.methods) or "(No methods)")
            except grpc.RpcError as e:
                what = (
                    "Failed to list services"
                    if not a.symbol
                    else f'Failed to list methods for service "{a.symbol}"'
                )
                raise Failure(f"{what}: {rpc_error_text(e)}") from None
            except KeyError:
                raise Failure(
                    f'Failed to list methods for service "{a.symbol}": Service not found: '
                    f"{a.symbol}"
                ) from None
            return 0
        if a.verb == "describe":
            try:
                symbols = [a.symbol] if a.symbol else refl.services()
            except grpc.RpcError as e:
                raise Failure(f"Failed to list services: {rpc_error_text(e)}") from None
            for s in symbols:
                try:
                    d = refl.symbol(s)
                except KeyError as e:
                    raise Failure(f'Failed to resolve symbol "{s}": {e.args[0]}') from None
                except grpc.RpcError as e:
                    raise Failure(f'Failed to resolve symbol "{s}": {rpc_error_text(e)}') from None
                kind, text = describe_text(d)
                print(f"{d.full_name} is {kind}:\n{text}")
            return 0
        return invoke(a, raw, refl)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        a = parse_args(sys.argv[1:] if argv is None else argv)
    except (UsageError, ValueError) as e:
        print(f"{e}\nTry 'grpcurl -help' for more details.", file=sys.stderr)
        return 2
    try:
        return run(a)
    except Failure as e:
        print(e, file=sys.stderr)
        return 1


def _exit() -> NoReturn:
    sys.exit(main())


if __name__ == "__main__":
    _exit()
