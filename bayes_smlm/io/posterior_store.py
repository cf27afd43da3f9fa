"""A posterior written chunk by chunk into a zarr store, so that a long run can stop and resume.

The store holds the groups of a posterior's NetCDF file
(:func:`bayes_smlm.io.posteriors.to_datatree`: ``posterior``, ``sample_stats``,
``observed_data``, ``constant_data``, ``kde``, ``extra``, ``diagnostics``), each variable
chunked along ``frame`` by the run's chunk of frames, plus a ``chunks`` group: ``done`` (chunk,
int8: 1 finished, 0 not), ``digest`` (chunk, 32 bytes: SHA-256 of the chunk's data as read back
from the store) and ``seconds`` (chunk, the method's own time for it).

The first finished chunk fixes the layout: every group is laid out for all frames (metadata only)
in a hidden sibling folder that replaces the store's path only once complete, so a store that
exists is always fully laid out. Then each finished chunk is written into its frame range, read
back, its digest stored, and its ``done`` flag written last — a chunk that was being written when
the process died is not marked done and is computed again. ``done`` is read with the zarr API,
never through a fill value (an unwritten flag is 0, not NaN). On resuming, every chunk marked
done is verified against its digest; one whose data no longer match is computed again, with a
warning. A store remembers what run it holds (method, options, seed, the frames' digest, the
chunking); resuming it with anything else is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np
import xarray as xr

from bayes_smlm.errors import ConfigError
from bayes_smlm.io.atomic import check_free_space, check_suffix, hidden_sibling

STORE_SUFFIX = ".zarr"
PROGRESS_GROUP = "chunks"
ZARR_FORMAT: Literal[2] = 2  # widest reader support; zarr 3 also reads it


def run_identity(
    method: str, options: dict[str, Any], adu: np.ndarray, task_json: str, chunk_frames: int
) -> dict[str, Any]:
    """What a store must have been started with to be resumed: the method, its options, the
    chunking and a SHA-256 digest of the frames and task."""
    digest = hashlib.sha256(np.ascontiguousarray(adu).tobytes())
    digest.update(task_json.encode())
    return {
        "method": method,
        "options": json.loads(json.dumps(options, sort_keys=True, default=str)),
        "n_frames": int(adu.shape[0]),
        "chunk_frames": int(chunk_frames),
        "frames_sha256": digest.hexdigest(),
    }


def chunk_ranges(n_frames: int, chunk_frames: int) -> list[tuple[int, int]]:
    """``(first, stop)`` frame ranges of consecutive chunks."""
    return [(a, min(a + chunk_frames, n_frames)) for a in range(0, n_frames, chunk_frames)]


if TYPE_CHECKING:
    import zarr


def _open(path: str | Path, mode: Literal["r", "r+", "w"]) -> zarr.Group:
    """The zarr group at ``path`` in the store's format."""
    import zarr

    return zarr.open_group(str(path), mode=mode, zarr_format=ZARR_FORMAT)


def _array(group: zarr.Group, key: str) -> zarr.Array:
    """Member ``key`` of ``group``, an array (zarr types members as either)."""
    return cast("zarr.Array", group[key])


def _subgroup(group: zarr.Group, key: str) -> zarr.Group:
    """Member ``key`` of ``group``, a group."""
    return cast("zarr.Group", group[key])


