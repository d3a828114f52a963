"""The `catsdogs` command: `catsdogs run [--SETTING VALUE ...] [--json]`."""

from __future__ import annotations

import argparse
import errno
import functools
import json
import logging
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from catsdogs.settings import COMMON_DEFAULTS, Settings, SettingsError, defaults_text, load_settings

USAGE_ERROR = 2


def _help(name: str, field: Any) -> str:
    """A setting's help: its description, and its default unless the description already says it (as most
    variant-dependent ones do); a variant-dependent one's defaults from the declarations; ranges as typed (0-999)."""
    text = str(field.description).replace("%", "%%")  # argparse formats help with %
    if "default" in text:
        return text
    default = field.default
    if default is None and name in COMMON_DEFAULTS:  # filled from the variant: not "none"
        return f"{text} {defaults_text(name)}".replace("%", "%%")
    shown = "none" if default is None else f"{default[0]}-{default[1]}" if isinstance(default, tuple) else default
    return f"{text} (default: {shown})"


def _add_setting_flags(parser: argparse.ArgumentParser, several: bool = False) -> None:
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        if several:  # catsdogs sweep: each flag may hold several values
            switch = {"nargs": "?", "const": "true"} if field.annotation in (bool, bool | None) else {}
            parser.add_argument(flag, dest=name, metavar="VALUES", action="append", default=None,
                                help=_help(name, field), **switch)
        elif field.annotation in (bool, bool | None):  # --one-warp, --one-warp true, --no-one-warp
            text = _help(name, field)
            parser.add_argument(flag, dest=name, metavar="true|false", nargs="?", const=True, default=None,
                                help=text if f"--no-{flag[2:]}" in text else f"{text}; --no-{flag[2:]}: off")
            parser.add_argument(f"--no-{flag[2:]}", dest=name, action="store_false", help=argparse.SUPPRESS)
        else:
            parser.add_argument(flag, dest=name, metavar=name.upper(), default=None, help=_help(name, field))


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 1 <= value <= 4096:
        raise argparse.ArgumentTypeError(f"must be between 1 and 4096, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="catsdogs", description="Cat or dog? Train and evaluate the convnet.")
    parser.add_argument("--version", action="version", version=versions_line())
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run", help="run the training flow locally",
        description="Run the training flow. Settings come from these flags, CATSDOGS_* environment "
                    "variables and a TOML file, in that order of precedence.")
    run.add_argument("--config", metavar="FILE", help="TOML file of settings (also CATSDOGS_CONFIG)")
    run.add_argument("--json", action="store_true", help="end with one JSON object of the results on stdout")
    _add_setting_flags(run)

    predict = commands.add_parser(
        "predict", help="classify images as cat or dog",
        description="Classify image files, folders (recursively) and glob patterns. Exit status: 0 every "
                    "input classified, 1 some failed, 2 usage error.")
    predict.add_argument("paths", nargs="+", metavar="PATH", help="image file, folder or glob pattern")
    predict.add_argument("--model", default="champion", help=MODEL_HELP)
    predict.add_argument("--workdir", default=None, help="where the model registry is (default: settings)")
    predict.add_argument("--json", action="store_true", help="one JSON object per line")
    predict.add_argument("--batch-size", type=_positive_int, default=32, help="images per model call (1 to 4096)")
    models = commands.add_parser(
        "models", help="list the registered models (champion, best and latest marked), or promote one",
        description="`catsdogs models` lists the registered models; `catsdogs models promote NAME` makes NAME "
                    "the champion, the model predict, web and the score-folder deployment use.")
    models.add_argument("action", nargs="?", choices=["list", "promote"], default="list",
                        help="list (default) or promote")
    models.add_argument("name", nargs="?", help="the model to promote: a registered name, or best or latest")
    models.add_argument("--workdir", default=None, help="where the model registry is (default: settings)")
    models.add_argument("--json", action="store_true", help="one JSON object per model")
    sweep = commands.add_parser(
        "sweep", help="train a grid of configurations (variants x seeds x ...) and compare them",
        description="Run the sweep flow: each configuration of the grid trains in its own training-flow run; "
                    "the comparison gives each configuration the mean and spread over its seeds. A setting flag "
                    "given several values (--seed 0,1,2 or --seed 0 --seed 1) is a dimension of the grid; given "
                    "one value, it is shared by every configuration. Exit status: 0 every configuration "
                    "finished, 1 some failed (their rows say why), 2 usage error.")
    sweep.add_argument("--config", metavar="FILE", help="TOML file: shared settings under [catsdogs], the grid "
                       "under [sweep] (setting = [values])")
    sweep.add_argument("--dask-address", metavar="ADDRESS", help="train on this existing Dask cluster "
                       "(tcp://host:8786); its workers must see the same workdir")
    sweep.add_argument("--dask-workers", type=_positive_int, metavar="N", help="train on a local Dask cluster of "
                       "N worker processes, at most one a configuration (default: none; one training at a time "
                       "in this process)")
    sweep.add_argument("--json", action="store_true", help="end with one JSON object of the comparison on stdout")
    _add_setting_flags(sweep, several=True)
    commands.add_parser("serve", help="register the scheduled deployments and run them (needs PREFECT_API_URL)")
    web = commands.add_parser("web", help="a web page and an HTTP API that answer cat or dog",
                              description="Serve GET / (a page to drop photos on), POST /predict and GET /healthz.")
    web.add_argument("--model", default="champion", help=MODEL_HELP)
    web.add_argument("--workdir", default=None, help="where the model registry is (default: settings)")
    web.add_argument("--host", type=_host, default="127.0.0.1",
                     help="address to listen on (default: 127.0.0.1, this machine; 0.0.0.0: every network)")
    web.add_argument("--port", type=_port, default=8000, help="port to listen on, 1-65535 (default: 8000)")
    return parser


