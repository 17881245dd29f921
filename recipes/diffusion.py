"""Denoising diffusion (`ddpm`) on handwritten digits, sampled with DDIM.

Trains the noise-predicting U-Net with `fit` on the same code for TensorFlow,
PyTorch and JAX (an exponential moving average of its weights samples).
Writes DDIM sample grids every `--samples-every` epochs and, at the end,
judges 1,000 DDIM samples with an MLP trained on the real digits
(confidence and spread over classes); `--ddpm-samples N` also judges N
samples of the full ancestral DDPM sampler (every timestep, slower).

Default data: scikit-learn's copy of the UCI optical digits (1,797 real 8x8
images shipped inside the scikit-learn package, so it runs offline),
at their own 8x8 size (`--image-size 16` upsamples them).

    KERAS_BACKEND=jax python recipes/diffusion.py
"""

import kzoo
from kzoo.training import runner, sample_grid


# Flags and set-up read like gan.py's on purpose: a standalone script with its own
# defaults; the steps the generative recipes share are in kzoo.training.sample_grid.
def main(argv=None):
    parser = runner.make_parser(__doc__, epochs=40, batch_size=64, lr=1e-3, dataset="digits")
    parser.add_argument("--image-size", type=runner.positive_int, default=8,
                        help="square size, divisible by 2 ** (levels - 1)")
    parser.add_argument("--filters", type=runner.positive_int, default=32, help="base U-Net channels")
    parser.add_argument("--channel-multipliers", type=runner.positive_int, nargs="+", default=[1, 2], help="channel multiplier of each U-Net level")
    parser.add_argument("--attention-resolutions", type=runner.positive_int, nargs="*", default=[4], help="feature-map sizes that get self-attention")
    parser.add_argument("--timesteps", type=runner.positive_int, default=1000, help="diffusion steps of the noise schedule")
    parser.add_argument("--noise-schedule", choices=("linear", "cosine"), default="cosine", help="beta schedule of the forward process")
    parser.add_argument("--ddim-steps", type=runner.positive_int, default=50, help="sampling steps of the DDIM sampler")
    parser.add_argument("--ddpm-samples", type=runner.non_negative_int, default=0,
                        help="also judge this many full DDPM samples (0: skip)")
    parser.add_argument("--samples-every", type=runner.positive_int, default=10, help="epochs between sample grids")
    args = parser.parse_args(argv)

    run = runner.Run(args, recipe="diffusion")
    data = run.load_data(image_size=args.image_size, needs_arrays=True)
    value_range = data.info.get("value_range", (0.0, 1.0))
    model = kzoo.create_model(
        "ddpm", input_shape=(args.image_size, args.image_size, data.input_shape[-1]),
        filters=args.filters,
        channel_multipliers=tuple(args.channel_multipliers),
        attention_resolutions=tuple(args.attention_resolutions), num_timesteps=args.timesteps,
        schedule=args.noise_schedule, value_range=value_range,
    )
    run.compile(model, loss=None, metrics=None)

    ddim = {"sampler": "ddim", "steps": 2 if run.smoke else args.ddim_steps}
    sample_grid.fit_with_sample_grids(run, model, data.x_train, every=args.samples_every,
                                      value_range=value_range, generate_kwargs=ddim,
                                      validation_data=(data.x_val, None))
    test = model.evaluate(data.x_test, verbose=0, return_dict=True)
    metrics = {"test_noise_mse": round(float(test["noise_mse"]), 4)}
    metrics.update(sample_grid.judge_run_samples(run, model, data, generate_kwargs=ddim,
                                                 prefix="ddim"))
    n_ddpm = min(args.ddpm_samples, 4) if run.smoke else args.ddpm_samples
    if n_ddpm:
        ddpm = {"sampler": "ddpm"}
        samples = model.generate(n_ddpm, seed=1, **ddpm)
        sample_grid.save_image_grid(
            samples[:64], run.dir / "samples_ddpm.png", value_range=value_range,
            title=f"{run.figure_title(model)}\nafter training, {args.timesteps} DDPM steps",
            caption=f"{min(n_ddpm, 64)} samples, seed 1, sampler ddpm")
        metrics.update(sample_grid.judge_run_samples(run, model, data, n=n_ddpm,
                                                     generate_kwargs=ddpm, prefix="ddpm"))
    return run.finish(model, metrics)


if __name__ == "__main__":
    main()
