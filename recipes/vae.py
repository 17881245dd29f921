"""Variational autoencoder on handwritten digits (dense `vae` or `conv_vae`).

Trains with `fit` on the same code for TensorFlow, PyTorch and JAX, reporting
the reconstruction and KL terms separately. Writes sample grids (decoded
draws from the prior) every `--samples-every` epochs and, at the end, the test
ELBO (nats per image, Monte Carlo over `--elbo-samples` draws) and a judge's
verdict on 1,000 samples: an MLP trained on the real digits labels them
(confidence and spread over classes).

Default data: scikit-learn's copy of the UCI optical digits (1,797 real 8x8
images shipped inside the scikit-learn package, so it runs offline),
upsampled to 16x16.

    KERAS_BACKEND=jax python recipes/vae.py --model conv_vae
"""

import kzoo
from kzoo.training import runner, sample_grid


def main(argv=None):
    parser = runner.make_parser(__doc__, epochs=60, batch_size=64, lr=1e-3, dataset="digits")
    parser.add_argument("--model", choices=("vae", "conv_vae"), default="conv_vae", help="dense or convolutional VAE")
    parser.add_argument("--image-size", type=runner.positive_int, default=16, help="square size, a multiple of 4")
    parser.add_argument("--latent-dim", type=runner.positive_int, default=16, help="latent dimensions")
    parser.add_argument("--beta", type=runner.non_negative_float, default=1.0, help="weight of the KL term")
    parser.add_argument("--elbo-samples", type=runner.positive_int, default=10, help="importance samples of the test ELBO")
    parser.add_argument("--samples-every", type=runner.positive_int, default=10, help="epochs between sample grids")
    args = parser.parse_args(argv)

    run = runner.Run(args, recipe=args.model)
    data = run.load_data(image_size=args.image_size, needs_arrays=True)
    value_range = data.info.get("value_range", (0.0, 1.0))
    shape = tuple(data.input_shape) if args.model == "vae" else (
        args.image_size, args.image_size, data.input_shape[-1])
    model = kzoo.create_model(
        args.model, input_shape=shape, latent_dim=args.latent_dim, beta=args.beta,
        value_range=value_range,
    )
    run.compile(model, loss=None, metrics=None)

    sample_grid.fit_with_sample_grids(run, model, data.x_train, every=args.samples_every,
                                      value_range=value_range,
                                      validation_data=(data.x_val, None))
    test = model.evaluate(data.x_test, verbose=0, return_dict=True)
    metrics = {
        "test_elbo": round(model.elbo(data.x_test, num_samples=args.elbo_samples), 3),
        "test_reconstruction_loss": round(float(test["reconstruction_loss"]), 3),
        "test_kl_loss": round(float(test["kl_loss"]), 3),
    }
    metrics.update(sample_grid.judge_run_samples(run, model, data))
    return run.finish(model, metrics)


if __name__ == "__main__":
    main()
