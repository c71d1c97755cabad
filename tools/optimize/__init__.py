"""``tensorgate optimize``: cheaper variants of a served model, measured against the original.

Modules, each with one job:

- ``inputs``: a model's tensor specs, random inputs, inputs read from ``.npy``/``.npz`` files
- ``variants``: the builders of ``graph``, ``fp16``, ``int8`` and ``int8-static``
- ``calibration``: the calibration data reader of static quantization
- ``measure``: latency at batch 1 and throughput at batch 32, interleaved across models
- ``agreement``: differences, top-1 agreement and accuracy against the original
- ``accept``: the ``--accept`` criteria and the choice of the fastest passing variant
- ``promote``: the chosen variant as a new version, with ``provenance.json``
- ``report``: ``variants/report.json`` and the printed table
- ``pipeline``: the whole run, from a request to a result
- ``errors``: ``OptimizeError``, for bad arguments or inputs

Nothing heavy is imported here, so the server can import ``inputs`` cheaply.
"""
