"""Build the guest initramfs from downloaded Debian packages."""

from guestio import lifetime
from guestio.build.image import build_from_snakemake

# An interrupted or orphaned job stops its children and tidies up (guestio.lifetime).
lifetime.die_with_snakemake()

build_from_snakemake(snakemake)
