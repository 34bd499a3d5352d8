"""``sam2serve``: the command line of the sam2-serve client.

    sam2serve track VIDEO --frame F --point X,Y [--point X,Y ...] [--label 1,0] [--box ...] -o Z
    sam2serve track VIDEO --frame F --text TEXT -o Z
    sam2serve sessions ls | show SESSION | rm SESSION [SESSION ...]
    sam2serve export SESSION --format coco|png_zip|davis|mp4 -o FILE [--obj-id K]
    sam2serve health

Progress bars (with rates and ETA) go to stderr, results to stdout. Exit codes: see EXIT_CODES.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tqdm import tqdm

from sam2serve.client import Client
from sam2serve.errors import (
    APIError,
    NotFoundError,
    Sam2ServeError,
    ServiceUnavailableError,
    TransportError,
    UnauthorizedError,
)
from sam2serve.models import Session
from sam2serve.track_zip import write_track_zip
from sam2serve.transfers import Progress

EXIT_OK = 0
EXIT_API_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_UNAVAILABLE = 4
EXIT_UNAUTHORIZED = 5
EXIT_INTERRUPTED = 130
EXIT_CODES = f"""exit codes:
  {EXIT_OK}    done
  {EXIT_API_ERROR}    the server refused the request (bad video, invalid prompt, conflict...)
  {EXIT_USAGE}    bad command line
  {EXIT_NOT_FOUND}    no such session or object (or it belongs to another API key)
  {EXIT_UNAVAILABLE}    server unreachable, not ready, or still at capacity after the retries
  {EXIT_UNAUTHORIZED}    missing or wrong API key
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C)"""


# ---- argument types -------------------------------------------------------------------------


def numbers(text: str, count: int) -> tuple[float, ...]:
    """``count`` comma-separated numbers, as argparse's type check (a usage error, exit 2)."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != count:
        raise argparse.ArgumentTypeError(f"expected {count} comma-separated numbers, got {text!r}")
    return values


def point(text: str) -> tuple[float, float]:
    x, y = numbers(text, 2)
    return x, y


def box(text: str) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = numbers(text, 4)
    return x0, y0, x1, y1


def labels(text: str) -> list[int]:
    values = text.split(",")
    if any(v.strip() not in ("0", "1") for v in values):
        raise argparse.ArgumentTypeError(f"labels are comma-separated 1s and 0s, got {text!r}")
    return [int(v) for v in values]


# ---- the parser -----------------------------------------------------------------------------


def connection_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """--url, --api-key and --quiet, accepted before and after the command (the command's
    copies default to SUPPRESS so they do not overwrite values given before it)."""

    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument(
        "--url",
        default=default(None),
        help="server root, e.g. http://host:8000 (env SAM2SERVE_URL; default http://127.0.0.1:8000)",
    )
    parser.add_argument(
        "--api-key",
        default=default(None),
        help="sent as Authorization: Bearer (env SAM2SERVE_API_KEY)",
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", default=default(False), help="no progress bars"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sam2serve",
        description="Client of a sam2-serve SAM 2 video segmentation server.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    connection_options(parser, defaults=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    track = subcommand(
        commands,
        "track",
        "track one object through a video: a ZIP of one PNG mask per frame, as POST /track",
    )
    track.add_argument("video", type=Path, help="the video file (uploaded, streamed from disk)")
    track.add_argument("--frame", type=int, required=True, help="frame index of the prompts")
    track.add_argument(
        "--point", type=point, action="append", default=[], help="X,Y in source pixels; repeat"
    )
    track.add_argument("--label", type=labels, help="1 (object) or 0 (background) per point")
    track.add_argument("--box", type=box, help="x0,y0,x1,y1 around the object")
    track.add_argument(
        "--text",
        help="instead of points or a box: every instance of this text on the frame (the "
        "server's concept detector), tracked together",
    )
    track.add_argument("-o", "--output", type=Path, required=True, help="the ZIP to write")
    track.add_argument(
        "--keep-session", action="store_true", help="keep the session on the server afterwards"
    )

    sessions = commands.add_parser("sessions", help="list, show or delete sessions")
    actions = sessions.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = subcommand(actions, "ls", "list sessions")
    ls.add_argument("--json", action="store_true", help="print the sessions as JSON")
    subcommand(actions, "show", "one session as JSON").add_argument("session_id")
    subcommand(actions, "rm", "delete sessions").add_argument("session_ids", nargs="+")

    export = subcommand(commands, "export", "download a session's masks")
    export.add_argument("session_id")
    export.add_argument("--format", choices=["coco", "png_zip", "davis", "mp4"], required=True)
    export.add_argument("--obj-id", type=int, help="only this object")
    export.add_argument("-o", "--output", type=Path, required=True, help="the file to write")

    subcommand(commands, "health", "the server's health report")
    return parser


def subcommand(
    commands: argparse._SubParsersAction, name: str, help: str
) -> argparse.ArgumentParser:
    """A command's parser, taking the connection options after the command too."""
    parser = commands.add_parser(name, help=help, description=help)
    connection_options(parser, defaults=False)
    return parser


# ---- progress -------------------------------------------------------------------------------


@contextmanager
def progress_bar(description: str, unit: str, total: int | None, quiet: bool) -> Iterator[Progress]:
    """A tqdm bar on stderr, as a callback taking (done, total): bytes in KiB/MiB with their
    rate, frames as frames/s; the ETA from the rate."""
    scaled = unit == "B"
    with tqdm(
        total=total,
        desc=description,
        unit=unit,
        unit_scale=scaled,
        unit_divisor=1024 if scaled else 1000,
        disable=quiet,
        file=sys.stderr,
    ) as bar:

        def advance(done: int, new_total: int | None) -> None:
            if new_total is not None and bar.total != new_total:
                bar.total = new_total
            bar.update(done - bar.n)

        yield advance


