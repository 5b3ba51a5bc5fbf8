import numpy as np
import pytest
import torch

from napari_autostructn2v import preset_mask
from napari_autostructn2v.core.masking import blind_spots, mask_batch, neighbour_offsets


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


def test_blind_spot_density_and_bounds():
    b, (y, x) = blind_spots(16, (64, 64), 1.0, generator(), torch.device("cpu"))
    assert len(b) / (16 * 64 * 64) == pytest.approx(0.01, rel=0.3)
    assert y.min() >= 0 and y.max() < 64 and x.min() >= 0 and x.max() < 64
    # stratified: one spot per cell, so no two spots of a patch coincide
    assert len({(int(i), int(j), int(k)) for i, j, k in zip(b, y, x)}) == len(b)


def test_positions_are_fresh_for_every_batch():
    gen = generator()
    first = blind_spots(4, (64, 64), 1.0, gen, torch.device("cpu"))[1]
    second = blind_spots(4, (64, 64), 1.0, gen, torch.device("cpu"))[1]
    assert not all(torch.equal(a, b) for a, b in zip(first, second))


def test_n2v_replaces_blind_spots_by_a_neighbour_and_keeps_the_rest():
    patches = torch.arange(2 * 32 * 32, dtype=torch.float32).reshape(2, 1, 32, 32)  # every value unique
    inputs, blind = mask_batch(patches, 2.0, generator())
    assert torch.equal(inputs[~blind], patches[~blind])
    for b, _, y, x in torch.nonzero(blind):
        value = inputs[b, 0, y, x]
        position = torch.nonzero(patches[b, 0] == value)[0]
        dy, dx = (position - torch.tensor([y, x])).abs().tolist()
        assert (dy, dx) != (0, 0)
        assert max(dy, dx) <= 2  # at a border the neighbour is taken on the other side


@pytest.mark.parametrize("median", [False, True])
def test_a_blind_spot_next_to_the_border_never_sees_its_own_value(median):
    """Reflecting an offset of 2 at the border maps the second pixel back onto itself; every blind spot
    one pixel from an edge is checked, with every neighbour drawn many times."""
    patches = torch.arange(64, dtype=torch.float32).reshape(1, 1, 8, 8) ** 2  # unique, not linear
    ys, xs = torch.meshgrid(torch.arange(8), torch.tensor([1, 6]), indexing="ij")
    spots = (torch.zeros(16, dtype=torch.long), [ys.reshape(-1), xs.reshape(-1)])
    for seed in range(40):
        inputs, blind = mask_batch(patches, 1.0, generator(seed), median=median, spots=spots)
        assert not (inputs[blind] == patches[blind]).any()


def test_structn2v_randomises_the_mask_and_never_copies_from_it():
    mask = preset_mask("horizontal", 5)
    neighbours = neighbour_offsets(mask).tolist()
    assert [0, 1] not in neighbours and [0, -2] not in neighbours and [1, 0] in neighbours
    torch.manual_seed(0)
    patches = torch.rand(8, 1, 64, 64)
    inputs, blind = mask_batch(patches, 1.0, generator(), struct_mask=mask)
    changed = inputs != patches
    b, _, y, x = torch.nonzero(blind).T
    inner = (x >= 2) & (x < 62)
    for offset in (-2, -1, 1, 2):
        assert changed[b[inner], 0, y[inner], x[inner] + offset].float().mean() > 0.95
    low, high = patches.amin(dim=(1, 2, 3)), patches.amax(dim=(1, 2, 3))
    assert ((inputs >= low[:, None, None, None]) & (inputs <= high[:, None, None, None])).all()
    # apart from blind spots and their rows, nothing changes
    row_of_spot = torch.zeros_like(blind)
    for offset in range(-2, 3):
        row_of_spot[b, 0, y, (x + offset).clamp(0, 63)] = True
    assert not changed[~row_of_spot].any()


def test_n2v2_uses_the_median_of_the_neighbours():
    patches = torch.zeros(1, 1, 16, 16)
    patches[0, 0, 8, 8] = 100.0  # an outlier that a random neighbour copy could pick up
    inputs, blind = mask_batch(patches, 5.0, generator(1), median=True)
    assert inputs[blind].abs().max() == 0


def test_masking_is_reproducible_with_a_seed():
    patches = torch.rand(4, 1, 32, 32, generator=generator(5))
    first = mask_batch(patches, 1.0, generator(9), struct_mask=preset_mask("vertical", 3))
    second = mask_batch(patches, 1.0, generator(9), struct_mask=preset_mask("vertical", 3))
    assert all(torch.equal(a, b) for a, b in zip(first, second))


@pytest.mark.parametrize("kind, span", [("horizontal", 13), ("diagonal", 5), ("cross", 7)])
def test_structn2v_fills_the_mask_from_nearby_pixels_outside_every_mask(kind, span):
    """Each masked pixel copies a pixel at most 2 away that lies outside the mask of every blind spot,
    so the input keeps the local signal but none of any blind spot's correlated noise."""
    mask = preset_mask(kind, span)
    half = span // 2
    patches = torch.arange(4 * 48 * 48, dtype=torch.float32).reshape(4, 1, 48, 48)  # every value unique
    inputs, blind = mask_batch(patches, 1.0, generator(3), struct_mask=mask)
    spots = torch.nonzero(blind).tolist()
    covered = np.zeros((4, 48 + 2 * half, 48 + 2 * half), bool)  # union of all masks, padded
    for b, _, y, x in spots:
        covered[b, y : y + span, x : x + span] |= mask
    covered = covered[:, half : half + 48, half : half + 48]
    copied = randomised = 0
    for b, _, y, x in spots:
        for dy, dx in zip(*np.nonzero(mask)):
            my, mx = y + dy - half, x + dx - half
            if (dy, dx) == (half, half) or not (0 <= my < 48 and 0 <= mx < 48) or blind[b, 0, my, mx]:
                continue
            source = torch.nonzero(patches[b, 0] == inputs[b, 0, my, mx])
            if not len(source):  # a random value: no clean source nearby
                randomised += 1
                continue
            sy, sx = source[0].tolist()
            assert max(abs(sy - my), abs(sx - mx)) <= 2
            assert not covered[b, sy, sx], "copied a pixel inside a blind spot's mask"
            copied += 1
    assert copied > 20 * randomised  # nearly all masked pixels are copies of clean pixels
