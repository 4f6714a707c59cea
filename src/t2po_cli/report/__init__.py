"""Run analysis for ``t2po report``: load runs (load), collapse detectors (detectors), tables (tables),
figures (plots), HTML/markdown/JSON output (render), and the pipeline that ties them (build).

Imports pandas/numpy/matplotlib only, never torch; nothing here is imported by ``t2po --help``.
"""
