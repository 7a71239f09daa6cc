"""Shared test fixtures.

Boot tests need a guest kernel (bzImage with console=ttyS0 support, fw_cfg
sysfs, virtio-console) and an initramfs following the guestio guest contract.
They come from the environment:

    GUESTIO_TEST_KERNEL   path to bzImage
    GUESTIO_TEST_INITRD   path to the initramfs
    GUESTIO_TEST_APPEND   optional kernel command line
                          (default "console=ttyS0 panic=-1 nokaslr")
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def _env_file(var: str) -> Path:
    value = os.environ.get(var)
    if not value:
        pytest.skip(f"{var} is not set: boot tests need a built guest kernel and initramfs")
    path = Path(value)
    if not path.is_file():
        pytest.skip(f"{var}={value} does not exist")
    return path


@pytest.fixture(scope="session")
def guest_kernel() -> Path:
    return _env_file("GUESTIO_TEST_KERNEL")


@pytest.fixture(scope="session")
def guest_initrd() -> Path:
    return _env_file("GUESTIO_TEST_INITRD")


@pytest.fixture(scope="session")
def guest_append() -> str:
    return os.environ.get("GUESTIO_TEST_APPEND", "console=ttyS0 panic=-1 nokaslr")
