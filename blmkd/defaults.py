"""Defaults shared by the CLI, the Python API and the benchmark scripts."""

#: The student `distill`, `train-student` and `demo` use unless told otherwise. `blm_t`, because
#: on Indian Pines' 10% split it was as accurate as `blm_s` trained alone on the same five seeds
#: (OA 98.03 ± 0.46 vs 97.77 ± 0.59, AA 96.20 vs 94.94) with 0.64× its FLOPs, and it maps a scene
#: 1.5× faster (docs/results.md, Students trained alone).
DEFAULT_STUDENT = "blm_t"
