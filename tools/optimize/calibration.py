"""The calibration data of static quantization: rows of ``--calibration FILE.npy`` in batches."""

from __future__ import annotations

from onnxruntime.quantization import CalibrationDataReader

from tensorgate.server.inputs import Feed, chunks

#: Rows per calibration run; the min/max calibrator only collects ranges, so any size works.
CALIBRATION_BATCH = 32


class FeedCalibrationReader(CalibrationDataReader):
    """Hands ONNX Runtime's calibrator a feed, one batch at a time, once."""

    def __init__(self, feed: Feed, batch: int = CALIBRATION_BATCH) -> None:
        self._batches = chunks(feed, batch)

    def get_next(self) -> Feed | None:
        return next(self._batches, None)
