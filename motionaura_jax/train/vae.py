"""Stage 1: the 3D-MBQ-VAE tokenizer as a `Task` for the generic loop (`config.task = "vae"`).

One step: mask the clip (random squares + one full frame), encode -> quantize (EMA codebook, dead-code
restart) -> decode, and minimise
    w_l1*L1 + w_l2*L2 + w_grad*gradient_l1 + w_perc*LPIPS + w_vq*(commitment) + w_mfi*CE(masked-frame index)
    + [step >= gan_start] * gan_weight * adaptive_weight * hinge_G
against the *clean* clip (with loss.foreground_weight > 0 the L1 and L2 terms are weighted per pixel towards
bright, object pixels: `foreground_weights`); then, when the GAN is on, one hinge step of the 3D patch
discriminator. Every term is logged. The adaptive weight is VQGAN's ratio of gradient norms, taken with respect
to the decoder's output pixels rather than its last layer (one cheap extra backward through the discriminator,
no parameter slicing).
"""

from __future__ import annotations

import logging
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from etils import epath
from jax.sharding import Mesh

from motionaura_jax import paths
from motionaura_jax.models.discriminator import PatchDiscriminator3D, hinge_d_loss, hinge_g_loss
from motionaura_jax.models.vqvae import VQVAE
from motionaura_jax.train.state import TrainState, apply_gradients, make_optimizer
from motionaura_jax.train.task import Task

log = logging.getLogger("motionaura")


@flax.struct.dataclass
class VAEState(TrainState):
    """params: the tokenizer's (encoder, quantizer projections, decoder, MFI head), opt_state: theirs."""

    vq: Any  # EMA codebook ("vq" collection); {} for a learned codebook
    disc_params: Any  # {} when the GAN is off
    disc_opt_state: Any


# ----------------------------------------------------------------------------------------------------------
# Training-time masking (a function of the clip and an rng; the model sees the masked clip, the loss the
# clean one)


def mask_clip(
    x_bthwc: jax.Array, rng: jax.Array, config: ml_collections.ConfigDict
) -> tuple[jax.Array, jax.Array]:
    """Random black squares plus one fully masked frame per clip.

    config (model.mask): patch_prob (per frame), num_squares, square_min / square_max (side as a fraction of
    the frame height), full_frame_prob (per clip), fill (the value of masked pixels; -1 = black).
    Returns (masked clip, index of the fully masked frame or -1 for none). Frame 0 is never fully masked: it
    carries the causal first frame alone.
    """
    b, t, h, w, _ = x_bthwc.shape
    k_apply, k_side, k_y, k_x, k_full, k_frame = jax.random.split(rng, 6)
    s = config.num_squares
    side = jax.random.uniform(k_side, (b, t, s), minval=config.square_min, maxval=config.square_max) * h
    side = jnp.maximum(jnp.round(side), 1.0)
    y0 = jax.random.uniform(k_y, (b, t, s)) * (h - side)
    x0 = jax.random.uniform(k_x, (b, t, s)) * (w - side)
    ys = jnp.arange(h, dtype=jnp.float32)[None, None, None, :, None]
    xs = jnp.arange(w, dtype=jnp.float32)[None, None, None, None, :]
    inside = (
        (ys >= y0[..., None, None].round())
        & (ys < (y0 + side)[..., None, None].round())
        & (xs >= x0[..., None, None].round())
        & (xs < (x0 + side)[..., None, None].round())
    )
    patch_mask = jnp.any(inside, axis=2)  # (b, t, h, w)
    patch_mask &= (jax.random.uniform(k_apply, (b, t)) < config.patch_prob)[..., None, None]
    full = jax.random.uniform(k_full, (b,)) < config.full_frame_prob
    if t > 1:
        frame = jax.random.randint(k_frame, (b,), 1, t)
    else:
        frame = jnp.zeros((b,), jnp.int32)
        full = jnp.zeros((b,), bool)
    frame = jnp.where(full, frame, -1).astype(jnp.int32)
    frame_mask = jnp.arange(t)[None, :] == frame[:, None]  # (b, t)
    mask = patch_mask | frame_mask[..., None, None]
    masked = jnp.where(mask[..., None], jnp.asarray(config.fill, x_bthwc.dtype), x_bthwc)
    return masked, frame


