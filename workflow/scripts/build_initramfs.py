"""Build the guest initramfs from downloaded Debian packages."""

from guestio import lifetime
from guestio.build.image.initramfs import build_from_snakemake
from guestio.util import exclusive

# An interrupted or orphaned job stops its children and tidies up (guestio.lifetime).
lifetime.die_with_snakemake()

# build/debs and build/image-staging are shared by every results directory: one builder at a time.
with exclusive(snakemake.params.deb_dir), exclusive(snakemake.params.staging_dir):
    build_from_snakemake(snakemake)
