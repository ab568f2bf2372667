"""`tinygpu:` devices: the GPU the TinyGPU macOS app serves on its Unix socket.

The app (a DriverKit extension and a server process) owns a GPU in a Thunderbolt enclosure and
speaks hal.remote.protocol on a Unix socket, sharing system memory with clients by file descriptor.
Facts from tinygrad/runtime/support/system.py APLRemotePCIDevice:
- the app is /Applications/TinyGPU.app/Contents/MacOS/TinyGPU; `TinyGPU server PATH` starts its
  server on socket PATH, which clients connect to (retrying while it starts);
- the socket is $APL_REMOTE_SOCK, else tinygrad's temp("tinygpu.sock"): the system's temporary
  directory (tempfile.gettempdir()) joined with "tinygpu.sock";
- the device index in each request is 0 (pcibus "usb4").
`tinygpu:` uses $GPUHAL_TINYGPU_SOCKET first, then those; `tinygpu:PATH` names the socket. The
client is hal.remote's, in the "tinygpu" dialect: only the app's commands are sent.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

from hal.errors import BackendUnavailable, DeviceNotFound
from hal.pcidev import PCIDevice
from hal.remote import client

APP_PATH = "/Applications/TinyGPU.app/Contents/MacOS/TinyGPU"
SOCKET_NAME = "tinygpu.sock"
SOCKET_ENV = "GPUHAL_TINYGPU_SOCKET"
TINYGRAD_SOCKET_ENV = "APL_REMOTE_SOCK"
# tinygrad APLRemotePCIDevice: 100 connection attempts 50 ms apart while the server starts
START_ATTEMPTS = 100
START_PAUSE_S = 0.05


def socket_path(spec: str = "") -> str:
    """The app's socket: `spec` when given, else $GPUHAL_TINYGPU_SOCKET, $APL_REMOTE_SOCK, or
    <temporary directory>/tinygpu.sock."""
    if spec and not spec.isdigit():
        return spec
    return (os.environ.get(SOCKET_ENV) or os.environ.get(TINYGRAD_SOCKET_ENV)
            or os.path.join(tempfile.gettempdir(), SOCKET_NAME))


def unavailable_reason(platform: str = sys.platform) -> str | None:
    """Why `tinygpu:` cannot work here, or None."""
    if platform != "darwin":
        return (f"tinygpu: devices are served by the TinyGPU app on macOS; this is {platform} "
                "(on Linux open the GPU with pci: or vfio:, or another machine's with remote:)")
    return None


def connect_app(path: str, *, start_app: bool = False,
                timeout_s: float = client.DEFAULT_TIMEOUT_S) -> PCIDevice:
    """Open the device served on socket `path` in the TinyGPU dialect (any platform: a
    `tools.gpu_server` answers it too). `start_app`: launch the app's server if nobody listens."""
    for attempt in range(START_ATTEMPTS):
        try:
            sock = client.connect(f"unix:{path}")
            break
        except DeviceNotFound:
            if not start_app:
                raise
            if attempt == 0:
                _start_server(path)
            time.sleep(START_PAUSE_S)
    else:
        raise DeviceNotFound(f"the TinyGPU server did not come up on {path} within "
                             f"{START_ATTEMPTS * START_PAUSE_S:.0f} s; start the app once by hand "
                             f"(`{APP_PATH} server {path}`) and allow its driver extension")
    return client.open_remote(f"unix:{path}", dialect="tinygpu", timeout_s=timeout_s, sock=sock)


def _start_server(path: str) -> None:
    if not os.path.exists(APP_PATH):
        raise BackendUnavailable(f"the TinyGPU app is not installed ({APP_PATH} is missing): install "
                                 "TinyGPU.app into /Applications and approve its driver extension")
    subprocess.Popen([APP_PATH, "server", path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True)


def open_device(spec: str = "", platform: str = sys.platform) -> PCIDevice:
    """`tinygpu:[PATH]`: the app's GPU, starting the app's server when its socket is silent."""
    reason = unavailable_reason(platform)
    if reason is not None:
        raise BackendUnavailable(reason)
    return connect_app(socket_path(spec), start_app=True)


def list_devices(run=None, platform: str = sys.platform):
    """The Thunderbolt GPUs IOKit sees (hal.macos.ioreg), as hal.discovery.DeviceInfo rows whose
    "tinygpu" verdict says whether the app can serve them. Only one GPU is served (device index 0):
    with several, the app picks. BackendUnavailable off macOS."""
    from hal.discovery import DeviceInfo
    from hal.macos import ioreg

    reason = unavailable_reason(platform)
    if reason is not None:
        raise BackendUnavailable(reason)
    devices = ioreg.list_pci_devices(run, platform) if run is not None else ioreg.list_pci_devices()
    verdict = "ok" if os.path.exists(APP_PATH) else (f"the TinyGPU app is not installed ({APP_PATH}); "
                                                     "install it and approve its driver extension")
    return [DeviceInfo(device="tinygpu:", bdf=gpu.location or gpu.name, vendor_id=gpu.vendor_id,
                       device_id=gpu.device_id, class_code=gpu.class_code, driver=None,
                       backends={"tinygpu": verdict})
            for gpu in ioreg.thunderbolt_gpus(devices)]