MODEL_HELP = ("champion (default: the promoted model, or the best while none is promoted), best (the highest test "
              "accuracy, the newest on ties), latest, a registered model's name, or a .keras file")


def _port(text: str) -> int:
    """A TCP port for --port: argparse turns the ArgumentTypeError into one usage line and exit status 2."""
    port = int(text) if text.strip().isdecimal() else 0  # not isdigit: "²" is a digit that int() refuses
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is a whole number from 1 to 65535, got {text}")
    return port


def _host(text: str) -> str:
    """An address for --host: an empty one (an unset shell variable) would listen on every network."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty address would listen on every network; give 127.0.0.1 for this "
                                         "machine only, or 0.0.0.0 for every network on purpose")
    return text.strip()


def listen_problem(host: str, port: int) -> str | None:
    """Why the web app could not listen on HOST:PORT (a name that resolves to nothing, a port in use), said before
    it starts; None where it can."""
    import socket

    try:
        family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as err:
        return f"cannot listen on --host {host}: {getattr(err, 'strerror', None) or err}; give an address of this " \
               "machine, such as 127.0.0.1"
    with socket.socket(family, kind) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address[:2])
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                return f"port {port} on {host} is in use (another catsdogs web?); give another --port"
            return f"cannot listen on {host}:{port} ({err.strerror or err}); give another --host or --port"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """The command; SIGTERM and SIGHUP stop it as Ctrl-C does, so that what it started (a temporary Prefect
    server) is stopped too; output cut short by a closed pipe (`| head`) ends it quietly. The handlers stay
    installed after it returns, for what the process does as it exits (stopping that server)."""
    from catsdogs import runtime

    runtime.clear_stop_request()  # a stop asked of an earlier command in this process is not this one's
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    others_hook = sys.unraisablehook
    sys.unraisablehook = functools.partial(_stop_not_lost, others_hook)
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("catsdogs: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away: nothing more can be shown. Point stdout at /dev/null so that Python's
        # final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as err:  # the file system refused (a folder without permission, say): the user can fix that
        where = f": {err.filename}" if err.filename else ""
        print(f"catsdogs: {err.strerror or err}{where}; check its permissions, or choose another --workdir",
              file=sys.stderr)
        return 1
    finally:
        sys.unraisablehook = others_hook


def _interrupt(signum: int, _frame: Any) -> None:
    """Stop as Ctrl-C does, in every thread: training in a sweep's worker threads stops after its batch too."""
    from catsdogs import runtime

    runtime.request_stop()
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _stop_not_lost(others_hook: Callable[[Any], None], unraisable: Any) -> None:
    """A stop raised while Python ran a weakref callback or a __del__ is printed there, with a traceback, and
    dropped: a hung-up run went on downloading. Signal again, from another thread so that it comes after this
    hook, until the stop lands where it stops the command (a real signal, which also wakes a main thread that waits
    in a system call). Anything else goes to the hook that was there."""
    signame = str(unraisable.exc_value)
    if not isinstance(unraisable.exc_value, KeyboardInterrupt) or signame not in signal.Signals.__members__:
        return others_hook(unraisable)
    again = threading.Timer(0.01, signal.pthread_kill, (threading.main_thread().ident, signal.Signals[signame]))
    again.daemon = True
    again.start()
    return None


