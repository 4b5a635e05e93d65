"""Memory-mapped reading of a variable-length float field of an HDF5 compound table (ISMRMRD readout samples).

h5py reads a variable-length field one global-heap object at a time (about 50 µs per element); this module finds the
file offset of every element once, from the raw bytes of the table and the headers of the heap collections (HDF5
file format specification, "Global Heap"), so that an element is a slice of a memory map. Only numpy and h5py;
any layout it does not recognise gives None and the caller keeps h5py.
"""

from __future__ import annotations

import h5py
import numpy as np

__all__ = ["VlenMap"]


class VlenMap:
    """File offsets of the samples of every readout, for reading them through a memory map instead of h5py.

    ``data`` is a variable-length field: each record holds a 16-byte descriptor (element count, global-heap
    collection address, object index) and the floats sit in HDF5 global-heap collections. h5py reads such a
    field one heap object at a time (about 50 µs per readout); with the offsets known, a readout is a slice of a
    ``np.memmap``. Built from the raw bytes of the unfiltered chunks (or contiguous storage) and the collections'
    own headers; any layout it does not understand returns None, and the caller keeps using h5py. Every offset is
    checked against h5py for a few readouts before it is trusted.
    """

    def __init__(self, offsets: np.ndarray, counts: np.ndarray, mapped: np.ndarray):
        self.offsets, self.counts = offsets, counts
        self.mapped = mapped.view(np.ndarray)  # the memmap subclass costs ~3 µs per slice
        self.aligned = bool((offsets % 4 == 0).all())
        self.floats = self.mapped[: self.mapped.size // 4 * 4].view(np.float32) if self.aligned else None

    def record(self, i: int) -> np.ndarray:
        start = int(self.offsets[i])
        return self.mapped[start : start + 4 * int(self.counts[i])].view(np.float32)

    def gather(self, index: np.ndarray, count: int) -> np.ndarray | None:
        """Records ``index`` of ``count`` floats each as ``(len(index), count)`` float32 (a copy per record);
        None when a record holds another count."""
        if (self.counts[index] != count).any():
            return None
        out = np.empty((index.size, count), np.float32)
        if self.floats is None:
            for j, i in enumerate(index.tolist()):
                out[j] = self.record(i)
            return out
        floats = self.floats
        for j, start in enumerate((self.offsets[index] // 4).tolist()):  # contiguous slices beat a fancy index
            out[j] = floats[start : start + count]
        return out

    @classmethod
    def build(cls, path: str, f: h5py.File, ds: h5py.Dataset, field: str = "data") -> VlenMap | None:
        """The map of ``ds[field]`` (a float32 variable-length member of a compound), or None."""
        try:
            return cls._build(path, f, ds, field.encode())
        except Exception:  # any surprise in a layout read by hand: fall back to h5py, which is always right
            return None

    @classmethod
    def _build(cls, path: str, f: h5py.File, ds: h5py.Dataset, field_name: bytes) -> VlenMap | None:
        tid = ds.id.get_type()
        names = [tid.get_member_name(i) for i in range(tid.get_nmembers())]
        if field_name not in names or ds.shape[0] == 0 or ds.id.get_create_plist().get_nfilters() != 0:
            return None
        member = names.index(field_name)
        if tid.get_member_type(member).get_size() != 16 or f.id.get_create_plist().get_sizes() != (8, 8):
            return None
        rec_size, field = tid.get_size(), tid.get_member_offset(member)
        base = f.id.get_create_plist().get_userblock()
        mapped = np.memmap(path, dtype=np.uint8, mode="r")
        n = ds.shape[0]
        starts = np.empty(n, np.int64)  # file offset of each record
        if ds.chunks is None:
            offset = ds.id.get_offset()
            if offset is None:
                return None
            starts[:] = offset + np.arange(n) * rec_size
        else:
            per = ds.chunks[0]
            for c in range(ds.id.get_num_chunks()):
                info = ds.id.get_chunk_info(c)
                first = info.chunk_offset[0]
                if info.filter_mask or info.byte_offset is None:
                    return None
                k = min(per, n - first)
                starts[first : first + k] = info.byte_offset + np.arange(k) * rec_size
        desc = mapped[starts[:, None] + field + np.arange(16)[None, :]]
        counts = desc[:, :4].copy().view("<u4")[:, 0].astype(np.int64)
        addresses = desc[:, 4:12].copy().view("<u8")[:, 0].astype(np.int64)
        objects = desc[:, 12:16].copy().view("<u4")[:, 0].astype(np.int64)
        offsets = np.empty(n, np.int64)
        for address in np.unique(addresses):
            table = cls._collection(mapped, base + int(address))
            sel = addresses == address
            offsets[sel] = [table[o] for o in objects[sel].tolist()]
        heap = cls(offsets, counts, mapped)
        for i in sorted({0, n // 2, n - 1}):  # trust nothing read by hand that h5py does not confirm
            if not np.array_equal(heap.record(i), ds.fields(field_name.decode())[i]):
                return None
        return heap

    @staticmethod
    def _collection(mapped: np.ndarray, at: int) -> dict[int, int]:
        """Object index -> file offset of its data, from a global-heap collection header (``GCOL``)."""
        if bytes(mapped[at : at + 4]) != b"GCOL":
            raise ValueError("not a global heap collection")
        size = int(mapped[at + 8 : at + 16].copy().view("<u8")[0])
        table, pos, end = {}, at + 16, at + size
        while pos + 16 <= end:
            index = int(mapped[pos : pos + 2].copy().view("<u2")[0])
            length = int(mapped[pos + 8 : pos + 16].copy().view("<u8")[0])
            if index == 0:  # free space: the rest of the collection
                break
            table[index] = pos + 16
            pos += 16 + (length + 7) // 8 * 8
        return table
