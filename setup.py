"""motionaura_jax: a trainable JAX/Flax MotionAura (3D-MBQ-VAE, discrete diffusion, spectral denoiser)."""

from setuptools import find_packages, setup

setup(
    name="motionaura_jax",
    version="0.1.0",
    description="JAX/Flax MotionAura: video tokenizer, discrete text-to-video diffusion, sketch inpainting",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["motionaura_jax", "motionaura_jax.*"]),
    install_requires=[
        "jax>=0.10.2",
        "flax>=0.12.8",
        "optax>=0.2.8",
        "orbax-checkpoint>=0.12.8",
        "gcsfs>=2026.9.0",  # gs:// workdirs (etils.epath -> fsspec)
        "chex>=0.1.92",
        "einops>=0.8",
        "ml-collections>=1.1",
        "numpy>=2.0",
        "scipy>=1.13",
        "tensorflow-datasets>=4.9.10",
        "grain>=0.2.18",
        "transformers>=5.0",
        "safetensors>=0.5",
        "imageio>=2.38",
        "imageio-ffmpeg>=0.8",
        "av>=14",
        "pillow>=11",
        "scikit-image>=0.26",
        "tensorboardX>=2.6",
        "tqdm>=4.66",
        "absl-py>=2.1",
        "matplotlib>=3.9",
    ],
    extras_require={
        "tpu": ["jax[tpu]>=0.10.2"],
        "tf": ["tensorflow-cpu==2.21.0"],
        # The PyTorch peers used by tests and `motionaura bench`; torch must be this exact CPU pin.
        "torch": ["torch==2.13.0", "diffusers>=0.42"],
        "test": ["pytest>=9", "pytest-timeout>=2.4", "ruff>=0.17"],
    },
    entry_points={"console_scripts": ["motionaura=motionaura_jax.cli:main"]},
)