def gradient_l1(recon_bthwc: jax.Array, target_bthwc: jax.Array) -> jax.Array:
    """L1 between the spatial finite differences of two clips (the gradient-difference loss of Mathieu et al.
    2016): L1/L2 on pixels average over a mostly flat frame and let edges blur, this term is all edges."""

    def diffs(v):
        return v[:, :, 1:] - v[:, :, :-1], v[:, :, :, 1:] - v[:, :, :, :-1]

    (ry, rx), (ty, tx) = diffs(recon_bthwc), diffs(target_bthwc)
    return jnp.mean(jnp.abs(ry - ty)) + jnp.mean(jnp.abs(rx - tx))


def foreground_weights(target_bthwc: jax.Array, foreground_weight: float) -> jax.Array:
    """Per-pixel loss weights (B,T,H,W,1), 1 + foreground_weight x brightness (the largest channel, [-1, 1]
    mapped to [0, 1]), normalised to mean 1 per clip: on clips that are mostly dark background the pixel losses
    are dominated by pixels that are already right, and an object's outline (a square's corners) is a handful
    of pixels."""
    brightness = (jnp.max(target_bthwc, axis=-1, keepdims=True) + 1.0) / 2.0
    weight = 1.0 + foreground_weight * jnp.clip(brightness, 0.0, 1.0)
    return weight / jnp.mean(weight, axis=(1, 2, 3, 4), keepdims=True)


def psnr_from_mse(mse: jax.Array, data_range: float = 2.0) -> jax.Array:
    return 10.0 * jnp.log10(data_range**2 / jnp.maximum(mse, 1e-10))


def _perceptual(config: ml_collections.ConfigDict):
    """(module, variables) of LPIPS from the configured local file, or None (and the log says so)."""
    path = config.loss.perceptual_weights
    if config.loss.perceptual <= 0:
        return None
    if not path:
        log.warning(
            "loss.perceptual=%g but loss.perceptual_weights is empty: the perceptual loss is OFF "
            "(no LPIPS weights ship offline; name a local file to turn it on)",
            config.loss.perceptual,
        )
        return None
    from motionaura_jax.models.lpips import LPIPS

    metric = LPIPS.from_file(path, net=config.loss.perceptual_net)
    log.info("perceptual loss: LPIPS-%s from %s, weight %g", metric.net, path, config.loss.perceptual)
    return metric.module, metric.variables


