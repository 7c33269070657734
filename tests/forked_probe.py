"""A program for tests/unit/test_forked_cli.py, started as `python -m tests.forked_probe <fd>
<code>` or forked by the CLI parent: upper-cases its stdin lines onto stdout, says its folder and
$PROBE on stderr, writes "done" on the passed fd `<fd>`, then "thread" from a thread the exit
waits for and "atexit" from an exit handler; leaves "bye" unflushed on stdout and exits with
`<code>` (a number, or a message: sys.exit's text on stderr and status 1)."""

import atexit
import os
import sys
import threading
import time


def main() -> int | str:
    fd, code = int(sys.argv[1]), sys.argv[2]
    for line in sys.stdin:
        sys.stdout.write(line.upper())
        sys.stdout.flush()
    print(os.getcwd(), os.environ.get("PROBE"), file=sys.stderr)
    os.write(fd, b"done\n")
    atexit.register(os.write, fd, b"atexit\n")

    def late_word() -> None:
        time.sleep(0.2)
        os.write(fd, b"thread\n")

    threading.Thread(target=late_word).start()
    sys.stdout.write("bye")
    return int(code) if code.isdigit() else code


if __name__ == "__main__":
    sys.exit(main())
