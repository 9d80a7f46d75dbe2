"""A kernel manager that talks to the kernel over local IPC sockets instead of TCP.

ipykernel warns "Kernel is running over TCP without encryption" once per notebook when a kernel listens on TCP;
the notebooks run on this machine only, so Unix-domain sockets (cleaned up when the kernel stops) need no port
and print nothing. Used by execute_notebooks.py and refresh_notebooks.py.
"""

from jupyter_client.manager import AsyncKernelManager
from traitlets import CaselessStrEnum


class IPCKernelManager(AsyncKernelManager):
    transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc")
