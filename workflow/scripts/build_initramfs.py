"""Build the guest initramfs from downloaded Debian packages."""

from guestio.build.image import build_from_snakemake

build_from_snakemake(snakemake)
