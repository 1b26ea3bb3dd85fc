"""A finished pause is found by its record alone (`node/saved.py`), whatever the backend wrote it: the API reads
it at start to recover a pause the store never heard of (a crash between the save and the row)."""

from __future__ import annotations

from pathlib import Path

from sandhive.node import saved as record
from sandhive.node.microvm import saved as microvm_saved
from sandhive.node.runtime import SavedSandbox


def test_a_microvm_saved_json_is_a_pause_record(tmp_path: Path) -> None:
    machine = microvm_saved.Machine("tcg", 2, 512, 1024, 1 << 30, ("layer0.qcow2", "layer1.raw"))
    meta = machine.meta("memory", "isrc", "base")
    (tmp_path / "state").write_bytes(b"ram")
    microvm_saved.write_meta(tmp_path, meta)
    assert record.read_record(tmp_path) == SavedSandbox("isrc", "microvm", "memory", tmp_path, meta)
    assert microvm_saved.Machine.of(meta) == machine  # and still the machine the resume reads


def test_an_oci_record_round_trips(tmp_path: Path) -> None:
    saved = SavedSandbox("isrc", "container", "filesystem", tmp_path, {"rootfs": "upper"})
    record.write_record(saved)
    assert record.read_record(tmp_path) == saved


def test_no_record_or_an_unreadable_one_is_no_pause(tmp_path: Path) -> None:
    assert record.read_record(tmp_path) is None
    for body in ('{"source_id": "isrc"}', "[1, 2]", "{not json"):
        (tmp_path / record.RECORD).write_text(body)
        assert record.read_record(tmp_path) is None, body
