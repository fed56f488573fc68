"""Benchmarks, whole-scene classification maps and edge profiling reports.

* :func:`blmkd.bench.runner.run_bench` — every artifact of a model on one test split: accuracy,
  agreement with FP32, latency percentiles, throughput, peak memory, size, FLOPs, fraction of the
  measured matmul peak, power on a Jetson; verdicts against target profiles; the report.
* :func:`blmkd.inference.scene.predict_scene` — a whole scene classified in row tiles with bounded
  memory (students encode each pixel once per tile).
* :mod:`blmkd.bench.budgets` — the deployment budgets (CPU, CUDA, Jetson Orin Nano / AGX Orin, drone,
  small satellite), overridable from TOML; :mod:`blmkd.bench.tegrastats` — Jetson power and memory.
* :mod:`blmkd.bench.timing`, :mod:`blmkd.bench.memory`, :mod:`blmkd.bench.machine` — the
  measurements themselves.

Imports are lazy: ``import blmkd.bench`` does not pull in torch or ONNX Runtime.
"""