def negative_numbers_attached(argv: Sequence[str]) -> list[str]:
    """`--learning-rate -1e-3` read as `--learning-rate=-1e-3` (and a sweep's -1e-3,2e-3): argparse takes a
    value that starts with a dash for an option unless it reads like -1 or -0.5, so -1e-3 or -inf got "expected
    one argument" and a page of usage instead of the setting's own one line."""
    attached: list[str] = []
    for token in argv:
        previous = attached[-1] if attached else ""
        waits_for_value = previous.startswith("--") and previous != "--" and "=" not in previous  # "--" ends options
        if waits_for_value and token.startswith("-") and _is_number(token):
            attached[-1] = f"{previous}={token}"
        else:
            attached.append(token)
    return attached


def _is_number(token: str) -> bool:
    """A number, or a sweep's comma-separated numbers (-1e-3,2e-3)."""
    try:
        [float(part) for part in token.split(",")]
    except ValueError:
        return False
    return True


def _main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(negative_numbers_attached(sys.argv[1:] if argv is None else argv))
    if args.command == "models" and args.name is None and len(rest) == 1 and not rest[0].startswith("-"):
        args.name = rest.pop()  # `models promote --workdir W NAME`: argparse leaves a name after an option over
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command in ("predict", "models", "web"):  # no Prefect here to show the library's warnings: stderr does
        import logging

        handler = logging.StreamHandler()
        handler.setLevel(logging.WARNING)
        handler.setFormatter(logging.Formatter("catsdogs: warning: %(message)s"))
        logging.getLogger("catsdogs").addHandler(handler)
    if args.command == "predict":
        return predict(args)
    if args.command == "models":
        return list_models(args)
    if args.command == "web":
        return web(args)
    if args.command == "sweep":
        return sweep(args)
    if args.command == "serve":  # its own process: Prefect settings are applied before Prefect is imported
        os.execv(sys.executable, [sys.executable, "-m", "deployments.serve"])
    overrides: dict[str, Any] = {name: getattr(args, name) for name in Settings.model_fields}
    try:
        settings = load_settings(overrides, args.config)
        check_workdir(settings.workdir)
        from catsdogs.model import check_before_work

        check_before_work(settings)  # here too, before a temporary Prefect server starts
    except SettingsError as err:
        print(f"catsdogs: {err}", file=sys.stderr)
        return USAGE_ERROR
    epochs = settings.total_epochs
    announce(f"training {settings.variant} for {epochs} epoch{'s' * (epochs != 1)} in {settings.workdir}, unless a "
             "run of the same settings finished there")
    from flows.train import train_flow  # imports Prefect and starts nothing until called

    metrics = run_and_show(lambda: train_flow(settings), args.json, lambda m: (
        f"{m.variant}: test accuracy {m.test_accuracy:.4f}, test loss {m.test_loss:.4f}, best epoch "
        f"{m.best_epoch} of {m.epochs}; model {m.model_path}"), failure_said_once=True)
    return 0 if metrics is not None else 1


