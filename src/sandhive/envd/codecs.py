"""Connect codecs that answer undecodable requests with INVALID_ARGUMENT instead of an internal error.

connectrpc's own codecs let a JSON or protobuf parse error escape as a plain exception (HTTP 500 and
a traceback); E2B's envd answers such input with `invalid_argument`, and so does this wrapper.
"""

from __future__ import annotations

from typing import TypeVar

from connectrpc.code import Code
from connectrpc.codec import Codec, proto_binary_codec, proto_json_codec
from connectrpc.errors import ConnectError

T = TypeVar("T")


class StrictDecode:
    """Wraps a codec; a message that does not decode becomes a Connect INVALID_ARGUMENT error."""

    def __init__(self, inner: Codec) -> None:
        self._inner = inner

    def name(self) -> str:
        return self._inner.name()

    def encode(self, message: object) -> bytes:
        return self._inner.encode(message)

    def decode(self, data: bytes | bytearray, message_class: type[T]) -> T:
        try:
            return self._inner.decode(data, message_class)
        except ConnectError:
            raise
        except Exception as exc:  # any parse failure is the client's fault
            raise ConnectError(Code.INVALID_ARGUMENT, f"cannot decode the request: {exc}") from None


def codecs() -> list[Codec]:
    return [StrictDecode(proto_binary_codec()), StrictDecode(proto_json_codec())]
