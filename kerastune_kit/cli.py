"""The ``kerastune-kit`` command: ``demo``, ``find-lr`` and ``plot``."""

from __future__ import annotations

import argparse
import os
import sys


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


_STRATEGIES = ("auto", "default", "one_device", "mirrored", "multiworker", "tpu")


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _demo(args, parser) -> int:
    _quiet_tensorflow()
    from kerastune_kit.demo import run_demo

    if args.name:
        _check_fresh_run(parser, os.path.join(args.logdir, args.name))
    _check_logdir(parser, args.logdir, args.name)
    run_demo(epochs=args.epochs, batch_size=args.batch_size,
             budget_seconds=args.budget_seconds, strategy=args.strategy,
             logdir=args.logdir, name=args.name, seed=args.seed)
    return 0


def _find_lr(args, parser) -> int:
    _quiet_tensorflow()
    import keras

    from kerastune_kit.demo import build_digits_model, load_digits_splits
    from kerastune_kit.tuning import find_lr

    if args.output:
        _check_logdir(parser, os.path.dirname(os.path.abspath(args.output)), None)
    keras.utils.set_random_seed(args.seed)
    data = load_digits_splits(args.seed)
    model = build_digits_model()
    model.compile(optimizer=keras.optimizers.Adam(),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    result = find_lr(model, data.x_train, data.y_train, steps=args.steps,
                     batch_size=args.batch_size, suggest=args.suggest)
    print(f"Suggested learning rate ({args.suggest}): {result.suggestion:.3g}")
    if args.output:
        result.plot(args.output)
        print(f"Plot written to {args.output}")
    return 0


def _plot(args, parser) -> int:
    _quiet_tensorflow()
    from kerastune_kit.plotting import plot_run

    if not os.path.isdir(args.logdir):
        parser.error(f"LOGDIR {args.logdir!r} is not a folder")
    try:
        path = plot_run(args.logdir, args.output)
    except ValueError as err:  # No curves, two runs in one folder, an unwritable path.
        parser.error(str(err))
    print(f"Curves written to {path}")
    return 0


def _check_logdir(parser, logdir: str, name: str | None) -> None:
    """Reports an unusable log folder as a usage error, before any training."""
    from kerastune_kit._atomic import check_writable_folder

    try:
        check_writable_folder("--logdir", os.path.join(logdir, name) if name else logdir)
    except ValueError as err:
        parser.error(str(err))


def _check_fresh_run(parser, run_dir: str) -> None:
    """Refuses a run folder that already holds a run, before any training."""
    from kerastune_kit.demo import _held_run

    held = _held_run(run_dir)
    if held:
        parser.error(f"--name: the run folder {run_dir!r} already holds a run ({held}); "
                     "pass another --name or delete that folder")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``kerastune-kit``."""
    parser = argparse.ArgumentParser(
        prog="kerastune-kit",
        description="Training-tuning toolkit for Keras 3 on TensorFlow.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo", help="the main job: train on scikit-learn's bundled digits with the whole kit")
    demo.add_argument("--epochs", type=_positive_int, default=40)
    demo.add_argument("--batch-size", type=_positive_int, default=64)
    demo.add_argument("--budget-seconds", type=_positive_float, default=None,
                      help="wall-clock budget; the LR schedule ends with it")
    demo.add_argument("--strategy", choices=_STRATEGIES, default="auto")
    demo.add_argument("--logdir", default="runs", help="folder of runs (default: runs)")
    demo.add_argument("--name", default=None,
                      help="run folder name, <logdir>/<name>; one that already holds a run "
                      "is refused (default: demo-<time>)")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)

    lr = sub.add_parser("find-lr", help="LR range test on the digits data")
    lr.add_argument("--steps", type=_positive_int, default=100)
    lr.add_argument("--batch-size", type=_positive_int, default=64)
    lr.add_argument("--suggest", choices=("valley", "steepest", "minimum"), default="valley")
    lr.add_argument("-o", "--output", default="lr_finder.png",
                    help="where to write the plot (default: lr_finder.png; '' for none)")
    lr.add_argument("--seed", type=int, default=0)
    lr.set_defaults(func=_find_lr)

    plot = sub.add_parser("plot", help="draw the curves of a run's event files")
    plot.add_argument("logdir", metavar="LOGDIR")
    plot.add_argument("-o", "--output", default="curves.png")
    plot.set_defaults(func=_plot)
    return parser


def main(argv=None) -> int:
    """Entry point of the ``kerastune-kit`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args, parser)


if __name__ == "__main__":
    sys.exit(main())
