"""DCGAN on handwritten digits: convolutional generator and discriminator.

Trains `dcgan` with `fit` on the same code for TensorFlow, PyTorch and JAX:
two Adam optimizers (beta_1 = 0.5), non-saturating loss. Writes a grid of
samples every `--samples-every` epochs and, at the end, judges 1,000 samples
with an MLP trained on the real digits (confidence and spread over classes).

Default data: scikit-learn's copy of the UCI optical digits (1,797 real 8x8
images shipped inside the scikit-learn package, so it runs offline),
upsampled to 16x16.

    KERAS_BACKEND=jax python recipes/dcgan.py
"""

import kzoo
from kzoo.training import runner, sample_grid


# Reads like gan.py, and its flags like vae.py's and diffusion.py's, on purpose: each
# generative recipe is a standalone script with its own flags and defaults, and the
# steps they share are kzoo.training.sample_grid's (compile_players,
# fit_with_sample_grids, judge_run_samples).
def main(argv=None):
    parser = runner.make_parser(__doc__, epochs=40, batch_size=64, lr=2e-4, dataset="digits")
    parser.add_argument("--image-size", type=runner.positive_int, default=16, help="square size, a multiple of 4")
    parser.add_argument("--latent-dim", type=runner.positive_int, default=32, help="length of the noise vector")
    parser.add_argument("--filters", type=runner.positive_int, default=32, help="base convolution filters of both players")
    parser.add_argument("--beta-1", type=runner.fraction, default=0.5, help="Adam's beta_1 for both players")
    parser.add_argument("--samples-every", type=runner.positive_int, default=10, help="epochs between sample grids")
    args = parser.parse_args(argv)

    run = runner.Run(args, recipe="dcgan")
    data = run.load_data(image_size=args.image_size, needs_arrays=True)
    value_range = data.info.get("value_range", (0.0, 1.0))
    model = kzoo.create_model(
        "dcgan", input_shape=(args.image_size, args.image_size, data.input_shape[-1]),
        latent_dim=args.latent_dim, filters=args.filters, value_range=value_range,
    )
    sample_grid.compile_players(run, model, beta_1=args.beta_1)

    sample_grid.fit_with_sample_grids(run, model, data.x_train, every=args.samples_every,
                                      value_range=value_range)
    return run.finish(model, sample_grid.judge_run_samples(run, model, data))


if __name__ == "__main__":
    main()
