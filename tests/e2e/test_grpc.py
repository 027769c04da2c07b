"""Native gRPC through the generated stubs, straight to the server and through Envoy."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from modelway.v1 import chat_pb2, chat_pb2_grpc, models_pb2, models_pb2_grpc
from tests.conftest import Stack


def auth(stack: Stack) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {stack.api_key}")]


def hello_request(text: str = "Hello gRPC", **fields: object) -> chat_pb2.CreateChatCompletionRequest:
    return chat_pb2.CreateChatCompletionRequest(
        model="echo-1",
        messages=[chat_pb2.ChatMessage(role="user", text=text)],
        **fields,  # type: ignore[arg-type]
    )


def test_unary_chat(channel: grpc.Channel, stack: Stack) -> None:
    reply, call = chat_pb2_grpc.ChatServiceStub(channel).CreateChatCompletion.with_call(
        hello_request(), metadata=auth(stack), timeout=10
    )
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.content == "Echo: Hello gRPC"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.completion_tokens == 4
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 4
    assert dict(call.initial_metadata())["x-request-id"]


def test_server_streaming_chat(channel: grpc.Channel, stack: Stack) -> None:
    chunks = list(
        chat_pb2_grpc.ChatServiceStub(channel).StreamChatCompletion(
            hello_request(max_tokens=3), metadata=auth(stack), timeout=10
        )
    )
    deltas = [chunk.choices[0] for chunk in chunks if chunk.choices]
    assert deltas[0].delta.role == "assistant"
    assert "".join(d.delta.content for d in deltas) == "Echo: Hello"
    assert deltas[-1].finish_reason == "length"
    assert chunks[-1].usage.completion_tokens == 3
    assert len({chunk.id for chunk in chunks}) == 1


def test_models_list(channel: grpc.Channel, stack: Stack) -> None:
    reply = models_pb2_grpc.ModelsServiceStub(channel).ListModels(
        models_pb2.ListModelsRequest(), metadata=auth(stack), timeout=10
    )
    assert [model.id for model in reply.data] == ["echo-1", "echo-mini", "echo-slow"]


def test_typed_error_with_status_and_detail(channel: grpc.Channel, stack: Stack) -> None:
    request = hello_request()
    request.model = "missing-model"
    with pytest.raises(grpc.RpcError) as caught:
        chat_pb2_grpc.ChatServiceStub(channel).CreateChatCompletion(request, metadata=auth(stack), timeout=10)
    error = caught.value
    assert error.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
    trailers = dict(error.trailing_metadata())  # type: ignore[attr-defined]
    assert trailers["x-request-id"]
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    assert (info.reason, info.domain, info.metadata["param"]) == ("MODEL_NOT_FOUND", "modelway", "model")


def test_unauthenticated(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        chat_pb2_grpc.ChatServiceStub(channel).CreateChatCompletion(hello_request(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]


def test_invalid_argument(channel: grpc.Channel, stack: Stack) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        chat_pb2_grpc.ChatServiceStub(channel).StreamChatCompletion(
            hello_request(temperature=9.0), metadata=auth(stack), timeout=10
        ).initial_metadata()
        list(
            chat_pb2_grpc.ChatServiceStub(channel).StreamChatCompletion(
                hello_request(temperature=9.0), metadata=auth(stack)
            )
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
