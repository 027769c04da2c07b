"""ImagesService (typed, native gRPC) and ImagesRestService (the OpenAI Images REST endpoint and its files).

parse -> Pipeline.images -> generate -> (url mode) store the PNGs -> render. A
provider's base64 PNGs (the echo provider's always) become files served by
GetImageFile when the caller asked for URLs; an upstream's own URLs pass
through as they are.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.api import httpbody_pb2

from modelway.config import ServerConfig
from modelway.core.image_files import FILES_PATH, ImageFiles, public_base_url
from modelway.core.pipeline import ImagesRun, Pipeline
from modelway.core.types import GeneratedImage
from modelway.errors import GatewayError, Reason, clip
from modelway.services._rpc import RpcCall, unary
from modelway.services.delivery import answer_in_time, deliver, in_time
from modelway.surfaces.dialect import MAX_ANSWER_BYTES
from modelway.surfaces.grpc import GRPC_IMAGES
from modelway.surfaces.openai import OPENAI
from modelway.surfaces.openai_images import OPENAI_IMAGES, images_json, parse_images_body, parse_images_request
from modelway.v1 import images_pb2, images_pb2_grpc
from modelway.v1.rest import images_pb2 as images_rest_pb2
from modelway.v1.rest import images_pb2_grpc as images_rest_pb2_grpc

__all__ = ["Gallery", "ImagesRestServicer", "ImagesServicer"]

Context = grpc.aio.ServicerContext[Any, Any]
# The files never change: a client or proxy may keep them as long as it likes.
_CACHE_CONTROL = ("cache-control", "public, max-age=31536000, immutable")


class Gallery:
    """Turns a run's images into what the caller asked for, storing PNGs that must become URLs."""

    def __init__(self, files: ImageFiles, server: ServerConfig) -> None:
        self.files = files
        self._server = server

    async def deliverable(self, run: ImagesRun, call: RpcCall) -> tuple[GeneratedImage, ...]:
        images = await run.generate()
        if not run.request.wants_url:
            return images
        inline = [index for index, image in enumerate(images) if image.b64_json and not image.url]
        if not inline:
            return images
        try:
            names = await self.files.save_base64([images[index].b64_json for index in inline])
        except ValueError:
            raise GatewayError(
                Reason.PROVIDER_ERROR, "The upstream provider sent an image that is not valid base64."
            ) from None
        base = public_base_url(self._server, call.metadata) + FILES_PATH
        stored = dict(zip(inline, names, strict=True))
        return tuple(
            GeneratedImage(url=base + stored[index], revised_prompt=image.revised_prompt) if index in stored else image
            for index, image in enumerate(images)
        )


def _request_fields(request: images_pb2.GenerateImagesRequest) -> dict[str, Any]:
    """The typed request as the JSON body it stands for (unset fields absent), for the one validator."""
    fields: dict[str, Any] = {
        name: getattr(request, name)
        for name in ("model", "prompt", "size", "quality", "response_format", "style", "user")
        if getattr(request, name)
    }
    if request.HasField("n"):
        fields["n"] = request.n
    return fields


class ImagesServicer(images_pb2_grpc.ImagesServiceServicer):
    def __init__(self, pipeline: Pipeline, gallery: Gallery) -> None:
        self._pipeline = pipeline
        self._gallery = gallery

    @unary(OPENAI.error_response)
    async def GenerateImages(
        self, request: images_pb2.GenerateImagesRequest, context: Context, call: RpcCall
    ) -> images_pb2.GenerateImagesResponse:
        parse = in_time(call, lambda: parse_images_request(_request_fields(request)))
        async with self._pipeline.images(call, GRPC_IMAGES, parse) as run:
            images = await answer_in_time(call, run, self._gallery.deliverable(run, call))
            # The row commits before the answer goes out; one whose caller left meanwhile is refunded.
            await deliver(call, run)
            return images_pb2.GenerateImagesResponse(
                created=run.created,
                data=[
                    images_pb2.Image(url=image.url, b64_json=image.b64_json, revised_prompt=image.revised_prompt)
                    for image in images
                ],
            )


class ImagesRestServicer(images_rest_pb2_grpc.ImagesRestServiceServicer):
    def __init__(self, pipeline: Pipeline, gallery: Gallery) -> None:
        self._pipeline = pipeline
        self._gallery = gallery

    @unary(OPENAI.error_response)
    async def CreateImage(
        self, request: httpbody_pb2.HttpBody, context: Context, call: RpcCall
    ) -> httpbody_pb2.HttpBody:
        async with self._pipeline.images(call, OPENAI_IMAGES, lambda: parse_images_body(request.data)) as run:
            body = images_json(run.created, await self._gallery.deliverable(run, call))
            if len(body) > MAX_ANSWER_BYTES:
                # Envoy buffers a whole JSON answer; past this it would be cut. Nothing is charged.
                raise GatewayError(
                    Reason.INVALID_VALUE,
                    f"The answer is {len(body)} bytes, more than the {MAX_ANSWER_BYTES} a JSON answer may have. "
                    f"{OPENAI_IMAGES.wording.answer_smaller}",
                    param="response_format",
                )
            await run.finish()
            return httpbody_pb2.HttpBody(content_type="application/json", data=body)

    @unary(OPENAI.error_response)
    async def GetImageFile(
        self, request: images_rest_pb2.GetImageFileRequest, context: Context, call: RpcCall
    ) -> httpbody_pb2.HttpBody:
        png = await self._gallery.files.read(request.name)
        if png is None:
            raise GatewayError(Reason.NOT_FOUND, f"No image is stored as `{clip(request.name)}`.", param="name")
        call.headers.append(_CACHE_CONTROL)
        return httpbody_pb2.HttpBody(content_type="image/png", data=png)
