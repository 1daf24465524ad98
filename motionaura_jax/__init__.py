"""motionaura_jax: a trainable JAX/Flax MotionAura."""

__version__ = "0.1.0"
