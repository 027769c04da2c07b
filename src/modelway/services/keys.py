"""KeysService: key administration, typed for gRPC and as documented JSON for REST."""

from __future__ import annotations

from typing import Any

import grpc
from google.api import httpbody_pb2
from google.protobuf import struct_pb2, timestamp_pb2

from modelway.core.access import Gate
from modelway.core.clock import Clock
from modelway.core.directory import Caller
from modelway.core.key_admin import KeyAdmin, KeyChanges, NewKey
from modelway.errors import GatewayError, Reason
from modelway.proto_util import optional
from modelway.services._rpc import RpcCall, unary
from modelway.store import KeyRecord
from modelway.surfaces import admin
from modelway.surfaces.grpc import key_wording
from modelway.surfaces.openai import OPENAI
from modelway.v1 import keys_pb2, keys_pb2_grpc
from modelway.v1.rest import keys_pb2_grpc as keys_rest_pb2_grpc

__all__ = ["KeysRestServicer", "KeysServicer"]

Context = grpc.aio.ServicerContext[Any, Any]
_DAY = 86_400
_MAX_DAYS = 36_500


def _timestamp(epoch: int | None) -> timestamp_pb2.Timestamp | None:
    return None if epoch is None else timestamp_pb2.Timestamp(seconds=epoch)


def _key_proto(key: KeyRecord, secret: str | None = None) -> keys_pb2.ApiKey:
    return keys_pb2.ApiKey(
        id=key.id,
        key=secret or admin.MASK,
        name=key.name,
        created_at=_timestamp(key.created_at),
        last_used_at=_timestamp(key.last_used_at),
        permissions=key.permissions,
        expires_at=_timestamp(key.expires_at),
        is_enabled=key.is_enabled,
        rate_limit=key.rate_limit,
        daily_token_budget=key.daily_token_budget,
        allowed_models=key.allowed_models,
    )


def _strings(param: str, values: struct_pb2.ListValue) -> tuple[str, ...]:
    if not all(value.HasField("string_value") for value in values.values):
        raise GatewayError(
            Reason.INVALID_TYPE, f"Invalid type for '{param}': expected an array of strings.", param=param
        )
    return tuple(value.string_value for value in values.values)


def _json(body: bytes) -> httpbody_pb2.HttpBody:
    return httpbody_pb2.HttpBody(content_type="application/json", data=body)


