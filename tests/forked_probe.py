"""A program for tests/unit/test_forked_cli.py, started as `python -m tests.forked_probe <fd>
<code>` or forked by the CLI parent: upper-cases its stdin lines onto stdout, says its folder and
$PROBE on stderr, writes "done" on the passed fd `<fd>`, exits with `<code>`."""

import os
import sys


def main() -> int:
    fd, code = int(sys.argv[1]), int(sys.argv[2])
    for line in sys.stdin:
        sys.stdout.write(line.upper())
        sys.stdout.flush()
    print(os.getcwd(), os.environ.get("PROBE"), file=sys.stderr)
    os.write(fd, b"done\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
