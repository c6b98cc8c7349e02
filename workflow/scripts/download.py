"""Rules download and verify_download: fetch a configured file (resume, retries) and verify its sha256.

Policy for `sha256: null` (a checksum we could not record offline): the file is used, the digest found is written
to the stamp and logged as a warning asking you to pin it in the config; with a checksum, a mismatch is an error.
"""

import logging

from fmextract import logs
from fmextract.download import checksum_mismatch, download, sha256_file
from fmextract.errors import InputError
from fmextract.io import atomic_path

logs.start(snakemake)
log = logging.getLogger("download")
spec = snakemake.params.spec

if snakemake.rule == "download":
    if not spec.get("url"):
        raise InputError(f"{snakemake.output.path}: config downloads.{spec['name']}.url is empty; {spec.get('how', 'fetch the file by hand')} "
                         "and put it at that path (it is then verified), or set the url")
    download(spec["url"], snakemake.output.path, sha256=spec.get("sha256"), progress=False)
else:
    got = sha256_file(snakemake.input.path)
    want = spec.get("sha256")
    if want and got != want.lower():
        raise checksum_mismatch(snakemake.input.path, expected=want.lower(), found=got,
                                key=f"config downloads.{spec['name']}.sha256")
    if not want:
        log.warning("%s: not verified, no checksum in the config; pin it: downloads.%s.sha256: %s",
                    snakemake.input.path, spec["name"], got)
    with atomic_path(snakemake.output.stamp) as tmp, open(tmp, "w") as fh:
        fh.write(f"{got}  {snakemake.input.path}\n")
    log.info("%s: sha256 %s%s", snakemake.input.path, got, " (verified)" if want else " (recorded, not verified)")
