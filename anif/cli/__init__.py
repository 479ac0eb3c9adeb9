"""The ``anif`` command line: one module per command group; this module only assembles them and
turns user errors into a one-line message and a non-zero exit. Command modules import typer,
the standard library and torch-free settings at the top; torch, OpenMM, PySCF, Dask, h5py,
RDKit and the workflow modules only inside the command functions (``anif --help`` stays fast)."""

from __future__ import annotations

import os
import signal
import sys

import typer

os.environ.setdefault("TORCHANI_NO_WARN_EXTENSIONS", "1")

app = typer.Typer(
    help="ANI-1x active learning on OpenMM.",
    pretty_exceptions_enable=False,
    add_completion=False,
)

# --- commands -------------------------------------------------------------------------
from .bench import bench_app  # noqa: E402
from .al import al_app  # noqa: E402
from .data import data_app  # noqa: E402
from .label import label_command  # noqa: E402
from .md import analyze_command, energy_command, md_command  # noqa: E402
from .qbc import qbc_app  # noqa: E402
from .sample import sample_app  # noqa: E402
from .train import train_command  # noqa: E402

app.command("energy")(energy_command)
app.command("md")(md_command)
app.command("analyze")(analyze_command)
app.command("label")(label_command)
app.command("train")(train_command)
app.add_typer(data_app, name="data")
app.add_typer(bench_app, name="bench")
app.add_typer(qbc_app, name="qbc")
app.add_typer(sample_app, name="sample")
app.add_typer(al_app, name="al")
# --- end of commands ------------------------------------------------------------------


class _Terminated(BaseException):
    """SIGTERM, raised in the main thread so that every ``finally`` and staged output cleans up."""


def _on_sigterm_exit():
    """SIGTERM raises :class:`_Terminated` (Python's default would end the process on the spot,
    leaving staging folders behind); returns the previous handler (None off the main thread)."""
    pid = os.getpid()

    def handler(signum, frame):
        if os.getpid() != pid:  # a forked worker: end as SIGTERM would have
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise _Terminated()

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        return None


def main() -> None:
    """Entry point: run the app; AnifError (bad input) becomes 'error: ...' and exit 1, a usage
    mistake click's usage message and exit 2."""
    from typer._click import exceptions as click_exceptions  # typer runs its own copy of click

    from ..errors import AnifError

    previous = _on_sigterm_exit()
    try:
        code = app(standalone_mode=False)  # a typer.Exit(code) comes back as the return value
    except AnifError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except click_exceptions.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except _Terminated:
        print("terminated", file=sys.stderr)
        sys.exit(143)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if isinstance(code, int) and code:
        sys.exit(code)
