"""What a resume after a host reboot decides without a sandbox: which slot a paused sandbox gets back
(`SlotAllocator.reclaim`) and whose uid range an owner is in (`userns.range_of`, which `userns.rehome` uses to
re-own a kept layer into a new slot's range). The live case is tests/persistence/test_reboot.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandhive.node import userns
from sandhive.node.network import Slot, SlotAllocator

START, SIZE = userns.SANDBOX_RANGES_START, userns.SIZE


@pytest.mark.parametrize(("uid", "start"), [
    (START, START),
    (START + SIZE - 1, START),
    (START + SIZE, START + SIZE),
    (START + 7 * SIZE + 1000, START + 7 * SIZE),
    (0, None),  # host root
    (userns.BASE + 1000, None),  # the canonical range templates are stored in
    (userns.BUILD_BASE, None),
    (START - 1, None),
    (2**32 - 1, None),  # (uid_t)-1: no uid
])
def test_range_of_names_the_sandbox_range_an_id_is_in(uid: int, start: int | None) -> None:
    assert userns.range_of(uid) == start


def test_rehome_wants_the_start_of_a_range(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        userns.rehome(tmp_path, START + 1)


def test_a_slot_still_held_is_kept(tmp_path: Path) -> None:
    slots = SlotAllocator(tmp_path)
    slot = slots.claim("sbx1")
    assert slots.reclaim("sbx1", slot.index) == (slot, False)
    assert slots.owns("sbx1", slot)


def test_a_slot_freed_by_a_reboot_is_claimed_again(tmp_path: Path) -> None:
    slots = SlotAllocator(tmp_path / "net-slots")
    (tmp_path / "net-slots").rmdir()  # /run emptied, directory and all
    assert slots.reclaim("sbx1", 5) == (Slot(5), True)
    assert (tmp_path / "net-slots" / "5").read_text() == "sbx1"


def test_a_slot_another_sandbox_took_gives_another_slot(tmp_path: Path) -> None:
    slots = SlotAllocator(tmp_path)
    (tmp_path / "0").write_text("squatter")
    slot, claimed = slots.reclaim("sbx1", 0)
    assert claimed and slot != Slot(0)
    assert slots.owns("sbx1", slot) and not slots.owns("sbx1", Slot(0))
    assert (tmp_path / "0").read_text() == "squatter"  # untouched


def test_a_sandbox_holding_another_slot_gets_that_one(tmp_path: Path) -> None:
    slots = SlotAllocator(tmp_path)
    (tmp_path / "3").write_text("sbx1")  # taken by an earlier attempt that kept it
    assert slots.reclaim("sbx1", 0) == (Slot(3), False)
    assert not (tmp_path / "0").exists()


def test_a_paused_sandbox_holds_its_slot_again_at_start_if_free(tmp_path: Path) -> None:
    """`hold` (the node's reconcile, before pools and warm shells start): the paused sandbox's slot if free or
    its own, never another one; a slot someone else took stays theirs."""
    slots = SlotAllocator(tmp_path)
    assert slots.hold("sbx1", 3) and slots.owns("sbx1", Slot(3))
    assert slots.hold("sbx1", 3)  # already its own
    (tmp_path / "4").write_text("squatter")
    assert not slots.hold("sbx2", 4)
    assert (tmp_path / "4").read_text() == "squatter" and slots.owned_by("sbx2") is None
    assert slots.claim("pool") not in (Slot(3), Slot(4))  # a pool's or shell's sandbox gets another slot