class KeysServicer(keys_pb2_grpc.KeysServiceServicer):
    def __init__(self, admin_: KeyAdmin, gate: Gate, clock: Clock) -> None:
        self.admin = admin_
        self._gate = gate
        self._clock = clock

    async def caller(self, call: RpcCall) -> Caller:
        return await self._gate.authorize(call.metadata, "keys.manage", key_wording(call.from_rest))

    def new_key(self, request: keys_pb2.CreateApiKeyRequest) -> NewKey:
        expires_at = request.expires_at.seconds if request.HasField("expires_at") else None
        days = optional(request, "expires_in_days")
        if days is not None:
            if not 1 <= days <= _MAX_DAYS:
                raise GatewayError(
                    Reason.INVALID_VALUE, f"'expires_in_days' must be from 1 to {_MAX_DAYS}.", param="expires_in_days"
                )
            expires_at = int(self._clock.now()) + days * _DAY
        return NewKey(
            name=request.name,
            permissions=tuple(request.permissions),
            expires_at=expires_at,
            rate_limit=optional(request, "rate_limit"),
            daily_token_budget=optional(request, "daily_token_budget"),
            allowed_models=tuple(request.allowed_models),
        )

    @staticmethod
    def changes(request: keys_pb2.UpdateApiKeyRequest) -> KeyChanges:
        return KeyChanges(
            name=optional(request, "name"),
            is_enabled=optional(request, "is_enabled"),
            permissions=_strings("permissions", request.permissions) if request.HasField("permissions") else None,
            rate_limit=optional(request, "rate_limit"),
            daily_token_budget=optional(request, "daily_token_budget"),
            allowed_models=(
                _strings("allowed_models", request.allowed_models) if request.HasField("allowed_models") else None
            ),
            expires_at=request.expires_at.seconds if request.HasField("expires_at") else None,
        )

    # Typed RPCs.

    @unary(OPENAI.error_response)
    async def ListApiKeys(
        self, request: keys_pb2.ListApiKeysRequest, context: Context, call: RpcCall
    ) -> keys_pb2.ListApiKeysResponse:
        keys = self.admin.list(await self.caller(call))
        return keys_pb2.ListApiKeysResponse(data=[_key_proto(key) for key in keys])

    @unary(OPENAI.error_response)
    async def CreateApiKey(
        self, request: keys_pb2.CreateApiKeyRequest, context: Context, call: RpcCall
    ) -> keys_pb2.CreateApiKeyResponse:
        issued = await self.admin.create(await self.caller(call), self.new_key(request))
        return keys_pb2.CreateApiKeyResponse(data=_key_proto(issued.record, issued.secret))

    @unary(OPENAI.error_response)
    async def UpdateApiKey(
        self, request: keys_pb2.UpdateApiKeyRequest, context: Context, call: RpcCall
    ) -> keys_pb2.UpdateApiKeyResponse:
        key = await self.admin.update(await self.caller(call), request.id, self.changes(request))
        return keys_pb2.UpdateApiKeyResponse(data=_key_proto(key))

    @unary(OPENAI.error_response)
    async def RotateApiKey(
        self, request: keys_pb2.RotateApiKeyRequest, context: Context, call: RpcCall
    ) -> keys_pb2.RotateApiKeyResponse:
        issued = await self.admin.rotate(await self.caller(call), request.id)
        return keys_pb2.RotateApiKeyResponse(data=_key_proto(issued.record, issued.secret))

    @unary(OPENAI.error_response)
    async def DeleteApiKey(
        self, request: keys_pb2.DeleteApiKeyRequest, context: Context, call: RpcCall
    ) -> keys_pb2.DeleteApiKeyResponse:
        await self.admin.delete(await self.caller(call), request.id)
        return keys_pb2.DeleteApiKeyResponse(success=True)


class KeysRestServicer(keys_rest_pb2_grpc.KeysRestServiceServicer):
    """The same operations as KeysServicer, rendered as the documented JSON."""

    def __init__(self, typed: KeysServicer) -> None:
        self._typed = typed
        self._admin = typed.admin

    @unary(OPENAI.error_response)
    async def ListApiKeys(
        self, request: keys_pb2.ListApiKeysRequest, context: Context, call: RpcCall
    ) -> httpbody_pb2.HttpBody:
        return _json(admin.key_json(self._admin.list(await self._typed.caller(call))))

    @unary(OPENAI.error_response)
    async def CreateApiKey(
        self, request: keys_pb2.CreateApiKeyRequest, context: Context, call: RpcCall
    ) -> httpbody_pb2.HttpBody:
        issued = await self._admin.create(await self._typed.caller(call), self._typed.new_key(request))
        return _json(admin.key_json(issued.record, issued.secret))

    @unary(OPENAI.error_response)
    async def UpdateApiKey(
        self, request: keys_pb2.UpdateApiKeyRequest, context: Context, call: RpcCall
    ) -> httpbody_pb2.HttpBody:
        key = await self._admin.update(await self._typed.caller(call), request.id, self._typed.changes(request))
        return _json(admin.key_json(key))

    @unary(OPENAI.error_response)
    async def RotateApiKey(
        self, request: keys_pb2.RotateApiKeyRequest, context: Context, call: RpcCall
    ) -> httpbody_pb2.HttpBody:
        issued = await self._admin.rotate(await self._typed.caller(call), request.id)
        return _json(admin.key_json(issued.record, issued.secret))

    @unary(OPENAI.error_response)
    async def DeleteApiKey(
        self, request: keys_pb2.DeleteApiKeyRequest, context: Context, call: RpcCall
    ) -> httpbody_pb2.HttpBody:
        await self._admin.delete(await self._typed.caller(call), request.id)
        return _json(b'{"success":true}')
