"""Domain errors to gRPC statuses: the one place where that mapping lives.

Every error carries google.rpc.ErrorInfo (domain smsgw.io, a stable reason,
metadata.error_code from the error table, metadata.field when one input is at
fault) and, for bad input, google.rpc.BadRequest naming the field.
"""

from __future__ import annotations

import asyncio
import functools
import logging

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from smsgw.domain import errors as de

ERROR_DOMAIN = "smsgw.io"
log = logging.getLogger(__name__)

_STATUS_BY_ERROR: list[tuple[type[de.DomainError], grpc.StatusCode]] = [
    (de.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (de.IdempotencyKeyReused, grpc.StatusCode.INVALID_ARGUMENT),
    (de.MessageNotFound, grpc.StatusCode.NOT_FOUND),
    (de.NotCancelable, grpc.StatusCode.FAILED_PRECONDITION),
    (de.RecipientOptedOut, grpc.StatusCode.FAILED_PRECONDITION),
    (de.QueueFull, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (de.LimitReached, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (de.TooManyStreams, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (de.WatchFellBehind, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (de.GatewayUnavailable, grpc.StatusCode.UNAVAILABLE),
    (de.ServerError, grpc.StatusCode.INTERNAL),
    (de.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (de.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (de.AccountExists, grpc.StatusCode.ALREADY_EXISTS),
    (de.AccountNotFound, grpc.StatusCode.NOT_FOUND),
    (de.ApiKeyNotFound, grpc.StatusCode.NOT_FOUND),
    (de.DeviceTokenExists, grpc.StatusCode.ALREADY_EXISTS),
    (de.DeviceTokenNotFound, grpc.StatusCode.NOT_FOUND),
    (de.RouteTableChanged, grpc.StatusCode.FAILED_PRECONDITION),
]


def grpc_code_for(error: de.DomainError) -> grpc.StatusCode:
    for error_type, code in _STATUS_BY_ERROR:
        if isinstance(error, error_type):
            return code
    return grpc.StatusCode.INTERNAL


def to_rpc_status(error: de.DomainError) -> status_pb2.Status:
    code = grpc_code_for(error)
    metadata = {"error_code": str(error.code), **error.metadata}
    if error.field:
        metadata["field"] = error.field
    details = []
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=metadata))
    details.append(info)
    if error.field and isinstance(error, (de.InvalidArgument, de.IdempotencyKeyReused)):
        bad_request = any_pb2.Any()
        bad_request.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=error.field, description=error.message)
                ]
            )
        )
        details.append(bad_request)
    if isinstance(error, de.RetryLater):
        retry = any_pb2.Any()
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(int(error.retry_after * 1000) + 1)
        retry.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
        details.append(retry)
    return status_pb2.Status(code=code.value[0], message=error.message, details=details)


async def abort_with(context: grpc.aio.ServicerContext, error: de.DomainError):
    await context.abort_with_status(rpc_status.to_status(to_rpc_status(error)))


def unary_rpc(method):
    """A unary servicer method: domain errors become their statuses, anything unexpected INTERNAL (code 400)."""

    @functools.wraps(method)
    async def wrapper(self, request, context):
        try:
            return await method(self, request, context)
        except de.DomainError as error:
            await abort_with(context, error)
        except asyncio.CancelledError:
            raise
        except Exception:
            if context.code() is not None:  # already aborted on purpose
                raise
            log.exception("internal error in %s", method.__name__)
            await abort_with(context, de.ServerError("server-side error; it has been logged, retry later"))

    return wrapper


def error_info_of(rpc_error: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """Client side: the ErrorInfo of a failed call, if the server sent one."""
    status = rpc_status.from_call(rpc_error)
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


assert grpc.StatusCode.INVALID_ARGUMENT.value[0] == code_pb2.INVALID_ARGUMENT