def _temporary_server_in_its_own_session() -> None:
    """Start Prefect's temporary server outside this command's process group. A terminal's Ctrl-C reaches the
    whole group: it stopped the server at once, and the interrupted run then spent minutes retrying a dead API
    with tracebacks before it could end. This command stops the server itself as its work ends
    (_stop_temporary_servers; Prefect's atexit otherwise); where it cannot (killed: kill -9, the system out of
    memory), Linux stops the server (_ends_with_this_process)."""
    import threading

    from prefect.settings import get_current_settings

    if get_current_settings().api.url:  # a server of the user's: no temporary one (and no second of imports)
        return
    try:
        from prefect.server.api import server
    except ImportError:
        return
    start = getattr(server.SubprocessASGIServer, "_run_uvicorn_command", None)  # Prefect's private method:
    if start is None or not hasattr(server, "subprocess") or getattr(start, "own_session", False):
        return  # a Prefect without it starts its server as it does; runs work, only these two guards are lost

    def in_own_session(self: Any) -> Any:
        popen, options = server.subprocess.Popen, {"start_new_session": True}
        # the signal comes when the thread that started the server ends: only the main thread lives as long as us
        ends_with_us = _ends_with_this_process() if threading.current_thread() is threading.main_thread() else None
        if ends_with_us:
            options["preexec_fn"] = ends_with_us
        server.subprocess.Popen = functools.partial(popen, **options)  # type: ignore[misc]
        try:
            return start(self)
        finally:
            server.subprocess.Popen = popen  # type: ignore[misc]

    in_own_session.own_session = True  # type: ignore[attr-defined]
    server.SubprocessASGIServer._run_uvicorn_command = in_own_session  # type: ignore[method-assign]


def _running_servers() -> list[Any]:
    """The temporary Prefect servers running in this process (Prefect's private map of them; none without it)."""
    server = sys.modules.get("prefect.server.api.server")
    instances = getattr(getattr(server, "SubprocessASGIServer", None), "_instances", {})
    return [instance for instance in list(instances.values()) if getattr(instance, "server_process", None)]


def _stop_temporary_servers(but: list[Any]) -> None:
    """Stop the temporary Prefect server the command started (any running now, BUT those that ran before it: a
    caller's own, in the same process; none where the user gave a server), once the runs' logs and events are
    sent, as Prefect's test harness does: its "Stopping temporary server" line then comes before the command's
    last line (the answer, or the reason it has none) instead of after it, at exit."""
    running = [instance for instance in _running_servers() if not any(instance is other for other in but)]
    if not running:
        return  # none started (the command failed first), or a Prefect without that map: its atexit stops it
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        worker.drain_all(timeout=5)
    for instance in running:
        instance.stop()


def _ends_with_this_process() -> Callable[[], None] | None:
    """A preexec_fn for a child process that asks Linux to send it SIGTERM when this process ends, however it
    ends (prctl's PR_SET_PDEATHSIG); None where there is no prctl."""
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the child only calls it
    except (AttributeError, OSError):
        return None
    return functools.partial(prctl, 1, int(signal.SIGTERM))  # 1: PR_SET_PDEATHSIG


def versions_line() -> str:
    """catsdogs' version and those of the libraries its answers depend on, read without importing them."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    libraries = ", ".join(f"{name} {installed(name)}" for name in ("tensorflow", "keras", "prefect"))
    return f"catsdogs {installed('catsdogs')} (Python {sys.version.split()[0]}; {libraries})"


def announce(what: str) -> None:
    """The command's first line, at once: Prefect, TensorFlow and a temporary server take seconds to start."""
    server = ("the Prefect server at PREFECT_API_URL" if os.environ.get("PREFECT_API_URL") else
              "a temporary Prefect server for this command (about 20 s to start; set PREFECT_API_URL to keep "
              "runs: see the README)")
    print(f"catsdogs: {what}, with {server}", file=sys.stderr, flush=True)


def run_and_show(start: Callable[[], Any], as_json: bool, describe: Callable[[Any], str],
                 failure_said_once: bool = False) -> Any | None:
    """Run a flow, an expected failure ending in its one line (None); show its result as JSON or as text.
    FAILURE_SAID_ONCE: Prefect's own lines restating that failure stay off the terminal (one run: its last line
    says it; a sweep keeps them, as they say which of its runs failed while it goes on)."""
    quieted = _terminal_shows_expected_failures_in_one_line(failure_said_once)
    _temporary_server_in_its_own_session()
    running_before = _running_servers()
    failure = None
    try:
        result = start()
    except expected_failures() as err:
        failure = err
    finally:
        for handler, restated in quieted:  # this command's: a later one in this process shows them again
            handler.removeFilter(restated)
        _stop_temporary_servers(but=running_before)
    if failure is not None:
        print(f"catsdogs: {failure}", file=sys.stderr)
        return None
    print(json.dumps(result.model_dump(mode="json")) if as_json else describe(result))
    return result


