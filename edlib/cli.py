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

    result = scan(args.data_root, use_cache=not args.no_cache, follow_outside_links=not args.skip_outside_links)
    if args.json:
        print(json.dumps(report_json(result), indent=2))
    else:
        print(format_report(result, captions=args.captions))
    return _fail_on_errors(result.errors)


def _cmd_preview(args) -> int:
    from edlib.data.preview import format_preview, preview
    from edlib.data.scan import scan
    from edlib.data.schedule import write_schedule
    from edlib.model.lr import with_lr_curve

    result = scan(args.data_root, follow_outside_links=not args.skip_outside_links)
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
    p.warnings = [*result.warnings, *p.warnings]  # a misnamed multiply.txt changes what the preview shows
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
        for line in undo_balance(args.data_root, force=args.force):
            print(line)
        return 0
    if not args.weights:
        print("edlib balance: --weights W.yaml is required (or --undo)", file=sys.stderr)
        return 2
    result = scan(args.data_root, follow_outside_links=not args.skip_outside_links)
    if result.errors:
        return _fail_on_errors(result.errors)
    plan = plan_balance(result, load_weights(args.weights), epoch_size=args.epoch_size, source=args.weights)
    plan.warnings = [*result.warnings, *plan.warnings]
    if args.json:
        print(json.dumps(plan.to_json(), indent=2))
    else:
        print(format_plan(plan))
    if args.apply:
        history = apply_balance(plan)
        excluded = f", exclude.txt in {len(plan.excluded)} excluded folder(s)" if plan.excluded else ""
        print(
            f"\nWrote multiply.txt files{excluded}; previous files kept in {history} "
            f"(undo: edlib balance {args.data_root} --undo)"
        )
    elif not args.json:
        print("\nNothing written (add --apply to write multiply.txt files, and exclude.txt where the weight is 0).")
    return 0


def _cmd_caption(args) -> int:
    from edlib.data.caption_explain import CaptionRules, explain_caption, format_explanation, select_items
    from edlib.data.scan import scan

    rules, source, prepare, follow = CaptionRules(), "the training defaults", None, not args.skip_outside_links
    if args.config:
        from edlib.model.config_files import load_config

        rules = config = load_config(args.config)
        source, follow = args.config, follow and config.follow_outside_links
        if config.method != "full":  # a method may change captions (textual inversion): ask it, as training does
            from edlib.model.methods import make_method

            prepare = make_method(config).prepare_captions
    result = scan(args.data_root, follow_outside_links=follow)
    if result.errors:
        return _fail_on_errors(result.errors)
    chosen = select_items(result, args.paths)
    shown = chosen if args.limit <= 0 else chosen[: args.limit]
    explained = [
        explain_caption(result, i, rules, examples=args.examples, prepare=prepare, rules_source=source) for i in shown
    ]
    if args.json:
        print(json.dumps({"images": [e.to_json() for e in explained], "more": len(chosen) - len(shown)}, indent=2))
        return 0
    print("\n\n".join(format_explanation(e) for e in explained))
    if len(chosen) > len(shown):
        print(f"\n... and {len(chosen) - len(shown)} more image(s) (--limit N shows more, 0 all)")
    return 0


def _cmd_train(args) -> int:
    from edlib.model.config_files import load_config
    from edlib.train.run_lock import run_lock

    # A bad config, or a run folder in use, fails at once, before the training stack is
    # imported (a minute on a busy machine); `train` takes the lock for the run itself.
    config = load_config(args.config, args.overrides)
    with run_lock(config.run_dir):
        pass
    from edlib.train.loop import train

    print(train(config, resume=args.resume))
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
    from edlib.train.review import (
        format_review,
        quarantine,
        quarantined,
        restore,
        review,
        review_folders,
        review_status,
        run_data_root,
    )

    if args.quarantine:
        root = run_data_root(args.run)
        before = set(quarantined(root))
        folder = quarantine(root, args.quarantine, run_dir=args.run, reason="edlib review")
        moved = len(set(quarantined(root)) - before)
        print(f"Moved {moved} image(s) with their captions to {folder} (each move is recorded in {folder / 'manifest.json'}).")
        print(f"Undo: edlib review {args.run} --restore")
        return 0
    if args.restore is not None:
        root = run_data_root(args.run)
        restored = restore(root, args.restore or None)
        for path in restored:
            print(f"restored {root / path}")
        if not restored:
            print(f"nothing to restore: the quarantine of {root} is empty")
        return 0
    print(format_review(review(args.run, top=args.top), review_folders(args.run), review_status(args.run)))
    return 0


