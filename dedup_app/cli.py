"""The ``dedup-app`` command. ``scan`` is headless, built on ``dedup_app.core`` alone; ``gui`` (and no command)
opens the window, importing Qt only then.

Usage::

    dedup-app                                   open the window
    dedup-app gui [PATH ...] [--screenshot FILE.png]
    dedup-app scan PATH [PATH ...] [--threshold T] [--model FILE] [--cache FILE] [--device D]
                   [--json FILE] [--csv FILE]
    dedup-app verify A B [--json FILE|-] [--threshold T] [--model FILE] [--device D]
    dedup-app change BEFORE AFTER --out DIR [--threshold T] [--min-area PX] [--model NAME|FILE] [--device D]
    dedup-app train (--labels FILE | --from-app | --images DIR ...) [--epochs N] [--out FILE] [--activate]
    dedup-app train-change [DIR ...] [--from-app] [--activate] [--epochs N] [--out FILE] [--init FILE]
                           [--synthetic N] [--unfreeze N]
    dedup-app models [list | activate ID | rollback [--change]]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sqlite3
import stat
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dedup_app import __version__
from dedup_app.core.files import describe_os_error, display_path
from dedup_app.core.units import count_of, format_bytes, format_duration

if TYPE_CHECKING:
    from dedup_app.core.cache import EmbeddingCache

log = logging.getLogger("dedup_app")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_CANCELLED = 130

# Characters a terminal acts on instead of showing: C0 and C1 controls (newline, ESC starting a colour or cursor
# sequence), DEL, line and paragraph separators, and the bidirectional overrides that reorder what is shown.
_UNPRINTABLE = [*range(0x20), *range(0x7F, 0xA0), 0x200E, 0x200F, *range(0x2028, 0x202F), *range(0x2066, 0x206A)]
_NAMED = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}
_ESCAPES = {c: _NAMED.get(c, f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}") for c in _UNPRINTABLE}


def printable(text: str) -> str:
    """``text`` safe to print on a terminal: control characters become escapes (``\\n``, ``\\x1b``, ``\\u202e``).

    For what is shown to a person only; JSON and CSV reports keep names exactly as they are.
    """
    return text.translate(_ESCAPES)


def _shown(path: str) -> str:
    """A file name as printed on the terminal: undecodable bytes and control characters escaped."""
    return printable(display_path(path))


def _threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value}")
    return value


def _positive_int(text: str, least: int = 1) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
    return value


def _count_arg(text: str) -> int:
    """A count that may be 0."""
    return _positive_int(text, least=0)


def _add_engine_options(parser: argparse.ArgumentParser) -> None:
    """--model, --cache and --device: shared by every command that embeds images."""
    parser.add_argument("--model", metavar="FILE", help="model checkpoint to use (default: the shipped model)")
    parser.add_argument(
        "--cache",
        metavar="FILE",
        help="embedding cache database (default: in the user data folder); ':memory:' for none",
    )
    parser.add_argument("--device", default="auto", metavar="D", help="auto (default), cpu, cuda or cuda:N")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``dedup-app`` command."""
    parser = argparse.ArgumentParser(
        prog="dedup-app",
        description="Find exact and near-duplicate images (resized, recompressed, cropped, rotated, recoloured, "
        "watermarked copies) with a Siamese CNN and FAISS.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    gui = sub.add_parser(
        "gui",
        help="open the window (the default with no command)",
        description="Open the desktop window; with PATHs, add them to the sources and scan at once.",
    )
    gui.add_argument("paths", nargs="*", metavar="PATH", help="folders or image files to scan")
    gui.add_argument("--screenshot", metavar="FILE.png", help="scan, show the results, save the window, exit")
    gui.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"),
                     help="open the Changes tab and compare two images or folders of tiles")  # fmt: skip
    _add_engine_options(gui)

    scan = sub.add_parser(
        "scan",
        help="scan folders for duplicate images",
        description="Scan folders (recursively) and report groups of exact and near-duplicate images. "
        "Nothing is moved or deleted.",
    )
    scan.add_argument("paths", nargs="+", metavar="PATH", help="folders or image files to scan")
    scan.add_argument(
        "--threshold",
        type=_threshold,
        default=None,
        metavar="T",
        help="similarity (0-1] at which two images count as near-duplicates; higher is stricter "
        "(default: the model's calibrated threshold)",
    )
    _add_engine_options(scan)
    scan.add_argument("--json", metavar="FILE", help="write the full report as JSON ('-' for stdout)")
    scan.add_argument("--csv", metavar="FILE", help="write one row per grouped file as CSV ('-' for stdout)")
    scan.add_argument("--batch-size", type=_positive_int, default=32, metavar="N", help="images per model batch")
    scan.add_argument("--workers", type=_positive_int, default=2, metavar="N", help="image decoding threads")
    scan.add_argument("--show", type=_count_arg, default=20, metavar="N", help="groups to list on stdout (default 20)")
    scan.add_argument("--no-labels", action="store_true",
                      help="ignore the pairs labelled 'not duplicate' in the window (by default they are never "
                      "grouped)")  # fmt: skip
    scan.add_argument("--no-geometric-check", action="store_true",
                      help="group by similarity alone: do not check look-alike pairs for the same picture geometry "
                      "(faster on a first scan; more photos of one subject grouped as copies)")  # fmt: skip
    scan.add_argument("--cluster", metavar="ADDRESS",
                      help="read and embed the files on a Ray cluster: 'local' (a Ray runtime on this machine) or "
                      "ray://HOST:PORT; the workers must see the files at the same paths (needs the 'cluster' "
                      "extra)")  # fmt: skip
    scan.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    scan.add_argument("-v", "--verbose", action="store_true", help="list unreadable files and log details")
    verify = sub.add_parser(
        "verify",
        help="say whether B is a copy of A, with a calibrated probability",
        description="Compare two images with the model: their similarity, the probability that B is a copy of A "
        "(calibrated on held-out pairs, see the model card), the verdict at the model's threshold (the one scan "
        "groups by), and what the aligned comparison finds (mirror, quarter turns, crop box, share of pixels that "
        "differ). Exit status: 0 duplicate, 1 not duplicate, 2 error (like cmp).",
    )
    verify.add_argument("a", metavar="A", help="an image file")
    verify.add_argument("b", metavar="B", help="the image file to check against A")
    verify.add_argument("--json", metavar="FILE", help="write the result as JSON ('-' for stdout)")
    verify.add_argument("--threshold", type=_threshold, default=None, metavar="T",
                        help="similarity (0-1] for the verdict (default: the model's threshold)")  # fmt: skip
    verify.add_argument("--model", metavar="FILE", help="model checkpoint to use (default: the active model)")
    verify.add_argument("--device", default="auto", metavar="D", help="auto (default), cpu, cuda or cuda:N")

    _add_find_parser(sub)

    change = sub.add_parser(
        "change",
        help="map what changed between two images or two folders of tiles",
        description="Compare BEFORE with AFTER (two images, or two folders whose tiles are paired by their path "
        "inside each folder) and write a mask, an overlay, a heatmap, a GeoJSON of the changed regions (and a "
        "GeoTIFF mask for georeferenced input) per pair, plus summary.json and summary.csv.",
    )
    change.add_argument("before", metavar="BEFORE", help="image or folder (band files may be joined by commas)")
    change.add_argument("after", metavar="AFTER", help="image or folder of the later date")
    change.add_argument("--out", required=True, metavar="DIR", help="folder for the outputs (created)")
    change.add_argument(
        "--threshold", type=_threshold, default=None, metavar="T",
        help="change probability (0-1] above which a pixel counts as changed (default: automatic, the model's "
        "calibrated threshold)",
    )  # fmt: skip
    change.add_argument(
        "--min-area", type=_positive_int, default=64, metavar="PX",
        help="smallest changed region kept, in pixels (default 64)",
    )  # fmt: skip
    change.add_argument(
        "--model", metavar="NAME|FILE",
        help="the change model: general (default: the shipped head for any kind of change), buildings (the shipped "
        "head for new and demolished buildings), features (the encoder's feature difference, training-free), the id "
        "of a registered head (dedup-app models), or a change-head FILE. The default is the active registered head "
        "when there is one; while the general head is not installed, the default uses features and says so",
    )  # fmt: skip
    change.add_argument("--device", default="auto", metavar="D", help="auto (default), cpu, cuda or cuda:N")
    change.add_argument("--bands", metavar="R,G,B", help="bands of multiband rasters to show as RGB, 1-based")
    change.add_argument(
        "--method", choices=("features", "pixels"), default="features",
        help="features: the encoder's features, through the --model (default); pixels: change-vector analysis, "
        "for coarse land-cover imagery (no model)",
    )  # fmt: skip
    change.add_argument("--no-progress", action="store_true", help="no progress on stderr")

    from model_training.cli import TRAIN_DESCRIPTION, add_train_arguments

    train = sub.add_parser("train", help="fine-tune the model on labelled pairs (and/or edited copies of images)",
                           description=TRAIN_DESCRIPTION)  # fmt: skip
    add_train_arguments(train)
    _add_train_change_parser(sub)

    models = sub.add_parser("models", help="list, activate or roll back trained models and change heads",
                            description="The model registries: trained duplicate models and change heads, the "
                            "active one of each, roll back.")  # fmt: skip
    models.add_argument("action", nargs="?", default="list", choices=("list", "activate", "rollback"))
    models.add_argument("model_id", nargs="?", metavar="ID",
                        help="model or change-head id for activate ('default': the shipped one)")  # fmt: skip
    models.add_argument("--change", action="store_true",
                        help="rollback (or activate default) of the change heads, not of the model")  # fmt: skip
    models.add_argument("--cache", metavar="FILE", help="embedding cache whose old-model entries are dropped")
    return parser


