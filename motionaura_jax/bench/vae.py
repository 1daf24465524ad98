"""`motionaura bench vae`: encode+decode frames/s and train-step time of our tokenizer vs diffusers'
`AutoencoderKLCogVideoX` (PyTorch CPU, random weights), measured in the same run, alternating, medians.

Peer: block_out_channels=(64, 128, 128, 256), layers_per_block=1, latent_channels=16, 4x8x8 compression.
Ours at matched width (the same 4 stage widths), depth (1 block per encoder stage, 2 per decoder stage, 2 mid
blocks, as the peer's 1 / 2 / 2 ResNets) and compression (4x8x8), in two forms:
  ours_mbconv  the paper-style block: expand 4, full 3x3x3 causal depthwise kernel (shift-and-add on CPU)
  ours_fast    the CPU-lean block used by the quickstart: expand 2, (2+1)D depthwise kernel
Encode+decode: batch 1, posterior mode / quantized ids, inference only. Train step: batch 1, forward +
backward + Adam on an L1 reconstruction loss (theirs: + 1e-6 KL; ours: the full step with masking, MFI, EMA
VQ, no GAN). "Limits" times our encoder, decoder and the depthwise kernels alone to show where time goes.

    motionaura bench vae
    motionaura bench vae --sizes 64 --repeats 3 --out bench_vae.json
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence

import numpy as np

FRAMES = 17
PEER_CHANNELS = (64, 128, 128, 256)


def _ours_config(size: int, variant: str):
    from motionaura_jax.configs import vae

    config = vae.get_config()
    m = config.model
    m.channels, m.blocks, m.dec_blocks, m.mid_blocks = PEER_CHANNELS, (1, 1, 1, 1), (2, 2, 2, 2), 2
    m.down_space, m.down_time = (True, True, False), (True, True, False)  # stem 2 x 2 x 2 = 8 in space
    m.stem_patch, m.norm_groups, m.z_channels = 2, 32, 16
    m.quantizer.num_codes, m.quantizer.code_dim = 16384, 8
    if variant == "ours_mbconv":
        m.expand, m.depthwise = 4, "3d"
    else:
        m.expand, m.depthwise = 2, "2+1d"
    config.data.frames, config.data.size = FRAMES, size
    config.train.batch_size = 1
    config.loss.gan_weight = 0.0
    return config


class Ours:
    def __init__(self, size: int, variant: str):
        import flax.linen as nn
        import jax
        import jax.numpy as jnp

        from motionaura_jax.train.vae import init_vae_state, make_vae_step

        self.jax, self.jnp = jax, jnp
        config = _ours_config(size, variant)
        self.config = config
        model, disc, tx, tx_disc, step = make_vae_step(config)
        self.model = model
        state = jax.jit(lambda r: init_vae_state(config, model, disc, tx, tx_disc, r))(jax.random.PRNGKey(0))
        self.state = nn.meta.unbox(state)
        self.x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (1, FRAMES, size, size, 3)), jnp.float32)
        self._step = jax.jit(step, donate_argnums=0)
        # A copy: the train step donates (and so deletes) the state's buffers.
        variables = jax.tree.map(jnp.copy, {"params": self.state.params, "vq": self.state.vq})
        self._recon = jax.jit(lambda v, x: model.apply(v, x)["recon"])
        self._enc = jax.jit(lambda v, x: model.apply(v, x, method="encode")[1].ids)
        self._dec = jax.jit(lambda v, ids: model.apply(v, ids, method="decode_ids"))
        self.variables = variables
        self.n = 0

    def encode_decode(self) -> None:
        self._recon(self.variables, self.x).block_until_ready()

    def train_step(self) -> None:
        self.state, metrics = self._step(
            self.state, {"video": self.x}, self.jax.random.PRNGKey(self.n), self.jnp.int32(self.n)
        )
        self.n += 1
        self.jax.block_until_ready(metrics)

    def encode(self):
        self.ids = self._enc(self.variables, self.x).block_until_ready()

    def decode(self):
        self._dec(self.variables, self.ids).block_until_ready()


class Peer:
    def __init__(self, size: int):
        import torch
        from diffusers import AutoencoderKLCogVideoX

        torch.manual_seed(0)
        self.torch = torch
        self.vae = AutoencoderKLCogVideoX(
            block_out_channels=PEER_CHANNELS,
            layers_per_block=1,
            latent_channels=16,
            temporal_compression_ratio=4,
            sample_height=size,
            sample_width=size,
        )
        self.x = torch.rand(1, 3, FRAMES, size, size) * 2 - 1
        self.opt = torch.optim.Adam(self.vae.parameters(), lr=1e-4)

    def encode_decode(self) -> None:
        with self.torch.no_grad():
            z = self.vae.encode(self.x).latent_dist.mode()
            self.vae.decode(z)

    def train_step(self) -> None:
        self.vae.train()
        posterior = self.vae.encode(self.x).latent_dist
        recon = self.vae.decode(posterior.sample()).sample
        loss = (recon - self.x).abs().mean() + 1e-6 * posterior.kl().mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.vae.eval()


def _time(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _alternate(fns: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Warm each once, then `repeats` rounds of one call each in turn; median seconds per name."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(_time(fn))
    return {name: statistics.median(t) for name, t in times.items()}


def _print_now(line: str) -> None:
    print(line, flush=True)


def run(
    *,
    sizes: Sequence[int] = (64, 128),
    repeats: int = 5,
    variants: Sequence[str] = ("ours_mbconv", "ours_fast"),
    log: Callable[[str], None] = _print_now,
) -> dict:
    """Medians of encode+decode and train-step seconds, ours (each variant) vs the peer, per clip size.

    `log` receives a line as each size starts and a summary line per variant as it ends (printed by default).
    """
    import torch

    results = {
        "frames": FRAMES,
        "batch": 1,
        "repeats": repeats,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "sizes": {},
    }
    for size in sizes:
        log(f"== {FRAMES}x{size}x{size}")
        peer = Peer(size)
        ours = {v: Ours(size, v) for v in variants}
        enc_dec = _alternate(
            {"peer": peer.encode_decode, **{v: o.encode_decode for v, o in ours.items()}}, repeats
        )
        train = _alternate(
            {"peer": peer.train_step, **{v: o.train_step for v, o in ours.items()}}, max(2, repeats // 2)
        )
        row = {
            "encode_decode_s": enc_dec,
            "train_step_s": train,
            "encode_decode_frames_per_s": {k: FRAMES / v for k, v in enc_dec.items()},
            "peer_params_M": sum(p.numel() for p in peer.vae.parameters()) / 1e6,
        }
        row["ratios"] = {
            v: {
                "encode_decode_speedup": enc_dec["peer"] / enc_dec[v],
                "train_step_speedup": train["peer"] / train[v],
            }
            for v in variants
        }
        # Where our time goes: encoder vs decoder, and the depthwise kernel form.
        limits = {}
        for v, o in ours.items():
            parts = _alternate({"encode": o.encode, "decode": o.decode}, repeats)
            limits[v] = {k: round(t, 4) for k, t in parts.items()}
        row["ours_limits_s"] = limits
        from motionaura_jax.train.vae import count_params

        row["ours_params_M"] = {v: count_params(o.config)["total"] / 1e6 for v, o in ours.items()}
        results["sizes"][str(size)] = row
        for v in variants:
            r = row["ratios"][v]
            log(
                f"{v}: encode+decode {enc_dec[v]:.3f}s vs peer {enc_dec['peer']:.3f}s "
                f"({r['encode_decode_speedup']:.2f}x); train step {train[v]:.3f}s vs peer "
                f"{train['peer']:.3f}s "
                f"({r['train_step_speedup']:.2f}x); encode/decode alone {limits[v]}"
            )
    return results
