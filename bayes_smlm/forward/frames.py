"""The one gate every frame passes before any method, network or likelihood sees it.

A frame must be real numbers of the task's shape, finite, and plausible for the task's camera:
most pixels can lie below the offset by a few read-noise SDs at most, and no pixel can hold more
photons than a thousand times the brightest emitter plus background the task allows. Frames that
fail are refused in one line naming the frame index — never turned into NaN moments or a
detection in a corner.
"""

from __future__ import annotations

import numpy as np

from bayes_smlm.errors import ConfigError
from bayes_smlm.forward.config import Task
from bayes_smlm.forward.count_prior import count_maximum

READ_NOISE_SDS = 6.0  # below offset − 6 read-noise SDs (or half a gain step) a pixel is implausible
MAX_LOW_FRACTION = 0.05  # ... and a frame may hold at most 5 % of such pixels
BRIGHTNESS_FACTOR = 1000.0  # a pixel above 1000 × the task's brightest scene is not this camera's


def validate_frames(
    task: Task, adu, argument: str = "adu", *, first_frame: int = 0, saturation: float | None = None
) -> np.ndarray:
    """``adu`` as a float32 (F, H, W) array of the task's frames, or a one-line ConfigError.

    Parameters
    ----------
    task : Task
        Shape and camera (offset o, gain g, read-noise variance w², scalars or maps) and scene
        (i0, emitters, background) the frames must fit.
    adu : array-like
        One frame (H, W) or a stack (F, H, W), ADU.
    argument : str
        What to name in an error (``adu``, ``file``, …).
    first_frame : int
        The index of ``adu[0]`` in its file or movie, for the frame an error names.
    saturation : float or None
        The file's largest pixel value (an integer TIFF's type maximum): a frame with more than
        5 % of its pixels there was clipped by the camera or the file, and is refused.
    """
    values = np.asarray(adu)
    if values.dtype.kind not in "iuf":  # strings, objects, complex, booleans
        raise ConfigError(argument, f"frames must be real numbers (got dtype {values.dtype})")
    values = values.astype(np.float32, copy=False)
    if values.ndim == 2:
        values = values[None]
    if values.ndim != 3 or values.shape[1:] != task.shape:
        raise ConfigError(
            argument,
            f"frames must have shape (F, {task.height}, {task.width}) "
            f"for task {task.name!r} (got {np.shape(adu)})",
        )
    if values.shape[0] == 0:
        raise ConfigError(argument, "there are no frames (F = 0)")
    finite = np.isfinite(values)
    if not finite.all():
        frame = int(np.argmax(~finite.all(axis=(1, 2))))
        raise ConfigError(
            argument,
            f"frame {first_frame + frame} has {int((~finite[frame]).sum())} "
            "non-finite pixel(s) (NaN or inf)",
        )
    camera = task.camera
    offset, gain = np.asarray(camera.offset, np.float64), np.asarray(camera.gain, np.float64)
    floor = offset - np.maximum(
        READ_NOISE_SDS * np.sqrt(np.asarray(camera.readout_var)), 0.5 * gain
    )
    low = (values < floor).mean(axis=(1, 2))
    if (low > MAX_LOW_FRACTION).any():
        frame = int(np.argmax(low > MAX_LOW_FRACTION))
        raise ConfigError(
            argument,
            f"frame {first_frame + frame}: {100 * low[frame]:.0f} % of "
            "pixels lie more "
            f"than {READ_NOISE_SDS:g} read-noise SDs below the camera "
            "offset; these are not this camera's frames (check the "
            "task's camera.offset and camera.gain)",
        )
    prior = task.prior
    brightest = float(prior.i0) * count_maximum(prior) + float(np.max(prior.background)) + 1.0
    ceiling = offset + gain * BRIGHTNESS_FACTOR * brightest
    high = (values > ceiling).any(axis=(1, 2))
    if high.any():
        frame = int(np.argmax(high))
        raise ConfigError(
            argument,
            f"frame {first_frame + frame} has pixels above "
            f"{BRIGHTNESS_FACTOR:g} × the "
            "brightest scene the task allows; these are not this "
            "camera's frames (check the task's i0 and camera.gain)",
        )
    if saturation is not None:
        clipped = (values >= saturation).mean(axis=(1, 2))
        if (clipped > MAX_LOW_FRACTION).any():
            frame = int(np.argmax(clipped > MAX_LOW_FRACTION))
            raise ConfigError(
                argument,
                f"frame {first_frame + frame}: "
                f"{100 * clipped[frame]:.0f} % of pixels are saturated "
                f"(at {saturation:g} ADU, the most the file can hold); "
                "the photons there are unknown",
            )
    return values
