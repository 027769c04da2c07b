"""Server reflection under both names tools use: grpc.reflection.v1 (asked first by grpcurl and
grpc_cli) and grpc.reflection.v1alpha (older clients).

grpcio-reflection ships only v1alpha. The two protos are the same messages
under another package, field for field, so their bytes are identical: the
v1alpha servicer answers v1 too, registered under the v1 method name. A copy
of the v1alpha file descriptor renamed to v1 lets tools describe v1 itself.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha._async import ReflectionServicer

from modelway.services.methods import MethodTable

__all__ = ["V1_SERVICE_NAME", "enable_reflection"]

V1_SERVICE_NAME = "grpc.reflection.v1.ServerReflection"
_V1_FILE = "grpc/reflection/v1/reflection.proto"


def _add_v1_descriptor(pool: descriptor_pool.DescriptorPool) -> None:
    try:
        pool.FindFileByName(_V1_FILE)
        return
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    old, new = f".{proto.package}.", ".grpc.reflection.v1."
    proto.name, proto.package = _V1_FILE, "grpc.reflection.v1"
    proto.options.Clear()
    for message in proto.message_type:
        for field in message.field:
            if field.HasField("type_name"):
                field.type_name = field.type_name.replace(old, new)
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(old, new)
            method.output_type = method.output_type.replace(old, new)
    pool.Add(proto)


def enable_reflection(service_names: Iterable[str], table: MethodTable) -> None:
    """Serves reflection (v1 and v1alpha) listing `service_names` and the reflection services themselves."""
    pool = descriptor_pool.Default()
    _add_v1_descriptor(pool)
    names = (*service_names, V1_SERVICE_NAME, reflection.SERVICE_NAME)
    # grpc.aio's servicer, named: `reflection.enable_server_reflection` would pick the synchronous
    # one for anything that is not a grpc.aio.Server, as the method table is not.
    servicer = ReflectionServicer(names, pool=pool)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, table.as_server())
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    table.add_registered_method_handlers(V1_SERVICE_NAME, {"ServerReflectionInfo": handler})