def expected_failures() -> tuple[type[Exception], ...]:
    """The failures a user can fix, shown in one line: imported here, since predict needs none of them."""
    from catsdogs.data import ArchiveError
    from catsdogs.download import DownloadError
    from catsdogs.store import DiskFullError
    from catsdogs.sweep import EngineError

    return DownloadError, ArchiveError, SettingsError, EngineError, DiskFullError


def _terminal_shows_expected_failures_in_one_line(said_once: bool = False) -> list[tuple[Any, _NotRestated]]:
    """Keep Prefect's tracebacks of expected failures (no network, a bad archive) off the terminal, and where
    SAID_ONCE, its lines that restate them: returns the (handler, filter) pairs added for that, to remove after.

    The run's logs in the UI keep them; on the terminal the command's own one-line message says it all.
    """
    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in list(logging.root.manager.loggerDict))]
    added = []
    for handler in {h for logger in loggers for h in getattr(logger, "handlers", [])}:
        if type(handler).__name__ != "PrefectConsoleHandler":
            continue
        if said_once:
            added.append((handler, _NotRestated()))
            handler.addFilter(added[-1][1])
        if getattr(handler, "_catsdogs_quiet", False):
            continue
        original = handler.format

        def format_record(record: logging.LogRecord, original: Any = original) -> str:
            from flows.sweep import ConfigurationFailed  # a sweep's run that failed: its own lines said why

            if record.exc_info and isinstance(record.exc_info[1], (*expected_failures(), ConfigurationFailed)):
                record = logging.makeLogRecord(record.__dict__ | {"exc_info": None, "exc_text": None})
            return original(record)

        handler.format = format_record  # type: ignore[method-assign]
        handler._catsdogs_quiet = True  # type: ignore[attr-defined]
    return added


# How Prefect's own lines restate a failure: the task's, the flow's, and each one's final state.
PREFECT_FAILURE_LINES = ("Task run failed with exception: ", "Finished in state Failed(",
                         "Encountered exception during execution: ")


class _NotRestated(logging.Filter):
    """Prefect's restatements of an expected failure, off the terminal: a `catsdogs run` without a network printed
    its reason ten times (each try's line, Prefect's line for it, four lines at the end), then its own line.
    The library's line for each failed try stays, and the command's last line says the rest."""

    def filter(self, record: logging.LogRecord) -> bool:
        failures = expected_failures()
        if record.exc_info and isinstance(record.exc_info[1], failures):
            return False
        message = record.getMessage()
        if not message.startswith(PREFECT_FAILURE_LINES):
            return True
        names = {kind.__name__ for failure in failures for kind in (failure, *_subclasses(failure))}
        return not any(f"{name}(" in message or f"{name}:" in message for name in names)


def _subclasses(kind: type) -> list[type]:
    return [sub for direct in kind.__subclasses__() for sub in (direct, *_subclasses(direct))]


def check_workdir(workdir: Path) -> None:
    """Raise SettingsError unless WORKDIR is a folder this process can write in, or can be made one.

    Leaves no trace: a workdir that does not exist yet is not created here.
    """
    path = Path(workdir).absolute()
    try:
        existing = next(p for p in (path, *path.parents) if p.exists())
    except OSError as err:  # a folder on the way that this user may not enter
        raise SettingsError(f"invalid setting workdir: cannot reach {path} ({err.strerror or err}); choose a "
                            "--workdir you can write in") from None
    if not existing.is_dir():
        raise SettingsError(f"invalid setting workdir: {existing} is a file, not a folder; choose another --workdir")
    try:
        tempfile.TemporaryDirectory(dir=existing).cleanup()
    except OSError as err:
        raise SettingsError(f"invalid setting workdir: cannot write in {existing} ({err.strerror or err}); choose "
                            "a writable --workdir") from None


