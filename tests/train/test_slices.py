"""The slice bank and each epoch's draw: tumor slices, vertex and tumor-end hard negatives and the rest."""

import numpy as np
import torch

from lggseg.data.dataset import Volume
from lggseg.train.slices import SliceBank, draw_epoch


def volume(name: str, z: int, tumor: range) -> Volume:
    masks = np.zeros((z, 16, 16), bool)
    for k in tumor:
        masks[k, 4:8, 4:8] = True
    images = np.random.default_rng(0).integers(0, 255, (z, 16, 16, 3), dtype=np.uint8)
    return Volume(name, images, masks, list(range(1, z + 1)))


def test_vertex_slices_are_the_tumor_free_top_fifth_of_each_volume():
    bank = SliceBank.from_volumes([volume("a", 10, range(3, 9)), volume("b", 20, range(2, 5))])
    # a: slices 8, 9 are its top fifth; 8 has tumor. b (offset 10): slices 16..19, all tumor-free
    assert bank.vertex.tolist() == [9, 26, 27, 28, 29]
    assert bank.tumor.tolist() == [3, 4, 5, 6, 7, 8, 12, 13, 14]


def test_draw_epoch_takes_the_asked_shares():
    bank = SliceBank.from_volumes([volume("a", 10, range(3, 9)), volume("b", 20, range(2, 5))])
    order = draw_epoch(bank, 1000, 0.5, torch.Generator().manual_seed(0), vertex_fraction=0.3)
    vertex = np.isin(order.numpy(), bank.vertex.numpy()).mean()
    assert len(order) == 1000 and 0.3 <= vertex <= 0.38  # 30% drawn from the vertex, plus the rest's share
    plain = draw_epoch(bank, 1000, 0.5, torch.Generator().manual_seed(0))
    assert np.isin(plain.numpy(), bank.vertex.numpy()).mean() < 0.15
    # off by default: the same draw as before the option existed, so older runs resume bit for bit
    again = draw_epoch(bank, 1000, 0.5, torch.Generator().manual_seed(0), vertex_fraction=0.0)
    assert torch.equal(plain, again)


def test_end_slices_are_the_tumor_free_slices_near_a_tumor_of_the_same_volume():
    bank = SliceBank.from_volumes([volume("a", 10, range(3, 9)), volume("b", 20, range(10, 12))])
    # a: every tumor-free slice (0, 1, 2, 9) is within 3 of its tumor. b (offset 10): 7-9 and 12-14;
    # b's first slices (bank 10-12) lie next to a's tumor in the bank but not in b, so they are not ends
    assert bank.past_ends.tolist() == [0, 1, 2, 9, 17, 18, 19, 22, 23, 24]


def test_draw_epoch_takes_the_asked_share_of_end_slices():
    bank = SliceBank.from_volumes([volume("a", 10, range(3, 9)), volume("b", 20, range(10, 12))])
    order = draw_epoch(bank, 1000, 0.5, torch.Generator().manual_seed(0), vertex_fraction=0.1, end_fraction=0.3)
    ends = np.isin(order.numpy(), bank.past_ends.numpy()).mean()
    assert len(order) == 1000 and 0.3 <= ends <= 0.36  # 30% drawn past tumor ends, plus the rest's share
    plain = draw_epoch(bank, 1000, 0.5, torch.Generator().manual_seed(0), vertex_fraction=0.1)
    assert np.isin(plain.numpy(), bank.past_ends.numpy()).mean() < 0.15
    again = draw_epoch(bank, 1000, 0.5, torch.Generator().manual_seed(0), vertex_fraction=0.1, end_fraction=0.0)
    assert torch.equal(plain, again)  # off by default: older runs resume bit for bit


def test_tumor_balance_gives_each_patient_its_share_of_the_tumor_draws():
    # a has 6 tumor slices, b has 2: drawn slice by slice, a gets 3/4 of the tumor draws
    bank = SliceBank.from_volumes([volume("a", 10, range(3, 9)), volume("b", 20, range(2, 4))])
    assert bank.volume_tumor_slices.tolist() == [6] * 10 + [2] * 20

    def share_of_a(balance: float) -> float:
        order = draw_epoch(bank, 8000, 1.0, torch.Generator().manual_seed(0), tumor_balance=balance)
        assert np.isin(order.numpy(), bank.tumor.numpy()).all()
        return float((order < 10).float().mean())

    assert abs(share_of_a(0.0) - 0.75) < 0.02
    assert abs(share_of_a(1.0) - 0.5) < 0.02  # per patient: half each
    assert abs(share_of_a(0.5) - 6**0.5 / (6**0.5 + 2**0.5)) < 0.02  # weights 6 * 6^-0.5 against 2 * 2^-0.5
    # off by default: the same draw as before the option existed
    plain = draw_epoch(bank, 1000, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(plain, draw_epoch(bank, 1000, 0.5, torch.Generator().manual_seed(0), tumor_balance=0.0))


def test_bank_inputs_take_neighbours_from_the_slice_own_volume_only():
    a, b = volume("a", 3, range(1, 2)), volume("b", 4, range(0, 1))
    b.images[:] = 200  # volume b is uniformly 200, a is random below 255: a crossed bound would show
    bank = SliceBank.from_volumes([a, b])
    raw, stats = bank.inputs(torch.tensor([2, 3, 0]), context=1)
    assert raw.shape == (3, 9, 16, 16) and stats.shape == (3, 4, 9)
    # a's last slice (2): slices 1, 2, 2 of a; b's first slice (bank 3): 3, 3, 4 of b; a's first: 0, 0, 1
    assert torch.equal(raw[0, 6:], raw[0, 3:6]) and torch.equal(raw[0, :3], bank.images[1].permute(2, 0, 1).float())
    assert bool((raw[1] == 200).all())
    assert torch.equal(raw[2, :3], raw[2, 3:6]) and torch.equal(raw[2, 6:], bank.images[1].permute(2, 0, 1).float())
    plain, plain_stats = bank.inputs(torch.tensor([2, 3]), context=0)
    assert torch.equal(plain, raw[:2, 3:6]) and torch.equal(plain_stats, stats[:2, :, :3])


def test_each_slice_carries_its_own_volumes_midline():
    a, b = volume("a", 3, range(1, 2)), volume("b", 4, range(0, 1))
    a.images[:] = 0
    a.images[:, :, 2:9] = 200  # a's head over columns 2..8: midline 5
    b.images[:] = 0
    b.images[:, :, 6:16] = 200  # b's over columns 6..15: midline 10.5
    bank = SliceBank.from_volumes([a, b])
    assert bank.midlines.tolist() == [5.0] * 3 + [10.5] * 4