def _cmd_gather(args) -> int:
    from edlib.gather import DownloadSettings, GatherOptions, format_report, gather

    defaults = DownloadSettings()
    download = DownloadSettings(
        processes=args.processes or defaults.processes,
        threads=args.threads or defaults.threads,
        timeout=args.timeout,
        retries=args.retries,
        shard_size=args.shard_size,
    )
    options = GatherOptions(
        resolution=args.resolution,
        min_side=args.min_side,
        max_aspect=args.max_aspect,
        image_size=args.image_size,
        seed=args.seed,
        link=args.link,
        dedupe=not args.no_dedupe,
        url_column=args.url_column,
        caption_column=args.caption_column,
        width_column=args.width_column,
        height_column=args.height_column,
        where=tuple(args.where),
        download=download,
        progress=not args.no_progress,
    )
    try:
        report = gather(
            args.data_root,
            args.source,
            args.folder,
            count=args.count,
            per_epoch=args.per_epoch,
            fraction=args.fraction,
            share=args.share,
            options=options,
        )
    except KeyboardInterrupt:
        print(
            f"\nStopped. What was gathered so far is kept; run the same command again to continue "
            f"(report: {Path(args.data_root) / args.folder / 'gather.json'}).",
            file=sys.stderr,
        )
        return 130
    print(json.dumps(report.to_json(), indent=2) if args.json else format_report(report))
    return 0


def _cmd_demo(args) -> int:
    from edlib.demo import run_demo

    run_demo(Path(args.out), quick=args.quick)
    return 0


def _fail_on_errors(errors: list[str]) -> int:
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    return 1 if errors else 0


DESCRIPTION = (
    "Fine-tune Stable Diffusion on your own folders of images, EveryDream-style: scan and balance a data "
    "root, preview the schedule, train, review, sample and export. Each command's --help says more."
)


def _add_links_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--skip-outside-links",
        action="store_true",
        help="skip symbolic links that lead outside the data root (default: follow them, with a warning)",
    )


