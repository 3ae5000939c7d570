"""Image and file input/output: reading and writing images (``imageio``), atomic writes
(``fileio``), and LIIF's arbitrary-scale data and PSNR protocol (``arbitrary_scale``)."""
