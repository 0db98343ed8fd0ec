"""Dilation, erosion and closing by a ball in millimetres, on bit-packed voxels.

Why: the exact distance transform (``edt``) of a whole skull's box at 512^3 costs seconds, while
the post-processing balls are a few voxels wide. A ball is a union of segments along axis 0, one
per (axis 1, axis 2) offset; with axis 2 packed 64 voxels to a word, a dilation is a few hundred
word-wise ORs of shifted copies. The ball is the one ``edt`` gives (its float32 distance from a
single voxel, compared with the radius), so results equal the distance-transform results voxel for
voxel (tests check it on the shared real skulls).
"""

from __future__ import annotations

import sys
from functools import lru_cache
from typing import Sequence

import numpy as np

__all__ = ["ball_segments", "box_spans", "fits", "label_components", "largest_component", "packed_dilate",
           "packed_erode", "packed_closing"]

#: Most (axis 1, axis 2) offsets of a ball worked bit-packed; beyond it the distance transform is faster.
MAX_SEGMENTS = 600
_WORD = 64


@lru_cache(maxsize=64)
def _segments(radius_mm: float, spacing: tuple[float, float, float]) -> tuple[tuple[int, int, int], ...]:
    import edt

    reach = [int(radius_mm // s) + 1 for s in spacing]
    point = np.ones([2 * r + 1 for r in reach], np.uint8)
    point[tuple(reach)] = 0
    ball = edt.edt(point, anisotropy=spacing, black_border=False) <= radius_mm
    out = []
    for j in range(ball.shape[1]):
        for k in range(ball.shape[2]):
            rows = np.flatnonzero(ball[:, j, k])
            if len(rows):
                out.append((j - reach[1], k - reach[2], int(rows[-1]) - reach[0]))
    return tuple(out)


def ball_segments(radius_mm: float, spacing: Sequence[float]) -> tuple[tuple[int, int, int], ...]:
    """The ball as ``(axis-1 offset, axis-2 offset, half length along axis 0)`` per segment."""
    return _segments(float(radius_mm), tuple(float(s) for s in spacing))


def fits(radius_mm: float, spacing: Sequence[float]) -> bool:
    """Whether the bit-packed operations take this ball (small enough, little-endian words)."""
    return (sys.byteorder == "little" and radius_mm > 0 and radius_mm / min(spacing) < _WORD - 1
            and len(ball_segments(radius_mm, spacing)) <= MAX_SEGMENTS)


def _reach(segments) -> tuple[int, int, int]:
    return (max(w for _, _, w in segments), max(abs(j) for j, _, _ in segments),
            max(abs(k) for _, k, _ in segments))


def _pack(frame: np.ndarray) -> np.ndarray:
    """Bool (n0, n1, n2), C order -> uint64 words (n0, n1, ceil(n2 / 64)), voxel z at bit z % 64."""
    n0, n1, n2 = frame.shape
    words = np.zeros((n0, n1, -(-n2 // _WORD) * 8), np.uint8)
    words[..., : -(-n2 // 8)] = np.packbits(frame, axis=2, bitorder="little")
    return words.view("<u8")


def _unpack(words: np.ndarray, n2: int) -> np.ndarray:
    return np.unpackbits(words.view(np.uint8), axis=2, count=n2, bitorder="little").view(bool)


def _shift_bits(words: np.ndarray, k: int) -> np.ndarray:
    """The words' voxels moved by ``k`` along axis 2 (zeros come in)."""
    if k == 0:
        return words
    out = np.empty_like(words)
    if k > 0:
        np.left_shift(words, np.uint64(k), out=out)
        out[..., 1:] |= words[..., :-1] >> np.uint64(_WORD - k)
    else:
        np.right_shift(words, np.uint64(-k), out=out)
        out[..., :-1] |= words[..., 1:] << np.uint64(_WORD + k)
    return out


def _dilate_words(words: np.ndarray, segments) -> np.ndarray:
    """OR of the words shifted by every offset of the (symmetric) ball."""
    n0, n1 = words.shape[:2]
    lines = [words]  # lines[w]: dilation by the segment of half length w along axis 0
    for w in range(1, _reach(segments)[0] + 1):
        line = lines[-1].copy()
        if w < n0:
            line[w:] |= words[:-w]
            line[:-w] |= words[w:]
        lines.append(line)
    out = np.zeros_like(words)
    for k in sorted({k for _, k, _ in segments}):
        plane = np.zeros_like(words)
        for j, kk, w in segments:
            if kk != k or abs(j) >= n1:
                continue
            if j >= 0:
                plane[:, j:] |= lines[w][:, : n1 - j]
            else:
                plane[:, :j] |= lines[w][:, -j:]
        out |= _shift_bits(plane, k)
    return out


def box_spans(mask: np.ndarray) -> list[tuple[int, int]] | None:
    """``(first, last + 1)`` of the mask's nonzero voxels along each axis; None for an empty mask."""
    spans = []
    for ax in range(3):
        idx = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax)))
        if len(idx) == 0:
            return None
        spans.append((int(idx[0]), int(idx[-1]) + 1))
    return spans


def _frame(mask: np.ndarray, box, grow: Sequence[int]):
    """``mask`` placed in a frame = its box grown by ``grow`` (may reach past the array: virtual zeros).

    Returns the frame (bool, C order), the frame's origin in array indices, and the slices of the
    frame and of the array that overlap.
    """
    lo = [b[0] - g for b, g in zip(box, grow)]
    hi = [b[1] + g for b, g in zip(box, grow)]
    frame = np.zeros([h - l for l, h in zip(lo, hi)], bool)
    arr = tuple(slice(max(l, 0), min(h, n)) for l, h, n in zip(lo, hi, mask.shape))
    fr = tuple(slice(a.start - l, a.stop - l) for a, l in zip(arr, lo))
    frame[fr] = mask[arr]
    return frame, arr, fr


def _c_order(mask: np.ndarray, spacing: Sequence[float]):
    """A C-ordered view of ``mask`` and the spacing of its axes (Fortran arrays are transposed)."""
    if mask.flags.f_contiguous and not mask.flags.c_contiguous:
        return mask.T, tuple(float(s) for s in spacing)[::-1], True
    return mask, tuple(float(s) for s in spacing), False


def _result(frame_bits: np.ndarray, frame_shape, arr, fr, like: np.ndarray, transposed: bool) -> np.ndarray:
    out = np.zeros(like.shape, bool)
    out[arr] = _unpack(frame_bits, frame_shape[2])[fr]
    return out.T if transposed else out


def _clear_outside(words: np.ndarray, fr: tuple[slice, ...], n2: int) -> None:
    """Zero the voxels of a frame's words that lie outside the array (``fr``: the part inside)."""
    words[: fr[0].start] = 0
    words[fr[0].stop:] = 0
    words[:, : fr[1].start] = 0
    words[:, fr[1].stop:] = 0
    if fr[2].start > 0 or fr[2].stop < n2:
        inside = np.zeros((1, 1, n2), bool)
        inside[..., fr[2]] = True
        words &= _pack(inside)


def _prepared(mask: np.ndarray, radius_mm: float, spacing: Sequence[float]):
    """The C-ordered bool view, whether it is transposed, the ball's segments for it, and the mask's box."""
    m, sp, t = _c_order(mask.astype(bool, copy=False), spacing)
    return m, t, ball_segments(radius_mm, sp), box_spans(m)


def packed_dilate(mask: np.ndarray, radius_mm: float, spacing: Sequence[float]) -> np.ndarray:
    """Voxels within ``radius_mm`` of the mask (bool, the mask's shape and memory order)."""
    m, t, segments, box = _prepared(mask, radius_mm, spacing)
    if box is None:
        return mask.astype(bool)
    frame, arr, fr = _frame(m, box, _reach(segments))
    return _result(_dilate_words(_pack(frame), segments), frame.shape, arr, fr, m, t)


def packed_erode(mask: np.ndarray, radius_mm: float, spacing: Sequence[float]) -> np.ndarray:
    """Voxels whose whole ball lies in the mask; outside the array is background."""
    m, t, segments, box = _prepared(mask, radius_mm, spacing)
    if box is None:
        return mask.astype(bool)
    frame, arr, fr = _frame(m, box, _reach(segments))
    eroded = ~_dilate_words(~_pack(frame), segments)  # the frame outside the array is background
    out = _result(eroded, frame.shape, arr, fr, m, False) & m
    return out.T if t else out


def packed_closing(mask: np.ndarray, radius_mm: float, spacing: Sequence[float]) -> np.ndarray:
    """``erode(dilate(mask)) | mask``, the erosion with outside the array as background."""
    m, t, segments, box = _prepared(mask, radius_mm, spacing)
    if box is None:
        return mask.astype(bool)
    reach = _reach(segments)
    frame, arr, fr = _frame(m, box, [2 * r for r in reach])
    dilated = _dilate_words(_pack(frame), segments)
    _clear_outside(dilated, fr, frame.shape[2])  # the erosion must see background past the array
    closed = ~_dilate_words(~dilated, segments)
    out = _result(closed, frame.shape, arr, fr, m, False) | m
    return out.T if t else out


def label_components(mask: np.ndarray, connectivity: int = 26) -> np.ndarray:
    """``cc3d.connected_components`` of a binary mask, handed to cc3d as uint8 whatever its dtype.

    connected-components-3d 4.1.1 raises "maximum length exception" on some thin boolean arrays
    at connectivity 26 (e.g. ``[[[1], [0], [1]]]``; 4.0.0 labels it [1, 0, 2]) while the same
    array as uint8 is labelled correctly (docs/upstream/cc3d-bool-26.md). Every labelling in
    skullrecon goes through here, so the installed cc3d version does not matter.
    """
    import cc3d

    return cc3d.connected_components(np.asarray(mask, dtype=bool).view(np.uint8), connectivity=connectivity)


def largest_component(mask: np.ndarray, connectivity: int = 26) -> np.ndarray:
    """The largest connected component of a binary mask, as bool (an empty mask stays empty)."""
    import cc3d

    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return mask.copy()
    return cc3d.largest_k(mask.view(np.uint8), k=1, connectivity=connectivity) > 0