def run_train_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """The ``train`` command (also ``python -m model_training``)."""
    if not _torch_for_training():
        return EXIT_USAGE
    from model_training.cli import train_main

    return train_main(args, parser, progress=_ProgressBar(enabled=not args.no_progress))


def _torch_for_training() -> bool:
    """Whether torch is there to train with; if not (the app bundle leaves it out), says so on stderr."""
    from dedup_app.core.onnx_encoder import NO_TORCH, torch_installed

    if torch_installed():
        return True
    print(f"dedup-app: error: training needs torch, which this installation of dedup-app leaves out: {NO_TORCH}",
          file=sys.stderr)  # fmt: skip
    return False


def _add_train_change_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """The ``train-change`` command's parser (its options live with the training code)."""
    from model_training.change_cli import TRAIN_CHANGE_DESCRIPTION, add_train_change_arguments

    parser = sub.add_parser("train-change", help="train a change head on labelled before/after pairs",
                            description=TRAIN_CHANGE_DESCRIPTION)  # fmt: skip
    add_train_change_arguments(parser)


def run_train_change_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """The ``train-change`` command."""
    if not _torch_for_training():
        return EXIT_USAGE
    from model_training.change_cli import train_change_main

    return train_change_main(args, parser, progress=_ProgressBar(enabled=not args.no_progress))


