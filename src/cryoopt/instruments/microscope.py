"""Driver for a light/electron microscope (imager) speaking the reference command set.

Images travel as IEEE 488.2 definite-length blocks (``IMAG:DATA?`` ->
``#<n><len><bytes>``); their shape, dtype and pixel size come from ``IMAG:META?``.
:meth:`Microscope.acquire` returns an :class:`Image` (unpacks as ``array, metadata``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from cryoopt.instruments.base import CryoInstrument, reading, setpoint
from cryoopt.instruments.errors import GarbledReplyError
from cryoopt.instruments.replies import parse_number

__all__ = ["Image", "Microscope"]


@dataclass
class Image:
    """An acquired image and its metadata (``shape``, ``dtype``, ``pixel_size_nm``, settings)."""

    array: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Any]:
        yield self.array
        yield self.metadata


class Microscope(CryoInstrument):
    """Microscope/imager for LM (fluorescence) and EM: channel, exposure, gain, focus, stage, acquire."""

    device_class = "microscope"
    default_profile = "microscope-ref"
    actions: ClassVar[dict[str, str]] = {
        "acquire": "ACQ:STAR",
        "abort": "ACQ:ABOR",
        "metadata": "IMAG:META?",
        "data": "IMAG:DATA?",
    }
    reply_words: ClassVar[dict[str, tuple[str, ...]]] = {"state": ("IDLE", "ACQUIRING")}

    modality = setpoint("MODE?", "MODE %s", "``LM`` (light) or ``EM`` (electron).", kind="choice")
    channel = setpoint("CHAN?", "CHAN %s", "Detection channel (LM filter set or EM detector).", kind="choice")
    exposure_ms = setpoint("EXPO?", "EXPO %g", "Exposure (LM) or frame dwell time (EM), ms.")
    gain = setpoint("GAIN?", "GAIN %g", "Detector gain (dimensionless).")
    focus_um = setpoint("FOC?", "FOC %g", "Focus position, um.")
    stage_x_um = setpoint("STAG:X?", "STAG:X %g", "Stage x, um.")
    stage_y_um = setpoint("STAG:Y?", "STAG:Y %g", "Stage y, um.")
    image_size_px = setpoint("IMAG:SIZE?", "IMAG:SIZE %d", "Square image edge, pixels.", kind="int")

    def move_stage(self, x_um: float, y_um: float) -> None:
        self.stage_x_um = x_um
        self.stage_y_um = y_um

    def metadata(self) -> dict[str, Any]:
        """``IMAG:META?`` -> ``rows,cols,dtype,pixel_size_nm,modality,channel`` (retried if invalid)."""
        cmd = self.command("metadata")
        with self._guarded(cmd):
            return self._retry(lambda: self._ask(cmd, self._parse_metadata), cmd)

    @staticmethod
    def _parse_metadata(text: str) -> dict[str, Any]:
        parts = [p.strip() for p in text.split(",")]
        try:
            rows, cols, dtype, px = int(parts[0]), int(parts[1]), np.dtype(parts[2]), parse_number(parts[3])
        except (ValueError, TypeError, IndexError) as exc:
            raise ValueError(f"expected rows,cols,dtype,pixel_size_nm[,modality,channel], got {text!r}") from exc
        if rows < 1 or cols < 1 or dtype.kind not in "uif" or len(parts) not in (4, 6):
            raise ValueError(f"expected rows,cols,dtype,pixel_size_nm[,modality,channel], got {text!r}")
        meta: dict[str, Any] = {"shape": (rows, cols), "dtype": dtype.str, "pixel_size_nm": px}
        if len(parts) == 6:
            meta["modality"], meta["channel"] = parts[4], parts[5]
        return meta

    def fetch(self) -> Image:
        """Read the last image (``IMAG:META?`` then ``IMAG:DATA?``) without acquiring."""
        meta = self.metadata()
        data = self.read_block(self.command("data"))
        dtype = np.dtype(meta["dtype"])
        rows, cols = meta["shape"]
        if len(data) != rows * cols * dtype.itemsize:
            raise GarbledReplyError(
                f"{self.profile.name}: image block has {len(data)} bytes, metadata says {rows}x{cols} {dtype}"
            )
        arr = np.frombuffer(data, dtype=dtype).reshape(rows, cols).astype(dtype.newbyteorder("="))
        return Image(arr, meta)

    def acquire(self) -> Image:
        """``ACQ:STAR`` once, wait on ``*OPC?``, then fetch the image and its metadata."""
        cmd = self._action("acquire")
        self.wait_complete()
        errors = self.check_errors()
        if errors:
            raise self._device_fault(errors, cmd)
        img = self.fetch()
        img.metadata.update(exposure_ms=self.exposure_ms, gain=self.gain, focus_um=self.focus_um,
                            stage_um=(self.stage_x_um, self.stage_y_um))
        return img

    def abort(self) -> None:
        self._action("abort")
