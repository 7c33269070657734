"""How this project drives Debian's chromium (apt-get install chromium) with playwright: the
browser tests and `make bench` launch it the same way. `playwright install` (a browser download)
does not work on these machines; these flags keep headless chromium off the network and the GPU."""

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
