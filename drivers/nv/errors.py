"""Errors of the NVIDIA kernel-driver path: RM statuses (NV_STATUS) decoded to their names.

The RM answers most failures inside the parameter block (`status` of NVOS21/NVOS54/..., `rmStatus` of
the UVM ioctls) while the ioctl itself succeeds; `RMError` carries that code, its name from
nvstatuscodes.h and what the call was, and keeps the errno when the ioctl itself failed.
"""
from __future__ import annotations

from autogen.nv.r535 import status as nv_status
from hal.errors import HalError

# NV_STATUS value -> name, from the generated nvstatuscodes.h enum (NV_OK, NV_ERR_*, NV_WARN_*)
STATUS_NAMES: dict[int, str] = {}
for _name in dir(nv_status):
    if _name == "NV_OK" or _name.startswith(("NV_ERR_", "NV_WARN_")):
        STATUS_NAMES.setdefault(getattr(nv_status, _name), _name)

# what to do about the statuses a caller can fix
_ADVICE = {
    "NV_ERR_INVALID_OBJECT_HANDLE": "the handle is 0, the client's own, or not allocated in this client",
    "NV_ERR_OBJECT_NOT_FOUND": "no object with that handle in this client (freed, or never allocated)",
    "NV_ERR_INVALID_OBJECT_PARENT": "this class cannot be allocated under that parent's class",
    "NV_ERR_INVALID_CLASS": "the class is unknown or this GPU's generation does not support it",
    "NV_ERR_INSERT_DUPLICATE_NAME": "the handle is already in use in this client; pick a new one",
    "NV_ERR_INVALID_PARAM_STRUCT": "the parameter size does not match the structure the RM expects",
    "NV_ERR_NO_MEMORY": "not enough free memory of that kind for the allocation",
}


def status_name(code: int) -> str:
    """The NV_STATUS name of `code` (NV_ERR_...), or its hex value when the table lacks it."""
    return STATUS_NAMES.get(code, f"NV_STATUS {code:#x}")


class RMError(HalError):
    """An RM or UVM call failed. `status` is the NV_STATUS, `status_name` its name, `call` what was asked."""

    def __init__(self, call: str, status: int, *, errno: int | None = None, detail: str = "") -> None:
        self.call = call
        self.status = status
        self.status_name = status_name(status)
        advice = _ADVICE.get(self.status_name, "")
        parts = [f"{call}: {self.status_name} ({status:#x})"]
        if detail:
            parts.append(detail)
        if advice:
            parts.append(advice)
        super().__init__("; ".join(parts), errno=errno)


class UnsupportedDriver(HalError):
    """The running NVIDIA kernel driver's branch has no bindings here; the message names both."""

    def __init__(self, message: str, *, version: str, branch: str) -> None:
        super().__init__(message)
        self.version = version
        self.branch = branch