def make_vae_step(config: ml_collections.ConfigDict):
    """(model, disc, tx, tx_disc, train_step) for a config; the step is pure and unjitted."""
    model = VQVAE(config.model)
    use_gan = config.loss.gan_weight > 0
    disc = PatchDiscriminator3D(config.disc) if use_gan else None
    tx = make_optimizer(config.train)
    tx_disc = optax.adam(config.loss.disc_lr, b1=0.5, b2=0.9) if use_gan else None
    perceptual = _perceptual(config)
    lc = config.loss
    masking = bool(config.model.mask.enabled)
    use_mfi = bool(config.model.mfi) and masking

    def train_step(state: VAEState, batch: dict, rng: jax.Array, step: jax.Array) -> tuple[VAEState, dict]:
        x = batch["video"].astype(jnp.float32)
        rng_mask, rng_restart = jax.random.split(rng)
        rng_noise = jax.random.fold_in(rng, 1)  # beside the split, so runs without code noise are unchanged
        if masking:
            x_in, frame = mask_clip(x, rng_mask, config.model.mask)
        else:
            x_in, frame = x, jnp.full((x.shape[0],), -1, jnp.int32)
        gan_on = jnp.asarray(step >= lc.gan_start) if use_gan else jnp.asarray(False)

        def rec_loss(recon):
            l1 = jnp.mean(jnp.abs(recon - x))
            l2 = jnp.mean(jnp.square(recon - x))
            edges = gradient_l1(recon, x)
            if lc.foreground_weight > 0:
                weight = foreground_weights(x, lc.foreground_weight)
                total = lc.l1 * jnp.mean(weight * jnp.abs(recon - x)) + lc.l2 * jnp.mean(
                    weight * jnp.square(recon - x)
                )
            else:
                total = lc.l1 * l1 + lc.l2 * l2
            total = total + lc.gradient_l1 * edges
            perc = jnp.zeros(())
            if perceptual is not None:
                module, variables = perceptual
                b, t = x.shape[:2]
                flat = lambda v: v.reshape(b * t, *v.shape[2:])  # noqa: E731
                perc = jnp.mean(module.apply(variables, flat(recon), flat(x)))
                total = total + lc.perceptual * perc
            return total, (l1, l2, edges, perc)

        def loss_fn(params):
            out, updated = model.apply(
                {"params": params, "vq": state.vq},
                x_in,
                train=True,
                mutable=["vq"],
                rngs={"restart": rng_restart, "code_noise": rng_noise},
            )
            recon = out["recon"]
            rec, (l1, l2, edges, perc) = rec_loss(recon)
            total = rec + lc.vq * out["vq_loss"]
            metrics = {
                "l1": l1,
                "l2": l2,
                "gradient_l1": edges,
                "psnr": psnr_from_mse(l2),
                "perceptual": perc,
            }
            metrics.update(out["metrics"])
            metrics["vq_loss"] = out["vq_loss"]
            if use_mfi:
                logits = out["mfi_logits"]
                valid = (frame >= 0).astype(jnp.float32)
                ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(frame, 0))
                mfi = jnp.sum(ce * valid) / jnp.maximum(jnp.sum(valid), 1.0)
                correct = (jnp.argmax(logits, -1) == frame).astype(jnp.float32)
                metrics["mfi_ce"] = mfi
                metrics["mfi_acc"] = jnp.sum(correct * valid) / jnp.maximum(jnp.sum(valid), 1.0)
                total = total + lc.mfi * mfi
            if use_gan:

                def with_gan(recon):
                    g_of = lambda r: hinge_g_loss(disc.apply({"params": state.disc_params}, r))  # noqa: E731
                    r0 = jax.lax.stop_gradient(recon)
                    g_rec = jax.grad(lambda r: rec_loss(r)[0])(r0)
                    g_gan = jax.grad(g_of)(r0)
                    weight = jnp.linalg.norm(g_rec) / (jnp.linalg.norm(g_gan) + 1e-4)
                    weight = jax.lax.stop_gradient(jnp.clip(weight, 0.0, lc.gan_max_adaptive))
                    g = g_of(recon)
                    return lc.gan_weight * weight * g, g, weight

                zero = jnp.zeros(())
                g_term, g_loss, weight = jax.lax.cond(gan_on, with_gan, lambda r: (zero, zero, zero), recon)
                total = total + g_term
                metrics["gan_g"], metrics["gan_adaptive_weight"] = g_loss, weight
            metrics["loss"] = total
            return total, (metrics, updated.get("vq", {}), recon)

        (_, (metrics, new_vq, recon)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        new_state, metrics["grad_norm"] = state.apply_gradients(grads, tx)
        new_state = new_state.replace(vq=new_vq if state.vq else state.vq)

        if use_gan:
            fake = jax.lax.stop_gradient(recon)

            def d_update(current: VAEState):
                def d_loss_fn(p):
                    real = disc.apply({"params": p}, x)
                    fake_logits = disc.apply({"params": p}, fake)
                    return hinge_d_loss(real, fake_logits), (jnp.mean(real), jnp.mean(fake_logits))

                (d_loss, (lr_, lf_)), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(
                    current.disc_params
                )
                updated, _ = apply_gradients(
                    current, d_grads, tx_disc, params="disc_params", opt_state="disc_opt_state"
                )
                return updated, (d_loss, lr_, lf_)

            def d_skip(current: VAEState):
                zero = jnp.zeros(())
                return current, (zero, zero, zero)

            new_state, (d_loss, real_mean, fake_mean) = jax.lax.cond(gan_on, d_update, d_skip, new_state)
            metrics.update(gan_d=d_loss, d_real=real_mean, d_fake=fake_mean)
        return new_state, metrics

    return model, disc, tx, tx_disc, train_step


def init_vae_state(config, model, disc, tx, tx_disc, rng: jax.Array) -> VAEState:
    """Boxed (logically partitioned) state; the loop turns it into sharded arrays."""
    d = config.data
    dummy = jnp.zeros((1, int(d.frames), int(d.size), int(d.size), 3), jnp.float32)
    rng_model, rng_disc = jax.random.split(rng)
    variables = model.init({"params": rng_model}, dummy)
    params, vq = variables["params"], variables.get("vq", {})
    disc_params, disc_opt = {}, {}
    if disc is not None:
        disc_params = disc.init(rng_disc, dummy)["params"]
        disc_opt = tx_disc.init(disc_params)
    return VAEState.create(params, tx, vq=vq, disc_params=disc_params, disc_opt_state=disc_opt)


def make_task(config: ml_collections.ConfigDict, mesh: Mesh) -> Task:
    model, disc, tx, tx_disc, train_step = make_vae_step(config)

    def init_state(rng):
        return init_vae_state(config, model, disc, tx, tx_disc, rng)

    def make_data(process_index: int, process_count: int):
        from motionaura_jax.data.pipeline import make_host_iterator

        return make_host_iterator(
            config.data,
            batch_size=int(config.train.batch_size) // process_count,
            split="train",
            seed=int(config.train.seed),
            process_index=process_index,
            process_count=process_count,
        )

    def eval_fn(state: VAEState, step: int, workdir: epath.Path) -> dict[str, float]:
        from motionaura_jax.eval import recon

        metrics, _ = recon.evaluate(model, {"params": state.params, "vq": state.vq}, config)
        return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}

    def sample_fn(state: VAEState, step: int, workdir: epath.Path) -> dict[str, np.ndarray]:
        from motionaura_jax.eval import recon

        path = paths.as_path(workdir) / "samples" / f"recon_{step:07d}.png"
        sheet = recon.write_contact_sheet(model, {"params": state.params, "vq": state.vq}, config, path)
        return {"samples/recon": sheet}  # the loop logs it to TensorBoard

    return Task(
        init_state=init_state,
        train_step=train_step,
        make_data=make_data,
        eval_fn=eval_fn,
        sample_fn=sample_fn,
        batch_axes={"video": ("act_batch", None, None, None, None)},
        batch_spec=lambda batch: {
            "video": jax.ShapeDtypeStruct(
                (batch, int(config.data.frames), int(config.data.size), int(config.data.size), 3), jnp.float32
            ),
            "fps": jax.ShapeDtypeStruct((batch,), jnp.float32),
        },
    )


def count_params(config: ml_collections.ConfigDict) -> dict[str, int]:
    """Parameter counts from `jax.eval_shape` (nothing allocated): encoder, decoder, quantizer, total."""
    model = VQVAE(config.model)
    d = config.data
    dummy = jax.ShapeDtypeStruct((1, int(d.frames), int(d.size), int(d.size), 3), jnp.float32)
    shapes = jax.eval_shape(lambda x: model.init({"params": jax.random.PRNGKey(0)}, x), dummy)
    params = nn.meta.unbox(shapes["params"])
    count = lambda tree: int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))  # noqa: E731
    out = {name: count(sub) for name, sub in params.items()}
    vq = nn.meta.unbox(shapes.get("vq", {}))
    out["codebook"] = count(jax.tree.map(lambda x: x, vq)["quantizer"]["embedding"]) if vq else 0
    out["total"] = count(params) + out["codebook"]
    return out
