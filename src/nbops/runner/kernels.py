"""Every kernel nbops starts talks CurveZMQ: its connection file carries a keypair.

ipykernel warns `Kernel is running over TCP without encryption` for a kernel started without
one, and jupyter_client provisions none by default (`transport_encryption = "disabled"`).
"auto" provisions keys when the kernelspec declares `curve` support (ipykernel's does) and
zmq has it; elsewhere the kernel starts unencrypted, as before, and says so itself.
"""

from __future__ import annotations

from pathlib import Path

from jupyter_client.manager import AsyncKernelManager

TRANSPORT_ENCRYPTION = "auto"


class EncryptedKernelManager(AsyncKernelManager):
    """nbclient's own async manager, with transport encryption on."""

    def __init__(self, **kwargs):
        kwargs.setdefault("transport_encryption", TRANSPORT_ENCRYPTION)
        super().__init__(**kwargs)


def curve_keys() -> dict[str, bytes]:
    """A fresh keypair for a connection file nbops writes itself (spare kernels), or {} when
    this zmq has no CurveZMQ."""
    import zmq

    if not zmq.has("curve"):
        return {}
    public, secret = zmq.curve_keypair()
    return {"curve_publickey": public, "curve_secretkey": secret}


def connection_is_encrypted(connection_file: str | Path) -> bool:
    import json

    info = json.loads(Path(connection_file).read_text(encoding="utf-8"))
    return bool(info.get("curve_publickey") and info.get("curve_secretkey"))
