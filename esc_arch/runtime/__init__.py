"""Running a loaded network: whole-image, tiled and queried inference with the output checks
(``inference``), what the CPU computes natively (``hardware``), keeping freed memory
(``allocator``)."""
