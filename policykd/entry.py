"""The `policykd` command's entry point. It imports nothing heavy itself, so a Ctrl-C while policykd.cli loads
(torch, gymnasium: a second or two) is one line and exit code 130, as it is once a command runs, not a traceback."""

import sys


def main() -> None:
    try:
        from policykd.cli import main as run_command
    except KeyboardInterrupt:
        print("interrupted: nothing was written yet", file=sys.stderr)
        raise SystemExit(130) from None
    run_command()


if __name__ == "__main__":
    main()
