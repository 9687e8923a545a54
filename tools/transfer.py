"""Run ``dvc push`` or ``dvc pull`` and turn a remote failure into one clear line.

DVC reports an unreachable server, a missing bucket or refused keys as an
"unexpected error" followed by the botocore text. This wrapper streams DVC's
normal output, and on failure prints a single line that names the remote, what
went wrong and the fix, then exits with DVC's status. DVC itself keeps the
cache and the workspace consistent: objects land in the cache only once fully
downloaded, and a failed transfer can simply be run again. The remote's name,
URL and endpoint come from ``dvcrepo.remote_config``, the repository's one
reader of the DVC config.

Usage (``uv run nox -s push`` and ``uv run nox -s pull`` call this)::

    python tools/transfer.py push|pull [DVC ARGUMENTS...]
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from dvcrepo import DVC, DvcError, RemoteConfig, answers, remote_config

__all__ = ["Watchdog", "explain", "main", "remote_in_use", "run"]

DOCS = "docs/remote.md"

# The line DVC closes each failure with.
SUPPORT = "Having any troubles?"


def _requested_remote(args: Sequence[str]) -> str | None:
    for i, arg in enumerate(args):
        if arg in ("-r", "--remote") and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--remote="):
            return arg.split("=", 1)[1]
        if arg.startswith("-r") and len(arg) > 2:
            return arg[2:]
    return None


def remote_in_use(args: Sequence[str], cwd: Path) -> RemoteConfig:
    """The remote that ``dvc push/pull ARGS`` run in ``cwd`` talks to."""
    requested = _requested_remote(args)
    try:
        return remote_config(cwd, requested)
    except DvcError:
        return RemoteConfig(requested)  # DVC's own run reports why its config is unreadable


def explain(verb: str, errors: str, remote: RemoteConfig) -> str:
    """One line that says what failed in a DVC transfer and how to fix it.

    Args:
        verb: ``push`` or ``pull``.
        errors: The ``ERROR:`` and ``WARNING:`` lines DVC printed.
        remote: The remote the transfer used.

    Returns:
        The line, without a trailing newline.
    """
    text = " ".join(errors.split())
    name = remote.name or "storage"
    lead = f"dvc {verb}: error: {remote.describe()}"
    if re.search(r"no remote specified", text):
        return (
            f"dvc {verb}: error: no DVC remote is configured (no default remote in .dvc/config "
            "and no -r NAME). Add one with 'dvc remote add -d storage s3://BUCKET/PATH' "
            f"(see {DOCS})."
        )
    missing = re.search(r"remote '([^']+)' doesn't exist", text)
    if missing:
        return (
            f"dvc {verb}: error: remote {missing.group(1)!r} is not defined in .dvc/config. "
            f"Use a defined remote (list them with 'dvc remote list') or add it (see {DOCS})."
        )
    if re.search(
        r"Could not connect|Cannot connect to host|Connection refused|EndpointConnectionError"
        r"|Connect timeout|ConnectTimeout|Name or service not known|Server disconnected"
        r"|stopped answering",
        text,
    ):
        return (
            f"{lead}: the server does not answer. Start the local server with "
            f"'uv run nox -s s3', or fix the endpoint with 'dvc remote modify --local {name} "
            f"endpointurl URL' (see {DOCS}); run the command again once it answers."
        )
    if re.search(r"NoSuchBucket|bucket does not exist", text):
        return (
            f"{lead}: bucket {remote.bucket or '?'!r} does not exist. Create it, or point the "
            f"remote at an existing one with 'dvc remote modify --local {name} url "
            f"s3://BUCKET/PATH' (see {DOCS})."
        )
    credentials = (
        f"Set them with 'dvc remote modify --local {name} access_key_id ID' and '... "
        "secret_access_key KEY', or through AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or "
        f"AWS_PROFILE (see {DOCS})."
    )
    if re.search(r"Unable to locate credentials|NoCredentialsError", text):
        return f"{lead}: no credentials were found for it. {credentials}"
    if re.search(
        r"\(403\)|Forbidden|AccessDenied|InvalidAccessKeyId|SignatureDoesNotMatch"
        r"|ExpiredToken|InvalidToken",
        text,
    ):
        return f"{lead}: the server refused the credentials. {credentials}"
    if re.search(r"neither locally nor on remote|Checkout failed", text):
        return (
            f"{lead}: some files are neither in the local cache nor on the remote. Push them "
            "from the machine that produced them ('uv run nox -s push'), or rebuild them "
            "with 'uv run nox -s repro'."
        )
    last = [line for line in errors.splitlines() if line.startswith("ERROR:")]
    reason = last[-1].removeprefix("ERROR:").strip() if last else "no error message"
    return f"{lead}: {reason}. Run 'uv run dvc {verb} -v' for details (see {DOCS})."


class Watchdog(threading.Thread):
    """Stops a transfer whose server stopped answering.

    DVC retries every file on its own, and botocore waits a minute for each
    answer, so a server that dies or freezes part-way would keep a large
    transfer busy for many minutes before it reports anything. This thread
    sends the endpoint an HTTP request every ``interval`` seconds; after
    ``limit`` requests in a row get no answer within ``timeout`` seconds, it
    interrupts DVC (as Ctrl-C would), and kills it if it has not stopped
    ``grace`` seconds later. Neither loses anything: DVC moves a downloaded
    file into its cache only once whole, and S3 stores an object only once
    whole.
    """

    def __init__(
        self,
        proc: subprocess.Popen[str],
        endpoint: str,
        interval: float = 2.0,
        timeout: float = 5.0,
        limit: int = 3,
        grace: float = 10.0,
    ) -> None:
        super().__init__(daemon=True)
        self.endpoint = endpoint
        self.proc, self.interval, self.timeout = proc, interval, timeout
        self.limit, self.grace = limit, grace
        self.done = threading.Event()
        self.fired = False

    def run(self) -> None:
        """Probe the endpoint until the transfer ends or the server stops answering."""
        failures = 0
        while not self.done.wait(self.interval):
            failures = 0 if answers(self.endpoint, self.timeout) else failures + 1
            if failures >= self.limit and self.proc.poll() is None:
                self.fired = True
                self.proc.send_signal(signal.SIGINT)
                try:
                    self.proc.wait(timeout=self.grace)
                except subprocess.TimeoutExpired:  # its threads wait on the server
                    self.proc.kill()
                return


def run(verb: str, args: Sequence[str], cwd: Path) -> int:
    """Run ``dvc VERB ARGS`` in ``cwd``; on failure print the one-line explanation.

    DVC's output streams through until its first ``ERROR:`` line; what follows
    is DVC's own failure report, which the explanation replaces. With an
    explicit endpoint (a local or S3-compatible server), a :class:`Watchdog`
    stops the transfer soon after the server stops answering.

    Returns:
        DVC's exit status.
    """
    remote = remote_in_use(args, cwd)
    proc = subprocess.Popen(
        [*DVC, verb, *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "DVC_NO_ANALYTICS": "1"},
    )
    watchdog = Watchdog(proc, remote.endpoint) if remote.endpoint else None
    if watchdog:
        watchdog.start()
    assert proc.stdout is not None
    reported = []  # DVC's ERROR and WARNING lines: what the explanation is drawn from
    failing = False
    try:
        for line in proc.stdout:
            if line.startswith(("ERROR:", "WARNING:")):
                reported.append(line.strip())
            failing = failing or line.startswith("ERROR:")
            if not failing and not line.startswith(SUPPORT):
                sys.stdout.write(line)
                sys.stdout.flush()
        status = proc.wait()
    except KeyboardInterrupt:
        # Ctrl-C reached DVC too; let it stop cleanly, then say so in one line.
        proc.wait()
        print(f"dvc {verb}: interrupted; run it again to finish the transfer.", file=sys.stderr)
        return 130
    if watchdog:
        watchdog.done.set()
        watchdog.join()
        if watchdog.fired:
            reported.append(f"ERROR: {remote.endpoint} stopped answering; stopped the transfer")
            status = status or 1
    if status != 0:
        print(explain(verb, "\n".join(reported), remote), file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``transfer.py push|pull [DVC ARGUMENTS...]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("push", "pull"):
        print("usage: transfer.py push|pull [DVC ARGUMENTS...]", file=sys.stderr)
        return 2
    return run(argv[0], argv[1:], Path.cwd())


if __name__ == "__main__":
    sys.exit(main())
