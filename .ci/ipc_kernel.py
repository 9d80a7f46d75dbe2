"""A kernel manager that talks to the kernel over local IPC sockets instead of TCP.

ipykernel warns "Kernel is running over TCP without encryption" once per notebook when a kernel listens on TCP;
the notebooks run on this machine only, so Unix-domain sockets (cleaned up when the kernel stops) need no port
and print nothing. Used by execute_notebooks.py and refresh_notebooks.py.
The sockets live under an absolute path in a fresh temporary folder: the kernel runs in the notebook's folder
and the client in the caller's, so a relative socket name would point the two at different places.
"""

import os
import tempfile

from jupyter_client.manager import AsyncKernelManager
from traitlets import CaselessStrEnum, default


class IPCKernelManager(AsyncKernelManager):
    transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc")

    @default("ip")
    def _ip_default(self):
        return os.path.join(tempfile.mkdtemp(prefix="nb-ipc-"), "kernel")
