"""Reading a movie lazily: TIFF stacks (memory-mapped when the file allows, else page by page)
and the ``.npz`` frames of ``bayes-smlm simulate``."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from bayes_smlm.errors import ConfigError

TIFF_SUFFIXES = (".tif", ".tiff")


class Movie:
    """Frames of one acquisition, read a chunk at a time.

    Attributes
    ----------
    path : Path
    shape : (F, H, W)
    task_json : str or None
        The task a simulated ``.npz`` carries (its camera and optics); None for a TIFF.
    """

    def __init__(self, path: str | Path, argument: str = "movie"):
        self.path = Path(path)
        self.argument = argument
        self.task_json: str | None = None
        self._tiff = None
        self._array: np.ndarray | None = None
        if not self.path.is_file():
            raise ConfigError(argument, f"file not found: {self.path}")
        suffix = self.path.suffix.lower()
        if suffix in TIFF_SUFFIXES:
            self._open_tiff()
        elif suffix == ".npz":
            from bayes_smlm.io.frames import read_frames
            task, adu, _ = read_frames(self.path)
            self._array, self.task_json = adu, task.to_json()
        else:
            raise ConfigError(argument, f"must be a TIFF stack (.tif, .tiff) or a frames .npz of "
                                        f"`bayes-smlm simulate` (got {self.path.name})")
        shape = self._array.shape if self._array is not None else self._series_shape
        if len(shape) == 2:
            shape = (1,) + tuple(shape)
        if len(shape) != 3:
            raise ConfigError(argument, f"{self.path.name}: expected frames (F, H, W) of one "
                                        f"channel (got an image of shape {tuple(shape)})")
        self.shape = tuple(int(s) for s in shape)

    def _open_tiff(self) -> None:
        import tifffile
        try:
            self._tiff = tifffile.TiffFile(self.path)
            series = self._tiff.series[0]
            dtype = np.dtype(series.dtype)
        except Exception as err:  # not a TIFF, or a damaged one: say so in one line
            raise ConfigError(self.argument, f"{self.path.name} is not a readable TIFF "
                                             f"({type(err).__name__}: {err})") from None
        if dtype.kind not in "iuf":
            raise ConfigError(self.argument, f"{self.path.name}: pixels must be real numbers "
                                             f"(got {dtype})")
        self._series_shape = tuple(series.shape)
        try:  # uncompressed and contiguous: no copy until a chunk is asked for
            self._array = tifffile.memmap(self.path, mode="r")
        except Exception:  # compressed, tiled or scattered pages: read a chunk of pages at a time
            self._array = None

    def __len__(self) -> int:
        return self.shape[0]

    def read(self, start: int, stop: int) -> np.ndarray:
        """Frames ``start … stop − 1`` as a float32 (n, H, W) array, ADU."""
        if self._array is not None:
            block = self._array[start:stop] if self._array.ndim == 3 else self._array[None]
        else:
            block = (self._tiff.asarray(key=range(start, stop)) if self.shape[0] > 1
                     else self._tiff.asarray())
        return np.asarray(block, np.float32).reshape((-1,) + self.shape[1:])

    def chunks(self, size: int) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(first frame index, frames)`` for consecutive chunks of ``size`` frames."""
        for start in range(0, self.shape[0], size):
            yield start, self.read(start, min(start + size, self.shape[0]))

    def close(self) -> None:
        if self._tiff is not None:
            self._tiff.close()
