"""The ``kerastune-kit`` command: ``demo``, ``find-lr``, ``plot`` and ``search``."""

from __future__ import annotations

import argparse
import os
import sys


def _int_at_least(minimum: int):
    """An argparse type: an integer >= ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1)


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
    if args.output:
        _check_output(parser, args.output)
    _quiet_tensorflow()
    import keras

    from kerastune_kit.demo import build_digits_model, load_digits_splits
    from kerastune_kit.tuning import find_lr

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
    # Told before TensorBoard's reader (and TensorFlow) is imported.
    if not os.path.isdir(args.logdir):
        parser.error(f"LOGDIR {args.logdir!r} is not a folder")
    if not _holds_event_files(args.logdir):
        parser.error(f"LOGDIR {args.logdir!r} holds no TensorBoard event files (looked for "
                     "'*tfevents*' files in it and its subfolders)")
    _check_output(parser, args.output)
    _quiet_tensorflow()
    from kerastune_kit.plotting import plot_run

    try:
        path = plot_run(args.logdir, args.output)
    except ValueError as err:  # No curves, two runs in one folder, an unwritable path.
        parser.error(str(err))
    print(f"Curves written to {path}")
    return 0


def _holds_event_files(folder: str) -> bool:
    from kerastune_kit.plotting._events import is_event_file

    return any(is_event_file(name) for _, _, names in os.walk(folder) for name in names)


def _check_output(parser, output: str) -> None:
    """Reports an image path that cannot be written as a usage error of ``-o``."""
    from kerastune_kit._files.atomic import check_writable_folder

    try:
        check_writable_folder("-o/--output", os.path.dirname(os.path.abspath(output)))
    except ValueError as err:
        parser.error(str(err))


def _check_logdir(parser, logdir: str, name: str | None) -> None:
    """Reports an unusable log folder as a usage error, before any training."""
    from kerastune_kit._files.atomic import check_writable_folder

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


_EPOCHS_NOTE = ("Epoch numbers in the terminal, the PNG, summary.json and the TensorBoard "
                "texts are 1-based, like Keras's progress bar.")


def _search(args, parser) -> int:
    _quiet_tensorflow()
    script = _search_script(parser, args.script)
    import optuna

    from kerastune_kit.tuning.search import search_in

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = _storage(parser, args.storage, args.heartbeat_seconds)
    x, y, validation_data = script.data()

    def study_for(direction):
        return optuna.create_study(
            storage=storage, study_name=args.study, load_if_exists=True, direction=direction,
            sampler=optuna.samplers.TPESampler(seed=args.seed),
            pruner=optuna.pruners.NopPruner())

    search_in(study_for, script.build, x, y, budget_seconds=args.budget_seconds,
              validation_data=validation_data, batch_size=args.batch_size,
              directory=args.directory, monitor=args.monitor, verbose=args.verbose)
    return 0


def _search_script(parser, path: str):
    """The user's script as a module, with its ``build`` and ``data``."""
    import importlib.util

    if not os.path.isfile(path):
        parser.error(f"SCRIPT {path!r} is not a file")
    spec = importlib.util.spec_from_file_location("kerastune_kit_search_script", path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    spec.loader.exec_module(module)
    missing = [name for name in ("build", "data") if not callable(getattr(module, name, None))]
    if missing:
        parser.error(f"SCRIPT {path!r} must define build(trial) (returning a compiled model) "
                     f"and data() (returning x, y, validation_data); it lacks "
                     f"{' and '.join(missing)}")
    return module


def _storage(parser, url: str | None, heartbeat_seconds: float):
    """The Optuna storage of ``--storage``: a database URL (with a heartbeat,
    so a dead worker's trial is failed and run again) or a journal file."""
    import optuna

    if url is None:
        return None
    try:
        if "://" not in url:
            journal = optuna.storages.journal
            return journal.JournalStorage(journal.JournalFileBackend(url))
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url, heartbeat_interval=max(1, round(heartbeat_seconds)),
                grace_period=max(2, round(3 * heartbeat_seconds)),
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                    max_retry=3))
    except Exception as error:  # noqa: BLE001 - SQLAlchemy's, the driver's, the OS's
        first = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        parser.error(f"--storage {url!r} cannot be opened: {type(error).__name__}: {first}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``kerastune-kit``."""
    from kerastune_kit import __version__

    parser = argparse.ArgumentParser(
        prog="kerastune-kit",
        description="Training-tuning toolkit for Keras 3 on TensorFlow.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    defaults = argparse.ArgumentDefaultsHelpFormatter

    demo = sub.add_parser(
        "demo", formatter_class=defaults,
        help="the main job: train on scikit-learn's bundled digits with the whole kit",
        description="Trains an MLP on scikit-learn's bundled digits (no download) with the "
        "kit's Trainer and callbacks and writes <logdir>/<name>/: event files, best.keras, "
        "curves.png and summary.json. " + _EPOCHS_NOTE)
    demo.add_argument("--epochs", type=_positive_int, default=40,
                      help="most epochs to train (early stopping may end sooner)")
    demo.add_argument("--batch-size", type=_positive_int, default=64,
                      help="examples per training step")
    demo.add_argument("--budget-seconds", type=_positive_float, default=None,
                      help="a wall-clock budget: the run is then kerastune_kit.fit_budgeted, "
                      "whose LR schedule ends with it; none: the parts by hand")
    demo.add_argument("--strategy", choices=_STRATEGIES, default="auto",
                      help="the tf.distribute strategy")
    demo.add_argument("--logdir", default="runs", help="folder of runs")
    demo.add_argument("--name", default=None,
                      help="run folder name, <logdir>/<name>; one that already holds a run "
                      "is refused; none: demo-<time>")
    demo.add_argument("--seed", type=int, default=0,
                      help="seeds the data split, the weights and the shuffling")
    demo.set_defaults(func=_demo, parser=demo)  # errors show its usage

    lr = sub.add_parser(
        "find-lr", formatter_class=defaults, help="LR range test on the digits data",
        description="Leslie Smith's LR range test on the demo's model and data: prints the "
        "suggested learning rate and draws the loss against the rate.")
    lr.add_argument("--steps", type=_int_at_least(3), default=100,
                    help="training steps of the test, the rate rising at each (>= 3)")
    lr.add_argument("--batch-size", type=_positive_int, default=64,
                    help="examples per step")
    lr.add_argument("--suggest", choices=("valley", "steepest", "minimum"), default="valley",
                    help="how the rate is chosen from the curve")
    lr.add_argument("-o", "--output", default="lr_finder.png",
                    help="where to write the plot ('' for none)")
    lr.add_argument("--seed", type=int, default=0, help="seeds the weights and the batches")
    lr.set_defaults(func=_find_lr, parser=lr)  # errors show its usage

    plot = sub.add_parser(
        "plot", formatter_class=defaults, help="draw the curves of a run's event files",
        description="Draws loss, metrics and learning rate of one run, with the kit's "
        "decisions marked. " + _EPOCHS_NOTE)
    plot.add_argument("logdir", metavar="LOGDIR",
                      help="the run's folder (TensorBoardCurves' log_dir or run_dir)")
    plot.add_argument("-o", "--output", default="curves.png",
                      help="the image to write; its extension picks the format")
    plot.set_defaults(func=_plot, parser=plot)  # errors show its usage

    find = sub.add_parser(
        "search", formatter_class=defaults,
        help="a budgeted hyper-parameter search (kerastune_kit.search) on Optuna",
        description="Runs kerastune_kit.search on SCRIPT.py, which defines build(trial) "
        "(returning a compiled model) and data() (returning x, y, validation_data). Run the "
        "same command on several processes or machines to join one study: they share its "
        "budget. Trials' curves and parameters go to TensorBoard under DIRECTORY/trial-N.")
    find.add_argument("script", metavar="SCRIPT.py", help="defines build(trial) and data()")
    find.add_argument("--budget-seconds", type=_positive_float, required=True,
                      help="the whole search's wall-clock budget, shared by its workers")
    find.add_argument("--storage", default=None,
                      help="an Optuna storage: a database URL (postgresql+psycopg://..., "
                      "several machines; sqlite:///... for one process only) or a journal "
                      "file path (several processes on one machine); none: in memory")
    find.add_argument("--study", default=None,
                      help="the study's name in the storage (created if new)")
    find.add_argument("--directory", default="runs/search",
                      help="the trials' TensorBoard curves and best.keras")
    find.add_argument("--batch-size", type=_positive_int, default=32,
                      help="examples per training step")
    find.add_argument("--monitor", default=None,
                      help="validation metric to rank trials by; none: the first accuracy, "
                      "else val_loss")
    find.add_argument("--seed", type=int, default=None,
                      help="seeds this worker's TPE sampler (give each worker its own: "
                      "workers of one seed draw the same first trials)")
    find.add_argument("--heartbeat-seconds", type=_positive_float, default=10.0,
                      help="with a database: how often a worker beats; a trial without a "
                      "beat for 3x as long is failed and run again")
    find.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1,
                      help="0 silent, 1 a progress bar, 2 a line per trial")
    find.set_defaults(func=_search, parser=find)  # errors show its usage
    return parser


def main(argv=None) -> int:
    """Entry point of the ``kerastune-kit`` console script."""
    args = build_parser().parse_args(argv)
    return args.func(args, args.parser)


if __name__ == "__main__":
    sys.exit(main())