def build_parser() -> argparse.ArgumentParser:
    from edlib import __version__
    from edlib.data.caption_explain import SHUFFLED_EXAMPLES
    from edlib.data.scan_report import CAPTION_EXAMPLES
    from edlib.data.schedule import DEFAULT_SEED
    from edlib.model.config import DEFAULT_RESOLUTION, TrainConfig
    from edlib.model.lr import LR_SCHEDULERS

    defaults = {name: field.default for name, field in TrainConfig.model_fields.items()}
    parser = argparse.ArgumentParser(prog="edlib", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"edlib {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="more log output")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("scan", help="folders, counts, captions, warnings of a data root")
    p.add_argument("data_root")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-cache", action="store_true", help="ignore and do not update the scan cache")
    p.add_argument(
        "--captions",
        type=int,
        default=CAPTION_EXAMPLES,
        metavar="N",
        help="example captions per folder (default %(default)s; 0: none; --json has all)",
    )
    _add_links_option(p)
    p.set_defaults(func=_cmd_scan)

    p = sub.add_parser(
        "preview",
        help="samples per folder, steps and LR curve, without loading a model",
        description="What a training run will do with a data root, before any model loads: samples per folder "
        "and epoch, steps, the learning-rate curve, buckets, and (with --write-schedule) the exact batches. "
        "Defaults are the training config's, so with the same values it shows what `edlib train` trains.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("data_root")
    p.add_argument("--epochs", type=int, default=defaults["epochs"], help="epochs to plan (config key epochs)")
    p.add_argument("--batch-size", type=int, default=defaults["batch_size"], help="images per batch (batch_size)")
    p.add_argument(
        "--gradient-accumulation-steps",
        type=int,
        default=defaults["gradient_accumulation_steps"],
        help="batches per optimizer step",
    )
    p.add_argument("--max-steps", type=int, default=defaults["max_steps"], help="cap on optimizer steps (none: no cap)")
    p.add_argument(
        "--resolution",
        type=int,
        default=DEFAULT_RESOLUTION,
        help="base bucket size, a multiple of 64 (training defaults to the model's own: 512 SD1.x, 768 SD2.x, 1024 SDXL)",
    )
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the per-epoch draws (config key seed)")
    p.add_argument("--lr", type=float, default=defaults["unet_lr"], help="learning rate for the curve (unet_lr)")
    p.add_argument("--lr-scheduler", default=defaults["lr_scheduler"], choices=LR_SCHEDULERS, help="LR schedule")
    p.add_argument("--lr-warmup-steps", type=int, default=defaults["lr_warmup_steps"], help="warm-up steps")
    p.add_argument(
        "--validation-fraction",
        type=float,
        default=0.0,
        help="hold out this fraction of each folder for the validation loss (as the config key); shows what is held out",
    )
    p.add_argument("--write-schedule", metavar="DIR", help="write ep{E}_batch_schedule.txt files here")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _add_links_option(p)
    p.set_defaults(func=_cmd_preview)

    p = sub.add_parser(
        "balance",
        help="turn target shares (a weight tree) into multiply.txt values",
        description="Turn target shares into multiply.txt values. The weights file maps folder paths relative to "
        "the data root (or glob patterns, * also matching /) to weights; siblings share their parent's share. "
        "Weight 0 excludes a folder: --apply writes an exclude.txt there (the scan then gives it 0 samples). "
        "Nothing is written without --apply, and --undo reverts the last apply.",
    )
    p.add_argument("data_root")
    p.add_argument("--weights", metavar="W.yaml", help="folder path or glob -> weight (0 excludes)")
    p.add_argument("--epoch-size", type=float, default=None, help="samples per epoch wanted (default: current)")
    p.add_argument("--apply", action="store_true", help="write the multiply.txt (and exclude.txt) files; history kept")
    p.add_argument("--undo", action="store_true", help="restore the files as they were before the last --apply")
    p.add_argument("--force", action="store_true", help="with --undo: restore even files edited since the apply")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _add_links_option(p)
    p.set_defaults(func=_cmd_balance)

    p = sub.add_parser(
        "caption",
        help="the caption an image trains with, and where each part comes from",
        description="Show the caption each image trains with, as training builds it: its caption files, the "
        "folder's trigger and tags, the file name, then tag shuffling (keep_tokens) and caption dropout, with "
        "example orders drawn by the same function training uses. Settings are the training defaults, or "
        "those of --config.",
    )
    p.add_argument("data_root")
    p.add_argument("paths", nargs="*", metavar="PATH", help="images or folders (relative to the data root); none: all")
    p.add_argument("--config", metavar="C.yaml", help="a training config: its shuffle_caption, keep_tokens, caption_dropout, method")
    p.add_argument(
        "--examples",
        type=int,
        default=SHUFFLED_EXAMPLES,
        help="shuffled orders to show per image when tags shuffle (default %(default)s)",
    )
    p.add_argument("--limit", type=int, default=20, help="images to show at most (default 20; 0: all)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _add_links_option(p)
    p.set_defaults(func=_cmd_caption)

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
    p.add_argument(
        "--dtype",
        choices=["fp16", "fp32"],
        default="fp16",
        help="weight precision; an fp32 file is named ...-fp32 so it never replaces the fp16 one (embeddings are always fp32)",
    )
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("review", help="images whose loss stays high; quarantine or restore them")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--top", type=int, default=20, help="how many images to show")
    p.add_argument("--quarantine", nargs="+", metavar="IMAGE", help="move these images (paths relative to the data root) to DATA_ROOT/_quarantine")
    p.add_argument("--restore", nargs="*", metavar="IMAGE", help="put quarantined images back (all when none named)")
    p.set_defaults(func=_cmd_review)

    _add_gather_parser(sub)

    p = sub.add_parser("demo", help="the whole flow on generated toy-world data")
    p.add_argument("--out", default="demo", help="folder for the demo's data and runs (default: ./demo)")
    p.add_argument("--quick", action="store_true", help="a shortened run (used by the tests)")
    p.set_defaults(func=_cmd_demo)
    return parser


def _add_gather_parser(sub) -> None:
    p = sub.add_parser("gather", help="fill a folder with ground-truth preservation images from a URL list or a big folder")
    p.add_argument("data_root")
    p.add_argument("--from", dest="source", required=True, metavar="LIST_OR_FOLDER", help="a .parquet/.csv/.tsv/.jsonl URL list, or a folder of images")
    p.add_argument("--to", dest="folder", default="ground_truth", metavar="FOLDER", help="a new folder inside the data root (default: ground_truth)")
    p.add_argument("--count", type=int, required=True, help="images the folder should hold (run again with more to add)")
    amount = p.add_mutually_exclusive_group()
    amount.add_argument("--per-epoch", type=float, metavar="N", help="sets multiply.txt: N of its images per epoch")
    amount.add_argument("--fraction", type=float, metavar="F", help="sets multiply.txt: this fraction of the folder per epoch")
    amount.add_argument("--share", type=float, metavar="S", help="sets multiply.txt: this share of the whole epoch (0.1 = 10%%)")
    p.add_argument("--resolution", type=int, default=512, help="training resolution, the default for --min-side and --image-size")
    p.add_argument("--min-side", type=int, metavar="PX", help="refuse images whose shorter side is smaller")
    p.add_argument("--max-aspect", type=float, default=2.0, help="refuse images longer than this ratio (default 2: 2:1 or 1:2)")
    p.add_argument("--image-size", type=int, metavar="PX", help="shrink downloads to this shorter side (0: keep them full size)")
    p.add_argument("--seed", type=int, default=0, help="which rows/files are drawn")
    p.add_argument("--link", action="store_true", help="folder source: symlink the images instead of copying them")
    p.add_argument("--no-dedupe", action="store_true", help="keep near-duplicates (of each other and of your images)")
    p.add_argument("--url-column", help="default: url or URL")
    p.add_argument("--caption-column", help="default: caption, TEXT or text")
    p.add_argument("--width-column", help="default: width or WIDTH, if present")
    p.add_argument("--height-column", help="default: height or HEIGHT, if present")
    p.add_argument("--where", action="append", default=[], metavar="COND", help="keep rows passing e.g. 'aesthetic>=5' or 'punsafe<0.1' (repeatable)")
    p.add_argument("--processes", type=int, help="img2dataset processes (default: up to 4)")
    p.add_argument("--threads", type=int, help="download threads per process (default 32)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per download (default 10)")
    p.add_argument("--retries", type=int, default=0, help="retries per failed download")
    p.add_argument("--shard-size", type=int, help="URLs per img2dataset shard, the unit of resume (default: chosen per batch)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.set_defaults(func=_cmd_gather)


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
