"""Batches of a prepared set read by threads straight from its shards, with no worker processes.

A prepared set (`alexnet.data.prepare`) stores every image decoded, at the paper's 256x256 (section 2), so an epoch
has nothing left to compute but the crop and flip of section 4.1. A DataLoader with worker processes then spends
its time on moving pixels: each worker copies its batch into shared memory, and the training process pays a page
fault for every 4 KiB of it when it first reads the batch, a cost per batch that caps the loader however many
workers there are (``python -m benchmarks loader`` measures it; figures in docs/BENCHMARKS.md).

`PreparedLoader` instead reads each image's row of its shard with one ``os.preadv`` into the batch's buffer (page
cache to buffer, one copy; pinned memory when the batch goes to a GPU), from a few threads (the read releases the
GIL). The crops and flips are the per-sample path's own: each sample's offsets are drawn from its seed
(`device_decode.sample_seed` of the batch's `SeededBatchSampler` seed) exactly as `RandomPatch` and
``v2.RandomHorizontalFlip`` draw them, so the batches equal `make_loader`'s DataLoader batches bit for bit. They are
cut either in the reader thread (a plain uint8 batch), or, with ``crop_device``, on the training device in one
gather (`CropBatch`, made real by `device_decode.materialize`), which moves the whole 256x256 rows to the GPU.

Used by `datasets.make_loader` for a prepared set whose transform is a crop of the stored square (the training
geometry, the eval geometry, or none); any other transform (ten-crop, a different size) keeps the DataLoader path.
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .base import DataError, PreparedDataset, Subset
from .batch import Batch, CropBatch
from .device_decode import sample_seed
from .geometry import CenterPatch, ResizeCenterCrop
from .transforms import mirror_draw, patch_and_mirror, patch_offsets

__all__ = ["CropBatch", "CropPlan", "PreparedLoader", "crop_plan", "plan_for"]

_THREAD_PREFIX = "alexnet-read"


@dataclass(frozen=True)
class CropPlan:
    """What a geometry transform does to a stored ``size`` x ``size`` image: cut an ``out`` x ``out`` patch, at a
    random offset in ``0..span`` per axis (``span`` 0: the fixed offset ``fixed``), mirrored with probability
    ``flip``."""

    size: int
    out: int
    span: int
    fixed: int
    flip: float

    def draw(self, seed: int | None, position: int) -> tuple[int, int, bool]:
        """(top, left, mirrored) of the sample at ``position`` of a batch with seed ``seed``: the numbers
        `RandomPatch` then ``v2.RandomHorizontalFlip`` draw from torch's CPU generator seeded with `sample_seed`
        (the per-sample path, `datasets._Indexed`), from a generator of its own (thread-safe)."""
        if self.span == 0 and self.flip == 0.0:
            return self.fixed, self.fixed, False
        g = torch.Generator()
        if seed is not None:
            g.manual_seed(sample_seed(seed, position))
        else:
            g.seed()
        # Only RandomPatch plans get here (the sole source of a flip): it draws its offsets even when the patch is
        # the whole square (span 0), and the flip's draw comes after them.
        top, left = patch_offsets(self.span, g)
        return top, left, mirror_draw(self.flip, g)


def crop_plan(transform: nn.Module | None, size: int) -> CropPlan | None:
    """The `CropPlan` of ``transform`` on ``size`` x ``size`` images, or None when it does anything else (then the
    per-sample path runs it). Recognised: None (the whole square), ``Preprocessing.geometry(True)`` (`RandomPatch`
    of a ``size`` square, optionally a ``v2.RandomHorizontalFlip``), ``Preprocessing.geometry(False)``
    (`CenterPatch` of a ``size`` square: no resampling, a centre crop) and `ResizeCenterCrop(size)`."""
    if transform is None:
        return CropPlan(size, size, 0, 0, 0.0)
    if type(transform) is ResizeCenterCrop:  # exact types: a subclass may do anything else
        return CropPlan(size, size, 0, 0, 0.0) if transform.size == size else None
    train = patch_and_mirror(transform)
    if train is not None:
        patch, flip = train
        return CropPlan(size, patch.input_size, size - patch.input_size, 0, flip) if patch.resize_size == size else None
    if type(transform) is CenterPatch and transform.resize_size == size:
        out = transform.input_size
        return CropPlan(size, out, 0, int(round((size - out) / 2.0)), 0.0)  # torchvision's centre-crop offset
    return None


class _Shards:
    """The split's shards as files: each one's path and data offset, read with ``os.preadv`` (thread-safe). They
    stay open while they fit under the process's limit on open files (raised to its hard limit when needed);
    otherwise each read opens and closes its shard (an ImageNet-sized set has thousands of shards)."""

    def __init__(self, ds: Any) -> None:
        self.size = int(ds.size)
        self.row_bytes = 3 * self.size * self.size
        self.paths = [ds.root / rel for rel in ds.shards]
        self.offsets: list[int] = []
        self.starts = np.asarray(ds._starts, dtype=np.int64)
        for path in self.paths:
            try:
                arr = np.load(path, mmap_mode="r")  # parses the .npy header, checks the file's length
                self.offsets.append(int(arr.offset))
                shape, dtype = arr.shape, arr.dtype
                del arr
            except (OSError, ValueError) as e:
                raise DataError(f"{path}: cannot read prepared shard ({e})") from None
            if dtype != np.uint8 or shape[1:] != (3, self.size, self.size):
                raise DataError(f"{path}: prepared shard holds {dtype} {shape}, not uint8 (n, 3, S, S)")
        self.fds: list[int] = []
        self._close = weakref.finalize(self, _close_fds, self.fds)  # closed however the object goes
        if _room_for(len(self.paths)):
            try:
                for path in self.paths:
                    self.fds.append(os.open(path, os.O_RDONLY))
            except OSError:  # out of descriptors after all: read by opening each time
                self.close()

    def read_into(self, buf: np.ndarray, rows: Sequence[int], names: Sequence[str]) -> None:
        """``buf[k] = row rows[k]`` for every k (``buf``: uint8 (n, 3, S, S), C-contiguous)."""
        shard = np.searchsorted(self.starts, np.asarray(rows, dtype=np.int64), side="right") - 1
        fds = self.fds
        for k, (i, s) in enumerate(zip(rows, shard.tolist())):
            pos = self.offsets[s] + (int(i) - int(self.starts[s])) * self.row_bytes
            view = memoryview(buf[k]).cast("B")
            if len(fds) == len(self.paths):
                self._read(fds[s], view, pos, names, i)
            else:
                fd = os.open(self.paths[s], os.O_RDONLY)
                try:
                    self._read(fd, view, pos, names, i)
                finally:
                    os.close(fd)

    @staticmethod
    def _read(fd: int, view: memoryview, pos: int, names: Sequence[str], i: int) -> None:
        """All of ``view`` from ``pos``: a read may return less (network file systems), only 0 means the end."""
        done = 0
        while done < len(view):
            got = os.preadv(fd, [view[done:]], pos + done)
            if got == 0:
                raise DataError(f"{names[i] if i < len(names) else i}: prepared shard is truncated")
            done += got

    def close(self) -> None:
        self._close()


def _close_fds(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    fds.clear()


def _room_for(n: int, spare: int = 256) -> bool:
    """Whether ``n`` more files may stay open, raising the soft limit toward the hard one if that is what it takes
    (as most training tools do; the default soft limit is often 1024)."""
    try:
        import resource
    except ImportError:  # not a Unix
        return n <= 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 64
    need = in_use + n + spare
    if soft == resource.RLIM_INFINITY or need <= soft:
        return True
    if hard != resource.RLIM_INFINITY and need > hard:
        return False
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    except (ValueError, OSError):
        return False
    return True


class PreparedLoader:
    """An iterable of ``(images, labels, bad)`` batches over a `PreparedDataset` (or a `Subset` of one), in the
    order and with the per-batch seeds of ``batch_sampler`` (a `SeededBatchSampler`), as `make_loader`'s
    DataLoader yields them: ``images`` uint8 (n, 3, out, out), or a `CropBatch` when ``crop_device`` is set
    (cut on that device by `device_decode.materialize`); ``bad`` always empty (a prepared set holds only images
    that decoded). ``threads`` readers work ahead by up to ``threads + 2`` batches (every thread busy, the
    pinned memory bounded); 0 reads in the caller's thread. Iterating again starts a new pass."""

    def __init__(
        self,
        ds: Any,
        batch_sampler: Any,
        plan: CropPlan,
        *,
        threads: int = 0,
        crop_device: torch.device | str | None = None,
        pin_memory: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        base, rows = _unwrap(ds)
        self.dataset = ds
        self.rows = rows  # None: the loader's indices are the set's rows
        self.targets = torch.as_tensor(list(base.targets), dtype=torch.int64)
        self.names = list(base.names)
        self.batch_sampler = batch_sampler
        self.plan = plan
        self.threads = max(0, int(threads))
        self.crop_device = torch.device(crop_device) if crop_device is not None else None
        self.pin_memory = bool(pin_memory)
        self.generator = generator
        self._passes = 0
        self._local = threading.local()
        self._closed = False
        self._shards = _Shards(base)
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix=_THREAD_PREFIX) if self.threads else None

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator[Batch]:
        if self._closed:
            raise RuntimeError("this PreparedLoader is closed")
        if self.generator is not None and (self._passes == 0 or self.threads == 0):
            # what a DataLoader sharing ``generator`` with its sampler draws first (its workers' base seed: once
            # with persistent workers, every pass without), so that a shuffled order equals make_loader's
            torch.empty((), dtype=torch.int64).random_(generator=self.generator)
        self._passes += 1
        if self._pool is None:
            for indices in self.batch_sampler:
                yield self._batch(indices, self._buffer(len(indices)))
            return
        pending: deque[Future] = deque()
        try:
            for indices in self.batch_sampler:
                pending.append(self._pool.submit(self._batch, indices, self._buffer(len(indices))))
                if len(pending) >= self.threads + 2:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()

    def _buffer(self, n: int) -> torch.Tensor:
        """A batch's output buffer, made in the iterating thread: the large blocks of glibc's main heap are reused
        from batch to batch (`alexnet.runtime.tune_cpu_allocator`), while a reader thread's own heap would hand
        out fresh, page-faulting memory maps for them. Pinned when bound for a GPU (torch caches those)."""
        side = self.plan.size if self.crop_device is not None else self.plan.out
        pin = self.pin_memory and torch.cuda.is_available()
        return torch.empty((n, 3, side, side), dtype=torch.uint8, pin_memory=pin)

    def _scratch(self, n: int) -> np.ndarray:
        """This thread's buffer for whole rows, made once (see `_buffer`)."""
        buf = getattr(self._local, "buf", None)
        if buf is None or len(buf) < n:
            s = self.plan.size
            buf = self._local.buf = np.empty((n, 3, s, s), dtype=np.uint8)
        return buf[:n]

    def _batch(self, indices: Sequence[int], out: torch.Tensor) -> Batch:
        seed = getattr(indices, "seed", None)
        idx = [int(i) for i in indices]
        rows = idx if self.rows is None else [self.rows[i] for i in idx]
        labels = self.targets[torch.as_tensor(rows, dtype=torch.int64)] if rows else self.targets[:0]
        plan, n, s, p = self.plan, len(rows), self.plan.size, self.plan.out
        draws = [plan.draw(seed, k) for k in range(n)]
        if self.crop_device is not None:
            self._shards.read_into(out.numpy(), rows, self.names)
            offsets = torch.tensor([(t, l) for t, l, _ in draws], dtype=torch.int64).reshape(n, 2)
            flips = torch.tensor([f for _, _, f in draws], dtype=torch.bool)
            return Batch(CropBatch(out, offsets, flips, p), labels, [])
        # Cutting and mirroring: torch's flip copies at memcpy speed and numpy's ``[..., ::-1]`` does not, but torch
        # runs each copy on its intra-op thread pool, and a reader thread calling it starts a pool of its own,
        # which oversubscribes the cores (several times slower on 2 cores, in a trial); numpy stays in the thread
        # and releases the GIL.
        in_reader = threading.current_thread().name.startswith(_THREAD_PREFIX)
        if p == s:  # the whole square: read in place
            self._shards.read_into(out.numpy(), rows, self.names)
            o = out.numpy()
            for k, (_, _, f) in enumerate(draws):
                if f:
                    if in_reader:
                        o[k] = o[k][..., ::-1].copy()
                    else:
                        out[k] = out[k].flip(-1)
            return Batch(out, labels, [])
        full = self._scratch(n)
        self._shards.read_into(full, rows, self.names)
        if in_reader:
            o = out.numpy()
            for k, (t, l, f) in enumerate(draws):
                patch = full[k, :, t : t + p, l : l + p]
                o[k] = patch[..., ::-1] if f else patch
        else:
            tf = torch.from_numpy(full)
            for k, (t, l, f) in enumerate(draws):
                patch = tf[k, :, t : t + p, l : l + p]
                out[k] = patch.flip(-1) if f else patch
        return Batch(out, labels, [])

    def close(self) -> None:
        """Stop the reader threads and close the shard files (also done when the loader is collected, which may
        happen in one of its own reader threads: that one cannot wait for itself)."""
        pool, self._pool = self._pool, None
        self._closed = True
        try:
            if pool is not None:
                own = threading.current_thread().name.startswith(_THREAD_PREFIX)
                pool.shutdown(wait=not own, cancel_futures=True)
        finally:
            self._shards.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at interpreter shutdown
            self.close()


def _unwrap(ds: Any) -> tuple[Any, list[int] | None]:
    """(the `PreparedDataset` under ``ds``, the rows of its samples: None when ``ds`` is the set itself), or
    (None, None) when ``ds`` is no prepared set or view of one."""
    rows: list[int] | None = None
    while type(ds) is Subset:
        idx = ds.indices
        rows = list(idx) if rows is None else [idx[r] for r in rows]
        ds = ds.base
    if type(ds) is not PreparedDataset:  # exact: a subclass may load its samples otherwise
        return None, None
    return ds, rows


def plan_for(ds: Any) -> CropPlan | None:
    """The `CropPlan` of a prepared set (or a `Subset` of one) and its transform, or None for any other data set
    (and for a transform `crop_plan` does not know)."""
    base, _ = _unwrap(ds)
    if base is None or not hasattr(os, "preadv"):  # preadv: Linux, BSD, macOS; elsewhere the DataLoader path
        return None
    return crop_plan(getattr(base, "transform", None), int(base.size))