def run_models_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """The ``models`` command: both registries listed; ``activate`` finds which one has the id."""
    from dedup_app.core.registry import DEFAULT, ChangeHeadRegistry, ModelRegistry, drop_embeddings_of

    registry = ModelRegistry()
    heads = ChangeHeadRegistry()
    try:
        if args.action == "activate":
            if not args.model_id:
                parser.error("activate needs a model id (see 'dedup-app models')")
            change = args.change or (not registry.knows(args.model_id) and heads.knows(args.model_id))
            if change:
                return _change_head_switched(*heads.activate(args.model_id))
            old, new = registry.activate(args.model_id)
        elif args.action == "rollback":
            if args.change:
                return _change_head_switched(*heads.rollback())
            old, new = registry.rollback()
        else:
            if args.change:
                parser.error("--change is for rollback and activate; 'dedup-app models' lists both kinds")
            _list_models(registry, heads)
            return EXIT_OK
    except ValueError as exc:
        message = str(exc)
        if args.action == "activate" and not args.change and message.startswith("no model"):
            known = ", ".join([DEFAULT, *(e.model_id for e in registry.entries())])
            head_ids = ", ".join([*heads.builtins, *(e.model_id for e in heads.entries())])
            message = f"no model or change head {args.model_id!r} (models: {known}; change heads: {head_ids})"
        print(f"dedup-app: error: {printable(message)}", file=sys.stderr)
        return EXIT_USAGE
    from dedup_app.core.cache import CacheError

    try:
        dropped = drop_embeddings_of(old, args.cache) if old != new else 0
    except CacheError as exc:
        print(f"active model: {new} (was {old})")
        print(f"dedup-app: error: the old model's embeddings were not dropped: {printable(str(exc))}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"active model: {new} (was {old}; {dropped:,} cached embeddings of the old model dropped)")
    return EXIT_OK


def _change_head_switched(old: str, new: str) -> int:
    print(f"active change head: {new} (was {old})")
    return EXIT_OK


def _list_models(registry: Any, heads: Any) -> None:
    """``models list``: the duplicate models, then the change heads in their own section; ``*`` marks what is used
    (a chosen entry that cannot be used is flagged, and the default it falls back to is marked)."""
    from dedup_app.core.change.heads import DEFAULT_CHANGE_MODEL, DESCRIPTIONS, FEATURES, SHIPPED_HEADS, is_installed

    active = registry.active_id
    print(f"{'*' if active is None else ' '} default  (shipped)")
    for e in registry.entries():
        after = e.metrics.get("validation_after", {})
        f1 = f"val F1 {after['f1']:.3f}" if "f1" in after else ""
        note = f"  [unusable: {e.problem}]" if e.problem else ""
        print(f"{'*' if e.model_id == active else ' '} {e.model_id}  {e.name}  {f1}{note}")

    active = heads.active_id
    print("\nChange heads ('dedup-app change', the Changes tab):")
    shipped = (
        DEFAULT_CHANGE_MODEL
        if is_installed(DEFAULT_CHANGE_MODEL)
        else f"{FEATURES} ({DEFAULT_CHANGE_MODEL} is not installed)"
    )
    print(f"{'*' if active is None else ' '} default  (shipped: {shipped})")
    for name in (*SHIPPED_HEADS, FEATURES):
        note = "" if is_installed(name) else "  [not installed]"
        print(f"{'*' if name == active else ' '} {name}  ({DESCRIPTIONS[name]}){note}")
    for e in heads.entries():
        scores: list[str] = []
        for key, what in (("validation", "val F1"), ("held_out", "held-out F1")):
            score = e.metrics.get(key, {}).get("f1") if isinstance(e.metrics.get(key), dict) else None
            if isinstance(score, (int, float)):
                scores.append(f"{what} {score:.3f}")
        note = f"  [unusable: {e.problem}]" if e.problem else ""
        print(f"{'*' if e.model_id == active else ' '} {e.model_id}  {printable(e.name)}  {', '.join(scores)}{note}")


def _bands(text: str | None, parser: argparse.ArgumentParser) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        bands = tuple(int(b) for b in text.split(","))
    except ValueError:
        parser.error(f"--bands: expected numbers like 3,2,1, got {text!r}")
    if not 1 <= len(bands) <= 3 or min(bands) < 1:
        parser.error(f"--bands: one to three band numbers from 1, got {text!r}")
    return bands


def run_change_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """The ``change`` command."""
    bands = _bands(args.bands, parser)
    from dedup_app.core.change.detect import open_change_detector
    from dedup_app.core.change.heads import (
        FEATURES,
        ChangeModelError,
        ChangeModelNotInstalled,
        default_change_model,
        resolve_change_model,
    )
    from dedup_app.core.change.pipeline import ChangeInputError, ChangeOptions, pair_inputs, run_change
    from dedup_app.core.onnx_encoder import open_embedder
    from dedup_app.core.progress import drive

    try:
        pairs = pair_inputs(args.before, args.after)
    except ChangeInputError as exc:
        parser.error(str(exc))
    _check_output_folder(args.out, "--out", parser)
    if args.method == "pixels" and args.model is not None:
        parser.error("--model is for --method features; --method pixels compares colours and uses no model")
    header: dict[str, str] = {}
    try:
        if args.method == "pixels":
            head_path = None
        elif args.model is None:
            label, head_path, note = default_change_model()
            header["change_model"] = label
            if note:
                print(f"dedup-app: note: {note}", file=sys.stderr)
                header["change_model_note"] = note
        else:
            header["change_model"], head_path = resolve_change_model(args.model)
    except ChangeModelNotInstalled as exc:
        print(f"dedup-app: error: {exc}; use --model {FEATURES} (training-free) instead", file=sys.stderr)
        return EXIT_USAGE
    except ChangeModelError as exc:
        print(f"dedup-app: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        detector = open_change_detector(open_embedder(None, args.device), head_path, args.method)
    except (ValueError, FileNotFoundError) as exc:
        print(f"dedup-app: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    options = ChangeOptions(args.threshold, args.min_area, bands)
    progress = _ProgressBar(enabled=not args.no_progress)
    run = run_change(args.before, args.after, args.out, detector, options, header=header)
    try:
        summaries = drive(run, progress)
    except KeyboardInterrupt:
        run.close()  # a Ctrl-C between two pairs: closing the run writes the summary of the pairs finished so far
        progress.close()
        print(f"Cancelled; the pairs finished so far are written, and listed in "
              f"{display_path(os.path.join(args.out, 'summary.json'))}.", file=sys.stderr)  # fmt: skip
        return EXIT_CANCELLED
    finally:
        progress.close()
    failed = [s for s in summaries if s.get("error")]
    print(f"Compared {len(pairs) - len(failed):,} of {len(pairs):,} pairs with {detector.model_name}; "
          f"outputs in {args.out}")  # fmt: skip
    for s in summaries:
        if s.get("error"):
            print(f"  {s['name']}: could not compare: {s['error']}")
        else:
            area = f", {s['changed_m2']:,.0f} m2" if s.get("changed_m2") is not None else ""
            placed = (f"shift {s['shift_x_px']:+.1f}, {s['shift_y_px']:+.1f} px" if s["alignment_verified"]
                      else f"alignment not verified: {s['alignment_note']}")  # fmt: skip
            print(f"  {s['name']}: {s['changed_fraction']:.1%} changed, {s['regions']} regions{area}, {placed}")
    return EXIT_FAILURE if failed and len(failed) == len(summaries) else EXIT_OK


class _ProgressBar:
    """Progress on stderr: one tqdm bar that follows the scan's stage on a terminal, plain lines in a log.

    In a log (stderr not a terminal) a line is written when a stage starts and ends, and every ``interval``
    seconds in between, so CI logs stay readable.
    """

    def __init__(self, enabled: bool, interval: float = 10.0) -> None:
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.interval = interval
        self.bar = None
        self.stage: str | None = None
        self.last_line = 0.0

    def __call__(self, report: object) -> None:
        if not self.enabled:
            return
        stage, done, total = report.stage, report.done, report.total  # type: ignore[attr-defined]
        if not self.tty:
            now = time.monotonic()
            finished = total is not None and done >= total
            if stage != self.stage or finished or now - self.last_line >= self.interval:
                count = f"{done:,}/{total:,}" if total is not None else f"{done:,}"
                print(f"{stage}: {count}", file=sys.stderr, flush=True)
                self.stage, self.last_line = stage, now
            return
        from tqdm import tqdm

        if stage != self.stage:
            self.close()
            self.bar = tqdm(total=total, desc=stage, unit="img", file=sys.stderr, dynamic_ncols=True, leave=False)
            self.stage = stage
        assert self.bar is not None
        if total is not None and self.bar.total != total:
            self.bar.total = total
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _check_output_folder(path: str, flag: str, parser: argparse.ArgumentParser) -> None:
    """Make the output folder ``path`` (and its parents), or refuse before any work with one line saying why: a file
    in the way, a folder that cannot be made or written."""
    where = printable(path)
    if os.path.exists(path) and not os.path.isdir(path):
        parser.error(f"{flag} {where}: is a file, not a folder")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        parser.error(f"{flag} {where}: the folder cannot be made: {describe_os_error(exc)}")
    if not os.access(path, os.W_OK | os.X_OK):
        parser.error(f"{flag} {where}: the folder cannot be written: permission denied")


def _check_output(path: str | None, flag: str, parser: argparse.ArgumentParser) -> None:
    """Refuse, before any work, an output file that cannot be written: a folder, a missing or read-only folder.

    Opens the file for appending (nothing written) and removes it again if it did not exist before.
    """
    if not path or path == "-":
        return
    where = printable(path)
    folder = os.path.dirname(os.path.abspath(path)) or "."
    if not os.path.isdir(folder):
        problem = "is not a folder" if os.path.exists(folder) else "does not exist"
        parser.error(f"{flag} {where}: folder {printable(folder)} {problem}")
    if os.path.isdir(path):
        parser.error(f"{flag} {where}: is a folder; give a file name")
    existed = os.path.lexists(path)  # a dangling link counts: its target is created, the link kept
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        parser.error(f"{flag} {where}: cannot be written: {describe_os_error(exc)}")
    if mode is not None and not stat.S_ISREG(mode):  # /dev/stdout, a named pipe: opening could block
        if not os.access(path, os.W_OK):
            parser.error(f"{flag} {where}: cannot be written: permission denied")
        return
    try:
        with open(path, "a"):
            pass
    except OSError as exc:
        parser.error(f"{flag} {where}: cannot be written: {describe_os_error(exc)}")
    if not existed:
        with contextlib.suppress(OSError):
            os.remove(path)


def _check_scan_outputs(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if args.json == "-" and args.csv == "-":
        parser.error("--json - and --csv - cannot both write to stdout; send one of them to a file")
    if args.json and args.csv and args.json != "-" and os.path.abspath(args.json) == os.path.abspath(args.csv):
        parser.error(f"--json and --csv name the same file {printable(args.json)}")
    if args.cache == "":
        parser.error("--cache: empty path (use ':memory:' for no cache)")
    for flag, out in (("--json", args.json), ("--csv", args.csv)):
        if out and out != "-" and args.cache and os.path.abspath(out) == os.path.abspath(args.cache):
            parser.error(f"{flag} {printable(out)} is the cache file given to --cache")
        _check_output(out, flag, parser)


def _open_cache(path: str | None) -> EmbeddingCache | None:
    """The embedding cache, or ``None`` after a one-line error. The default cache, when unusable, is replaced by
    an in-memory one with a warning; a cache named with --cache is not (the user asked for that file)."""
    from dedup_app.core.cache import CacheError, EmbeddingCache

    try:
        return EmbeddingCache(path)
    except (CacheError, OSError, sqlite3.Error) as exc:
        reason = printable(str(exc))
        if path is not None:
            print(f"dedup-app: error: {reason}. Give another --cache file, or ':memory:' for none.", file=sys.stderr)
            return None
        print(f"dedup-app: warning: {reason}; scanning without a cache, nothing is kept for the next scan",
              file=sys.stderr)  # fmt: skip
        return EmbeddingCache(":memory:")


def _add_find_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    find = sub.add_parser(
        "find",
        help="find the copies of an image among everything scanned",
        description="Find the files most similar to each QUERY image among every file scanned with the model "
        "(the search index beside the cache), ranked by similarity, with whether each is at or above the model's "
        "threshold (what scan would group) and the calibrated probability that it is a copy. Exit status: 0 when a "
        "query has a match at or above the threshold, 1 when none has, 2 on an error (a query that cannot be read "
        "included; the other queries are still answered).",
    )
    find.add_argument("queries", nargs="+", metavar="QUERY", help="image files to look for")
    find.add_argument("--in", dest="roots", action="append", metavar="PATH",
                      help="only files under PATH (repeatable); PATH is scanned first if nothing under it is cached "
                      "yet")  # fmt: skip
    find.add_argument("--rescan", action="store_true", help="scan the --in paths again first (new, changed and "
                      "removed files)")  # fmt: skip
    find.add_argument("--top", type=_positive_int, default=10, metavar="K", help="matches per query (default 10)")
    find.add_argument("--min-similarity", type=_threshold, default=None, metavar="S",
                      help="only matches at least this similar (0-1]")  # fmt: skip
    find.add_argument("--json", metavar="FILE", help="write the result as JSON ('-' for stdout)")
    _add_engine_options(find)
    find.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def run_find_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """The ``find`` command: exit 0 when some query has a duplicate, 1 when none has, 2 on an error."""
    missing = [p for p in args.roots or () if not os.path.exists(p)]
    if missing:
        parser.error("--in: not found: " + ", ".join(printable(p) for p in missing))
    if args.cache == "":
        parser.error("--cache: empty path (use ':memory:' for no cache)")
    _check_output(args.json, "--json", parser)
    from dedup_app.core.cache import CacheError
    from dedup_app.core.find import find_similar
    from dedup_app.core.onnx_encoder import open_embedder
    from dedup_app.core.progress import drive

    try:
        embedder = open_embedder(args.model, args.device)
    except (ValueError, FileNotFoundError) as exc:
        print(f"dedup-app: error: {printable(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    cache = _open_cache(args.cache)
    if cache is None:
        return EXIT_USAGE
    progress = _ProgressBar(enabled=not args.no_progress)
    try:
        search = find_similar(embedder, cache, args.queries, args.roots, args.top, args.min_similarity,
                              rescan=args.rescan)  # fmt: skip
        result = drive(search, progress)
    except KeyboardInterrupt:
        progress.close()
        print("Cancelled.", file=sys.stderr)
        return EXIT_CANCELLED
    except (CacheError, sqlite3.Error) as exc:
        progress.close()
        print(f"dedup-app: error: cache {printable(str(cache.path))}: {printable(str(exc))}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        progress.close()
        with contextlib.suppress(sqlite3.Error):
            cache.close()
    if args.json:
        _write_json(result.to_json(), args.json)
    if args.json != "-":
        _print_matches(result)
    for q in result.queries:
        if q.error is not None:
            print(f"dedup-app: error: {printable(q.query)}: {printable(q.error)}", file=sys.stderr)
    if result.stale:
        print(f"{count_of(result.stale, 'file')} changed or removed since scanned left out; scan again to update "
              "the index.", file=sys.stderr)  # fmt: skip
    if any(q.error is not None for q in result.queries):
        return EXIT_USAGE
    return EXIT_OK if any(m.duplicate for q in result.queries for m in q.matches) else EXIT_FAILURE


def _write_json(data: object, target: str) -> None:
    """Write ``data`` as indented JSON to a file, or to stdout for ``-``."""
    import json

    text = json.dumps(data, indent=2) + "\n"
    if target == "-":
        sys.stdout.write(text)
    else:
        with open(target, "w", encoding="utf-8") as f:
            f.write(text)


def _print_matches(result: Any) -> None:
    if result.scanned:
        print(f"Scanned first: {', '.join(_shown(p) for p in result.scanned)}")
    print(f"Searched {count_of(result.indexed, 'indexed image')} (model {result.model_id}, threshold "
          f"{result.threshold:.3f}).")  # fmt: skip
    for q in result.queries:
        if q.error is not None:
            continue
        print(f"\n{_shown(q.query)}")
        if not q.matches:
            print("   no similar image found")
        for rank, m in enumerate(q.matches, 1):
            sure = "" if m.probability is None else f"  copy {m.probability:6.1%}"
            size = f"{m.width}x{m.height}" if m.width else "?"
            verdict = "duplicate" if m.duplicate else "         "
            print(f"  {rank:3}. {m.similarity:.3f}  {verdict}{sure}  {size:>11}  {format_bytes(m.bytes):>9}  "
                  f"{_shown(m.path)}")  # fmt: skip


def run_verify_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """The ``verify`` command: exit 0 for a duplicate, 1 for not, 2 for an error."""
    for path in (args.a, args.b):
        if not os.path.isfile(path):
            problem = "is a folder, not an image file" if os.path.isdir(path) else "not found"
            print(f"dedup-app: error: {printable(path)}: {problem}", file=sys.stderr)
            return EXIT_USAGE
    _check_output(args.json, "--json", parser)
    from dedup_app.core.imageio import ImageLoadError
    from dedup_app.core.onnx_encoder import open_embedder
    from dedup_app.core.verify import verify_pair

    try:
        embedder = open_embedder(args.model, args.device)
        verdict = verify_pair(embedder, args.a, args.b, args.threshold)
    except (ValueError, FileNotFoundError, ImageLoadError) as exc:
        print(f"dedup-app: error: {printable(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        _write_json(verdict.to_json(), args.json)
    if args.json != "-":
        sure = "" if verdict.probability is None else f", probability of a copy {verdict.probability:.1%}"
        answer = "duplicate" if verdict.duplicate else "not a duplicate"
        print(f"{answer}: similarity {verdict.similarity:.3f} (threshold {verdict.threshold:.3f}){sure}")
        if verdict.matching_points is not None and not verdict.duplicate:
            print(f"alike, but only {verdict.matching_points} keypoints map onto each other: two pictures of one "
                  "subject, not copies")  # fmt: skip
        if verdict.duplicate:  # for different pictures the best alignment means nothing
            how = ["mirrored"] if verdict.mirror else []
            if verdict.quarter_turns:
                how.append(f"turned {90 * verdict.quarter_turns} degrees anticlockwise")
            lined_up = ("B lines up with A once " + " and ".join(how)) if how else "B lines up with A as it is"
            if verdict.crop_box is not None:
                x0, y0, x1, y1 = verdict.crop_box
                lined_up += f"; it shows A from ({x0}, {y0}) to ({x1}, {y1})"
            print(f"{lined_up}; {verdict.differs:.1%} of the pixels there differ")
    return EXIT_OK if verdict.duplicate else EXIT_FAILURE


def run_scan(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """The ``scan`` command."""
    missing = [p for p in args.paths if not os.path.exists(p)]
    if missing:
        parser.error("not found: " + ", ".join(printable(p) for p in missing))
    _check_scan_outputs(args, parser)

    from dedup_app.core.cache import CacheError
    from dedup_app.core.duplicates import scan_and_search
    from dedup_app.core.onnx_encoder import open_embedder
    from dedup_app.core.progress import drive
    from dedup_app.core.report import suggested, write_csv, write_json
    from dedup_app.core.scan import ScanOptions

    try:  # on the CPU with ONNX Runtime and a model seen before, torch is not even imported
        embedder = open_embedder(args.model, args.device)
    except (ValueError, FileNotFoundError) as exc:
        print(f"dedup-app: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    threshold = args.threshold if args.threshold is not None else float(embedder.threshold)
    not_duplicates = set() if args.no_labels else _not_duplicate_labels()

    progress = _ProgressBar(enabled=not args.no_progress)
    started = time.monotonic()
    cache = _open_cache(args.cache)
    if cache is None:
        return EXIT_USAGE
    try:
        options = ScanOptions(batch_size=args.batch_size, decode_workers=args.workers)
        if args.cluster:
            import dataclasses

            from dedup_app.core.cluster import ClusterError, embed_on_cluster
            from dedup_app.core.registry import ModelRegistry

            model_file = args.model or str(ModelRegistry().active_path())
            try:
                remote = embed_on_cluster(args.cluster, model_file, args.device, options.max_pixels)
            except ClusterError as exc:
                print(f"dedup-app: error: {exc}", file=sys.stderr)
                return EXIT_USAGE
            options = dataclasses.replace(options, remote=remote)
        # the window's scan orchestration, searched only down to the threshold (no slider to serve here)
        search = scan_and_search(args.paths, embedder, cache, options, floor=threshold, threshold=threshold,
                                 check=not args.no_geometric_check)  # fmt: skip
        finder = drive(search, progress)
        result = finder.result
        groups = finder.groups(threshold, not_duplicates)
        split = finder.labelled_apart(threshold, not_duplicates)
    except KeyboardInterrupt:
        progress.close()
        print("Cancelled. Images read so far are cached; the next scan continues from there.", file=sys.stderr)
        return EXIT_CANCELLED
    except CacheError as exc:  # damaged mid-scan, and it could not be moved aside
        progress.close()
        print(f"dedup-app: error: {printable(str(exc))}", file=sys.stderr)
        return EXIT_FAILURE
    except sqlite3.Error as exc:  # the cache failed mid-scan for another reason than damage: a full disk, a lock
        progress.close()
        print(f"dedup-app: error: cache {printable(str(cache.path))}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        progress.close()
        with contextlib.suppress(sqlite3.Error):
            cache.close()
    elapsed = time.monotonic() - started
    if finder.graph is not None and finder.graph.capped:  # the bound on neighbours per image bit
        g, k = finder.graph, finder.graph.max_neighbors or 0
        print(f"{count_of(g.capped, 'image has', 'images have')} more than {count_of(k, 'similar image')} above "
              f"{g.min_threshold:.3f}; only the {k} most similar to each were kept, so very large groups may be split.",
              file=sys.stderr)  # fmt: skip

    code = EXIT_OK
    apart = finder.apart_at(threshold) if finder.checked_at is not None else None
    decisions = suggested(groups)  # what the window would tick by itself, with its default rule
    outputs = (
        ("--json", args.json, lambda: write_json(args.json, result, groups, threshold, decisions, kept_apart=apart)),
        ("--csv", args.csv, lambda: write_csv(args.csv, groups, decisions)),
    )
    for flag, out, write in outputs:
        if not out:
            continue
        try:
            write()
        except OSError as exc:
            if out == "-" and isinstance(exc, BrokenPipeError):
                raise
            again = " The images are cached: scanning again is quick." if cache.path is not None else ""
            print(f"dedup-app: error: {flag} {printable(out)}: the report could not be written: "
                  f"{describe_os_error(exc)}.{again}", file=sys.stderr)  # fmt: skip
            code = EXIT_FAILURE
    if args.json != "-" and args.csv != "-":
        _print_summary(result, groups, decisions, threshold, elapsed, args)
        if split:
            print(f"{count_of(split, 'pair')} labelled 'not duplicate' in the window kept apart (--no-labels to "
                  "ignore the labels).")  # fmt: skip
        if apart:
            print(f"{count_of(apart, 'look-alike pair')} above the threshold kept apart: the pictures do not "
                  "map onto each other (--no-geometric-check to group them).")  # fmt: skip
    return code


def _not_duplicate_labels() -> set[frozenset[str]]:
    """The pairs the user labelled "not duplicate" in the window (content-hash pairs); none when there is no label
    store yet (nothing is created) or it cannot be read (a warning says so)."""
    from dedup_app.core.labels import LabelStore, default_labels_path

    path = default_labels_path()
    if not path.exists():
        return set()
    store = None
    try:
        store = LabelStore(path)
        return store.not_duplicate_pairs()
    except (sqlite3.Error, OSError) as exc:
        print(f"dedup-app: warning: labels {printable(str(path))} cannot be read ({exc}); scanning without them",
              file=sys.stderr)  # fmt: skip
        return set()
    finally:
        if store is not None:
            store.close()


def _print_summary(result, groups, decisions, threshold, elapsed, args) -> None:  # type: ignore[no-untyped-def]
    from dedup_app.core.marking import SURE_SIMILARITY

    st = result.stats
    exact = sum(1 for g in groups if g.kind == "exact")
    removable = sum(len(g.members) - 1 for g in groups)
    reclaim = sum(g.reclaimable_bytes for g in groups)
    # each file found counts once: read + from the cache + identical copies + could not be read = files
    print(
        f"Scanned {count_of(st.files, 'image file', 'image files')} in {format_duration(elapsed)}: "
        f"{st.decoded:,} read, {st.cached:,} from the cache, "
        f"{count_of(st.copies, 'identical copy', 'identical copies')}, {st.failed:,} could not be read; "
        f"model {result.model_id}, threshold {threshold:.3f}."
    )
    if getattr(args, "cluster", None):
        print(f"{st.remote:,} of the files read were read and embedded on the Ray cluster ({args.cluster}).")
    unlisted = len(result.errors) - st.failed  # folders and links the walk could not open
    if unlisted > 0:
        print(f"{count_of(unlisted, 'other path', 'other paths')} could not be opened (missing, no permission, "
              f"or a broken link).")  # fmt: skip
    if result.errors:
        if args.verbose:
            for e in result.errors:
                print(f"  {_shown(e.path)}: {printable(e.error)}")
        else:
            print("The files and paths that could not be read are listed with --verbose or in --json.")
    if not groups:
        print("No duplicates found.")
        return
    print(
        f"Found {count_of(len(groups), 'group')} ({exact:,} exact, {len(groups) - exact:,} near-duplicate): "
        f"{count_of(removable, 'file')} could be removed, {format_bytes(reclaim)}."
    )
    to_review = [d.review for d in decisions]
    review = sum(to_review)
    if review:
        print(f"{count_of(review, 'group')} below {SURE_SIMILARITY:.2f} similarity may be different photos of one "
              "subject (another viewpoint, a burst): check those before removing anything.")  # fmt: skip
    for n, g in enumerate(groups[: max(0, args.show)], 1):
        print(f"\nGroup {n} ({g.kind}{', review' if to_review[n - 1] else ''}, {len(g.members)} files, "
              f"{format_bytes(g.reclaimable_bytes)} reclaimable)")  # fmt: skip
        for k, m in enumerate(g.members):
            tag = "keep" if k == 0 else f"{m.similarity:.3f}"
            info = m.image.info
            print(f"  {tag:>5}  {_shown(m.image.path)}  {info.width}x{info.height}  {format_bytes(m.image.size)}")
    if len(groups) > args.show:
        print(f"\n... and {len(groups) - args.show:,} more groups (all of them with --json or --csv).")


def run_gui_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """The ``gui`` command (and ``dedup-app`` with no command)."""
    missing = [p for p in [*args.paths, *(args.compare or [])] if not os.path.exists(p)]
    if missing:
        parser.error("not found: " + ", ".join(missing))
    if args.screenshot:
        _check_output(args.screenshot, "--screenshot", parser)
        if not args.paths and not args.compare:
            parser.error("--screenshot needs a PATH to scan or --compare BEFORE AFTER")
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    try:
        from dedup_app.ui.app import has_screen, run_gui
        from dedup_app.ui.xcb import xcb_problem
    except ImportError as exc:
        print(f"dedup-app: error: the window needs PySide6 ({exc}); 'dedup-app scan' works without it", file=sys.stderr)
        return EXIT_FAILURE
    # where the window cannot open, Qt would abort the process: say why and scan the PATHs on the command line
    if not has_screen():
        reason, hint = "no screen found (no DISPLAY or WAYLAND_DISPLAY)", ", or set QT_QPA_PLATFORM=offscreen"
    elif problem := xcb_problem():
        reason, hint = f"the window cannot open: {problem}", ""
    else:
        return run_gui(args.paths, args.screenshot, args.model, args.device, args.cache, args.compare)
    if not args.paths:
        print(f"dedup-app: error: {reason}. Use 'dedup-app scan PATH' for the command line{hint}.", file=sys.stderr)
        return EXIT_USAGE
    print(f"dedup-app: {reason}: scanning on the command line instead of opening the window.", file=sys.stderr)
    scan_args = build_parser().parse_args(["scan", *args.paths, "--device", args.device])
    scan_args.model, scan_args.cache = args.model, args.cache
    return run_scan(scan_args, parser)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dedup-app`` command."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["gui"])
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("faiss").setLevel(logging.WARNING)  # its loader logs CPU feature probing at INFO
    try:
        code = _run_command(args, parser)
        sys.stdout.flush()  # a closed pipe shows here, not as an "Exception ignored" message at exit
    except BrokenPipeError:
        # stdout's reader went away (dedup-app scan ... | head): stop quietly. As the Python docs advise, point
        # stdout at devnull so that the flush at exit does not raise again.
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILURE
    return code


def _run_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.command == "scan":
        return run_scan(args, parser)
    if args.command == "gui":
        return run_gui_command(args, parser)
    if args.command == "verify":
        return run_verify_command(args, parser)
    if args.command == "find":
        return run_find_command(args, parser)
    if args.command == "change":
        return run_change_command(args, parser)
    if args.command == "train":
        return run_train_command(args, parser)
    if args.command == "models":
        return run_models_command(args, parser)
    if args.command == "train-change":
        return run_train_change_command(args, parser)
    parser.error(f"unknown command {args.command}")
    return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