# Settings whose one value may hold a comma: they are varied by repeating the flag, never split.
UNSPLIT_SETTINGS = ("data_url", "data_url_secret", "workdir", "backbone_weights", "train_range",
                    "validation_range", "test_range")


def sweep_grid(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """The shared settings and the grid that the sweep's setting flags give."""
    shared: dict[str, Any] = {}
    grid: dict[str, list[Any]] = {}
    for name in Settings.model_fields:
        given = getattr(args, name)
        if not given:
            continue
        values = [piece.strip() for text in given
                  for piece in ([text] if name in UNSPLIT_SETTINGS else text.split(",")) if piece.strip()]
        if not values:  # "--seed ," or an unset shell variable: not "the defaults"
            raise SettingsError(f"invalid setting {name}: --{name.replace('_', '-')} was given no value; give one, "
                                "or several separated by commas")
        values = [_flag_value(v) for v in dict.fromkeys(values)]
        if len(values) == 1:
            shared[name] = values[0]
        else:
            grid[name] = values
    return shared, grid


def _flag_value(text: str) -> Any:
    """A number or true/false as such (so the flow's parameters show them typed); anything else as text."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, bool | int | float) else text


def sweep_plan(args: argparse.Namespace) -> tuple[dict[str, list[Any]], Settings, list[str]]:
    """The grid, the first configuration's settings and the names of the settings given, from the sweep's flags
    and TOML file; every configuration validated as it will run (SettingsError otherwise)."""
    from catsdogs.sweep import DEFAULT_GRID, check_local_memory, expand_grid, normalize_grid, read_grid_file

    shared, flag_grid = sweep_grid(args)
    config = args.config or os.environ.get("CATSDOGS_CONFIG")
    grid, has_shared = read_grid_file(config) if config else ({}, False)
    grid = {name: values for name, values in grid.items() if name not in shared} | flag_grid
    if not grid:  # nothing varies: three seeds, unless the seed was given
        grid = {name: values for name, values in DEFAULT_GRID.items() if name not in shared}
    grid = normalize_grid(grid)
    first = {name: values[0] for name, values in grid.items()}
    try:  # validated as the first configuration runs, not with the defaults of the settings the grid varies
        settings = load_settings(shared | first, config if has_shared else None)
    except SettingsError as err:
        if not first:
            raise
        where = " ".join(f"{name}={value}" for name, value in first.items())
        raise SettingsError(f"sweep configuration {where}: {err}") from None
    given = sorted(settings.given or ())
    configurations = expand_grid(settings, grid, given)  # every configuration valid before anything starts
    if args.dask_workers and args.dask_workers > len(configurations):  # the rest would start, idle (4,096 hung)
        args.dask_workers = len(configurations)
    check_local_memory(configurations, args.dask_address, args.dask_workers or 0)
    from catsdogs.download import local_source_problem

    problems = [problem for each in configurations if (problem := local_source_problem(each.data_url))]
    if problems:  # said now, not once for each configuration after a server has started
        raise SettingsError(f"invalid setting data_url: {problems[0]}")
    return grid, settings, given


def sweep(args: argparse.Namespace) -> int:
    try:
        grid, settings, given = sweep_plan(args)
        check_workdir(settings.workdir)
        from catsdogs.sweep import check_engine

        check_engine(args.dask_address, args.dask_workers or 0)
    except SettingsError as err:
        print(f"catsdogs: {err}", file=sys.stderr)
        return USAGE_ERROR
    announce(f"sweeping {', '.join(grid) or 'one configuration'} in {settings.workdir}")
    from flows.sweep import sweep_flow

    summary = run_and_show(lambda: sweep_flow(grid=grid, settings=settings, dask_address=args.dask_address,
                                              dask_workers=args.dask_workers or 0, given=given),
                           args.json, comparison_lines)
    if summary is None:
        return 1
    if summary.failed:
        print(f"catsdogs: {summary.failed} of {len(summary.runs)} runs failed", file=sys.stderr)
    return 1 if summary.failed else 0


def comparison_lines(summary: Any) -> str:
    """The comparison for a terminal: one line per configuration, then the curves' file."""
    lines = []
    for c in summary.configurations:
        if c.test_accuracy_mean is None:
            lines.append(f"{c.configuration}: every run failed ({'; '.join(c.errors)})")
            continue
        spread = f" ± {c.test_accuracy_std:.4f}" if c.test_accuracy_std is not None else ""
        failed = f", {c.failed} failed" if c.failed else ""
        lines.append(f"{c.configuration}: test accuracy {c.test_accuracy_mean:.4f}{spread} over {c.runs - c.failed} "
                     f"run(s) (seeds {', '.join(map(str, c.seeds))}; range {c.test_accuracy_min:.4f}-"
                     f"{c.test_accuracy_max:.4f}), test loss {c.test_loss_mean:.4f}{failed}")
    if any(c.test_accuracy_mean is not None for c in summary.configurations):  # no curve where every run failed
        lines.append(f"validation curves: {summary.curves_path}")
    return "\n".join(lines)


def list_models(args: argparse.Namespace) -> int:
    from catsdogs import registry

    try:
        workdir = args.workdir or load_settings().workdir
        if Path(workdir).exists() and not Path(workdir).is_dir():
            raise SettingsError(f"invalid setting workdir: {workdir} is a file, not a folder; give the workdir "
                                "the models were trained in")
        if args.action == "promote":
            if not args.name:
                raise registry.RegistryError("name the model to promote: catsdogs models promote NAME (see "
                                             "`catsdogs models` for the names)")
            try:
                card = registry.promote(workdir, args.name, "promoted by hand (catsdogs models promote)")
            except OSError as err:
                raise registry.RegistryError(f"cannot record the champion in {registry.models_dir(workdir)} "
                                             f"({err.strerror or err}); check that folder's permissions") from None
            print(f"catsdogs: {card.name} is the champion (test accuracy {card.test_accuracy:.4f}); predict, web "
                  "and score-folder use it")
            return 0
        if args.name:
            raise registry.RegistryError(f"`catsdogs models` takes no name ({args.name}); did you mean "
                                         f"`catsdogs models promote {args.name}`?")
        cards = registry.list_models(workdir)
        selected = {which: registry.resolve_model(workdir, which).name for which in ("best", "latest")}
        if crowned := registry.champion(workdir, cards):
            selected = {"champion": crowned.name} | selected
    except (SettingsError, registry.RegistryError) as err:
        print(f"catsdogs: {err}", file=sys.stderr)
        return USAGE_ERROR
    for card in cards:
        marks = [mark for mark, name in selected.items() if name == card.name]
        if args.json:
            print(json.dumps(card.model_dump(mode="json") | {"marks": marks}))
        else:
            print(f"{card.name}  {card.variant:<12}  test accuracy {card.test_accuracy:.4f}  {card.created_at}  "
                  f"{' '.join(marks)}")
    return 0


def web(args: argparse.Namespace) -> int:
    import uvicorn

    from catsdogs.registry import RegistryError
    from deployments.web import create_app

    if problem := listen_problem(args.host, args.port):  # before the model is loaded
        print(f"catsdogs: {problem}", file=sys.stderr)
        return USAGE_ERROR
    try:
        app = create_app(Path(args.workdir or load_settings().workdir), args.model)
    except (SettingsError, RegistryError, FileNotFoundError, ValueError) as err:
        print(f"catsdogs: {err}", file=sys.stderr)
        return USAGE_ERROR
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


def predict(args: argparse.Namespace) -> int:
    from catsdogs.predict import as_json_line, collect_inputs, format_table, open_predictor, predict_files
    from catsdogs.registry import RegistryError

    try:
        workdir = args.workdir or load_settings().workdir
        predictor = open_predictor(args.model, workdir)
    except (SettingsError, RegistryError, FileNotFoundError, ValueError) as err:
        print(f"catsdogs: {err}", file=sys.stderr)
        return USAGE_ERROR
    results = []
    for prediction in predict_files(predictor, collect_inputs(args.paths), batch_size=args.batch_size):
        results.append(prediction)
        if args.json:
            print(as_json_line(prediction), flush=True)
    if not args.json:
        print(format_table(results))
    failed = sum(1 for p in results if p.error)
    if failed:
        print(f"catsdogs: {failed} of {len(results)} inputs could not be classified", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
