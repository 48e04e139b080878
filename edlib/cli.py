"""`edlib ...`: the command line. Thin on purpose: it parses arguments, calls the library
(the same functions the notebooks call), prints, and maps errors to exit codes.

Exit codes: 0 success, 1 bad input (the message on stderr names the file and the problem),
2 usage errors (argparse).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def _cmd_scan(args) -> int:
    from edlib.data.scan import format_report, report_json, scan

    result = scan(args.data_root, use_cache=not args.no_cache)
    if args.json:
        print(json.dumps(report_json(result), indent=2))
    else:
        print(format_report(result))
    return _fail_on_errors(result.errors)


def _cmd_preview(args) -> int:
    from edlib.data.preview import format_preview, preview
    from edlib.data.scan import scan
    from edlib.data.schedule import write_schedule
    from edlib.model.lr import with_lr_curve

    result = scan(args.data_root)
    if result.errors:
        return _fail_on_errors(result.errors)
    p = preview(
        result,
        epochs=args.epochs,
        batch_size=args.batch_size,
        resolution=args.resolution,
        seed=args.seed,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        max_steps=args.max_steps,
        validation_fraction=args.validation_fraction,
    )
    p = with_lr_curve(p, args.lr_scheduler, args.lr, warmup_steps=args.lr_warmup_steps)
    if args.write_schedule:
        for epoch in range(args.epochs):
            write_schedule(p.realise(epoch), p.planner.scan, args.write_schedule)  # the training images
    if args.json:
        print(json.dumps(p.to_json(), indent=2))
    else:
        print(format_preview(p))
        if args.write_schedule:
            print(f"\nSchedules for epochs 0..{args.epochs - 1} written to {args.write_schedule}")
    return 0


def _cmd_balance(args) -> int:
    from edlib.data.balance import apply_balance, format_plan, load_weights, plan_balance, undo_balance
    from edlib.data.scan import scan

    if args.undo:
        for line in undo_balance(args.data_root):
            print(line)
        return 0
    if not args.weights:
        print("edlib balance: --weights W.yaml is required (or --undo)", file=sys.stderr)
        return 2
    result = scan(args.data_root)
    if result.errors:
        return _fail_on_errors(result.errors)
    plan = plan_balance(result, load_weights(args.weights), epoch_size=args.epoch_size)
    if args.json:
        print(json.dumps(plan.to_json(), indent=2))
    else:
        print(format_plan(plan))
    if args.apply:
        history = apply_balance(plan)
        print(f"\nWrote multiply.txt files; previous files kept in {history} (undo: edlib balance --undo {args.data_root})")
    elif not args.json:
        print("\nNothing written (add --apply to write multiply.txt files).")
    return 0


def _cmd_train(args) -> int:
    from edlib.train import load_config, train

    summary = train(load_config(args.config, args.overrides), resume=args.resume)
    print(
        f"run {summary.run_dir}: stopped by {summary.stopped_by} at step {summary.step} "
        f"(epoch {summary.epoch}); last checkpoint: {summary.last_checkpoint}"
    )
    return 0


def _cmd_sample(args) -> int:
    from edlib.sample import sample_model

    paths = sample_model(
        args.model,
        args.prompts,
        args.out,
        grid=args.grid,
        config=args.config,
        hypernetwork=args.hypernetwork,
        hypernetwork_strength=args.hypernetwork_strength,
    )
    for path in paths:
        print(path)
    return 0


def _cmd_export(args) -> int:
    from edlib.export import export_run

    for path in export_run(args.run, args.format, out=args.out, dtype=args.dtype):
        print(path)
    return 0


def _cmd_review(args) -> int:
    from edlib.train.review import format_review, quarantine, restore, review, review_folders, run_data_root

    if args.quarantine:
        manifest = quarantine(run_data_root(args.run), args.quarantine, run_dir=args.run, reason="edlib review")
        print(f"Moved {len(args.quarantine)} image(s) with their captions to quarantine (manifest: {manifest}).")
        print(f"Undo: edlib review {args.run} --restore")
        return 0
    if args.restore is not None:
        for line in restore(run_data_root(args.run), args.restore or None):
            print(line)
        return 0
    print(format_review(review(args.run, top=args.top), review_folders(args.run)))
    return 0


def _cmd_demo(args) -> int:
    from edlib.demo import run_demo

    run_demo(Path(args.out), quick=args.quick)
    return 0


def _fail_on_errors(errors: list[str]) -> int:
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    return 1 if errors else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edlib", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="more log output")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("scan", help="folders, counts, captions, warnings of a data root")
    p.add_argument("data_root")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-cache", action="store_true", help="ignore and do not update the scan cache")
    p.set_defaults(func=_cmd_scan)

    p = sub.add_parser("preview", help="samples per folder, steps and LR curve, without loading a model")
    p.add_argument("data_root")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--gradient-accumulation-steps", type=int, default=1)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--resolution", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=1e-6)
    p.add_argument("--lr-scheduler", default="constant")
    p.add_argument("--lr-warmup-steps", type=int, default=0)
    p.add_argument(
        "--validation-fraction",
        type=float,
        default=0.0,
        help="hold out this fraction of each folder for the validation loss (as the config key); shows what is held out",
    )
    p.add_argument("--write-schedule", metavar="DIR", help="write ep{E}_batch_schedule.txt files here")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_preview)

    p = sub.add_parser("balance", help="turn target shares (a weight tree) into multiply.txt values")
    p.add_argument("data_root")
    p.add_argument("--weights", metavar="W.yaml", help="folder path or glob -> weight")
    p.add_argument("--epoch-size", type=float, default=None, help="samples per epoch wanted (default: current)")
    p.add_argument("--apply", action="store_true", help="write the multiply.txt files (history kept)")
    p.add_argument("--undo", action="store_true", help="restore the multiply.txt files before the last --apply")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_balance)

    p = sub.add_parser("train", help="train from a config file (resumable)")
    p.add_argument("config", help="CONFIG.yaml (keys: docs/config.md)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="override config keys")
    p.add_argument("--resume", metavar="latest|PATH", help="continue a run exactly: newest complete checkpoint or a path")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("sample", help="sample images from a model, a run or a checkpoint")
    p.add_argument("model", metavar="MODEL_OR_RUN")
    p.add_argument("--prompts", required=True, metavar="FILE", help="text (one prompt a line) or YAML/JSON")
    p.add_argument("--out", metavar="DIR", help="default: RUN/samples/manual or ./samples/NAME")
    p.add_argument("--grid", action="store_true", help="X/Y grid of all of a run's checkpoints x the prompts")
    p.add_argument("--config", metavar="DIR", help="for a single-file model: a diffusers folder with its configs")
    p.add_argument("--hypernetwork", metavar="FILE.pt", help="apply an AUTOMATIC1111 hypernetwork file to the model")
    p.add_argument("--hypernetwork-strength", type=float, default=1.0, metavar="S", help="its strength (default 1.0)")
    p.set_defaults(func=_cmd_sample)

    p = sub.add_parser("export", help="write what a run trained in a format other tools load")
    p.add_argument("run", metavar="RUN", help="a run folder (newest checkpoint) or a checkpoint folder")
    p.add_argument("--format", required=True, choices=["diffusers", "single-file", "kohya-lora", "a1111-embedding", "a1111-hypernetwork"])
    p.add_argument("--out", metavar="DIR", help="default: RUN/exports")
    p.add_argument("--dtype", choices=["fp16", "fp32"], default="fp16")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("review", help="images whose loss stays high; quarantine or restore them")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--top", type=int, default=20, help="how many images to show")
    p.add_argument("--quarantine", nargs="+", metavar="IMAGE", help="move these images (paths relative to the data root) to DATA_ROOT/_quarantine")
    p.add_argument("--restore", nargs="*", metavar="IMAGE", help="put quarantined images back (all when none named)")
    p.set_defaults(func=_cmd_review)

    p = sub.add_parser("demo", help="the whole flow on generated toy-world data")
    p.add_argument("--out", default="demo", help="folder for the demo's data and runs (default: ./demo)")
    p.add_argument("--quick", action="store_true", help="a shortened run (used by the tests)")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # `edlib train C.yaml --resume latest max_steps=9`: overrides may follow options, which
    # argparse's positional nargs="*" does not pick up; collect them from the leftovers.
    args, extra = parser.parse_known_args(argv)
    if args.command == "train":
        args.overrides += [e for e in extra if "=" in e and not e.startswith("-")]
        extra = [e for e in extra if e not in args.overrides]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )
    try:
        return args.func(args)
    except Exception as e:
        # Bad input (DataRootError, ConfigError, CheckpointError, ... are ValueErrors) and a
        # run that cannot go on (TrainingError) carry a message written for the user: no
        # traceback. Anything else is a bug and keeps its traceback.
        if args.verbose or not _is_user_error(e):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 1


def _is_user_error(e: Exception) -> bool:
    if isinstance(e, (ValueError, FileNotFoundError, FileExistsError)):
        return True
    if "edlib.train.progress" in sys.modules:
        return isinstance(e, sys.modules["edlib.train.progress"].TrainingError)
    return False
