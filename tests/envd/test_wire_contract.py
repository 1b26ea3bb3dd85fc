"""Our .proto files describe exactly the messages the released e2b SDK sends and expects."""

from __future__ import annotations

import pytest
from e2b.envd.filesystem import filesystem_pb as e2b_fs
from e2b.envd.process import process_pb as e2b_proc

from sandhive.rpc.filesystem import filesystem_pb as our_fs
from sandhive.rpc.process import process_pb as our_proc


def _shape(file_desc) -> dict:
    """Messages (with nested ones), fields by number, enums and RPCs, ignoring comments."""
    proto = file_desc.proto
    out: dict = {"package": proto.package}

    def messages(msgs, prefix: str) -> None:
        for m in msgs:
            name = f"{prefix}{m.name}"
            out[name] = sorted((f.number, f.name, f.type, f.label, f.type_name, bool(f.proto3_optional))
                               for f in m.field)
            messages(m.nested_type, name + ".")
            for e in m.enum_type:
                out[f"{name}.{e.name}"] = sorted((v.number, v.name) for v in e.value)

    messages(proto.message_type, "")
    for e in proto.enum_type:
        out[e.name] = sorted((v.number, v.name) for v in e.value)
    for s in proto.service:
        out[s.name] = sorted((m.name, m.input_type, m.output_type, bool(m.client_streaming),
                              bool(m.server_streaming)) for m in s.method)
    return out


@pytest.mark.parametrize(("ours", "theirs"), [(our_proc, e2b_proc), (our_fs, e2b_fs)], ids=["process", "filesystem"])
def test_descriptors_match_the_released_sdk(ours, theirs) -> None:
    assert _shape(ours.desc()) == _shape(theirs.desc())