def announce_retry(quiet: bool) -> Callable[[ServiceUnavailableError, float], None]:
    def announce(error: ServiceUnavailableError, delay_s: float) -> None:
        if not quiet:
            print(f"server busy ({error.code}): retrying in {delay_s:g} s", file=sys.stderr)

    return announce


# ---- commands -------------------------------------------------------------------------------


def run_track(client: Client, args: argparse.Namespace) -> int:
    """``POST /track`` as a session: upload, prompt object 1 on the frame (or, with ``--text``,
    every instance of the text), propagate both ways from it, write the ZIP from the stored
    masks, delete the session."""
    with progress_bar("uploading", "B", None, args.quiet) as uploaded:
        session = client.create_session(args.video, progress=uploaded)
    try:
        if args.text is not None:
            client.add_text_prompt(session.session_id, args.frame, args.text)
        else:
            client.add_prompt(
                session.session_id,
                args.frame,
                obj_id=1,
                points=args.point or None,
                labels=args.label,
                box=args.box,
            )
        write_session_track_zip(client, session, args.frame, args.output, args.quiet)
    finally:
        if not args.keep_session:
            client.delete_session(session.session_id)
    print(args.output)
    if args.keep_session:
        print(f"session {session.session_id} kept", file=sys.stderr)
    return EXIT_OK


def write_session_track_zip(
    client: Client, session: Session, frame: int, output: Path, quiet: bool
) -> None:
    num_frames = session.video.num_frames
    with (
        progress_bar("propagating", "frames", num_frames, quiet) as propagated,
        client.propagate_stream(
            session.session_id, direction="both", start_frame_index=frame
        ) as stream,
    ):
        for done, _ in enumerate(stream, start=1):
            propagated(done, None)
    with progress_bar("writing masks", "frames", num_frames, quiet) as written:
        count = iter(range(1, num_frames + 1))
        write_track_zip(
            client.iter_masks(session.session_id),
            num_frames,
            (session.video.width, session.video.height),
            output,
            on_frame=lambda: written(next(count), None),
        )


def run_sessions(client: Client, args: argparse.Namespace) -> int:
    if args.action == "ls":
        sessions = client.list_sessions()
        if args.json:
            print("[" + ",".join(s.model_dump_json() for s in sessions) + "]")
        else:
            print(session_table(sessions))
    elif args.action == "show":
        print(client.get_session(args.session_id).model_dump_json(indent=2))
    else:
        for session_id in args.session_ids:
            client.delete_session(session_id)
            print(f"deleted {session_id}")
    return EXIT_OK


def session_table(sessions: Sequence[Session]) -> str:
    rows = [("SESSION", "STATUS", "FRAMES", "SIZE", "OBJECTS", "EXPIRES")]
    for s in sessions:
        size = f"{s.video.width}x{s.video.height}"
        expires = s.expires_at.isoformat(timespec="seconds")
        rows.append(
            (s.session_id, s.status, str(s.video.num_frames), size, str(len(s.objects)), expires)
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in rows)
    return "\n".join(line.rstrip() for line in lines)


def run_export(client: Client, args: argparse.Namespace) -> int:
    with progress_bar(f"downloading {args.format}", "B", None, args.quiet) as received:
        client.export(
            args.session_id, args.format, args.output, obj_id=args.obj_id, progress=received
        )
    print(args.output)
    return EXIT_OK


def run_health(client: Client, args: argparse.Namespace) -> int:
    report = client.health()
    print(report.model_dump_json(indent=2))
    return EXIT_OK if report.ready else EXIT_UNAVAILABLE


COMMANDS: dict[str, Callable[[Client, argparse.Namespace], int]] = {
    "track": run_track,
    "sessions": run_sessions,
    "export": run_export,
    "health": run_health,
}


# ---- entry points ---------------------------------------------------------------------------


def exit_code(error: Sam2ServeError) -> int:
    if isinstance(error, NotFoundError):
        return EXIT_NOT_FOUND
    if isinstance(error, UnauthorizedError):
        return EXIT_UNAUTHORIZED
    if isinstance(error, ServiceUnavailableError | TransportError):
        return EXIT_UNAVAILABLE
    return EXIT_API_ERROR


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; the exit code says how it went (EXIT_CODES)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "track":
        check_track_arguments(parser, args)
    try:
        with Client(args.url, api_key=args.api_key, on_retry=announce_retry(args.quiet)) as client:
            return COMMANDS[args.command](client, args)
    except Sam2ServeError as error:
        print(f"sam2serve: error: {describe(error)}", file=sys.stderr)
        return exit_code(error)
    except KeyboardInterrupt:
        print("sam2serve: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def describe(error: Sam2ServeError) -> str:
    """The server's message with its status and code, and the first validation problem."""
    if isinstance(error, APIError) and error.details.get("errors"):
        first = error.details["errors"][0]
        return f"{error} [{first}]"
    return str(error)


def check_track_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """What argparse cannot check alone: one kind of prompt, one label per point."""
    if args.text is not None and (args.point or args.box is not None):
        parser.error("--text takes no --point or --box: it is a prompt of its own")
    if not args.point and args.box is None and args.text is None:
        parser.error("track needs at least one --point, a --box or a --text")
    if args.label is not None and len(args.label) != len(args.point):
        parser.error(f"--label has {len(args.label)} values for {len(args.point)} points")


def run() -> None:
    """The console script."""
    sys.exit(main())
