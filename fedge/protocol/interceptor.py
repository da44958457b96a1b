"""One server interceptor for every fedge service: authentication, error → status, refusals.

Servicers stay short delegations: they raise a :class:`~fedge.errors.FedgeError` and never call
``context.abort`` themselves. The interceptor (the pattern of Flower's
``NodeAuthServerInterceptor``) wraps each method: it decodes the caller's identity with the
server's ``authenticate`` function, refuses a request that did not decode
(:class:`~fedge.protocol.transport.Malformed`), answers every ``FedgeError`` with the status code
its class carries (plus the standard retry hint for a :class:`~fedge.errors.BusyError`), and
reports each refusal to ``on_refused`` (the coordinator records it as an event). The
authenticated caller travels in a :class:`~contextvars.ContextVar` for the call's duration; a
servicer or handler reads it with :func:`caller`.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc

from fedge.errors import BusyError, FedgeError, PayloadError
from fedge.log import logger
from fedge.protocol.metadata import RETRY_PUSHBACK_KEY
from fedge.protocol.transport import Malformed

__all__ = ["Authenticate", "FedgeInterceptor", "Refusal", "caller", "status_of"]

#: ``authenticate(method, context)`` → the caller (a device row, an operator name, ...) or
#: ``None`` for a method anyone may call; raises a FedgeError to refuse the call.
Authenticate = Callable[[str, grpc.ServicerContext], Any]

#: The caller of the call this thread serves; ``None`` outside a call or for an anonymous one.
_CALLER: ContextVar[Any] = ContextVar("fedge_caller", default=None)


def caller() -> Any:
    """The caller the interceptor authenticated for this call (``None`` if anonymous)."""
    return _CALLER.get()


def status_of(err: FedgeError) -> grpc.StatusCode:
    """The gRPC status code ``err``'s class carries."""
    return grpc.StatusCode[err.status]


@dataclass(frozen=True)
class Refusal:
    """A call the server refused: which method, with what code, why, and who asked."""

    method: str
    code: grpc.StatusCode
    error: FedgeError
    caller: Any


class FedgeInterceptor(grpc.ServerInterceptor):
    """Authenticates, maps errors to status codes and reports refusals for every method."""

    def __init__(
        self,
        *,
        authenticate: Authenticate | None = None,
        on_refused: Callable[[Refusal], None] | None = None,
    ) -> None:
        self._authenticate = authenticate
        self._on_refused = on_refused

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        """Wrap the method's behaviour (see the module docstring)."""
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = str(handler_call_details.method).lstrip("/").removeprefix("fedge.v1.")
        kwargs = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, handler.unary_unary), **kwargs
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._server_stream(method, handler.unary_stream), **kwargs
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._client_stream(method, handler.stream_unary), **kwargs
            )
        return handler

    @contextmanager
    def _serving(self, method: str, context: grpc.ServicerContext) -> Iterator[None]:
        """Around one call: its caller known (or it is refused), a ``FedgeError`` answered
        with its status, the caller forgotten after."""
        who = None
        try:
            _CALLER.set(None)  # a worker thread serves one call after another
            if self._authenticate is not None:
                who = self._authenticate(method, context)
            _CALLER.set(who)
            yield
        except FedgeError as err:
            self._refuse(method, context, err, who)
        finally:
            # Set, not reset with a token: a stream's generator may be closed on another thread.
            _CALLER.set(None)

    def _unary(self, method: str, behaviour: Callable[..., Any]) -> Callable[..., Any]:
        def call(request: Any, context: grpc.ServicerContext) -> Any:
            with self._serving(method, context):
                return behaviour(_decoded(request), context)

        return call

    def _server_stream(self, method: str, behaviour: Callable[..., Any]) -> Callable[..., Any]:
        def call(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            with self._serving(method, context):
                yield from behaviour(_decoded(request), context)

        return call

    def _client_stream(self, method: str, behaviour: Callable[..., Any]) -> Callable[..., Any]:
        def call(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
            with self._serving(method, context):
                return behaviour((_decoded(r) for r in requests), context)

        return call

    def _refuse(
        self, method: str, context: grpc.ServicerContext, err: FedgeError, who: Any
    ) -> NoReturn:
        code = status_of(err)
        if self._on_refused is not None:
            try:
                self._on_refused(Refusal(method, code, err, who))
            except Exception:  # recording a refusal must never turn it into another error
                logger.exception("cannot record the refusal of %s", method)
        else:
            logger.info("refused %s: %s: %s", method, code.name, err)
        if isinstance(err, BusyError):
            context.set_trailing_metadata(((RETRY_PUSHBACK_KEY, str(err.retry_after_ms)),))
        context.abort(code, str(err))
        raise AssertionError("unreachable: context.abort raises")


def _decoded(request: Any) -> Any:
    if isinstance(request, Malformed):
        raise PayloadError(request.reason)
    return request