class PosteriorStore:
    """A zarr posterior of ``identity["n_frames"]`` frames being written chunk by chunk.

    Open with :meth:`open`, which creates the store or checks that an existing one holds the
    same run; :attr:`done` says which chunks are finished, :meth:`write` adds one and
    :meth:`finish` writes the run's totals once all are.
    """

    def __init__(self, path: Path, identity: dict[str, Any]):
        self.path = path
        self.identity = identity
        self.ranges = chunk_ranges(identity["n_frames"], identity["chunk_frames"])

    @classmethod
    def open(
        cls, path: str | Path, identity: dict[str, Any], argument: str = "out"
    ) -> PosteriorStore:
        path = check_suffix(path, STORE_SUFFIX, argument)
        if path.exists() and not path.is_dir():
            raise ConfigError(argument, f"{path} is a file, not a zarr store")
        if path.is_dir() and any(path.iterdir()):
            stored = _stored_identity(path, argument)
            if stored != identity:
                changed = sorted(k for k in identity if stored.get(k) != identity[k])
                raise ConfigError(
                    argument,
                    f"{path} holds a run with other {', '.join(changed)}; "
                    "resume it with the same command, or give another "
                    "--out",
                )
        return cls(path, identity)

    @property
    def done(self) -> np.ndarray:
        """(chunks,) True for each chunk already written (its flag, not yet its digest:
        :meth:`verified_done` checks the data)."""
        return read_done(self.path, len(self.ranges))

    def verified_done(self) -> np.ndarray:
        """(chunks,) True for each chunk written and whose data still match its digest; a chunk
        marked done whose data do not is marked pending again, with a warning."""
        done = self.done
        if not done.any():
            return done
        progress = _open(self.path / PROGRESS_GROUP, "r+")
        stored = np.asarray(_array(progress, "digest")[:], np.uint8)
        for index in np.flatnonzero(done):
            if self._digest(int(index)) != bytes(stored[index]):
                warnings.warn(
                    f"{self.path}: chunk {index} (frames {self.ranges[index][0]}–"
                    f"{self.ranges[index][1] - 1}) does not match its digest; it is "
                    "computed again",
                    stacklevel=2,
                )
                _array(progress, "done")[int(index)] = 0
                done[index] = False
        return done

    def _digest(self, index: int) -> bytes:
        """SHA-256 of chunk ``index``'s data in the store: every per-frame variable of every
        group over the chunk's frames, in a fixed order."""
        first, stop = self.ranges[index]
        root = _open(self.path, "r")
        digest = hashlib.sha256()
        for group_name in sorted(k for k in root.group_keys() if k != PROGRESS_GROUP):
            group = _subgroup(root, group_name)
            for name in sorted(group.array_keys()):
                array = _array(group, name)
                dims = list(cast("list[str]", array.attrs.get("_ARRAY_DIMENSIONS", [])))
                if "frame" not in dims or name == "frame":
                    continue
                where = tuple(slice(first, stop) if d == "frame" else slice(None) for d in dims)
                digest.update(f"{group_name}/{name}".encode())
                digest.update(np.ascontiguousarray(array[where]).tobytes())
        return digest.digest()

    def write(self, index: int, tree: xr.DataTree) -> None:
        """Write chunk ``index`` (the posterior DataTree of its frames, whose settings must
        match the other chunks'), then mark it done."""
        first, stop = self.ranges[index]
        n_frames = tree["observed_data"].sizes["frame"]
        if n_frames != stop - first:
            raise ValueError(f"chunk {index} has {n_frames} frames, expected {stop - first}")
        if not (self.path / PROGRESS_GROUP / "digest" / ".zarray").exists():
            self._lay_out(tree)  # a new store, or one of an earlier version (float flags)
        elif tree.attrs["settings"] != self._root_attrs()["settings"]:
            raise ConfigError(
                "scheduler",
                f"chunk {index} (frames {first}–{stop - 1}) ran with "
                f"settings {tree.attrs['settings']}, the store's are "
                f"{self._root_attrs()['settings']} (a worker with "
                "another JAX device count?)",
            )
        for name, node in tree.children.items():
            ds = node.to_dataset(inherit=False)
            per_frame = [k for k, v in ds.variables.items() if "frame" in v.dims]
            if per_frame:
                part = ds[per_frame].assign_coords(frame=np.arange(first, stop))
                part = part.drop_vars([k for k, v in part.coords.items() if "frame" not in v.dims])
                _to_zarr(
                    part.drop_attrs(), self.path, group=name, region={"frame": slice(first, stop)}
                )
        progress = _open(self.path / PROGRESS_GROUP, "r+")
        _array(progress, "seconds")[index] = float(tree.attrs["seconds"])
        _array(progress, "digest")[index] = np.frombuffer(self._digest(index), np.uint8)
        _array(progress, "done")[index] = 1  # last: the chunk is done only once all of it is there

    def finish(self) -> Path:
        """Write the run's totals (seconds over chunks, the diagnostics' pass rate over all
        frames) and consolidate the metadata; every chunk must be done."""
        import zarr

        done = self.done
        if not done.all():
            raise ConfigError(
                "out", f"{self.path}: {int((~done).sum())} of {len(done)} chunks are not finished"
            )
        root = _open(self.path, "r+")
        seconds = np.asarray(_array(_subgroup(root, PROGRESS_GROUP), "seconds")[:], float)
        root.attrs["seconds"] = float(seconds.sum())
        if "diagnostics" in root:
            flagged = np.asarray(_array(_subgroup(root, "diagnostics"), "flagged")[:], bool)
            _subgroup(root, "diagnostics").attrs["pass_rate"] = float(1.0 - flagged.mean())
        zarr.consolidate_metadata(str(self.path), zarr_format=ZARR_FORMAT)
        return self.path

    def _root_attrs(self) -> dict[str, Any]:
        return dict(_open(self.path, "r").attrs)

    def _lay_out(self, tree: xr.DataTree) -> None:
        """Create every group for all frames from the first finished chunk's tree."""
        import dask.array as da

        n, size = self.identity["n_frames"], self.identity["chunk_frames"]
        frames = tree["observed_data"].sizes["frame"]
        whole_run = sum(node.dataset.nbytes for node in tree.subtree) * n / frames
        check_free_space(self.path.parent, int(whole_run))  # uncompressed: an upper bound
        staging = hidden_sibling(self.path, "layout")
        shutil.rmtree(staging, ignore_errors=True)  # a lay-out that died half-way
        root = xr.Dataset(attrs={**tree.attrs, "run": json.dumps(self.identity, sort_keys=True)})
        _to_zarr(root, staging, mode="w")
        for name, node in tree.children.items():
            ds = node.to_dataset(inherit=False)
            variables: dict[Any, Any] = {}
            for key, var in ds.data_vars.items():
                if "frame" in var.dims:
                    shape = tuple(n if d == "frame" else s for d, s in zip(var.dims, var.shape))
                    chunks = tuple(size if d == "frame" else s for d, s in zip(var.dims, var.shape))
                    variables[key] = (
                        var.dims,
                        da.zeros(shape, var.dtype, chunks=chunks),
                        var.attrs,
                    )
                else:
                    variables[key] = var
            coords = {k: v for k, v in ds.coords.items() if k != "frame"}
            if "frame" in ds.dims:
                coords["frame"] = np.arange(n)
            _to_zarr(
                xr.Dataset(variables, coords=coords, attrs=ds.attrs),
                staging,
                group=name,
                mode="a",
                compute=False,
            )
        n_chunks = len(self.ranges)
        progress = _open(staging / PROGRESS_GROUP, "w")
        progress.attrs["description"] = (
            "chunks of frames finished (1) or not (0), the SHA-256 "
            "of each finished chunk's data, and the method's "
            "seconds for each"
        )
        layout: list[tuple[str, str, tuple[int, ...], float]] = [
            ("done", "int8", (n_chunks,), 0),
            ("seconds", "float64", (n_chunks,), 0.0),
            ("digest", "uint8", (n_chunks, 32), 0),
        ]
        for key, dtype, array_shape, fill in layout:
            array = progress.create_array(
                key, shape=array_shape, chunks=(1,) + array_shape[1:], dtype=dtype, fill_value=fill
            )
            array[...] = fill  # written, not left to the fill value
            array.attrs["_ARRAY_DIMENSIONS"] = ["chunk"] + ["byte"] * (len(array_shape) - 1)
        if self.path.exists():
            shutil.rmtree(self.path)  # an empty folder, or a store of this run laid out anew
        os.replace(staging, self.path)


