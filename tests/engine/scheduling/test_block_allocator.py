import pytest

from hearth.engine.scheduling.block_allocator import BlockAllocator, OutOfBlocksError


def test_allocate_share_free_roundtrip():
    allocator = BlockAllocator(3)
    a, b = allocator.allocate(), allocator.allocate()
    assert allocator.num_free == 1
    allocator.share(a)
    allocator.free(a)
    assert allocator.num_free == 1 and allocator.ref_count(a) == 1
    allocator.free_all([a, b])
    assert allocator.num_free == 3


def test_out_of_blocks_and_double_free_raise():
    allocator = BlockAllocator(1)
    block = allocator.allocate()
    with pytest.raises(OutOfBlocksError):
        allocator.allocate()
    allocator.free(block)
    with pytest.raises(ValueError, match="freed twice"):
        allocator.free(block)
