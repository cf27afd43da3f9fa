"""Reading a movie lazily: TIFF stacks (memory-mapped when the file allows, else page by page)
and the ``.npz`` frames of ``bayes-smlm simulate``.

A TIFF's header can promise more than the file holds (a copy cut short, a disk that filled while
it was recorded): the frames it declares are counted against the bytes actually present before
anything is read, and a short file is refused in one line naming the first missing frame — or,
asked for with ``frames=(start, stop)``, its readable part is processed. Every frame passes the
one frame gate (:func:`bayes_smlm.forward.frames.validate_frames`) before any work.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from bayes_smlm.errors import ConfigError
from bayes_smlm.forward.config import Task
from bayes_smlm.forward.frames import validate_frames

TIFF_SUFFIXES = (".tif", ".tiff")
UNCOMPRESSED = 1  # TIFF compression tag value


class Movie:
    """Frames of one acquisition, read a chunk at a time.

    Parameters
    ----------
    path : str or Path
        A TIFF stack (F, H, W) or a frames ``.npz`` of ``bayes-smlm simulate``.
    argument : str
        What to name in an error.
    frames : (start, stop) or None
        Process only frames ``start … stop − 1`` of the file (frame numbers stay the file's).

    Attributes
    ----------
    path : Path
    shape : (F, H, W)
        Of the frames processed.
    first : int
        The file's index of the first frame processed.
    task_json : str or None
        The task a simulated ``.npz`` carries (its camera and optics); None for a TIFF.
    saturation : float or None
        The largest value the file's pixel type can hold (integer TIFFs): a pixel there may have
        been clipped.
    """

    def __init__(
        self, path: str | Path, argument: str = "movie", frames: tuple[int, int] | None = None
    ):
        self.path = Path(path)
        self.argument = argument
        self.task_json: str | None = None
        self.saturation: float | None = None
        self._tiff: Any = None  # tifffile.TiffFile once opened (imported only for TIFFs)
        self._array: np.ndarray | None = None
        if not self.path.is_file():
            raise ConfigError(argument, f"file not found: {self.path}")
        suffix = self.path.suffix.lower()
        if suffix in TIFF_SUFFIXES:
            declared, readable, frame_shape = self._open_tiff()
        elif suffix == ".npz":
            from bayes_smlm.io.frames import read_frames

            task, adu, _ = read_frames(self.path)
            self._array, self.task_json = adu, task.to_json()
            declared = readable = adu.shape[0]
            frame_shape = adu.shape[1:]
        else:
            raise ConfigError(
                argument,
                f"must be a TIFF stack (.tif, .tiff) or a frames .npz of "
                f"`bayes-smlm simulate` (got {self.path.name})",
            )
        start, stop = frames if frames is not None else (0, declared)
        if not 0 <= start < stop <= declared:
            raise ConfigError(
                "frames",
                f"must be START:STOP with 0 <= START < STOP <= {declared}, "
                f"the frames of {self.path.name} (got {start}:{stop})",
            )
        if stop > readable:
            raise ConfigError(
                argument,
                f"{self.path.name} declares {declared} frames but holds "
                f"only frames 0-{readable - 1} (frame {readable} is cut "
                f"short or missing); process them with --frames "
                f"0:{readable}"
                if readable
                else f"{self.path.name} declares {declared} frames but holds none whole",
            )
        self.first = start
        self.shape = (stop - start,) + tuple(int(s) for s in frame_shape)

    def _open_tiff(self) -> tuple[int, int, tuple[int, int]]:
        """Open the TIFF; return (frames declared, leading frames whose bytes are all in the
        file, frame shape)."""
        import tifffile

        logging.getLogger("tifffile").setLevel(logging.CRITICAL)  # we say what is wrong
        try:
            self._tiff = tifffile.TiffFile(self.path)
            page = self._tiff.pages.first
            dtype, frame_shape = np.dtype(page.dtype), tuple(page.shape)
            n_pages = len(self._tiff.pages)
        except Exception as err:  # not a TIFF, or a damaged one: say so in one line
            raise ConfigError(
                self.argument,
                f"{self.path.name} is not a readable TIFF ({type(err).__name__}: {err})",
            ) from None
        if dtype.kind not in "iuf":
            raise ConfigError(
                self.argument, f"{self.path.name}: pixels must be real numbers (got {dtype})"
            )
        separate_planes = len(frame_shape) == 3 and page.planarconfig == 2 and n_pages == 1
        series_dims = [n for n in _series_shape(self._tiff) if n != 1]
        if (len(frame_shape) != 2 and not separate_planes) or len(series_dims) > 3:
            shape = tuple(series_dims) if len(series_dims) > 3 else frame_shape
            raise ConfigError(
                self.argument,
                f"{self.path.name}: expected frames (F, H, W) of one "
                f"channel (got {'pages' if shape == frame_shape else 'a stack'} "
                f"of shape {shape})",
            )
        if separate_planes:  # one page of planes stored one after the other: each is a frame
            frame_shape = frame_shape[1:]
        if dtype.kind in "iu":
            self.saturation = float(np.iinfo(dtype).max)
        declared = _declared_frames(self._tiff) or (page.shape[0] if separate_planes else n_pages)
        size = self.path.stat().st_size
        frame_bytes = math.prod(frame_shape) * dtype.itemsize
        if (
            page.compression == UNCOMPRESSED
            and page.is_contiguous
            and (declared > n_pages or separate_planes)
        ):
            # one block of frames after the first page's header (tifffile's and ImageJ's layout),
            # its later headers lost with the end of the file: count the frames the bytes hold
            offset = int(page.dataoffsets[0])
            readable = min(declared, max(size - offset, 0) // frame_bytes)
            if readable:
                self._array = np.memmap(
                    self.path,
                    dtype=dtype.newbyteorder(self._tiff.byteorder),
                    mode="r",
                    offset=offset,
                    shape=(readable,) + frame_shape,
                )
            return declared, readable, frame_shape
        readable = 0
        for page in self._tiff.pages[: min(declared, n_pages)]:
            ends = np.add(page.dataoffsets, page.databytecounts)
            if page.shape != frame_shape or not len(ends) or ends.max() > size:
                break
            readable += 1
        if readable == declared:
            try:  # uncompressed and contiguous: no copy until a chunk is asked for
                array = tifffile.memmap(self.path, mode="r")
                if array.shape[-2:] == frame_shape and array.size == declared * math.prod(
                    frame_shape
                ):
                    self._array = array.reshape((declared,) + frame_shape)
            except Exception:  # compressed, tiled or scattered pages: read page by page
                self._array = None
        return declared, readable, frame_shape

    def __len__(self) -> int:
        return self.shape[0]

    def read(self, start: int, stop: int) -> np.ndarray:
        """Frames ``start … stop − 1`` (the file's numbering) as a float32 (n, H, W) array, ADU."""
        if self._array is not None:
            return np.asarray(self._array[start:stop], np.float32)
        frames = []
        for index in range(start, stop):
            try:
                frames.append(self._tiff.pages[index].asarray())
            except Exception as err:  # a page whose header promises more than its bytes
                raise ConfigError(
                    self.argument,
                    f"{self.path.name}: frame {index} cannot be "
                    f"decoded ({type(err).__name__}); process "
                    f"frames before it with --frames "
                    f"{self.first}:{index}",
                ) from None
        return np.asarray(np.stack(frames), np.float32)

    def chunks(self, size: int) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(the file's index of the chunk's first frame, frames)`` for consecutive chunks
        of ``size`` frames."""
        stop = self.first + self.shape[0]
        for start in range(self.first, stop, size):
            yield start, self.read(start, min(start + size, stop))

    def check(self, task: Task, chunk_frames: int) -> None:
        """Pass every frame through the frame gate for ``task`` (its shape and camera), before
        any work: a one-line error naming the file and the first bad frame."""
        for start, adu in self.chunks(chunk_frames):
            try:
                validate_frames(
                    task, adu, argument=self.argument, first_frame=start, saturation=self.saturation
                )
            except ConfigError as err:
                hint = "" if "shape" in err.message else "; leave it out with --frames"
                raise ConfigError(self.argument, f"{self.path.name}: {err.message}{hint}") from None

    def close(self) -> None:
        if self._tiff is not None:
            self._tiff.close()


def _declared_frames(tiff) -> int | None:
    """Frames a TIFF's own metadata (ImageJ's or tifffile's) declares, if it does. (tifffile
    records a 3-D stack as ImageJ channels or slices, others as frames: each 2-D plane is taken
    as a frame; a true multi-channel stack is refused by its series' shape.)"""
    try:
        if tiff.is_imagej:
            return int(tiff.imagej_metadata.get("images", 1))
        if tiff.is_shaped:
            shape = [int(n) for n in tiff.shaped_metadata[0]["shape"]]
            return int(math.prod(shape[:-2])) if len(shape) > 2 else 1
    except (TypeError, KeyError, ValueError, IndexError, AttributeError):
        pass
    return None


def _series_shape(tiff) -> tuple[int, ...]:
    """The shape of the file's first series (empty where tifffile cannot make one of it)."""
    try:
        return tuple(int(n) for n in tiff.series[0].shape)
    except Exception:  # a damaged file: the page accounting says what is wrong with it
        return ()