def _to_zarr(ds: xr.Dataset, path: Path, **kwargs: Any) -> None:
    with warnings.catch_warnings():  # zarr's notes on string dtypes it stores as such anyway
        warnings.simplefilter("ignore", UserWarning)
        ds.to_zarr(path, consolidated=False, zarr_format=ZARR_FORMAT, **kwargs)


def _stored_identity(path: Path, argument: str) -> dict[str, Any]:
    try:
        attrs = _open(path, "r").attrs
        return json.loads(str(attrs["run"]))
    except (KeyError, ValueError, OSError, FileNotFoundError) as err:
        raise ConfigError(
            argument,
            f"{path} exists and is not a bayes-smlm posterior store "
            f"({type(err).__name__}); give another --out",
        ) from None


def read_done(path: Path, chunks: int) -> np.ndarray:
    """(chunks,) done flags of the store at ``path`` as booleans: flag == 1, read with the zarr
    API (through xarray, the array's fill value would be decoded as NaN, and NaN as True)."""
    try:
        progress = _open(Path(path) / PROGRESS_GROUP, "r")
        flags = np.asarray(_array(progress, "done")[:])
    except (FileNotFoundError, KeyError, OSError, ValueError):
        return np.zeros(chunks, bool)
    if flags.shape != (chunks,) or flags.dtype.kind not in "iu":
        return np.zeros(chunks, bool)  # an older or damaged bookkeeping: nothing counts as done
    return flags == 1


def open_store_datatree(path: Path) -> xr.DataTree:
    """A finished store as the DataTree :func:`~bayes_smlm.io.posteriors.load_posterior`
    returns (the ``chunks`` bookkeeping left out); a one-line error if chunks are missing."""
    finished = (path / ".zmetadata").exists()  # consolidated by finish()
    tree = xr.open_datatree(path, engine="zarr", consolidated=finished)
    if PROGRESS_GROUP in tree.children:
        done = read_done(path, tree[PROGRESS_GROUP].sizes.get("chunk", 0))
        if not done.all():
            raise ConfigError(
                "file",
                f"{path} is an unfinished posterior store ({int(done.sum())} "
                f"of {done.size} chunks); rerun the command that wrote it "
                "to resume",
            )
        tree = tree.drop_nodes(PROGRESS_GROUP)
    return tree
