"""ESC (ICCV 2025) as a BasicSR plugin. Set-up: see README.md (scripts/install.sh)."""

from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
TRAIN = ["basicsr==1.4.2", "torchvision>=0.20", "scikit-image>=0.21", "lmdb>=1.4", "pyyaml>=6"]
version = {}
exec((here / "esc_arch" / "version.py").read_text(), version)

setup(
    name="esc_arch",
    version=version["__version__"],
    description="ESC: Emulating Self-attention with Convolution for Efficient Image Super-Resolution, for BasicSR",
    long_description=(here / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["esc_arch", "esc_arch.*"]),
    # inference (esc upscale, load_model, spandrel, ONNX): plain torch, no BasicSR
    install_requires=[
        "torch>=2.5",
        "numpy>=1.24",
        "opencv-python>=4.8",
        "tqdm>=4.60",
        "pillow>=9",
        "safetensors>=0.4",
    ],
    extras_require={
        # basicsr train / test, esc demo, datasets/ (basicsr 1.4.2 builds against the installed
        # torch: scripts/install.sh installs it with --no-build-isolation first)
        "train": TRAIN,
        "dev": [
            *TRAIN,
            "pytest>=8",
            "ruff>=0.6",
            "spandrel==0.4.2",
            "onnx>=1.17",
            "onnxscript>=0.5",
            "onnxruntime>=1.20",
            "matplotlib>=3.8",
            "av>=12",
        ],
        "bench": ["matplotlib>=3.8", "spandrel==0.4.2"],  # charts of benchmarks/, peer networks
        "spandrel": ["spandrel>=0.4.2"],
        "onnx": ["onnx>=1.17", "onnxscript>=0.5", "onnxruntime>=1.20"],
        "flash": ["flash-attn>=2.6"],
        "video": ["av>=12"],  # esc upscale on videos (PyAV)
    },
    entry_points={
        "console_scripts": [
            "basicsr = esc_arch.cli:basicsr_main",
            "esc = esc_arch.cli:esc_main",
        ]
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: Apache Software License",
        "Topic :: Scientific/Engineering :: Image Processing",
    ],
)
