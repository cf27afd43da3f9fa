"""Frames across Dask workers, results into zarr stores chunk by chunk (``--scheduler``)."""
