"""UsageService: the caller's account usage per day."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import json_format

from modelway.core.access import Gate
from modelway.core.reports import UsageReports
from modelway.services._rpc import RpcCall, unary
from modelway.surfaces import admin
from modelway.surfaces.grpc import key_wording
from modelway.surfaces.openai import OPENAI
from modelway.v1 import usage_pb2, usage_pb2_grpc

__all__ = ["UsageServicer"]

Context = grpc.aio.ServicerContext[Any, Any]


class UsageServicer(usage_pb2_grpc.UsageServiceServicer):
    def __init__(self, reports: UsageReports, gate: Gate) -> None:
        self._reports = reports
        self._gate = gate

    @unary(OPENAI.error_response)
    async def GetUsage(
        self, request: usage_pb2.GetUsageRequest, context: Context, call: RpcCall
    ) -> usage_pb2.GetUsageResponse:
        caller = await self._gate.authorize(call.metadata, "usage.read", key_wording(call.from_rest))
        report = await self._reports.report(caller, request.start_date, request.end_date)
        return usage_pb2.GetUsageResponse(data=json_format.ParseDict(admin.usage_json(report), usage_pb2.UsageReport()))
